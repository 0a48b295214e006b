"""Frozen biLM activations per token sequence, computed once: in memory (bounded) and optionally on disk.

The biLM inside `Elmo` is frozen, so `Elmo.encode` of a sentence never changes between epochs or between
runs that use the same model; only the scalar mixes train.  Caching the `[3, T, D]` layers (float16) turns
every later epoch's ELMo cost into a lookup.  With `cache_dir`, entries persist across runs (keyed by the
model's weights checksum and the tokens), so the seeds and variants of an experiment share the work.
Memory cost: 3 * T * D * 2 bytes per sentence; sentences past `max_mb` are read from disk or recomputed.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import paddle


class ElmoLayerCache:
    """`cache(token_lists)` -> float32 Tensor `[B, L, T, D]` of frozen biLM layers, zero-padded."""

    def __init__(self, elmo: Any, max_mb: float = 2048.0, batch_size: int = 32,
                 cache_dir: str | os.PathLike | None = None):
        self.elmo = elmo
        self.max_bytes = int(max_mb * 2**20)
        self.batch_size = batch_size
        self.store: dict[tuple[str, ...], np.ndarray] = {}
        self.bytes = 0
        self.hits = self.misses = self.disk_hits = 0
        self.encode_seconds = 0.0
        sha = getattr(elmo, "weights_sha256", None)
        # without a weights checksum a disk entry could belong to another model: keep it in memory only
        self.dir = Path(cache_dir) / sha[:16] if cache_dir and sha else None

    def prepare(self, tokens: Sequence[str]) -> list[str]:
        """Hook: map a task's tokens to what the biLM reads (identity here)."""
        return list(tokens)

    def _path(self, key: tuple[str, ...]) -> Path:
        h = hashlib.sha1("\x1f".join(key).encode("utf-8")).hexdigest()
        return self.dir / h[:2] / f"{h}.npy"  # type: ignore[operator]

    def _encode(self, token_lists: Sequence[Sequence[str]]) -> list[np.ndarray]:
        t0 = time.time()
        out: list[np.ndarray] = []
        order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))  # less padding
        res: dict[int, np.ndarray] = {}
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            chunk = [self.prepare(token_lists[i]) for i in idx]
            with paddle.no_grad():
                layers = self.elmo.encode(self.elmo.batch_to_ids(chunk)).numpy()  # [b, L, T', D]
            for k, i in enumerate(idx):
                res[i] = layers[k, :, :len(chunk[k])].astype(np.float16)
        out = [res[i] for i in range(len(token_lists))]
        self.encode_seconds += time.time() - t0
        return out

    def _from_disk(self, key: tuple[str, ...]) -> np.ndarray | None:
        if self.dir is None:
            return None
        p = self._path(key)
        try:
            return np.load(p, allow_pickle=False)  # plain arrays only: a cache file never runs code
        except (OSError, ValueError):
            return None

    def _to_disk(self, key: tuple[str, ...], arr: np.ndarray) -> None:
        if self.dir is None:
            return
        p = self._path(key)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_suffix(f".tmp{os.getpid()}.npy")
            np.save(tmp, arr, allow_pickle=False)
            os.replace(tmp, p)  # atomic: a crash never leaves a half-written entry under the real name
        except OSError:
            pass  # the disk cache is an optimisation; a full disk only costs recomputation

    def layers_of(self, token_lists: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """The cached `[L, T_i, D]` float16 arrays, computing what is missing."""
        keys = [tuple(t) for t in token_lists]
        found: dict[tuple[str, ...], np.ndarray] = {}
        for k in dict.fromkeys(keys):
            a = self.store.get(k)
            if a is None:
                a = self._from_disk(k)
                if a is not None:
                    self.disk_hits += 1
                    self._remember(k, a)
            if a is not None:
                found[k] = a
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        self.hits += len(keys) - sum(1 for k in keys if k in missing)
        self.misses += sum(1 for k in keys if k in missing)
        if missing:
            for k, v in zip(missing, self._encode(missing)):
                found[k] = v
                self._remember(k, v)
                self._to_disk(k, v)
        return [found[k] for k in keys]

    def _remember(self, key: tuple[str, ...], arr: np.ndarray) -> None:
        if self.bytes + arr.nbytes <= self.max_bytes:
            self.store[key] = arr
            self.bytes += arr.nbytes

    def __call__(self, token_lists: Sequence[Sequence[str]]) -> paddle.Tensor:
        arrs = self.layers_of(token_lists)
        L, _, D = arrs[0].shape
        T = max(max(a.shape[1] for a in arrs), 1)
        batch = np.zeros((len(arrs), L, T, D), dtype=np.float32)
        for i, a in enumerate(arrs):
            batch[i, :, :a.shape[1]] = a
        return paddle.to_tensor(batch)

    def report(self) -> dict[str, float]:
        """Cache cost for metrics.json: entries, MB held, hit/miss counts, seconds spent in encode."""
        return {"entries": len(self.store), "mb": round(self.bytes / 2**20, 1), "hits": self.hits,
                "misses": self.misses, "disk_hits": self.disk_hits, "encode_seconds": round(self.encode_seconds, 1)}
