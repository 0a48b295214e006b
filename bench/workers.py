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


def run_worker(side: str, threads: int, load, build_paddle, build_torch) -> None:
    """The worker of a paired train bench: `threads` for its framework, `load()` -> (batches, *sizes), the
    side's `build_*(*sizes)` -> step function, then one step per request over the batches, cycled."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    batches, *sizes = load()
    if side == "paddle":
        import elmo_paddle  # noqa: F401  (sets MKL/OpenMP environment before paddle loads)
        import paddle

        from elmo_paddle.runtime import set_threads

        paddle.set_device("cpu")
        set_threads(threads)
        version, step = paddle.__version__, build_paddle(*sizes)
    else:
        import torch

        torch.set_num_threads(threads)
        version, step = torch.__version__, build_torch(*sizes)
    count = iter(range(10**9))
    out, sys.stdout = sys.stdout, sys.stderr  # keep library chatter off the protocol channel
    serve(out, version, lambda cmd: step(batches[next(count) % len(batches)]))


def torch_train_step(model, opt, loss_of, clip: float = 5.0):
    """A PyTorch train step (`loss_of(batch)`, gradients clipped to a global norm, as the paddle side's
    `build_optimizer` does) returning the loss."""
    import torch

    def step(batch):
        model.train()
        loss = loss_of(batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss.item()

    return step


def paired_train(script: str, argv: list, warmup: int, repeats: int, header: str):
    """Start both workers of `script`, print `header` (its {paddle} and {torch} filled with the versions),
    alternate train steps; returns ((paddle times, losses), (torch times, losses))."""
    pw = Worker(script, argv, "paddle")
    tw = Worker(script, argv, "torch", {"OMP_WAIT_POLICY": "PASSIVE"})
    print(header.format(paddle=pw.version, torch=tw.version), flush=True)
    (pt, tt), (pl, tl) = interleaved([pw, tw], "train", warmup, repeats)
    pw.close(), tw.close()
    return (pt, pl), (tt, tl)


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
