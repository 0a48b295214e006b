"""LSTM with projection (LSTMP, as in ELMo / bilm-tf), both LM directions computed together.

Two implementations, chosen by `BiLMConfig.lstm_impl`:

* ``"lstmp"`` (default, exact): the LSTMP cell of the paper / bilm-tf.  The recurrent input is the
  projected state h (width P), the cell is clipped and the projection is clipped inside the recurrence.
  Written out because `paddle.nn.LSTM(proj_size=...)` in paddle 3.3.1 drops the fused kernel (~10x slower
  to train here), fails under `to_static` training and hangs in `paddle.inference`.  What makes it fast:
    - the input projection `x W_ih + b` of every step is one big matmul before the recurrence;
    - the forward and the (time-reversed) backward direction are stacked on a leading axis of 2, so each
      step is one batched matmul for both directions;
    - the recurrence is a `PyLayer` with a hand-written backward (BPTT): the forward loop runs without
      autograd bookkeeping, the backward loop needs ~10 small ops a step, and the weight gradients
      (`dW_hh`, `dW_proj`) are two big matmuls over all steps after the loop instead of T small ones
      accumulated step by step.
  Gate layout of the `4H` axis: input, forget, output, candidate (i, f, o, g), so one sigmoid covers i,f,o.
* ``"fused"`` (approximation): per layer and direction a single-layer `paddle.nn.LSTM` (fused C++ kernel)
  followed by a linear projection and the projection clip.  This is *not* an LSTMP: the recurrence runs on
  the full hidden state H rather than the projection, and there is no cell clip.  Kept for comparison.

Layout: the stack takes and returns `[2, B, T, ...]`; index 0 is the forward LM, index 1 the backward LM
whose time axis is already reversed (see `reverse_padded`), so both directions read their sequence left to
right.  Internally the exact layer works time-major, `[2, T, B, ...]`.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.autograd import PyLayer

LSTM_IMPLS = ("lstmp", "fused")


def reverse_padded(x: paddle.Tensor, lengths: paddle.Tensor) -> paddle.Tensor:
    """Reverse each row's first `lengths[b]` steps of `x [B, T, ...]`, leaving the padding in place.

    Applied twice it is the identity; used to feed the backward LM and to align its outputs back to
    sentence order (position t of the output then holds the state that has read tokens t..end).
    """
    B, T = x.shape[0], x.shape[1]
    t = paddle.arange(T, dtype="int64").unsqueeze(0)  # [1, T]
    L = lengths.astype("int64").unsqueeze(1)  # [B, 1]
    idx = paddle.where(t < L, L - 1 - t, t)  # [B, T]
    if x.ndim > 2:
        idx = idx.reshape([B, T] + [1] * (x.ndim - 2)).expand(x.shape)
    return paddle.take_along_axis(x, idx, axis=1)


def _clip(x: paddle.Tensor, v: float | None) -> paddle.Tensor:
    return paddle.clip(x, -v, v) if v else x


def _lstmp_forward(xw, w_hh, w_proj, cell_clip, proj_clip, keep):
    """The LSTMP recurrence without autograd: `xw [2, T, B, 4H]` -> `[2, T, B, P]` (+ what backward needs)."""
    _, T, B, H4 = xw.shape
    H, P = H4 // 4, w_proj.shape[-1]
    h = paddle.zeros([2, B, P], dtype=xw.dtype)
    c = paddle.zeros([2, B, H], dtype=xw.dtype)
    ss, gs, cs, tcs, ms, hs = [], [], [], [], [], []
    for t in range(T):
        gates = xw[:, t] + paddle.bmm(h, w_hh)
        sig, g = paddle.split(gates, [3 * H, H], axis=-1)
        sig, g = F.sigmoid(sig), paddle.tanh(g)
        i, f, o = paddle.split(sig, 3, axis=-1)
        c = _clip(f * c + i * g, cell_clip)
        tc = paddle.tanh(c)
        m = o * tc
        h = _clip(paddle.bmm(m, w_proj), proj_clip)
        hs.append(h)
        if keep:
            ss.append(sig), gs.append(g), cs.append(c), tcs.append(tc), ms.append(m)
    out = paddle.stack(hs, axis=1)  # [2, T, B, P]
    if not keep:
        return out, None
    return out, [paddle.stack(v, axis=1) for v in (ss, gs, cs, tcs, ms)]


class _LstmpRecurrence(PyLayer):
    """The recurrence of an LSTMP layer for both directions at once, with a hand-written backward.

    Inputs: `xw [2, T, B, 4H]` (input projections incl. bias), `w_hh [2, P, 4H]`, `w_proj [2, H, P]`.
    Output: projected states `[2, T, B, P]`.
    """

    @staticmethod
    def forward(ctx, xw, w_hh, w_proj, cell_clip, proj_clip):
        out, saved = _lstmp_forward(xw, w_hh, w_proj, cell_clip, proj_clip, keep=True)
        ctx.save_for_backward(w_hh, w_proj, out, *saved)
        ctx.clips = (cell_clip, proj_clip)
        return out

    @staticmethod
    def backward(ctx, dout):
        w_hh, w_proj, out, S, G, C, TC, M = ctx.saved_tensor()
        cell_clip, proj_clip = ctx.clips
        _, T, B, P = out.shape
        H = G.shape[-1]
        # everything that does not depend on the backward recurrence, computed for all steps at once
        I, Fg, O = paddle.split(S, 3, axis=-1)
        C_prev = paddle.concat([paddle.zeros_like(C[:, :1]), C[:, :-1]], axis=1)
        H_prev = paddle.concat([paddle.zeros_like(out[:, :1]), out[:, :-1]], axis=1)
        A = O * (1 - TC * TC)  # d c / d m  (through tanh(c) and the output gate)
        if cell_clip:
            A = A * (C.abs() < cell_clip).astype(C.dtype)
            F_m = Fg * (C_prev.abs() < cell_clip).astype(C.dtype)
        else:
            F_m = Fg
        # d gates = [dc, dc, dm, dc] * Q, Q folding the gate values and the activation derivatives
        Q = paddle.concat([G, C_prev, TC, I], axis=-1) * paddle.concat([S * (1 - S), 1 - G * G], axis=-1)
        if proj_clip:
            mask_h = (out.abs() < proj_clip).astype(out.dtype)
            dout = dout * mask_h
        w_hh_t = w_hh.transpose([0, 2, 1])
        w_proj_t = w_proj.transpose([0, 2, 1])
        dh = paddle.zeros([2, B, P], dtype=out.dtype)  # gradient reaching h_t from step t+1
        dc_next = paddle.zeros([2, B, H], dtype=out.dtype)  # gradient reaching c_t (clipped) from t+1
        dgs, dps = [None] * T, [None] * T
        for t in range(T - 1, -1, -1):
            dp = dout[:, t] + (dh * mask_h[:, t] if proj_clip else dh)  # grad of the unclipped projection
            dps[t] = dp
            dm = paddle.bmm(dp, w_proj_t)
            # gradient of the unclipped cell c_t: from h_t (A holds the clip mask) and from c_{t+1}
            # (dc_next already carries f_{t+1} and this step's clip mask through F_m)
            dc = dm * A[:, t] + dc_next
            dg = paddle.concat([dc, dc, dm, dc], axis=-1) * Q[:, t]
            dgs[t] = dg
            if t > 0:
                dc_next = dc * F_m[:, t]
                dh = paddle.bmm(dg, w_hh_t)
        dG = paddle.stack(dgs, axis=1)  # [2, T, B, 4H]
        dP = paddle.stack(dps, axis=1)  # [2, T, B, P]
        flat = lambda x: x.reshape([2, T * B, x.shape[-1]])  # noqa: E731
        dw_hh = paddle.bmm(flat(H_prev).transpose([0, 2, 1]), flat(dG))
        dw_proj = paddle.bmm(flat(M).transpose([0, 2, 1]), flat(dP))
        return dG, dw_hh, dw_proj


class BiLstmpLayer(nn.Layer):
    """One exact LSTMP layer for both directions: input `[2, T, B, D]` -> output `[2, T, B, P]` (time-major)."""

    def __init__(self, input_dim: int, hidden_dim: int, proj_dim: int, cell_clip: float | None = 3.0,
                 proj_clip: float | None = 3.0):
        super().__init__()
        self.hidden_dim, self.proj_dim = hidden_dim, proj_dim
        self.cell_clip, self.proj_clip = cell_clip or None, proj_clip or None
        init = nn.initializer.Uniform(-0.05, 0.05)
        self.w_ih = self.create_parameter([2, input_dim, 4 * hidden_dim], default_initializer=init)
        self.w_hh = self.create_parameter([2, proj_dim, 4 * hidden_dim], default_initializer=init)
        # forget-gate bias 1.0 (gates are i, f, o, g): lets gradients flow through time early in training
        b = paddle.zeros([2, 1, 4 * hidden_dim])
        b[:, :, hidden_dim:2 * hidden_dim] = 1.0
        self.bias = self.create_parameter([2, 1, 4 * hidden_dim],
                                          default_initializer=nn.initializer.Assign(b))
        self.w_proj = self.create_parameter([2, hidden_dim, proj_dim], default_initializer=init)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        _, T, B, D = x.shape
        xw = (paddle.bmm(x.reshape([2, T * B, D]), self.w_ih) + self.bias).reshape([2, T, B, -1])
        if not paddle.is_grad_enabled():  # inference: nothing to keep for a backward pass
            with paddle.no_grad():
                return _lstmp_forward(xw, self.w_hh, self.w_proj, self.cell_clip, self.proj_clip, False)[0]
        return _LstmpRecurrence.apply(xw, self.w_hh, self.w_proj, self.cell_clip, self.proj_clip)

    def step_reference(self, x: paddle.Tensor) -> paddle.Tensor:
        """Same as `forward` with plain autograd ops (slow; for tests)."""
        _, T, B, D = x.shape
        H = self.hidden_dim
        xw = (paddle.bmm(x.reshape([2, T * B, D]), self.w_ih) + self.bias).reshape([2, T, B, -1])
        h = paddle.zeros([2, B, self.proj_dim], dtype=x.dtype)
        c = paddle.zeros([2, B, H], dtype=x.dtype)
        outs = []
        for t in range(T):
            gates = xw[:, t] + paddle.bmm(h, self.w_hh)
            i, f, o, g = paddle.split(gates, 4, axis=-1)
            c = _clip(F.sigmoid(f) * c + F.sigmoid(i) * paddle.tanh(g), self.cell_clip)
            h = _clip(paddle.bmm(F.sigmoid(o) * paddle.tanh(c), self.w_proj), self.proj_clip)
            outs.append(h)
        return paddle.stack(outs, axis=1)


class FusedBiLstmLayer(nn.Layer):
    """Approximate LSTMP with fused kernels: per direction `nn.LSTM(D, H)` -> Linear(H, P) -> proj clip.

    The recurrence runs on the full hidden state (H) and there is no cell clip, unlike a true LSTMP.
    Input `[2, T, B, D]` -> output `[2, T, B, P]` (time-major, like `BiLstmpLayer`).
    """

    def __init__(self, input_dim: int, hidden_dim: int, proj_dim: int, cell_clip: float | None = 3.0,
                 proj_clip: float | None = 3.0):
        super().__init__()
        del cell_clip  # not supported by the fused kernel
        self.proj_clip = proj_clip or None
        self.rnns = nn.LayerList([nn.LSTM(input_dim, hidden_dim, time_major=True) for _ in range(2)])
        init = nn.initializer.Uniform(-0.05, 0.05)
        self.w_proj = self.create_parameter([2, hidden_dim, proj_dim], default_initializer=init)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        _, T, B, _ = x.shape
        hs = paddle.stack([self.rnns[d](x[d])[0] for d in range(2)], axis=0)  # [2, T, B, H]
        y = paddle.bmm(hs.reshape([2, T * B, -1]), self.w_proj).reshape([2, T, B, -1])
        return _clip(y, self.proj_clip)


class BiLstmpStack(nn.Layer):
    """`num_layers` bidirectional layers with dropout and residual connections from the second layer on."""

    def __init__(self, input_dim: int, hidden_dim: int, proj_dim: int, num_layers: int = 2,
                 cell_clip: float | None = 3.0, proj_clip: float | None = 3.0, dropout: float = 0.1,
                 residual: bool = True, impl: str = "lstmp"):
        super().__init__()
        if impl not in LSTM_IMPLS:
            raise ValueError(f"lstm impl must be one of {LSTM_IMPLS}, not {impl!r}")
        cls = BiLstmpLayer if impl == "lstmp" else FusedBiLstmLayer
        self.impl = impl
        self.layers = nn.LayerList([
            cls(input_dim if k == 0 else proj_dim, hidden_dim, proj_dim, cell_clip, proj_clip)
            for k in range(num_layers)])
        self.dropout = nn.Dropout(dropout)
        self.residual = residual

    def forward(self, x: paddle.Tensor) -> list[paddle.Tensor]:
        """x `[2, B, T, D]` -> list of each layer's output `[2, B, T, P]` (after the residual add)."""
        x = x.transpose([0, 2, 1, 3])  # time-major inside
        outs = []
        for k, layer in enumerate(self.layers):
            y = layer(self.dropout(x))
            if self.residual and k > 0:
                y = y + x
            outs.append(y.transpose([0, 2, 1, 3]))
            x = y
        return outs
