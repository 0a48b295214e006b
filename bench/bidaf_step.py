"""One BiDAF training step (forward, backward, Adam) against its batch size, on random inputs of the real
shapes (400-character windows, 20-character questions, configs/bidaf.yaml's sizes); with --elmo, the mix of
the shipped biLM's cached layers is in the input (the biLM itself is not run, as in a cached epoch).

Why: it shows whether splitting a batch over processes (data-parallel ranks) can pay: it does when a step
costs about its batch size.  Prints the best of 3 steps after a warm-up, in seconds, per batch size.

    OMP_NUM_THREADS=1 python bench/bidaf_step.py [--batch 16 32] [--elmo]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from tasks.bidaf.checkpoint import build_reader  # noqa: E402

T, J = 400, 20  # context window and question length, characters


def step_seconds(batch: int, elmo: bool, repeats: int = 3) -> float:
    cfg = {"char_dim": 64, "word_dim": 64, "hidden": 64, "dropout": 0.2, "elmo_at_modeling": False,
           "elmo_model": "zh-char-elmo" if elmo else None}
    paddle.seed(0)
    model = build_reader(cfg, 5000, 50000)
    model.train()
    rng = np.random.default_rng(0)
    ids = lambda high, n: paddle.to_tensor(rng.integers(1, high, (batch, n)))  # noqa: E731
    data = {"c_char": ids(4000, T), "c_word": ids(40000, T), "q_char": ids(4000, J), "q_word": ids(40000, J),
            "c_len": paddle.to_tensor(np.full(batch, T)), "q_len": paddle.to_tensor(np.full(batch, J)),
            "start": paddle.to_tensor(rng.integers(0, T, batch)), "end": paddle.to_tensor(rng.integers(0, T, batch))}
    layers = []
    if elmo:
        d = model.sizes.elmo_dim
        layers = [paddle.to_tensor(rng.standard_normal((batch, 3, n, d), dtype=np.float32)) for n in (T, J)]
    opt = paddle.optimizer.Adam(1e-3, parameters=[p for p in model.parameters() if not p.stop_gradient])
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        model.loss(data, *layers).backward()
        opt.step()
        opt.clear_grad()
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[16, 32], help="batch sizes (default 16 32)")
    ap.add_argument("--elmo", action="store_true", help="with the shipped biLM's mix in the input")
    args = ap.parse_args()
    for b in args.batch:
        print(f"batch {b}: {step_seconds(b, args.elmo):.3f} s a step{' (+ELMo)' if args.elmo else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
