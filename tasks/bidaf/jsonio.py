"""Reading JSON (plain or gzip) with one clear error naming the file for every way it can be broken."""
from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Any

from elmo_paddle.errors import UserError

_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | os.PathLike) -> bytes:
    """Whole file as bytes, gunzipped when it starts with the gzip magic (whatever its name says)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p} does not exist or is not a file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {p}: {e.strerror or e}") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"{p}: truncated or corrupt gzip data ({e})") from None
    return raw


def _read_text(p: Path) -> str:
    """The file's text (.gz too, a UTF-8 BOM dropped); bad UTF-8 is a UserError naming the byte."""
    try:
        return read_bytes(p).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not valid UTF-8 at byte {e.start} (is it really a JSON text file?)") from None


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file (.json or .json.gz); bad UTF-8, truncation and syntax errors are UserErrors."""
    p = Path(path)
    text = _read_text(p)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise UserError(f"{p}: JSON nested too deeply") from None


def read_json_lines(path: str | os.PathLike) -> list[Any]:
    """Parse JSON Lines (one object per line, blank lines skipped); errors name the file and line."""
    p = Path(path)
    text = _read_text(p)
    out = []
    for i, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 etc. occur inside strings
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise UserError(f"{p}:{i}: malformed JSON at column {e.colno}: {e.msg}") from None
        except RecursionError:
            raise UserError(f"{p}:{i}: JSON nested too deeply") from None
    return out
