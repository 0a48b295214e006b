"""Benchmark: one biLM train step (and a no-grad forward) of elmo_paddle vs an equivalent PyTorch model.

Both sides: token embedding (width = proj), per direction `--layers` LSTM-with-projection layers
(ours: `BiLstmpStack`; PyTorch: one `torch.nn.LSTM(in, hidden, proj_size=proj)` per layer and direction),
dropout 0.1 between layers, residual connections from the second layer on, the backward LM reading the
reversed sentence, one softmax head per direction (full, or sampled with log-uniform samples shared by the
batch), Adam.  Each side runs in its own worker process (two OpenMP runtimes in one process fight over the
cores); the parent alternates them step by step (the machine is shared, so absolute numbers are noisy; the
ratio is what to read) and reports the median of the repeats.

    PYTHONPATH=. .venv/bin/python bench/bilm_train.py --batch-size 32 --seq-len 50 --hidden 512 \\
        --proj 256 --vocab 5000 --threads 2 --impl lstmp --softmax full
    PYTHONPATH=. .venv/bin/python bench/bilm_train.py --preset elmo_small      # configs/elmo_small.yaml's sizes

Needs `torch` (requirements-bench.txt).  Differences that remain: ours clips the cell and the projection
inside the recurrence (bilm-tf's 3.0), torch.nn.LSTM cannot; `--impl fused` is our approximation (see
elmo_paddle/lstm.py).  The last line is `ratio paddle/torch train: X.XX`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from workers import Worker, interleaved, serve  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=50)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--proj", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=5000)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--impl", choices=["lstmp", "fused"], default="lstmp")
    ap.add_argument("--softmax", choices=["full", "sampled"], default="full")
    ap.add_argument("--samples", type=int, default=1024, help="sampled softmax: samples per batch")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--eval-repeats", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", choices=sorted(PRESETS),
                    help="sizes of a shipped config (elmo_small: B=64, T=32, hidden 512, proj 128, vocab 5000, "
                         "sampled softmax with 1024 samples); explicit flags still win")
    ap.add_argument("--torch-omp-active", action="store_true",
                    help="leave PyTorch's GNU OpenMP spin-waiting (default: OMP_WAIT_POLICY=PASSIVE, the "
                         "counterpart of the KMP_BLOCKTIME=0 that elmo_paddle sets for Paddle's Intel OpenMP)")
    preset = ap.parse_known_args(argv)[0].preset
    if preset:
        ap.set_defaults(**PRESETS[preset])
    return ap.parse_args(argv)


# the sizes of configs/*.yaml, so the bench measures what pretraining runs
PRESETS = {"elmo_small": dict(batch_size=64, seq_len=32, hidden=512, proj=128, vocab=5000, softmax="sampled",
                              samples=1024)}


# --------------------------------------------------------------------------------------------- paddle side
def build_paddle(a):
    import paddle
    from elmo_paddle.bilm import BiLM, BiLMConfig

    paddle.seed(a.seed)
    cfg = BiLMConfig(vocab_size=a.vocab, token_dim=a.proj, proj_dim=a.proj, hidden_dim=a.hidden,
                     num_layers=a.layers, dropout=0.1, residual=True,
                     softmax_samples=a.samples if a.softmax == "sampled" else 0, lstm_impl=a.impl)
    model = BiLM(cfg)
    opt = paddle.optimizer.Adam(learning_rate=1e-3, parameters=model.parameters())

    def train_step(batch):
        model.train()
        out = model.lm_loss(batch, sampled=True)
        loss = (out["fwd_nll"] + out["bwd_nll"]) / (out["fwd_count"] + out["bwd_count"])
        loss.backward()
        opt.step()
        opt.clear_grad()
        return float(loss)

    def eval_step(ids):
        model.eval()
        with paddle.no_grad():
            layers = model(ids)
        return float(layers[-1][0, 0, 0])

    return model, train_step, eval_step


def build_torch(a):
    """The PyTorch side (bench/torch_bilm.py), imported only in the torch worker (torch is a bench-only need)."""
    from torch_bilm import build

    return build(a)


# ----------------------------------------------------------------------------------------------- batches
def make_batch(a, rng):
    """Fixed-length LM windows: targets are the next (forward) and previous (backward) tokens."""
    seq = rng.integers(2, a.vocab, size=(a.batch_size, a.seq_len + 2))
    return {"inputs": seq[:, 1:-1], "fwd_targets": seq[:, 2:], "bwd_targets": seq[:, :-2]}


def worker(a, side):
    """Child process: build one side's model, then run the steps the parent asks for, one per line."""
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    import numpy as np

    if side == "paddle":
        import elmo_paddle  # noqa: F401  (sets MKL_DEBUG_CPU_TYPE / KMP_BLOCKTIME before paddle loads)
        import paddle

        paddle.set_device("cpu")
        paddle.base.core.set_num_threads(a.threads)
        version = paddle.__version__
        to_tensor = lambda v: paddle.to_tensor(v.astype("int64"))  # noqa: E731
        _, train, evaluate = build_paddle(a)
    else:
        import torch

        torch.set_num_threads(a.threads)
        version = torch.__version__
        to_tensor = lambda v: torch.from_numpy(v.astype("int64"))  # noqa: E731
        _, train, evaluate = build_torch(a)
    batch = {k: to_tensor(v) for k, v in make_batch(a, np.random.default_rng(a.seed)).items()}
    out = sys.stdout
    sys.stdout = sys.stderr  # keep library chatter off the protocol channel
    serve(out, version, lambda cmd: train(batch) if cmd == "train" else evaluate(batch["inputs"]))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    side = None
    if argv[:1] == ["--worker"]:
        side, argv = argv[1], argv[2:]
    a = parse_args(argv)
    if side:
        return worker(a, side)
    # each framework in its own process: Paddle's Intel OpenMP and PyTorch's GNU OpenMP in one process
    # fight over the 2 cores (measured: both several times slower than alone)
    # on a shared, oversubscribed machine spin-waiting OpenMP threads are catastrophic (measured: torch at
    # 2 threads 10x slower than at 1); both sides get the passive setting unless asked otherwise
    pw = Worker(__file__, argv, "paddle")
    tw = Worker(__file__, argv, "torch", None if a.torch_omp_active else {"OMP_WAIT_POLICY": "PASSIVE"})
    ntok = a.batch_size * a.seq_len
    print(f"biLM train step: B={a.batch_size} T={a.seq_len} vocab={a.vocab} token/proj={a.proj} "
          f"hidden={a.hidden} layers={a.layers}x2 softmax={a.softmax}"
          f"{f'({a.samples})' if a.softmax == 'sampled' else ''} threads={a.threads} impl={a.impl}; "
          f"torch OMP_WAIT_POLICY={'default' if a.torch_omp_active else 'PASSIVE'}; paddle {pw.version}, torch {tw.version}; median of {a.repeats} interleaved steps", flush=True)
    (pt, tt), (pl, tl) = interleaved([pw, tw], "train", a.warmup, a.repeats)
    med = statistics.median
    p_tps, t_tps = ntok / med(pt), ntok / med(tt)
    for name, tps, ts, ls in (("paddle", p_tps, pt, pl), ("torch ", t_tps, tt, tl)):
        print(f"{name} train: {tps:8.0f} tokens/s  (median {med(ts) * 1e3:.0f} ms/step, "
              f"min {min(ts) * 1e3:.0f}; loss {ls[0]:.3f} -> {ls[-1]:.3f})")
    print(f"(best-step ratio paddle/torch train: {min(tt) / min(pt):.2f})")
    (pe, te), _ = interleaved([pw, tw], "eval", a.warmup, a.eval_repeats)
    p_etps, t_etps = ntok / med(pe), ntok / med(te)
    print(f"paddle eval (no-grad forward, ELMo layers): {p_etps:8.0f} tokens/s")
    print(f"torch  eval (no-grad forward, ELMo layers): {t_etps:8.0f} tokens/s")
    pw.close(), tw.close()
    print(f"ratio paddle/torch eval: {p_etps / t_etps:.2f}")
    print(f"ratio paddle/torch train: {p_tps / t_tps:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
