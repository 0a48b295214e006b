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
right.  Internally the layers work on `[T, 2, F, B]` (time, direction, feature, batch).
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
    idx = paddle.where(t < L, L - 1 - t, t) + paddle.arange(B, dtype="int64").unsqueeze(1) * T  # flat row of each
    # one row gather: an index the size of x (take_along_axis) costs more than the move itself
    return paddle.gather(x.reshape([B * T] + list(x.shape[2:])), idx.reshape([-1])).reshape(x.shape)


def _clip(x: paddle.Tensor, v: float | None) -> paddle.Tensor:
    return paddle.clip(x, -v, v) if v else x


def _lstmp_forward(x, w_cat, bias, w_proj, cell_clip, proj_clip, keep):
    """The LSTMP recurrence without autograd.

    `x [T, 2, D, B]`, `w_cat [2, 4H, D + P]` (= [W_ih | W_hh]), `bias [2, 4H, 1]`, `w_proj [2, P, H]`
    -> `[T, 2, P, B]`, plus (when `keep`) the per-step values the backward pass needs.
    """
    T, _, D, B = x.shape
    H, P = w_proj.shape[2], w_proj.shape[1]
    h = paddle.zeros([2, P, B], dtype=x.dtype)
    c = paddle.zeros([2, H, B], dtype=x.dtype)
    hs, saved = [], []
    for t in range(T):
        xh = paddle.concat([x[t], h], axis=1)  # [2, D + P, B]
        gates = paddle.matmul(w_cat, xh) + bias  # [2, 4H, B]: one GEMM for input and recurrent part
        sig, g = paddle.split(gates, [3 * H, H], axis=1)
        sig, g = F.sigmoid(sig), paddle.tanh(g)
        i, f, o = paddle.split(sig, 3, axis=1)
        c_prev = c
        c = _clip(f * c + i * g, cell_clip)
        tc = paddle.tanh(c)
        m = o * tc
        h = _clip(paddle.matmul(w_proj, m), proj_clip)
        hs.append(h)
        if keep:
            saved.append((xh, sig, g, c_prev, c, tc, m, h))
    return paddle.stack(hs, axis=0), saved


class _LstmpRecurrence(PyLayer):
    """An LSTMP layer for both directions at once, with a hand-written backward (BPTT).

    Inputs: `x [T, 2, D, B]`, `w_ih [2, 4H, D]`, `w_hh [2, 4H, P]`, `bias [2, 4H, 1]`, `w_proj [2, P, H]`.
    Output: projected states `[T, 2, P, B]`.  Everything is laid out feature-major (`[.., F, B]`) because
    MKL is much faster at `W @ h` with W `[4H, P]` and h `[P, 32]` than at `h @ W` (measured 1.6x), and
    the gate blocks are then contiguous.  Per step the backward needs two small GEMMs and ~20 small
    element-wise ops; the weight and input gradients are big GEMMs over all steps after the loop.
    """

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, bias, w_proj, cell_clip, proj_clip):
        w_cat = paddle.concat([w_ih, w_hh], axis=2)
        out, saved = _lstmp_forward(x, w_cat, bias, w_proj, cell_clip, proj_clip, keep=True)
        ctx.saved = saved
        ctx.save_for_backward(w_ih, w_hh, w_proj)
        ctx.clips = (cell_clip, proj_clip)
        # PyLayer wants None, not a gradient, for inputs that do not require one (frozen x or weights)
        ctx.needs = [not v.stop_gradient for v in (x, w_ih, w_hh, bias, w_proj)]
        return out

    @staticmethod
    def backward(ctx, dout):
        w_ih, w_hh, w_proj = ctx.saved_tensor()
        saved, ctx.saved = ctx.saved, None
        cell_clip, proj_clip = ctx.clips
        T, _, P, B = dout.shape
        H, D = w_proj.shape[2], w_ih.shape[2]
        dh = None  # gradient reaching h_t from step t+1
        dc_next = None  # gradient reaching c_t (after the clip) from step t+1
        dgs, dps = [None] * T, [None] * T
        for t in range(T - 1, -1, -1):
            xh, sig, g, c_prev, c, tc, m, h = saved[t]
            dp = dout[t] if dh is None else dout[t] + dh
            if proj_clip:  # gradient of the projection before its clip
                dp = dp * (h.abs() < proj_clip).astype(dp.dtype)
            dps[t] = dp
            dm = paddle.matmul(w_proj, dp, transpose_x=True)  # [2, H, B]
            i, f, o = paddle.split(sig, 3, axis=1)
            dc = dm * o * (1.0 - tc * tc)
            if dc_next is not None:
                dc = dc + dc_next
            if cell_clip:  # gradient of the cell before its clip
                dc = dc * (c.abs() < cell_clip).astype(dc.dtype)
            dsig = paddle.concat([dc * g, dc * c_prev, dm * tc], axis=1) * (sig - sig * sig)
            dgg = dc * i * (1.0 - g * g)
            dg = paddle.concat([dsig, dgg], axis=1)  # [2, 4H, B]
            dgs[t] = dg
            if t > 0:
                dc_next = dc * f
                dh = paddle.matmul(w_hh, dg, transpose_x=True)  # [2, P, B]
        need_x, need_ih, need_hh, need_b, need_proj = ctx.needs
        dG = paddle.stack(dgs, axis=2).reshape([2, 4 * H, T * B])
        dx = dw_ih = dw_hh = dbias = dw_proj = None
        if need_ih or need_hh:
            XH = paddle.stack([s[0] for s in saved], axis=2).reshape([2, D + P, T * B])
            dw_cat = paddle.matmul(dG, XH, transpose_y=True)  # [2, 4H, D + P]
            dw_ih, dw_hh = paddle.split(dw_cat, [D, P], axis=2)
            dw_ih, dw_hh = (dw_ih if need_ih else None), (dw_hh if need_hh else None)
        if need_b:
            dbias = dG.sum(axis=2, keepdim=True)
        if need_x:
            dx = paddle.matmul(w_ih, dG, transpose_x=True).reshape([2, D, T, B]).transpose([2, 0, 1, 3])
        if need_proj:
            dP = paddle.stack(dps, axis=2).reshape([2, P, T * B])
            M = paddle.stack([s[6] for s in saved], axis=2).reshape([2, H, T * B])
            dw_proj = paddle.matmul(dP, M, transpose_y=True)  # [2, P, H]
        return dx, dw_ih, dw_hh, dbias, dw_proj


class BiLstmpLayer(nn.Layer):
    """One exact LSTMP layer for both directions: `[T, 2, D, B]` -> `[T, 2, P, B]` (see `BiLstmpStack`).

    Weights are stored as PyTorch does: `w_ih [2, 4H, D]`, `w_hh [2, 4H, P]`, `w_proj [2, P, H]`, and
    `bias [2, 4H, 1]`; index 0 of the leading axis is the forward LM, 1 the backward LM.
    """

    def __init__(self, input_dim: int, hidden_dim: int, proj_dim: int, cell_clip: float | None = 3.0,
                 proj_clip: float | None = 3.0):
        super().__init__()
        self.hidden_dim, self.proj_dim = hidden_dim, proj_dim
        self.cell_clip, self.proj_clip = cell_clip or None, proj_clip or None
        init = nn.initializer.Uniform(-0.05, 0.05)
        self.w_ih = self.create_parameter([2, 4 * hidden_dim, input_dim], default_initializer=init)
        self.w_hh = self.create_parameter([2, 4 * hidden_dim, proj_dim], default_initializer=init)
        # forget-gate bias 1.0 (gates are i, f, o, g): lets gradients flow through time early in training
        b = paddle.zeros([2, 4 * hidden_dim, 1])
        b[:, hidden_dim:2 * hidden_dim] = 1.0
        self.bias = self.create_parameter([2, 4 * hidden_dim, 1],
                                          default_initializer=nn.initializer.Assign(b))
        self.w_proj = self.create_parameter([2, proj_dim, hidden_dim], default_initializer=init)

    def freeze_inference_weights(self, frozen: bool = True) -> None:
        """Promise the weights no longer change, so inference may use a packed snapshot of them.

        On a CPU paddle with MKL, no-grad calls then run `lstm_cpu.PackedLstmp` (1.4-1.7x faster per layer,
        measured).  `Elmo` calls this for the frozen biLM layers; `frozen=False` drops the snapshot.
        """
        from .lstm_cpu import PackedLstmp, packed_gemm_available

        self._packed = None
        if frozen and packed_gemm_available() and self.w_ih.dtype == paddle.float32 and self.w_ih.place.is_cpu_place():
            self._packed = PackedLstmp(self.w_ih.numpy(), self.w_hh.numpy(), self.bias.numpy(), self.w_proj.numpy(),
                                       self.cell_clip, self.proj_clip)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        packed = getattr(self, "_packed", None)
        if packed is not None and not paddle.is_grad_enabled() and x.place.is_cpu_place():
            return paddle.to_tensor(packed(x.numpy()))
        if not paddle.is_grad_enabled():  # inference: nothing to keep for a backward pass
            w_cat = paddle.concat([self.w_ih, self.w_hh], axis=2)
            return _lstmp_forward(x, w_cat, self.bias, self.w_proj, self.cell_clip, self.proj_clip, False)[0]
        return _LstmpRecurrence.apply(x, self.w_ih, self.w_hh, self.bias, self.w_proj,
                                      self.cell_clip, self.proj_clip)

    def step_reference(self, x: paddle.Tensor) -> paddle.Tensor:
        """Same as `forward` with plain autograd ops (slow; for tests)."""
        T, _, _, B = x.shape
        H = self.hidden_dim
        h = paddle.zeros([2, self.proj_dim, B], dtype=x.dtype)
        c = paddle.zeros([2, H, B], dtype=x.dtype)
        outs = []
        for t in range(T):
            gates = paddle.matmul(self.w_ih, x[t]) + paddle.matmul(self.w_hh, h) + self.bias
            i, f, o, g = paddle.split(gates, 4, axis=1)
            c = _clip(F.sigmoid(f) * c + F.sigmoid(i) * paddle.tanh(g), self.cell_clip)
            h = _clip(paddle.matmul(self.w_proj, F.sigmoid(o) * paddle.tanh(c)), self.proj_clip)
            outs.append(h)
        return paddle.stack(outs, axis=0)


class FusedBiLstmLayer(nn.Layer):
    """Approximate LSTMP with fused kernels: per direction `nn.LSTM(D, H)` -> Linear(H, P) -> proj clip.

    The recurrence runs on the full hidden state (H) and there is no cell clip, unlike a true LSTMP.
    Input `[T, 2, D, B]` -> output `[T, 2, P, B]` (the layout of `BiLstmpLayer`).
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
        T, _, _, B = x.shape
        hs = paddle.stack([self.rnns[d](x[:, d].transpose([0, 2, 1]))[0] for d in range(2)], axis=0)
        y = paddle.bmm(hs.reshape([2, T * B, -1]), self.w_proj)  # [2, T*B, P]
        return _clip(y.reshape([2, T, B, -1]).transpose([1, 0, 3, 2]), self.proj_clip)


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
        x = x.transpose([2, 0, 3, 1])  # inside: [T, 2, D, B], each step's [2, D, B] contiguous
        outs = []
        for k, layer in enumerate(self.layers):
            y = layer(self.dropout(x) if self.training else x)  # eval dropout is the identity, yet a copy
            if self.residual and k > 0:
                y = y + x
            outs.append(y.transpose([1, 3, 0, 2]))
            x = y
        return outs
