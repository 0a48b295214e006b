"""The process protocol of the paired benchmarks (bench/bilm_train.py, bench/lac_train.py).

Each framework runs in its own worker process (Paddle's Intel OpenMP and PyTorch's GNU OpenMP in one
process fight over the cores: measured, both several times slower than alone); the parent alternates the
workers step by step, alternating who goes first, so a load change on a shared machine hits both alike.
"""
from __future__ import annotations

import os
import subprocess
import sys


def serve(out, ready: str, handle) -> None:
    """The worker's side: announce `ready VERSION` on `out`, then time `handle(cmd)` for each stdin line."""
    import time

    out.write(f"ready {ready}\n")
    out.flush()
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        t = time.perf_counter()
        v = handle(cmd)
        out.write(f"{time.perf_counter() - t} {v}\n")
        out.flush()


class Worker:
    """A bench script run as `SCRIPT --worker SIDE ARGV...`: it prints `ready VERSION`, then answers each
    command line with `SECONDS VALUE`."""

    def __init__(self, script, argv, side, env=None):
        self.p = subprocess.Popen([sys.executable, os.path.abspath(script), "--worker", side] + argv,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                  env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                      [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
                                      + os.environ.get("PYTHONPATH", "").split(os.pathsep)), **(env or {})))
        line = self.p.stdout.readline().split()
        if not line or line[0] != "ready":
            raise SystemExit(f"{side} worker failed to start")
        self.version = line[1]

    def step(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        dt, v = self.p.stdout.readline().split()
        return float(dt), float(v)

    def close(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.flush()
        self.p.wait()


def interleaved(workers, cmd, warmup, repeats):
    """Warm up, then alternate the sides step by step (alternating who goes first); times and values."""
    for _ in range(warmup):
        for w in workers:
            w.step(cmd)
    times, vals = [[] for _ in workers], [[] for _ in workers]
    for r in range(repeats):
        order = list(range(len(workers)))
        for k in (order if r % 2 == 0 else order[::-1]):
            dt, v = workers[k].step(cmd)
            times[k].append(dt)
            vals[k].append(v)
    return times, vals
