"""Raw text: width normalisation, streaming line reader (files, folders, .gz), tokenisation.

Only full-width digits and Latin letters are mapped to ASCII (U+FF10-FF19, U+FF21-FF3A, U+FF41-FF5A):
full NFKC would also rewrite punctuation and expand characters like '…', which changes string length and
breaks character offsets (CMRC2018 answer_start).  The same mapping is applied everywhere: LM, tagger, RC.
"""
from __future__ import annotations

import codecs
import gzip
import io
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from .errors import UserError

log = logging.getLogger(__name__)

_WIDTH_TABLE = {c: c - 0xFEE0 for r in ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A))
                for c in range(r[0], r[1] + 1)}

TOKEN_UNITS = ("char", "word")


def normalize_width(text: str) -> str:
    """Map full-width digits/letters to ASCII; length-preserving, so character offsets stay valid."""
    return text.translate(_WIDTH_TABLE)


def tokenize(text: str, unit: str = "char") -> list[str]:
    """Split normalised text into tokens: one per non-space character ('char') or jieba words ('word')."""
    text = normalize_width(text)
    if unit == "char":
        return [c for c in text if not c.isspace()]
    if unit == "word":
        import jieba  # lazy: loading its dictionary takes a second

        jieba.setLogLevel(logging.WARNING)
        return [w for w in jieba.lcut(text) if w.strip()]
    raise UserError(f"unknown token unit {unit!r}; choose one of {', '.join(TOKEN_UNITS)}")


def list_text_files(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into a list of text files; missing paths are errors."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                              and f.suffix.lower() in (".txt", ".gz", ".text", "")))
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"text path {p} does not exist")
    if not out:
        raise UserError(f"no text files found in {', '.join(map(str, paths))}")
    return out


@dataclass
class ReadStats:
    """Counts of what the reader skipped or changed, with a few examples (file:line) to show the user."""

    lines: int = 0
    empty: int = 0
    bad_utf8: int = 0
    split_long: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, kind: str, where: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {kind}")

    def summary(self) -> str:
        s = f"{self.lines} lines read; skipped {self.empty} empty, {self.bad_utf8} with invalid UTF-8"
        s += f"; {self.split_long} over-long lines split"
        if self.examples:
            s += " (e.g. " + "; ".join(self.examples) + ")"
        return s


def _open_binary(path: Path) -> io.BufferedIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-16 LE/BE (UTF-32 LE starts with FF FE too)


def iter_file_lines(path: Path, stats: ReadStats | None = None, max_chars: int = 100_000,
                    start_line: int = 0) -> Iterator[tuple[int, str]]:
    """Yield (line_number, normalised text) for non-empty lines of one file, streaming.

    Lines with invalid UTF-8 (or NUL bytes: UTF-16 text, binary data) are skipped and counted (never
    decoded with replacement characters, which would teach the LM a fake character).  Lines over
    `max_chars` are split into pieces; an over-long line is read and decoded piece by piece, so a file with
    no newlines cannot exhaust memory.  `start_line` skips lines already consumed (resume).  A file that
    starts with a UTF-16/32 byte-order mark, or a corrupt/truncated .gz, is a UserError naming it.
    """
    stats = stats if stats is not None else ReadStats()
    try:
        fh = _open_binary(path)
    except OSError as e:
        raise UserError(f"cannot open {path}: {e.strerror or e}") from None
    reader = _BoundedLines(fh, path, max_chars * 4)
    with fh:
        while True:
            raw = reader.read()
            if not raw:
                break
            if reader.lineno == 0:
                raw = _strip_bom(raw, path)
            reader.lineno += 1
            if raw.endswith(b"\n") or len(raw) < reader.chunk_bytes:
                if reader.lineno > start_line:
                    yield from _whole_line(raw, path, reader.lineno, stats, max_chars)
                continue
            yield from _long_line(raw, reader, reader.lineno > start_line, stats, max_chars)


class _BoundedLines:
    """Reads a binary file a line at a time, at most `chunk_bytes` per read; counts lines for messages."""

    def __init__(self, fh: io.BufferedIOBase, path: Path, chunk_bytes: int):
        self.fh, self.path, self.chunk_bytes = fh, path, chunk_bytes
        self.lineno = 0

    def read(self) -> bytes:
        try:
            return self.fh.readline(self.chunk_bytes)
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise UserError(f"{self.path}:{self.lineno + 1}: cannot read ({e}); "
                            "the file is truncated or corrupt") from None


def _strip_bom(raw: bytes, path: Path) -> bytes:
    """The first line without its UTF-8 byte-order mark; a UTF-16/32 one is a UserError."""
    if raw.startswith(_UTF16_32_BOMS):
        raise UserError(f"{path}: starts with a UTF-16/32 byte-order mark; convert it to UTF-8 "
                        f"(e.g. iconv -f UTF-16 -t UTF-8)")
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    return raw


def _refuse_nul(raw: bytes) -> None:
    if b"\0" in raw:
        raise UnicodeDecodeError("utf-8", raw, 0, 1, "NUL byte")


def _whole_line(raw: bytes, path: Path, lineno: int, stats: ReadStats,
                max_chars: int) -> Iterator[tuple[int, str]]:
    """A line read in one piece: decoded, normalised and cut into pieces of `max_chars`."""
    stats.lines += 1
    try:
        _refuse_nul(raw)
        text = normalize_width(raw.decode("utf-8").strip())
    except UnicodeDecodeError:
        stats.note("bad_utf8", f"{path}:{lineno}")
        return
    if not text:
        stats.note("empty", f"{path}:{lineno}")
        return
    for i in range(0, len(text), max_chars):
        yield lineno, text[i:i + max_chars]


def _long_line(raw: bytes, reader: _BoundedLines, keep: bool, stats: ReadStats,
               max_chars: int) -> Iterator[tuple[int, str]]:
    """An over-long line (its first `raw` piece read): read, decode and yield it piece by piece (bounded
    memory); a piece boundary may cut a character, hence the incremental decoder.  `keep` False: the line
    is before `start_line`, read past without a trace."""
    lineno, where = reader.lineno, f"{reader.path}:{reader.lineno}"
    if keep:
        stats.lines += 1
        stats.note("split_long", where)
    dec = codecs.getincrementaldecoder("utf-8")()
    buf, piece = "", raw
    while piece:
        last = piece.endswith(b"\n")
        if keep:
            try:
                _refuse_nul(piece)
                buf += normalize_width(dec.decode(piece, final=False))
            except UnicodeDecodeError:  # what was already yielded stays; the rest is skipped
                stats.note("bad_utf8", where)
                keep, buf = False, ""
            while len(buf) >= 2 * max_chars:
                chunk, buf = buf[:max_chars].strip(), buf[max_chars:]
                if chunk:
                    yield lineno, chunk
        if last:
            break
        piece = reader.read()
    if keep:
        try:
            buf = (buf + normalize_width(dec.decode(b"", final=True))).strip()
        except UnicodeDecodeError:  # the line ends in the middle of a character
            stats.note("bad_utf8", where)
            buf = buf.strip()
        for i in range(0, len(buf), max_chars):
            yield lineno, buf[i:i + max_chars]


def iter_lines(paths: str | os.PathLike | Iterable, stats: ReadStats | None = None,
               max_chars: int = 100_000) -> Iterator[str]:
    """Stream normalised non-empty lines from files/folders (.gz too)."""
    for f in list_text_files(paths):  # type: ignore[arg-type]
        for _, text in iter_file_lines(f, stats, max_chars):
            yield text
