"""The PyTorch side of bench/bilm_train.py: the same biLM as `elmo_paddle.bilm.BiLM`, built from torch parts.

Token embedding (width = proj), per direction one `torch.nn.LSTM(in, hidden, proj_size=proj)` per layer, dropout
0.1 between layers, residual connections from the second layer on, the backward LM reading the reversed
sentence, one softmax head per direction (full, or sampled as `elmo_paddle.softmax.sampled_softmax_nll` samples),
Adam.  Imported only by the torch worker process: torch is a benchmark-only requirement (requirements-bench.txt).
"""
from __future__ import annotations

import math

import torch
import torch.nn as tnn
import torch.nn.functional as tF


def reverse_padded(x, lengths):
    """Reverse each row's first `lengths[i]` steps, leave the padding where it is.  x: [B, T, D]."""
    t = torch.arange(x.shape[1]).unsqueeze(0)
    L = lengths.unsqueeze(1)
    idx = torch.where(t < L, L - 1 - t, t)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand_as(x))


class Head(tnn.Module):
    """One direction's softmax: full cross-entropy, or sampled softmax with S log-uniform samples per batch."""

    def __init__(self, vocab: int, proj: int, samples: int):
        super().__init__()
        self.weight = tnn.Parameter(torch.randn(vocab, proj) / math.sqrt(proj))
        self.bias = tnn.Parameter(torch.zeros(vocab))
        self.vocab, self.samples = vocab, samples
        self.log_n1 = math.log(vocab - 2 + 1)

    def log_q(self, ids):
        k = (ids - 2).float()
        return torch.log(torch.log((k + 2.0) / (k + 1.0)) / self.log_n1)

    def nll(self, h, targets, sampled):
        S = self.samples
        if not sampled or not S:
            return tF.cross_entropy(h @ self.weight.t() + self.bias, targets, reduction="none")
        # the algorithm of elmo_paddle.softmax.sampled_softmax_nll
        u = torch.rand(S, dtype=torch.float64)
        samp = torch.clamp(torch.floor(torch.exp(u * self.log_n1)).long() - 1, 0, self.vocab - 3) + 2
        true_logit = (h * self.weight[targets]).sum(-1) + self.bias[targets] - (self.log_q(targets) + math.log(S))
        sl = h @ self.weight[samp].t() + self.bias[samp] - (self.log_q(samp) + math.log(S))
        sl = torch.where(targets.unsqueeze(-1) == samp.unsqueeze(0), torch.full_like(sl, -1e9), sl)
        logits = torch.cat([true_logit.unsqueeze(-1), sl], -1)
        return torch.logsumexp(logits, -1) - true_logit


class TorchBiLM(tnn.Module):
    """forward(ids [B, T]) -> the ELMo layers, each [B, T, 2 * proj]; lm_loss(batch) -> summed NLL and counts."""

    def __init__(self, vocab: int, proj: int, hidden: int, layers: int, samples: int):
        super().__init__()
        self.proj = proj
        self.emb = tnn.Embedding(vocab, proj, padding_idx=0)
        self.lstms = tnn.ModuleList([tnn.ModuleList([
            tnn.LSTM(proj, hidden, proj_size=proj, batch_first=True) for _ in range(layers)]) for _ in range(2)])
        self.drop = tnn.Dropout(0.1)
        self.heads = tnn.ModuleList([Head(vocab, proj, samples), Head(vocab, proj, samples)])

    def forward(self, ids):
        lengths = (ids != 0).long().sum(-1)
        tok = self.emb(ids)
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
        return [torch.cat([tok, tok], -1)] + [torch.cat([f, b], -1) for f, b in zip(*per_dir)]

    def lm_loss(self, batch, sampled=True):
        top = self.drop(self.forward(batch["inputs"])[-1])
        P, out = self.proj, {}
        for d, (name, key) in enumerate((("fwd", "fwd_targets"), ("bwd", "bwd_targets"))):
            h = top[..., d * P:(d + 1) * P].reshape(-1, P)
            t = batch[key].reshape(-1)
            keep = t != 0
            nll = self.heads[d].nll(h[keep], t[keep], sampled and self.training)
            out[f"{name}_nll"] = nll.sum()
            out[f"{name}_count"] = keep.sum().float()
        return out


def build(a):
    """(model, train_step(batch) -> loss, eval_step(ids) -> a float) from bench/bilm_train.py's arguments."""
    torch.manual_seed(a.seed)
    model = TorchBiLM(a.vocab, a.proj, a.hidden, a.layers, a.samples if a.softmax == "sampled" else 0)
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
