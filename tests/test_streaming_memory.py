"""Streaming a corpus keeps memory flat: peak RSS of the scan + batching does not grow with corpus size,
and a file that is one huge line with no newline is read in bounded pieces.

Each measurement runs bench/corpus_memory.py in a fresh subprocess (peak RSS = VmHWM).  The slow variant
uses ELMO_MEM_SIZES (MB, default "12,48"; the bench's own default is 50 and 200) and a 50 MB line.
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

SLACK_MB = 30


def _pair(tmp: Path, small: float, big: float, max_batches=None):
    a = cm.run_measure(cm.generate(tmp / f"c{small:g}.txt.gz", small, gz=True), max_batches)
    b = cm.run_measure(cm.generate(tmp / f"c{big:g}.txt.gz", big, gz=True), max_batches)
    print(f"\n{small:g} MB: peak {a['peak_rss_mb']} MB; {big:g} MB: peak {b['peak_rss_mb']} MB")
    assert b["lines"] > 2 * a["lines"] and b["train_tokens"] > 2 * a["train_tokens"]
    assert b["peak_rss_mb"] <= a["peak_rss_mb"] + SLACK_MB, (a, b)
    return a, b


def test_peak_rss_is_flat_in_corpus_size(tmp_path):
    _pair(tmp_path, 1, 4)  # whole epoch batched


def test_one_huge_line_without_newline_is_bounded(tmp_path):
    small = cm.run_measure(cm.generate(tmp_path / "c1.txt", 1))
    r = cm.run_measure(cm.generate_long_line(tmp_path / "line.txt", 8))
    print(f"\n8 MB single line: peak {r['peak_rss_mb']} MB (1 MB corpus: {small['peak_rss_mb']} MB)")
    assert r["lines"] >= 25  # read as 100k-char pieces
    # bounded by batch_size x 100k-token rows + an 8M-char shuffle buffer, whatever the line's length
    assert r["peak_rss_mb"] <= small["peak_rss_mb"] + 60, (small, r)


@pytest.mark.slow
def test_peak_rss_is_flat_for_large_corpora_and_a_50mb_line():
    small, big = (float(x) for x in os.environ.get("ELMO_MEM_SIZES", "12,48").split(","))
    wd = Path(os.environ.get("ELMO_MEM_WORKDIR", "/tmp/elmo_corpus_memory"))
    wd.mkdir(parents=True, exist_ok=True)
    a, _ = _pair(wd, small, big, max_batches=20_000)
    line10 = cm.run_measure(cm.generate_long_line(wd / "line_10MB.txt", 10), 20_000)
    line50 = cm.run_measure(cm.generate_long_line(wd / "line_50MB.txt", 50), 20_000)
    print(f"single line: 10 MB peak {line10['peak_rss_mb']} MB, 50 MB peak {line50['peak_rss_mb']} MB")
    # the 10 MB line (3.3M chars) fits the 8M-char shuffle buffer whole, the 50 MB one fills it to the cap
    assert line50["peak_rss_mb"] <= line10["peak_rss_mb"] + 25, (line10, line50)
    assert line50["peak_rss_mb"] <= a["peak_rss_mb"] + 60, (a, line50)
