"""Best-span decoding: argmax of start+end score with start <= end < start + max_answer_len, vectorised."""
from __future__ import annotations

import numpy as np


def best_spans(start: np.ndarray, end: np.ndarray, max_answer_len: int,
               lengths: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For score arrays [B,T] (log-probs or logits), return (starts, ends, scores), each [B].

    Score of (i, j) is start[i] + end[j], allowed when i <= j < i + max_answer_len and j < length.
    Done as one [B,T,T] masked argmax: T is a few hundred, so this is a few MB per batch.
    """
    start = np.asarray(start, dtype=np.float64)
    end = np.asarray(end, dtype=np.float64)
    B, T = start.shape
    i = np.arange(T)[:, None]
    j = np.arange(T)[None, :]
    band = (j >= i) & (j < i + max(1, max_answer_len))                 # [T,T]
    scores = start[:, :, None] + end[:, None, :]                        # [B,T,T]
    valid = np.broadcast_to(band, scores.shape)
    if lengths is not None:
        inside = np.arange(T)[None, :] < np.asarray(lengths)[:, None]  # [B,T]
        valid = valid & inside[:, :, None] & inside[:, None, :]
    scores = np.where(valid, scores, -np.inf)
    flat = scores.reshape(B, -1).argmax(axis=1)
    s, e = np.divmod(flat, T)
    return s, e, scores.reshape(B, -1)[np.arange(B), flat]
