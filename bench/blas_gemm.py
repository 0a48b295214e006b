"""float32 GEMM speed on one thread: paddle's bundled MKL-ML (`lstm_cpu.gemm`) against numpy's BLAS.

    .venv/bin/python bench/blas_gemm.py

Why: `elmo_paddle/gru_cpu.py` sends its float32 GEMMs to numpy's BLAS on one thread because it was faster on
this project's CPU (fourteenth session: 135 vs 102 GFLOP/s for the tagger's input-gate GEMM); this prints the
same comparison on yours, for the tagger's shapes and one of the biLM's, with the ratio numpy/MKL per shape.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHAPES = [  # (M, K, N): what the product is
    (10000, 256, 768, "tagger: second layer's input gates, a batch's characters"),
    (100, 128, 384, "tagger: one recurrent step, 100 rows"),
    (40, 128, 384, "tagger: one recurrent step, 40 rows"),
    (32, 256, 4096, "biLM zh-char-elmo: one recurrent step h @ W_hh, batch 32"),
    (3200, 256, 4096, "biLM zh-char-elmo: input gates of 100 steps x 32 rows"),
]


def gflops(fn, m: int, k: int, n: int) -> float:
    fn()
    reps = max(3, int(2e9 / (2 * m * k * n)))
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9


def main() -> int:
    import numpy as np

    import elmo_paddle  # noqa: F401  (env before paddle)
    from elmo_paddle import gru_cpu
    from elmo_paddle.lstm_cpu import gemm
    from elmo_paddle.runtime import set_threads

    if not gru_cpu.available():
        print("needs a CPU paddle build with its bundled MKL", file=sys.stderr)
        return 2
    set_threads(1)
    rng = np.random.default_rng(0)
    for m, k, n, what in SHAPES:
        a, b = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
        c = np.empty((m, n), dtype=np.float32)
        with gru_cpu.float32_gemm() as mm:  # numpy's BLAS held to one thread
            ours = gflops(lambda: mm(a, b, c), m, k, n) if mm is not gemm else float("nan")
        mkl = gflops(lambda: gemm(a, b, c), m, k, n)
        print(f"[{m}, {k}] @ [{k}, {n}] ({what}): MKL-ML {mkl:.0f} GFLOP/s, numpy BLAS {ours:.0f}, "
              f"ratio numpy/MKL {ours / mkl:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
