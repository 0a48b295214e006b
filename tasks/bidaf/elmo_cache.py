"""Frozen biLM activations per text, computed once and kept in memory (float16, bounded).

The biLM is frozen, so `Elmo.encode` of a given context window never changes between epochs; only the
scalar mixes train.  Caching the [3, T, D] layers turns every later epoch's ELMo cost into a lookup.
Cost: 3 * T * D * 2 bytes per text (T=400, D=1024: 2.4 MB), so the bound (`max_mb`) matters; texts
past the bound are simply recomputed each time.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import paddle


class ElmoLayerCache:
    """`cache(token_lists)` -> float32 Tensor [B, L, T, D] of frozen biLM layers, padded with zeros."""

    def __init__(self, elmo: Any, max_mb: float = 2048.0, batch_size: int = 32):
        self.elmo = elmo
        self.max_bytes = int(max_mb * 2**20)
        self.batch_size = batch_size
        self.store: dict[tuple[str, ...], np.ndarray] = {}
        self.bytes = 0
        self.hits = self.misses = 0
        self.encode_seconds = 0.0

    def _encode(self, token_lists: Sequence[Sequence[str]]) -> list[np.ndarray]:
        t0 = time.time()
        out: list[np.ndarray] = []
        for i in range(0, len(token_lists), self.batch_size):
            # our whitespace placeholder back to the character: a char-unit biLM takes one char per token
            chunk = [[" " if t == "<SP>" else t for t in toks] for toks in token_lists[i:i + self.batch_size]]
            with paddle.no_grad():
                layers = self.elmo.encode(self.elmo.batch_to_ids(chunk)).numpy()  # [b, L, T', D]
            out.extend(layers[k, :, :len(toks)].astype(np.float16) for k, toks in enumerate(chunk))
        self.encode_seconds += time.time() - t0
        return out

    def __call__(self, token_lists: Sequence[Sequence[str]]) -> paddle.Tensor:
        keys = [tuple(t) for t in token_lists]
        missing = list(dict.fromkeys(k for k in keys if k not in self.store))
        self.hits += sum(1 for k in keys if k in self.store)
        self.misses += len(keys) - sum(1 for k in keys if k in self.store)
        fresh = dict(zip(missing, self._encode(missing))) if missing else {}
        for k, v in fresh.items():
            if self.bytes + v.nbytes <= self.max_bytes:
                self.store[k] = v
                self.bytes += v.nbytes
        arrs = [self.store.get(k, fresh.get(k)) for k in keys]
        L, _, D = arrs[0].shape
        T = max(a.shape[1] for a in arrs)
        batch = np.zeros((len(arrs), L, T, D), dtype=np.float32)
        for i, a in enumerate(arrs):
            batch[i, :, :a.shape[1]] = a
        return paddle.to_tensor(batch)

    def report(self) -> dict[str, float]:
        """Cache cost for metrics.json: entries, MB held, hit/miss counts, seconds spent in encode."""
        return {"entries": len(self.store), "mb": round(self.bytes / 2**20, 1), "hits": self.hits,
                "misses": self.misses, "encode_seconds": round(self.encode_seconds, 1)}
