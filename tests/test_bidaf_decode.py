"""Best-span decoding agrees with brute force and respects start <= end < start + max_len and lengths."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.bidaf.decode import best_spans


def _brute(s, e, L, n):
    best = (-np.inf, 0, 0)
    for i in range(n):
        for j in range(i, min(n, i + L)):
            if s[i] + e[j] > best[0]:
                best = (s[i] + e[j], i, j)
    return best


def test_simple_case_prefers_valid_order():
    s = np.array([[-1.0, -1.0, 5.0, -1.0]])
    e = np.array([[0.0, 6.0, 0.0, 1.0]])   # best end (1) lies before best start (2): not allowed
    st_, en, sc = best_spans(s, e, max_answer_len=10)
    assert (st_[0], en[0]) == (2, 3) and sc[0] == 6.0


def test_max_len_and_length_mask():
    s = np.array([[3.0, 0.0, 0.0, 0.0, 0.0]])
    e = np.array([[0.0, 0.0, 0.0, 0.0, 9.0]])
    st_, en, _ = best_spans(s, e, max_answer_len=3)
    assert en[0] - st_[0] < 3
    st_, en, _ = best_spans(s, e, max_answer_len=10, lengths=np.array([4]))
    assert en[0] < 4


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_matches_brute_force(T, L, seed):
    rng = np.random.default_rng(seed)
    B = 3
    s, e = rng.normal(size=(B, T)), rng.normal(size=(B, T))
    lens = rng.integers(1, T + 1, size=B)
    st_, en, sc = best_spans(s, e, L, lens)
    for b in range(B):
        score, i, j = _brute(s[b], e[b], L, lens[b])
        assert sc[b] == score and (st_[b], en[b]) == (i, j)
