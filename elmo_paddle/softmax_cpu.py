"""The sampled-softmax loss of pretraining in numpy + MKL: the second kernel of `softmax.sampled_softmax_nll`.

Why: in a CPU training step the reference's paddle ops over `[N, S + 1]` logits (N = 2,048 predicted
tokens, S = 1,024 samples: the hit mask, `where`, `concat`, `cross_entropy` and their backward ops) cost
more than its two GEMMs; this does the same arithmetic with one buffer of exponentials reused from the
forward to the backward pass (measured numbers in `SampledNll`'s docstring).  Same samples (drawn by the
reference's sampler, so the random stream and thus `--resume` are unchanged), same log-Q correction and
accidental-hit removal; tests/test_softmax.py checks values and gradients against the reference.
"""
from __future__ import annotations

import numpy as np
import paddle
from paddle.autograd import PyLayer

from .lstm_cpu import gemm, packed_gemm_available

_HIT = -1e9  # a sampled id equal to the row's target: removed from the softmax, as in the reference


def applies(h: paddle.Tensor) -> bool:
    """float32 on a CPU build with MKL (the same condition as the LSTM's numpy kernel)."""
    return h.dtype == paddle.float32 and h.place.is_cpu_place() and packed_gemm_available()


class SampledNll(PyLayer):
    """Per-token sampled-softmax NLL `[N]` from `h [N, P]`, `weight [V, P]`, `bias [V]`.

    Non-tensor arguments: `targets [N]` and `sampled [S]` (int64 numpy) and their log expected counts
    `logq_true [N]`, `logq_samp [S]` (float32 numpy).  Forward: `l = h W_s^T + b_s - logq_s` with hits set to
    -1e9, `t = <h, w_target> + b_target - logq_target`, NLL = logsumexp([t, l]) - t.  The exponentials stay
    for the backward: `p = softmax * g`, `dh = p W_s + (p_t - g) w_target`, `dW_s = p^T h` scattered to the
    sampled rows (repeated samples add up), and likewise for the targets' rows and the bias.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, targets, sampled, logq_true, logq_samp):
        ctx.needs = [not v.stop_gradient for v in (h, weight, bias)]  # None, not a gradient, for frozen inputs
        hn, w, b = h.numpy(), weight.numpy(), bias.numpy()
        w_s = np.ascontiguousarray(w[sampled])
        w_t = w[targets]
        e = np.empty((hn.shape[0], len(sampled)), dtype=np.float32)
        gemm(hn, w_s, e, trans_b=True)
        e += (b[sampled] - logq_samp)[None]
        np.putmask(e, targets[:, None] == sampled[None], _HIT)
        t = np.einsum("np,np->n", hn, w_t) + b[targets] - logq_true
        m = np.maximum(e.max(axis=1), t)
        e -= m[:, None]
        np.exp(e, out=e)  # exp(l - m); a hit's is 0
        e_t = np.exp(t - m)
        z = e.sum(axis=1) + e_t
        ctx.saved = (hn, w_s, w_t, e, e_t, z, targets, sampled, w.shape[0])
        return paddle.to_tensor((m + np.log(z) - t).astype(np.float32))

    @staticmethod
    def backward(ctx, g):
        hn, w_s, w_t, p, e_t, z, targets, sampled, V = ctx.saved
        ctx.saved = None
        g = g.numpy().astype(np.float32)
        r = g / z
        p *= r[:, None]  # softmax probability of each sampled column, times g
        d_t = (e_t * r - g).astype(np.float32)  # d NLL / d t
        dh = d_t[:, None] * w_t
        gemm(p, w_s, dh, beta=1.0)
        dw_s = np.empty_like(w_s)
        gemm(p, hn, dw_s, trans_a=True)
        dw = np.zeros((V, hn.shape[1]), dtype=np.float32)
        np.add.at(dw, sampled, dw_s)
        np.add.at(dw, targets, d_t[:, None] * hn)
        db = (np.bincount(sampled, weights=p.sum(axis=0), minlength=V)
              + np.bincount(targets, weights=d_t, minlength=V)).astype(np.float32)
        return tuple(paddle.to_tensor(v) if need else None for v, need in zip((dh, dw, db), ctx.needs))
