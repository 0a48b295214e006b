"""LSTM with projection (LSTMP, as in ELMo / bilm-tf), both LM directions computed together.

Two implementations, chosen by `BiLMConfig.lstm_impl`:

* ``"lstmp"`` (default, exact): the LSTMP cell of the paper / bilm-tf.  The recurrent input is the
  projected state h (width P), the cell is clipped and the projection is clipped inside the recurrence.
  Written out because `paddle.nn.LSTM(proj_size=...)` in paddle 3.3.1 drops the fused kernel (~10x slower
  to train here), fails under `to_static` training and hangs in `paddle.inference`.
  The cell is written once, `lstmp_step`; `BiLstmpLayer` runs it with one of three drivers: the training
  `PyLayer` (hand-written BPTT), a plain no-grad loop (inference), a `while_loop` (export under `to_static`).
  `lstm_cpu.PackedLstmp` is the one second kernel (numpy + MKL packed GEMM, frozen CPU inference), tested
  against the same float64 reference as `lstmp_step` (tests/test_lstm.py).  What makes training fast:
    - the forward and the (time-reversed) backward direction are stacked on a leading axis of 2, and the
      input and recurrent parts are one GEMM `[W_ih | W_hh] @ [x_t; h]`, so a step is one batched matmul
      for both directions;
    - the recurrence is a `PyLayer` with a hand-written backward (BPTT): the forward loop runs without
      autograd bookkeeping, the backward loop needs ~10 small ops a step, and the weight gradients
      are big matmuls over all steps after the loop instead of T small ones accumulated step by step.
  Gate layout of the `4H` axis: input, forget, output, candidate (i, f, o, g), so one sigmoid covers i,f,o.
* ``"fused"`` (approximation): per layer and direction a single-layer `paddle.nn.LSTM` (fused C++ kernel)
  followed by a linear projection and the projection clip.  This is *not* an LSTMP: the recurrence runs on
  the full hidden state H rather than the projection, and there is no cell clip.  Kept for comparison.

Layout: the stack takes and returns `[2, B, T, ...]`; index 0 is the forward LM, index 1 the backward LM
whose time axis is already reversed (see `reverse_padded`), so both directions read their sequence left to
right.  Internally the layers work on `[T, 2, F, B]` (time, direction, feature, batch).
"""
from __future__ import annotations

from typing import NamedTuple

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.autograd import PyLayer

from .bf16_gemm import available as bf16_available
from .lstm_cpu import PackedLstmp, packed_gemm_available

LSTM_IMPLS = ("lstmp", "fused")


def reverse_index(lengths: paddle.Tensor, T) -> paddle.Tensor:
    """`[B, T]` time index that reverses each row's first `lengths[b]` steps and keeps the padding in place.

    `T` may be an int or a 0-d/1-element tensor (`paddle.shape(x)[1]` under `to_static`).  The one definition
    of the reversal: `reverse_padded` gathers with it, the numpy inference path (`lstm_cpu.bilm_layers`)
    takes it as an array.
    """
    t = paddle.arange(T, dtype="int64").unsqueeze(0)  # [1, T]
    L = lengths.astype("int64").unsqueeze(1)  # [B, 1]
    return paddle.where(t < L, L - 1 - t, t + L * 0)  # (+ L * 0: both branches [B, T] under to_static)


def reverse_padded(x: paddle.Tensor, lengths: paddle.Tensor) -> paddle.Tensor:
    """Reverse each row's first `lengths[b]` steps of `x [B, T, ...]`, leaving the padding in place.

    Applied twice it is the identity; used to feed the backward LM and to align its outputs back to
    sentence order (position t of the output then holds the state that has read tokens t..end).
    Shapes are read with `paddle.shape`, so the same function runs eagerly and under `to_static` (export).
    """
    shape = paddle.shape(x)
    B, T = shape[0], shape[1]
    idx = reverse_index(lengths, T) + paddle.arange(B, dtype="int64").unsqueeze(1) * T  # flat row of each
    # one row gather: an index the size of x (take_along_axis) costs more than the move itself
    flat = x.reshape([-1] + list(x.shape[2:]))
    return paddle.gather(flat, idx.reshape([-1])).reshape(shape)


def _clip(x: paddle.Tensor, v: float | None) -> paddle.Tensor:
    return paddle.clip(x, -v, v) if v else x


class LstmpWeights(NamedTuple):
    """One LSTMP layer's weights for both directions, feature-major: `w_cat [2, 4H, D + P]` (= [W_ih | W_hh]),
    `bias [2, 4H, 1]`, `w_proj [2, P, H]`; gates i, f, o, g along 4H."""

    w_cat: paddle.Tensor
    bias: paddle.Tensor
    w_proj: paddle.Tensor
    cell_clip: float | None
    proj_clip: float | None


def lstmp_step(xh: paddle.Tensor, c: paddle.Tensor, w: LstmpWeights) -> tuple[paddle.Tensor, ...]:
    """THE LSTMP cell (the only definition; every paddle path runs it, the packed numpy kernel is tested against it).

    `xh [2, D + P, B]` = [x_t; h_{t-1}], `c [2, H, B]` = c_{t-1} -> `(sig, g, c, tc, m, h)`: the i/f/o gate
    sigmoids `[2, 3H, B]`, the candidate `g = tanh(.)`, the clipped cell c_t, `tanh(c_t)`, `m = o * tanh(c_t)`
    and the clipped projection h_t `[2, P, B]` (the backward pass needs the intermediate values).
    One GEMM covers the input and the recurrent part; one sigmoid covers i, f, o.
    """
    H = w.w_proj.shape[2]
    gates = paddle.matmul(w.w_cat, xh) + w.bias  # [2, 4H, B]
    sig, g = paddle.split(gates, [3 * H, H], axis=1)
    sig, g = F.sigmoid(sig), paddle.tanh(g)
    i, f, o = paddle.split(sig, 3, axis=1)
    c = _clip(f * c + i * g, w.cell_clip)
    tc = paddle.tanh(c)
    m = o * tc
    h = _clip(paddle.matmul(w.w_proj, m), w.proj_clip)
    return sig, g, c, tc, m, h


def _lstmp_loop(x: paddle.Tensor, w: LstmpWeights, keep: bool) -> tuple[paddle.Tensor, list]:
    """`lstmp_step` over time, eagerly: `x [T, 2, D, B]` -> `[T, 2, P, B]`, plus (when `keep`) each step's
    values for the hand-written backward.  Differentiable by paddle's autograd when called outside the PyLayer."""
    T, _, _, B = x.shape
    H, P = w.w_proj.shape[2], w.w_proj.shape[1]
    h = paddle.zeros([2, P, B], dtype=x.dtype)
    c = paddle.zeros([2, H, B], dtype=x.dtype)
    hs, saved = [], []
    for t in range(T):
        xh = paddle.concat([x[t], h], axis=1)  # [2, D + P, B]
        c_prev = c
        sig, g, c, tc, m, h = lstmp_step(xh, c, w)
        hs.append(h)
        if keep:
            saved.append((xh, sig, g, c_prev, c, tc, m, h))
    return paddle.stack(hs, axis=0), saved


def _lstmp_while_loop(x: paddle.Tensor, w: LstmpWeights) -> paddle.Tensor:
    """`lstmp_step` over time as a `paddle.static.nn.while_loop` with a tensor-valued length (for `to_static`).

    A Python `for t in range(T)` is traced with the symbolic T (-1) and saves a wrong program; this loop runs
    the same cell for any T in the exported model.
    """
    shape = paddle.shape(x)
    H, P = w.w_proj.shape[2], w.w_proj.shape[1]
    zeros = paddle.zeros_like(x[0, :, :1, :])  # [2, 1, B]: B is dynamic
    h0, c0 = zeros.tile([1, P, 1]), zeros.tile([1, H, 1])
    outs0 = paddle.zeros_like(x[:, :, :1, :]).tile([1, 1, P, 1])  # [T, 2, P, B]

    def body(t, h, c, outs):
        xh = paddle.concat([paddle.gather(x, t).squeeze(0), h], axis=1)
        _, _, c, _, _, h = lstmp_step(xh, c, w)
        return t + 1, h, c, paddle.scatter(outs, t, h.unsqueeze(0))

    t0 = paddle.zeros([1], dtype="int64")
    return paddle.static.nn.while_loop(lambda t, h, c, outs: t < shape[0], body, [t0, h0, c0, outs0])[3]


class _LstmpRecurrence(PyLayer):
    """An LSTMP layer for both directions at once, with a hand-written backward (BPTT).

    Inputs: `x [T, 2, D, B]`, `w_ih [2, 4H, D]`, `w_hh [2, 4H, P]`, `bias [2, 4H, 1]`, `w_proj [2, P, H]`.
    Output: projected states `[T, 2, P, B]`.  Everything is laid out feature-major (`[.., F, B]`) because
    MKL is much faster at `W @ h` with W `[4H, P]` and h `[P, 32]` than at `h @ W` (measured 1.6x), and
    the gate blocks are then contiguous.  On a CPU build with MKL both passes run the numpy kernel
    (`lstm_cpu.PackedLstmp`, its own BPTT); elsewhere the forward is `_lstmp_loop` (no autograd bookkeeping
    inside a PyLayer) and the backward `_bptt` (two small GEMMs and ~20 small element-wise ops a step) with
    the weight and input gradients as big GEMMs over all steps after the loop.
    """

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, bias, w_proj, cell_clip, proj_clip):
        # PyLayer wants None, not a gradient, for inputs that do not require one (frozen x or weights)
        ctx.needs = [not v.stop_gradient for v in (x, w_ih, w_hh, bias, w_proj)]
        if numpy_kernel_applies(x):
            ctx.kernel = numpy_kernel(w_ih, w_hh, bias, w_proj, cell_clip, proj_clip, bf16_available())
            return paddle.to_tensor(ctx.kernel(x.numpy(), keep=True))
        ctx.kernel = None
        w = LstmpWeights(paddle.concat([w_ih, w_hh], axis=2), bias, w_proj, cell_clip, proj_clip)
        out, ctx.saved = _lstmp_loop(x, w, keep=True)
        ctx.save_for_backward(w_ih, w_hh, w_proj)
        ctx.clips = (cell_clip, proj_clip)
        return out

    @staticmethod
    def backward(ctx, dout):
        if ctx.kernel is not None:
            grads = ctx.kernel.backward(dout.numpy())
            ctx.kernel = None
            return tuple(paddle.to_tensor(g) if need else None for g, need in zip(grads, ctx.needs))
        w_ih, w_hh, w_proj = ctx.saved_tensor()
        saved, ctx.saved = ctx.saved, None
        dgs, dps = _bptt(saved, dout, w_hh, w_proj, *ctx.clips)
        return _weight_and_input_grads(saved, dgs, dps, w_ih, w_proj, ctx.needs)


def numpy_kernel_applies(x: paddle.Tensor) -> bool:
    """Run `lstm_cpu.PackedLstmp` (numpy + MKL packed GEMM) where it can: float32 on a CPU build with MKL."""
    return x.dtype == paddle.float32 and x.place.is_cpu_place() and packed_gemm_available()


def numpy_kernel(w_ih, w_hh, bias, w_proj, cell_clip, proj_clip, bf16: bool = False) -> PackedLstmp:
    """The numpy kernel over a snapshot of these weights (training step, no-grad call, frozen biLM; `bf16`:
    the frozen biLM's opt-in AMX path, see `bf16_gemm`)."""
    return PackedLstmp(*(v.numpy() for v in (w_ih, w_hh, bias, w_proj)), cell_clip, proj_clip, bf16)


def _bptt(saved: list, dout: paddle.Tensor, w_hh, w_proj, cell_clip, proj_clip) -> tuple[list, list]:
    """Backward through time: each step's gate gradients `[2, 4H, B]` and projection gradients `[2, P, B]`."""
    T = dout.shape[0]
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
        dgs[t] = paddle.concat([dsig, dc * i * (1.0 - g * g)], axis=1)  # [2, 4H, B]
        if t > 0:
            dc_next = dc * f
            dh = paddle.matmul(w_hh, dgs[t], transpose_x=True)  # [2, P, B]
    return dgs, dps


def _weight_and_input_grads(saved, dgs, dps, w_ih, w_proj, needs):
    """`(dx, dw_ih, dw_hh, dbias, dw_proj)` as big GEMMs over all steps (None where no gradient is wanted)."""
    T, B = len(saved), dgs[0].shape[2]
    H, D, P = w_proj.shape[2], w_ih.shape[2], w_proj.shape[1]
    need_x, need_ih, need_hh, need_b, need_proj = needs
    dG = paddle.stack(dgs, axis=2).reshape([2, 4 * H, T * B])
    dx = dw_ih = dw_hh = dbias = dw_proj = None
    if need_ih or need_hh:
        XH = paddle.stack([s[0] for s in saved], axis=2).reshape([2, D + P, T * B])
        dw_ih, dw_hh = paddle.split(paddle.matmul(dG, XH, transpose_y=True), [D, P], axis=2)  # of [2, 4H, D + P]
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
    `bias [2, 4H, 1]`; index 0 of the leading axis is the forward LM, 1 the backward LM.  `forward` runs
    `lstmp_step` in one of three drivers, chosen by what the call needs: the hand-written-backward PyLayer
    when a gradient is recorded, a plain loop when none is (inference), a `while_loop` under `to_static`;
    on a CPU build with MKL the first two run the numpy kernel `lstm_cpu.PackedLstmp` instead.
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

    def weights(self) -> LstmpWeights:
        """The weights in the layout `lstmp_step` takes (differentiable: a concat of the parameters)."""
        return LstmpWeights(paddle.concat([self.w_ih, self.w_hh], axis=2), self.bias, self.w_proj,
                            self.cell_clip, self.proj_clip)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not paddle.in_dynamic_mode():  # traced by to_static (export)
            return _lstmp_while_loop(x, self.weights())
        params = (self.w_ih, self.w_hh, self.bias, self.w_proj)
        if paddle.is_grad_enabled() and not all(v.stop_gradient for v in (x,) + params):
            return _LstmpRecurrence.apply(x, *params, self.cell_clip, self.proj_clip)
        with paddle.no_grad():  # nothing to differentiate: no per-step values kept
            if numpy_kernel_applies(x):  # e.g. dev perplexity during pretraining
                return paddle.to_tensor(self.numpy_kernel(bf16_available())(x.numpy()))
            return _lstmp_loop(x, self.weights(), keep=False)[0]

    def numpy_kernel(self, bf16: bool = False) -> PackedLstmp:
        """`lstm_cpu.PackedLstmp` over a snapshot of the current weights."""
        return numpy_kernel(self.w_ih, self.w_hh, self.bias, self.w_proj, self.cell_clip, self.proj_clip, bf16)

    def autograd_forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """`forward` through paddle's autograd instead of the hand-written backward (the reference in tests)."""
        return _lstmp_loop(x, self.weights(), keep=False)[0]


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


def bidirectional_layers(stack: "BiLstmpStack", x: paddle.Tensor, lengths: paddle.Tensor) -> list[paddle.Tensor]:
    """Run `stack` forward over `x [B, T, D]` and backward over each row's first `lengths[b]` steps.

    Returns each layer's `[B, T, 2P]`: forward states, then backward states re-aligned to sentence order, so
    position t holds [state after tokens ..t; state after tokens t..].  The one place the two directions
    are fed and aligned.
    """
    xs = paddle.stack([x, reverse_padded(x, lengths)], axis=0)  # [2, B, T, D]
    return [paddle.concat([y[0], reverse_padded(y[1], lengths)], axis=-1) for y in stack(xs)]


class BiLstmpStack(nn.Layer):
    """`num_layers` bidirectional layers with dropout on each layer's input and (optionally) residual connections
    from the second layer on."""

    def __init__(self, input_dim: int, hidden_dim: int, proj_dim: int, num_layers: int = 2,
                 cell_clip: float | None = 3.0, proj_clip: float | None = 3.0, dropout: float = 0.1,
                 residual: bool = True, impl: str = "lstmp"):
        super().__init__()
        if impl not in LSTM_IMPLS:
            raise ValueError(f"lstm impl must be one of {LSTM_IMPLS}, not {impl!r}")
        self.impl = impl
        self.layers = nn.LayerList([
            (BiLstmpLayer if impl == "lstmp" else FusedBiLstmLayer)(
                input_dim if k == 0 else proj_dim, hidden_dim, proj_dim, cell_clip, proj_clip)
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
