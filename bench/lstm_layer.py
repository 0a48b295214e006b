"""Profile helper (no peer): one biLM LSTMP layer of the training kernel, forward (kept for BPTT) + backward.

    PYTHONPATH=. python bench/lstm_layer.py --hidden 1024 --proj 256 --input 256        # float32
    PYTHONPATH=. ELMO_PADDLE_BF16=1 python bench/lstm_layer.py --hidden 1024 --proj 256 --input 256

Times `lstm_cpu.PackedLstmp` (both directions, cell and projection clip 3) on random data with one MKL
thread, the median of `--repeats` after one warm-up, so a kernel change can be measured on its own.
`bench/bilm_train.py` is the comparison with PyTorch over a whole training step.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import elmo_paddle  # noqa: F401  (MKL / OpenMP environment before paddle)
from elmo_paddle import bf16_gemm, lstm_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--proj", type=int, default=128)
    ap.add_argument("--input", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    H, P, D, B, T = args.hidden, args.proj, args.input, args.batch_size, args.seq_len
    rng = np.random.default_rng(0)
    w_ih, w_hh = (rng.uniform(-0.05, 0.05, (2, 4 * H, n)).astype("float32") for n in (D, P))
    w_proj = rng.uniform(-0.05, 0.05, (2, P, H)).astype("float32")
    x = rng.standard_normal((T, 2, D, B)).astype("float32")
    dout = rng.standard_normal((T, 2, P, B)).astype("float32")
    lstm_cpu._mkl().MKL_Set_Num_Threads(1)
    bf16 = bf16_gemm.available()
    layer = lstm_cpu.PackedLstmp(w_ih, w_hh, np.zeros((2, 4 * H), "float32"), w_proj, 3.0, 3.0, bf16=bf16)
    fwd, bwd = [], []
    for r in range(args.repeats + 1):
        t0 = time.perf_counter()
        layer(x, keep=True)
        t1 = time.perf_counter()
        layer.backward(dout)
        if r:  # the first is a warm-up
            fwd.append(t1 - t0)
            bwd.append(time.perf_counter() - t1)
    print(f"hidden {H}, projection {P}, input {D}, B={B}, T={T}, bf16={bf16}, 1 thread: "
          f"forward {np.median(fwd) * 1e3:.0f} ms, backward {np.median(bwd) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
