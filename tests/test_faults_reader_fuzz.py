"""Fuzzed input to the raw-text reader, the corpus scan/vocab and the batcher: random bytes, truncated or
corrupt .gz, huge lines, wrong encodings.  Never a traceback: either it works, or a UserError that names
the file (and the line, where there is one)."""
from __future__ import annotations

import gzip
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from corpus_fixture import make_corpus
from elmo_paddle.errors import UserError
from elmo_paddle.lm_data import LMBatcher, dev_batches, scan_corpus
from elmo_paddle.text import ReadStats, iter_file_lines, normalize_width

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def _consume(path: Path) -> None:
    """Scan, build the vocab, and pull batches from train and dev: the whole data path of pretraining."""
    try:
        info, vocab, _ = scan_corpus([str(path)], "char", 0.2, 1, show_progress=False)
    except UserError as e:
        assert str(path) in str(e), e  # every rejection names the file
        return
    b = LMBatcher(info, vocab, 2, 4, seed=0, shuffle_buffer=8)
    for _, _ in zip(range(20), b.epoch_batches()):
        pass
    for _ in dev_batches(info, vocab, 4, 16):
        pass


def _write(data: bytes, suffix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix="elmo-fuzz-"))
    p = d / f"corpus{suffix}"
    p.write_bytes(data)
    return p


@FUZZ
@given(data=st.binary(max_size=3000), gz=st.booleans())
def test_random_bytes(data, gz):
    _consume(_write(gzip.compress(data) if gz else data, ".txt.gz" if gz else ".txt"))


_CJK = st.sampled_from(list("中国人民经济发展北京我们今天工作社会，。、“”《》１２ＡＢａｂ abc123\t"))
_LINE = st.lists(_CJK, min_size=0, max_size=40).map("".join)
_ENC = st.sampled_from(["utf-8", "utf-8-sig", "gbk", "gb18030", "big5", "utf-16", "utf-16-le", "utf-16-be",
                        "utf-32"])


@FUZZ
@given(lines=st.lists(_LINE, min_size=1, max_size=30), enc=_ENC, nl=st.sampled_from(["\n", "\r\n"]))
def test_wrong_encodings(lines, enc, nl):
    """Text in another encoding is never silently accepted: if its bytes are not UTF-8, the scan either rejects
    the file (naming it) or accepts it only with the invalid lines skipped *and counted*, a minority of them,
    and with no character in the vocab that the text does not hold (no mojibake, no U+FFFD)."""
    data = nl.join(lines).encode(enc, errors="replace")
    path = _write(data, ".txt")
    _consume(path)
    try:
        data.decode("utf-8")
        return  # valid UTF-8 (ASCII-only GBK is): nothing to reject
    except UnicodeDecodeError:
        pass
    try:
        _, vocab, stats = scan_corpus([str(path)], "char", 0.2, 1, show_progress=False)
    except UserError as e:
        # the encoding message, or (valid lines all empty, invalid ones a minority) "no training text"
        assert str(path) in str(e) and re.search(r"UTF-8|UTF-16|no training text", str(e)), e
        return
    assert 0 < stats.bad_utf8 and 2 * stats.bad_utf8 < stats.lines, stats
    text = normalize_width(data.decode(enc, errors="replace"))
    assert set(vocab.itos[4:]) <= set(text) - {"\ufffd"}, (vocab.itos[4:], enc)


@pytest.mark.parametrize("enc", ["gbk", "gb18030", "big5", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_real_text_in_a_wrong_encoding_is_rejected_naming_the_file(tmp_path, enc):
    src = make_corpus(tmp_path / "src.txt", 50)
    bad = tmp_path / f"corpus-{enc}.txt"
    bad.write_bytes(src.read_text(encoding="utf-8").encode(enc, errors="replace"))
    with pytest.raises(UserError) as e:
        scan_corpus([str(bad)], "char", 0.1, 1, show_progress=False)
    msg = str(e.value)
    assert str(bad) in msg and re.search(r"UTF-8|UTF-16", msg), msg


@FUZZ
@given(text=st.text(max_size=400), cut=st.floats(0.0, 1.0), flip=st.integers(0, 10**6))
def test_truncated_or_corrupt_gzip(text, cut, flip):
    blob = bytearray(gzip.compress(text.encode("utf-8")))
    if flip % 2:
        blob = blob[: int(len(blob) * cut)]
    else:
        blob[flip % len(blob)] ^= 0xFF
    p = _write(bytes(blob), ".gz")
    try:
        for _ in iter_file_lines(p, ReadStats()):
            pass
    except UserError as e:
        assert str(p) in str(e), e
    _consume(p)


def test_truncated_gzip_error_names_file_and_line(tmp_path):
    p = tmp_path / "c.txt.gz"
    blob = gzip.compress(("中国人民" * 50 + "\n").encode() * 2000)
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError, match=re.escape(str(p)) + r":\d+: cannot read .*truncated or corrupt"):
        scan_corpus([str(p)], show_progress=False)


@settings(max_examples=80, deadline=None)
@given(text=st.text(max_size=300), max_chars=st.integers(1, 12), gz=st.booleans())
@example(text="00\x80\x00", max_chars=1, gz=False)  # found by CI: a NUL after the first piece was yielded
def test_splitting_long_lines_loses_and_invents_nothing(text, max_chars, gz):
    """Lines over max_chars come back in pieces; joined, they are the line (whitespace aside).

    A line with a NUL byte is skipped, except that an over-long one (read piece by piece, bounded memory)
    may already have yielded a prefix of its text when the NUL turns up: never anything after it."""
    data = text.encode("utf-8", errors="ignore")
    p = _write(gzip.compress(data) if gz else data, ".gz" if gz else ".txt")
    got: dict[int, str] = {}
    for n, piece in iter_file_lines(p, ReadStats(), max_chars=max_chars):
        assert 0 < len(piece) <= max_chars
        got[n] = got.get(n, "") + piece
    squash = lambda s: "".join(c for c in s if not c.isspace())  # noqa: E731  (pieces are stripped)
    want = {}
    for i, raw in enumerate(data.split(b"\n"), 1):
        if i == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if b"\0" in raw:
            before = squash(normalize_width(raw.split(b"\0")[0].decode("utf-8", errors="ignore")))
            over_long = len(raw) + 1 > 4 * max_chars  # what the reader reads in one go
            part = squash(got.pop(i, ""))
            assert not part or (over_long and before.startswith(part)), (i, part, before)
            continue
        s = normalize_width(raw.decode("utf-8").strip())
        if s:
            want[i] = s
    assert {k: squash(v) for k, v in got.items()} == {k: squash(v) for k, v in want.items()}


def test_huge_line_with_multibyte_chars_across_read_boundaries(tmp_path):
    line = ("中国ａ１ " * 90_001)[:-1]  # ~1.6 MB, no newline; chars cut at every 400 kB read boundary
    p = tmp_path / "big.txt"
    p.write_text(line, encoding="utf-8")
    stats = ReadStats()
    pieces = [t for _, t in iter_file_lines(p, stats)]
    assert max(map(len, pieces)) <= 100_000 and stats.split_long == 1 and stats.bad_utf8 == 0
    assert "".join(pieces).replace(" ", "") == normalize_width(line).replace(" ", "")
