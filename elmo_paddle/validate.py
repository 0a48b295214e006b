"""One place that says which config and flag values make sense, shared by every entry point.

Why a module of its own: a value like `batch_size=0` or `lr=nan` used to travel until it met arithmetic
(ZeroDivisionError), a paddle op (ValueError), or nothing at all (a run that "trained" with a NaN learning
rate and saved NaN weights).  Checking at the door turns each into one `UserError` line naming the key,
and checking output paths before any work means a typo does not cost the whole computation first.

Every check takes the name the user typed (`train.batch_size`, `--max-len`) so the message points at it.
Nothing here imports paddle: the checks run before the slow imports.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import UserError


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(name: str, value: Any, *, allow_none: bool = False, minimum: int = 1) -> None:
    """Sizes and counts (batch sizes, lengths, dims, steps): a whole number >= `minimum` (default 1).

    `allow_none`: None means "unset" for this key (e.g. `max_steps`), and passes."""
    if value is None and allow_none:
        return
    if not _is_number(value) or not float(value).is_integer() or value < minimum:
        raise UserError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def non_negative_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    """Counts where 0 has a meaning of its own ("every epoch", "all", "paddle's default")."""
    positive_int(name, value, allow_none=allow_none, minimum=0)


def positive_float(name: str, value: Any, *, allow_none: bool = False) -> None:
    """Learning rates, epochs as passes, memory budgets: finite and > 0 (NaN and inf are never a rate)."""
    if value is None and allow_none:
        return
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise UserError(f"{name} must be a finite number > 0, got {value!r}")


def non_negative_float(name: str, value: Any) -> None:
    """Coefficients where 0 switches the thing off (weight decay, clip norm, L2): finite and >= 0."""
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise UserError(f"{name} must be a finite number >= 0, got {value!r}")


def fraction(name: str, value: Any, *, low_open: bool = True, high_open: bool = False) -> None:
    """A share of something: in (0, 1] by default; `low_open`/`high_open` say which ends are excluded."""
    ok = _is_number(value) and math.isfinite(value)
    ok = ok and (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise UserError(f"{name} must be in {lo}0, 1{hi}, got {value!r}")


def one_of(name: str, value: Any, choices: tuple) -> None:
    """A value from a fixed list (optimizer, schedule, dataset)."""
    if value not in choices:
        names = [str(c) for c in choices]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        raise UserError(f"{name} must be {listed}, got {value!r}")


def _existing_ancestor(p: Path) -> Path:
    """The nearest ancestor of `p` (itself included) that exists."""
    for a in (p, *p.parents):
        if a.exists() or a.is_symlink():
            return a
    return Path(".")


def output_dir(name: str, path: str | os.PathLike, create: bool = True) -> Path:
    """Make sure `path` is, or can become, a folder we can write into, before any work.

    Why before: a training run or an embedding pass that ends in "cannot create ..." has wasted its time.
    Why a real write and not permission bits: bits say nothing about read-only mounts, /proc, or running as
    root.  With `create` the folder is made and a scratch file written and removed in it; without, the
    scratch file goes to its nearest existing ancestor (nothing is left behind).  A regular file in the way
    (the path itself or a folder above it) gets a message of its own.
    """
    p = Path(path)
    a = _existing_ancestor(p)
    if not a.is_dir():
        what = "is a file, not a folder" if a == p else f"is under {a}, which is a file, not a folder"
        raise UserError(f"{name} {p} {what}")
    try:
        if create:
            p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p if create else a, prefix=".write-probe-"):
            pass
    except OSError as e:
        raise UserError(f"{name} {p}: cannot write there ({e.strerror or e})") from None
    return p


def output_file(name: str, path: str | os.PathLike) -> Path:
    """`path` can be written as a file when the work is done: not a folder, not read-only, and its folder
    passes `output_dir` (so it is created now)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{name} {p} is a folder; give a file name")
    a = _existing_ancestor(p.parent)
    if not a.is_dir():
        raise UserError(f"{name} {p} is under {a}, which is a file, not a folder")
    output_dir(f"{name} {p}: its folder", p.parent)
    if p.exists():
        try:
            with open(p, "ab"):
                pass
        except OSError as e:
            raise UserError(f"{name} {p}: cannot write it ({e.strerror or e})") from None
    return p
