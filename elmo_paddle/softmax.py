"""Softmax heads for the LM: full, and a real sampled softmax that only computes the sampled logits.

The old Paddle ELMo's "sampled" mode still computed the full [N, V] logits; here the sampled head multiplies
by the weights of the true and the sampled classes only, so training cost no longer grows with V.
Evaluation always uses the full softmax (exact perplexity).
"""
from __future__ import annotations

import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from . import softmax_cpu


def full_softmax_nll(h: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor,
                     targets: paddle.Tensor) -> paddle.Tensor:
    """Per-token negative log-likelihood under the full softmax. h [N, P], weight [V, P], targets [N]."""
    logits = paddle.matmul(h, weight, transpose_y=True) + bias
    # F.cross_entropy is fast on CPU; F.log_softmax is quadratic in V there (measured: 4k classes, 1 s)
    return F.cross_entropy(logits, targets.unsqueeze(-1), reduction="none").squeeze(-1)


class LogUniformSampler:
    """Samples class ids from the log-uniform (Zipf) distribution P(k) = log((k+2)/(k+1)) / log(V+1).

    Appropriate because the vocab is sorted by frequency.  Ids below `offset` (`<PAD>`, never a target) are
    never sampled; `<S>` is a real target of the backward LM, so it must have a finite probability.
    """

    def __init__(self, vocab_size: int, offset: int = 1):
        self.V, self.offset = vocab_size, offset
        n = vocab_size - offset
        self.log_n1 = math.log(n + 1)

    def log_q(self, ids: paddle.Tensor) -> paddle.Tensor:
        k = (ids - self.offset).astype("float32")
        # log1p(1/(k+1)), not log((k+2)/(k+1)): in float32 the ratio rounds, which put log Q 0.05 off for the
        # rare ids of an 800k vocab
        return paddle.log(paddle.log1p(1.0 / (k + 1.0)) / self.log_n1)

    def sample(self, num: int) -> paddle.Tensor:
        n = self.V - self.offset
        u = paddle.rand([num], dtype="float64")
        k = paddle.floor(paddle.exp(u * self.log_n1)).astype("int64") - 1
        return paddle.clip(k, 0, n - 1) + self.offset


def sampled_softmax_nll(h: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor,
                        targets: paddle.Tensor, sampler: LogUniformSampler,
                        num_samples: int) -> paddle.Tensor:
    """Sampled-softmax NLL (Jean et al. 2015) with the log-Q correction and accidental hits removed.

    Samples `num_samples` classes shared by the whole batch, as bilm-tf does, so the cost is
    [N, P] x [P, S] instead of [N, P] x [P, V].  On a CPU build with MKL the loss runs in
    `softmax_cpu.SampledNll` (same samples and arithmetic, fewer passes over the logits), elsewhere in
    `sampled_logits_nll`.
    """
    sampled = sampler.sample(num_samples)  # [S]
    # expected count of a class among S draws with replacement: S * q
    logq_true = sampler.log_q(targets) + math.log(num_samples)
    logq_samp = sampler.log_q(sampled) + math.log(num_samples)
    if softmax_cpu.applies(h):
        return softmax_cpu.SampledNll.apply(h, weight, bias, targets.numpy(), sampled.numpy(),
                                            logq_true.numpy(), logq_samp.numpy())
    return sampled_logits_nll(h, weight, bias, targets, sampled, logq_true, logq_samp)


def sampled_logits_nll(h: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor, targets: paddle.Tensor,
                       sampled: paddle.Tensor, logq_true: paddle.Tensor, logq_samp: paddle.Tensor) -> paddle.Tensor:
    """The reference: per-token NLL of the true class against the `sampled` ones (paddle ops, any device)."""
    w_true = paddle.gather(weight, targets)  # [N, P]
    b_true = paddle.gather(bias, targets)
    true_logit = (h * w_true).sum(-1) + b_true - logq_true  # [N]
    samp_logit = paddle.matmul(h, paddle.gather(weight, sampled), transpose_y=True)
    samp_logit = samp_logit + paddle.gather(bias, sampled) - logq_samp  # [N, S]
    hit = targets.unsqueeze(-1) == sampled.unsqueeze(0)
    samp_logit = paddle.where(hit, paddle.full_like(samp_logit, -1e9), samp_logit)
    logits = paddle.concat([true_logit.unsqueeze(-1), samp_logit], axis=-1)  # the true class is column 0
    # = logsumexp(logits) - true_logit; cross_entropy fuses it (paddle's logsumexp and its backward took
    # ~45 ms per head per elmo_small step on this CPU, most of the softmax's time)
    zeros = paddle.zeros([logits.shape[0], 1], dtype="int64")
    return F.cross_entropy(logits, zeros, reduction="none").squeeze(-1)


class SoftmaxHead(nn.Layer):
    """Output layer of one LM direction: weight [V, P] and bias [V]; full or sampled loss."""

    def __init__(self, vocab_size: int, dim: int, num_samples: int = 0, tied_weight: paddle.Tensor | None = None):
        super().__init__()
        self.num_samples = num_samples if 0 < num_samples < vocab_size - 2 else 0
        if tied_weight is None:
            self.weight = self.create_parameter([vocab_size, dim],
                                                default_initializer=nn.initializer.Normal(0, 1 / math.sqrt(dim)))
        else:
            self.weight = tied_weight
        self.bias = self.create_parameter([vocab_size], is_bias=True)
        self.sampler = LogUniformSampler(vocab_size) if self.num_samples else None

    def nll(self, h: paddle.Tensor, targets: paddle.Tensor, sampled: bool) -> paddle.Tensor:
        """Per-token NLL for h [N, P] and targets [N]; sampled only when asked and configured."""
        if sampled and self.sampler is not None:
            return sampled_softmax_nll(h, self.weight, self.bias, targets, self.sampler, self.num_samples)
        return full_softmax_nll(h, self.weight, self.bias, targets)
