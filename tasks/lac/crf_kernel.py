"""The CRF negative log-likelihood with a hand-written gradient (numpy, float64): the tagger's CPU training path.

Why: autograd through the forward algorithm records ~6 ops per time step and replays them backwards one
step at a time; on CPU that backward took 18x the forward (0.30 s vs 0.017 s for a batch of 32 x 60
characters and 82 tags, one core; RESULTS.md section 3) and made the CRF cost more than the
two BiGRU layers.  The gradient of log Z is known in closed form: the tag marginals from the
forward-backward algorithm.  So one pass computes alpha and beta in numpy and returns

    d nll / d emissions[b, t, j] = P_b(y_t = j) - [tag_t = j]
    d nll / d transitions[i, j]  = sum_{b, t} P_b(y_{t-1} = i, y_t = j) - gold pair counts
    d nll / d start, d end       = first/last-tag marginals minus the gold first/last tags

The reference is `CRF.nll_reference` (paddle autograd, itself checked against brute-force enumeration);
tests/test_lac_model.py compares the two, values and gradients, on ragged batches.
"""
from __future__ import annotations

import numpy as np
import paddle
from paddle.autograd import PyLayer


def _lse_step(prev: np.ndarray, exp_trans: np.ndarray, tmax: float) -> np.ndarray:
    """log sum_i exp(prev[b, i] + trans[i, j]) as a matmul in exp space, shifted by the maxima."""
    pmax = prev.max(axis=1, keepdims=True)
    return np.log(np.maximum((np.exp(prev - pmax)) @ exp_trans, 1e-300)) + pmax + tmax


def forward_backward(em: np.ndarray, trans: np.ndarray, start: np.ndarray, end: np.ndarray,
                     lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log alpha [B,T,N], log beta [B,T,N], log Z [B]) for emissions `em` and per-sequence `lengths` >= 1.

    Past a sequence's end alpha is carried unchanged and beta is `end`, so `alpha[:, L-1]` and `beta[:, L-1]`
    are the last live position's values for every sequence.
    """
    b, t_max, n = em.shape
    tmax = float(trans.max())
    exp_trans = np.exp(trans - tmax)
    alpha = np.empty_like(em)
    beta = np.empty_like(em)
    alpha[:, 0] = start[None] + em[:, 0]
    for t in range(1, t_max):
        live = (t < lengths)[:, None]
        alpha[:, t] = np.where(live, _lse_step(alpha[:, t - 1], exp_trans, tmax) + em[:, t], alpha[:, t - 1])
    beta[:, t_max - 1] = end[None]
    exp_trans_t = np.ascontiguousarray(exp_trans.T)
    for t in range(t_max - 2, -1, -1):
        live = (t + 1 < lengths)[:, None]
        beta[:, t] = np.where(live, _lse_step(em[:, t + 1] + beta[:, t + 1], exp_trans_t, tmax), end[None])
    last = alpha[np.arange(b), lengths - 1] + end[None]
    lmax = last.max(axis=1)
    log_z = np.log(np.exp(last - lmax[:, None]).sum(axis=1)) + lmax
    return alpha, beta, log_z


def gold_score(em: np.ndarray, trans: np.ndarray, start: np.ndarray, end: np.ndarray, tags: np.ndarray,
               lengths: np.ndarray) -> np.ndarray:
    """The unnormalised score of the gold tag sequences [B]."""
    b, t_max, _ = em.shape
    mask = np.arange(t_max)[None] < lengths[:, None]
    emit = np.take_along_axis(em, tags[:, :, None], 2)[:, :, 0]
    pair = trans[tags[:, :-1], tags[:, 1:]] * mask[:, 1:]
    last = tags[np.arange(b), lengths - 1]
    return (emit * mask).sum(1) + pair.sum(1) + start[tags[:, 0]] + end[last]


def nll_grads(em, trans, start, end, tags, lengths, weights, fb):
    """The gradients of sum_b weights[b] * nll[b] w.r.t. (em, trans, start, end); `fb` is
    `forward_backward`'s result for these inputs."""
    b, t_max, n = em.shape
    alpha, beta, log_z = fb
    mask = (np.arange(t_max)[None] < lengths[:, None])
    w = weights[:, None, None]
    unary = np.exp(alpha + beta - log_z[:, None, None]) * mask[:, :, None]   # P(y_t = j)
    gold = np.zeros_like(em)
    np.put_along_axis(gold, tags[:, :, None], 1.0, 2)
    d_em = (unary - gold * mask[:, :, None]) * w
    # pairwise marginals summed over (b, t): one GEMM of row-scaled exp(alpha) and exp(em + beta)
    a = alpha[:, :-1] - alpha[:, :-1].max(2, keepdims=True)
    r = em[:, 1:] + beta[:, 1:]
    rmax = r.max(2, keepdims=True)
    scale = np.exp(alpha[:, :-1].max(2, keepdims=True) + rmax - log_z[:, None, None]) * mask[:, 1:, None] * w
    left = (np.exp(a) * scale).reshape(-1, n)
    right = np.exp(r - rmax).reshape(-1, n)
    d_trans = (left.T @ right) * np.exp(trans)
    pair_counts = np.zeros_like(trans)
    pw = np.broadcast_to(weights[:, None], tags[:, 1:].shape)[mask[:, 1:]]
    np.add.at(pair_counts, (tags[:, :-1][mask[:, 1:]], tags[:, 1:][mask[:, 1:]]), pw)
    d_trans -= pair_counts
    rows = np.arange(b)
    d_start = (unary[:, 0] * weights[:, None]).sum(0)
    np.add.at(d_start, tags[:, 0], -weights)
    last = lengths - 1
    d_end = (unary[rows, last] * weights[:, None]).sum(0)
    np.add.at(d_end, tags[rows, last], -weights)
    return d_em, d_trans, d_start, d_end


class CrfNll(PyLayer):
    """nll [B] = CrfNll.apply(emissions [B,T,N], transitions [N,N], start [N], end [N], tags [B,T], lengths [B])."""

    @staticmethod
    def forward(ctx, emissions, transitions, start, end, tags, lengths):
        arrays = [x.numpy().astype(np.float64) for x in (emissions, transitions, start, end)]
        ctx.inputs = (*arrays, tags.numpy().astype(np.int64), lengths.numpy().astype(np.int64))
        ctx.dtype = emissions.dtype
        alpha, beta, log_z = forward_backward(*arrays, ctx.inputs[5])
        ctx.fb = (alpha, beta, log_z)
        nll = log_z - gold_score(*arrays, *ctx.inputs[4:])
        return paddle.to_tensor(nll.astype(np.float32)).astype(emissions.dtype)

    @staticmethod
    def backward(ctx, grad_nll):
        grads = nll_grads(*ctx.inputs, grad_nll.numpy().astype(np.float64), ctx.fb)
        return (*(paddle.to_tensor(g.astype(np.float32)).astype(ctx.dtype) for g in grads), None, None)
