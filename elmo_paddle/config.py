"""Configs are data: YAML files loaded into dataclasses, unknown keys rejected, `key=value` overrides."""
from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from .errors import UserError

T = TypeVar("T")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except UserError:
                continue
        raise UserError(f"config key {key!r}: cannot use {value!r} as {tp}")
    if tp in (int, float) and isinstance(value, str):
        try:
            return tp(value) if tp is float else int(float(value)) if float(value).is_integer() else int(value)
        except ValueError:
            raise UserError(f"config key {key!r}: expected a number, got {value!r}") from None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and isinstance(value, str):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise UserError(f"config key {key!r}: expected true/false, got {value!r}")
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        inner = args[0] if args else Any
        return [(_coerce(v, inner, key) if inner is not Any else v) for v in value]
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise UserError(f"config key {key!r}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a dict; unknown keys are a clear error naming the valid ones."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of keys to values, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(fields)}")
    kwargs = {}
    for k, v in data.items():
        tp = hints[k]
        if dataclasses.is_dataclass(tp) and isinstance(v, dict):
            kwargs[k] = from_dict(tp, v, f"{where}.{k}")
        else:
            kwargs[k] = _coerce(v, tp, k)
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass config as plain data (for JSON/YAML and VisualDL hparams)."""
    return dataclasses.asdict(obj)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Turn ['a.b=1', 'c=x'] into a nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def merge(base: dict, extra: dict) -> dict:
    """`base` with `extra` laid over it, nested mappings merged key by key (neither input is changed)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with safe_load; missing file or bad YAML is a UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {p} must hold a mapping of keys to values")
    return data


def load_config(cls: type[T], path: str | os.PathLike | None = None,
                overrides: Sequence[str] | dict[str, Any] = ()) -> T:
    """Load dataclass config `cls` from a YAML file (optional) plus `key=value` overrides."""
    data = load_yaml(path) if path else {}
    extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    return from_dict(cls, merge(data, extra), str(path or "config"))
