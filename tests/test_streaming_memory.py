"""Streaming a corpus keeps memory flat: peak RSS of the scan + batching does not grow with corpus size,
and a file that is one huge line with no newline is read in bounded pieces.

Each measurement runs bench/corpus_memory.py in a fresh subprocess (peak RSS = VmHWM).  The slow variant
uses ELMO_MEM_SIZES (MB, default "12,48"; the bench's own default is 50 and 200) and 30 and 60 MB lines.
Bounds are per MB of extra input (see PER_MB), so a larger ratio of sizes makes them stricter.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("corpus_memory", REPO / "bench" / "corpus_memory.py")
cm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cm)

# Peak RSS may grow by this much between two runs (allocator and measurement noise: ~1 MB measured) plus
# PER_MB for every extra megabyte of input.  A reader that keeps the text (2 bytes per CJK char in a str, 3 in
# UTF-8 on disk) grows by more than 0.6 MB per MB; a streaming one by ~0 (measured: +1.1 MB from 1 to 16 MB of gzip'd text).
NOISE_MB, PER_MB = 2.0, 0.2


def assert_flat(a: dict, b: dict, extra_mb: float) -> None:
    bound = NOISE_MB + PER_MB * extra_mb
    grew = b["peak_rss_mb"] - a["peak_rss_mb"]
    assert grew <= bound, f"peak RSS grew {grew:.1f} MB for {extra_mb:g} MB more input (bound {bound:.1f})"


def _pair(tmp: Path, small: float, big: float, max_batches=None):
    a = cm.run_measure(cm.generate(tmp / f"c{small:g}.txt.gz", small, gz=True), max_batches)
    b = cm.run_measure(cm.generate(tmp / f"c{big:g}.txt.gz", big, gz=True), max_batches)
    print(f"\n{small:g} MB: peak {a['peak_rss_mb']} MB; {big:g} MB: peak {b['peak_rss_mb']} MB")
    assert b["lines"] > 0.5 * big / small * a["lines"] and b["train_tokens"] > 0.5 * big / small * a["train_tokens"]
    assert_flat(a, b, big - small)
    return a, b


def test_peak_rss_is_flat_in_corpus_size(tmp_path):
    """A 12x larger corpus (whole epoch scanned and batched) raises peak RSS by at most 0.2 MB per extra MB."""
    _pair(tmp_path, 1, 12)


def _lines(tmp: Path, small: float, big: float, shuffle_buffer_chars: int | None, max_batches=None):
    a, b = (cm.run_measure(cm.generate_long_line(tmp / f"line_{mb:g}MB.txt", mb), max_batches, shuffle_buffer_chars)
            for mb in (small, big))
    print(f"single line: {small:g} MB peak {a['peak_rss_mb']} MB, {big:g} MB peak {b['peak_rss_mb']} MB")
    assert a["lines"] >= small * 3 and b["lines"] >= big * 3  # read as 100k-char pieces (3 bytes a char)
    assert_flat(a, b, big - small)
    return a, b


def test_one_huge_line_without_newline_is_bounded(tmp_path):
    """One 12 MB and one 30 MB line (no newline) with the shuffle buffer capped at 500k chars: both fill every
    batch row with a 100k-token piece and the buffer to its cap, so the 30 MB line may not cost more (without
    the char cap: +12 MB, measured).  Absolute bound: 32 rows x 100k tokens (25.6 MB) over the small corpus."""
    small = cm.run_measure(cm.generate(tmp_path / "c1.txt", 1))
    _, big = _lines(tmp_path, 12, 30, 500_000)
    assert big["peak_rss_mb"] <= small["peak_rss_mb"] + 40, (small, big)


@pytest.mark.slow
def test_peak_rss_is_flat_for_large_corpora_and_a_50mb_line():
    """ELMO_MEM_SIZES corpora, and a 30 MB and a 60 MB line under the default 8M-char buffer cap (both over it)."""
    small, big = (float(x) for x in os.environ.get("ELMO_MEM_SIZES", "12,48").split(","))
    wd = Path(os.environ.get("ELMO_MEM_WORKDIR", "/tmp/elmo_corpus_memory"))
    wd.mkdir(parents=True, exist_ok=True)
    a, _ = _pair(wd, small, big, max_batches=20_000)
    _, line60 = _lines(wd, 30, 60, None, 20_000)
    assert line60["peak_rss_mb"] <= a["peak_rss_mb"] + 60, (a, line60)
