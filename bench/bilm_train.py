"""Benchmark: one biLM train step (and a no-grad forward) of elmo_paddle vs an equivalent PyTorch model.

Both sides: token embedding (width = proj), per direction `--layers` LSTM-with-projection layers
(ours: `BiLstmpStack`; PyTorch: one `torch.nn.LSTM(in, hidden, proj_size=proj)` per layer and direction),
dropout 0.1 between layers, residual connections from the second layer on, the backward LM reading the
reversed sentence, one softmax head per direction (full, or sampled with log-uniform samples shared by the
batch), Adam.  The two are timed in the same process, interleaved step by step (the machine is shared, so
absolute numbers are noisy; the ratio is what to read), and the median of the repeats is reported.

    PYTHONPATH=. .venv/bin/python bench/bilm_train.py --batch-size 32 --seq-len 50 --hidden 512 \\
        --proj 256 --vocab 5000 --threads 2 --impl lstmp --softmax full

Needs `torch` (requirements-bench.txt).  Differences that remain: ours clips the cell and the projection
inside the recurrence (bilm-tf's 3.0), torch.nn.LSTM cannot; `--impl fused` is our approximation (see
elmo_paddle/lstm.py).  The last line is `ratio paddle/torch train: X.XX`.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time


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
    return ap.parse_args(argv)


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


# ---------------------------------------------------------------------------------------------- torch side
def build_torch(a):
    import torch
    import torch.nn as tnn
    import torch.nn.functional as tF

    torch.manual_seed(a.seed)
    V, P, H = a.vocab, a.proj, a.hidden
    S = a.samples if a.softmax == "sampled" else 0

    def reverse_padded(x, lengths):
        T = x.shape[1]
        t = torch.arange(T).unsqueeze(0)
        L = lengths.unsqueeze(1)
        idx = torch.where(t < L, L - 1 - t, t)
        return torch.gather(x, 1, idx.unsqueeze(-1).expand_as(x))

    class Head(tnn.Module):
        def __init__(self):
            super().__init__()
            self.weight = tnn.Parameter(torch.randn(V, P) / math.sqrt(P))
            self.bias = tnn.Parameter(torch.zeros(V))
            self.log_n1 = math.log(V - 2 + 1)

        def log_q(self, ids):
            k = (ids - 2).float()
            return torch.log(torch.log((k + 2.0) / (k + 1.0)) / self.log_n1)

        def nll(self, h, targets, sampled):
            if not sampled or not S:
                return tF.cross_entropy(h @ self.weight.t() + self.bias, targets, reduction="none")
            # same algorithm as elmo_paddle.softmax.sampled_softmax_nll
            u = torch.rand(S, dtype=torch.float64)
            samp = torch.clamp(torch.floor(torch.exp(u * self.log_n1)).long() - 1, 0, V - 3) + 2
            true_logit = (h * self.weight[targets]).sum(-1) + self.bias[targets] - (self.log_q(targets) + math.log(S))
            sl = h @ self.weight[samp].t() + self.bias[samp] - (self.log_q(samp) + math.log(S))
            sl = torch.where(targets.unsqueeze(-1) == samp.unsqueeze(0), torch.full_like(sl, -1e9), sl)
            logits = torch.cat([true_logit.unsqueeze(-1), sl], -1)
            return torch.logsumexp(logits, -1) - true_logit

    class TorchBiLM(tnn.Module):
        def __init__(self):
            super().__init__()
            self.emb = tnn.Embedding(V, P, padding_idx=0)
            self.lstms = tnn.ModuleList([tnn.ModuleList([
                tnn.LSTM(P, H, proj_size=P, batch_first=True) for _ in range(a.layers)]) for _ in range(2)])
            self.drop = tnn.Dropout(0.1)
            self.heads = tnn.ModuleList([Head(), Head()])

        def forward(self, ids):
            lengths = (ids != 0).long().sum(-1)
            tok = self.emb(ids)
            tops = []
            layers = [torch.cat([tok, tok], -1)]
            per_dir = []
            for d, x in enumerate((tok, reverse_padded(tok, lengths))):
                outs = []
                for k, lstm in enumerate(self.lstms[d]):
                    y, _ = lstm(self.drop(x))
                    if k > 0:
                        y = y + x
                    outs.append(y if d == 0 else reverse_padded(y, lengths))
                    x = y
                per_dir.append(outs)
            for f, b in zip(*per_dir):
                layers.append(torch.cat([f, b], -1))
            return layers

        def lm_loss(self, batch, sampled=True):
            top = self.drop(self.forward(batch["inputs"])[-1])
            out = {}
            for d, (name, key) in enumerate((("fwd", "fwd_targets"), ("bwd", "bwd_targets"))):
                h = top[..., d * P:(d + 1) * P].reshape(-1, P)
                t = batch[key].reshape(-1)
                keep = t != 0
                nll = self.heads[d].nll(h[keep], t[keep], sampled and self.training)
                out[f"{name}_nll"] = nll.sum()
                out[f"{name}_count"] = keep.sum().float()
            return out

    model = TorchBiLM()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step(batch):
        model.train()
        out = model.lm_loss(batch)
        loss = (out["fwd_nll"] + out["bwd_nll"]) / (out["fwd_count"] + out["bwd_count"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss)

    def eval_step(ids):
        model.eval()
        with torch.no_grad():
            layers = model(ids)
        return float(layers[-1][0, 0, 0])

    return model, train_step, eval_step


def make_batch(a, rng):
    """Fixed-length LM windows: targets are the next (forward) and previous (backward) tokens."""
    seq = rng.integers(2, a.vocab, size=(a.batch_size, a.seq_len + 2))
    return {"inputs": seq[:, 1:-1], "fwd_targets": seq[:, 2:], "bwd_targets": seq[:, :-2]}


def timed(fn, arg):
    t = time.perf_counter()
    v = fn(arg)
    return time.perf_counter() - t, v


def main(argv=None):
    a = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import elmo_paddle  # noqa: F401  (sets MKL_DEBUG_CPU_TYPE / KMP_BLOCKTIME before paddle loads)
    import numpy as np
    import paddle
    import torch

    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)

    rng = np.random.default_rng(a.seed)
    np_batch = make_batch(a, rng)
    p_batch = {k: paddle.to_tensor(v.astype("int64")) for k, v in np_batch.items()}
    t_batch = {k: torch.from_numpy(v.astype("int64")) for k, v in np_batch.items()}
    _, p_train, p_eval = build_paddle(a)
    _, t_train, t_eval = build_torch(a)
    ntok = a.batch_size * a.seq_len
    print(f"biLM train step: B={a.batch_size} T={a.seq_len} vocab={a.vocab} token/proj={a.proj} "
          f"hidden={a.hidden} layers={a.layers}x2 softmax={a.softmax}"
          f"{f'({a.samples})' if a.softmax == 'sampled' else ''} threads={a.threads} impl={a.impl}; "
          f"paddle {paddle.__version__}, torch {torch.__version__}", flush=True)

    for _ in range(a.warmup):
        p_train(p_batch), t_train(t_batch)
    pt, tt, pl, tl = [], [], [], []
    for r in range(a.repeats):  # interleaved, alternating which goes first
        order = [(p_train, p_batch, pt, pl), (t_train, t_batch, tt, tl)]
        for fn, b, times, losses in (order if r % 2 == 0 else order[::-1]):
            dt, loss = timed(fn, b)
            times.append(dt)
            losses.append(loss)
    p_tps, t_tps = ntok / statistics.median(pt), ntok / statistics.median(tt)
    print(f"paddle train: {p_tps:8.0f} tokens/s  (median {statistics.median(pt) * 1e3:.0f} ms/step, "
          f"min {min(pt) * 1e3:.0f}; loss {pl[0]:.3f} -> {pl[-1]:.3f})")
    print(f"torch  train: {t_tps:8.0f} tokens/s  (median {statistics.median(tt) * 1e3:.0f} ms/step, "
          f"min {min(tt) * 1e3:.0f}; loss {tl[0]:.3f} -> {tl[-1]:.3f})")

    pe, te = [], []
    for _ in range(a.warmup):
        p_eval(p_batch["inputs"]), t_eval(t_batch["inputs"])
    for r in range(a.eval_repeats):
        order = [(p_eval, p_batch["inputs"], pe), (t_eval, t_batch["inputs"], te)]
        for fn, b, times in (order if r % 2 == 0 else order[::-1]):
            times.append(timed(fn, b)[0])
    p_etps, t_etps = ntok / statistics.median(pe), ntok / statistics.median(te)
    print(f"paddle eval (no-grad forward, ELMo layers): {p_etps:8.0f} tokens/s")
    print(f"torch  eval (no-grad forward, ELMo layers): {t_etps:8.0f} tokens/s")
    print(f"ratio paddle/torch eval: {p_etps / t_etps:.2f}")
    print(f"ratio paddle/torch train: {p_tps / t_tps:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
