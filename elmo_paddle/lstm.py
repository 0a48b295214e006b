"""LSTM with projection (LSTMP, as in ELMo / bilm-tf), both LM directions computed together.

Why not `paddle.nn.LSTM(proj_size=...)`: in paddle 3.3.1 it drops the fused kernel (~10x slower to train
here), fails under `to_static` training and hangs in `paddle.inference`.  This module writes the cell
out, with what makes it fast on CPU:
  * the input projection `x W_ih` of every time step is one big matmul before the recurrence;
  * the forward and the (time-reversed) backward direction are stacked on a leading axis of size 2, so
    each step is one batched matmul for both directions instead of two small ones;
  * cell clipping and projection clipping (bilm-tf: 3.0) are applied inside the recurrence, as in the paper.

Layout: every tensor is `[2, B, T, ...]`; index 0 is the forward LM, index 1 the backward LM whose time axis
is already reversed (see `reverse_padded`), so both directions read their sequence left to right.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F


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


class BiLstmpLayer(nn.Layer):
    """One LSTMP layer for both directions: input `[2, B, T, D]` -> output `[2, B, T, P]`."""

    def __init__(self, input_dim: int, hidden_dim: int, proj_dim: int, cell_clip: float | None = 3.0,
                 proj_clip: float | None = 3.0):
        super().__init__()
        self.hidden_dim, self.proj_dim = hidden_dim, proj_dim
        self.cell_clip, self.proj_clip = cell_clip, proj_clip
        init = nn.initializer.Uniform(-0.05, 0.05)
        self.w_ih = self.create_parameter([2, input_dim, 4 * hidden_dim], default_initializer=init)
        self.w_hh = self.create_parameter([2, proj_dim, 4 * hidden_dim], default_initializer=init)
        # forget-gate bias 1.0: the usual trick that lets gradients flow through time early in training
        b = paddle.zeros([2, 1, 4 * hidden_dim])
        b[:, :, hidden_dim:2 * hidden_dim] = 1.0
        self.bias = self.create_parameter([2, 1, 4 * hidden_dim],
                                          default_initializer=nn.initializer.Assign(b))
        self.w_proj = self.create_parameter([2, hidden_dim, proj_dim], default_initializer=init)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        D, B, T, _ = x.shape
        H = self.hidden_dim
        # all steps' input projections at once: [2, B*T, D] @ [2, D, 4H]
        xw = paddle.bmm(x.reshape([2, -1, x.shape[-1]]), self.w_ih) + self.bias
        xw = xw.reshape([2, B, T, 4 * H])
        h = paddle.zeros([2, B, self.proj_dim], dtype=x.dtype)
        c = paddle.zeros([2, B, H], dtype=x.dtype)
        outs = []
        for t in range(T):
            gates = xw[:, :, t] + paddle.bmm(h, self.w_hh)
            i, f, g, o = paddle.split(gates, 4, axis=-1)
            c = F.sigmoid(f) * c + F.sigmoid(i) * paddle.tanh(g)
            if self.cell_clip:
                c = paddle.clip(c, -self.cell_clip, self.cell_clip)
            h = paddle.bmm(F.sigmoid(o) * paddle.tanh(c), self.w_proj)
            if self.proj_clip:
                h = paddle.clip(h, -self.proj_clip, self.proj_clip)
            outs.append(h)
        return paddle.stack(outs, axis=2)


class BiLstmpStack(nn.Layer):
    """`num_layers` BiLstmpLayers with dropout and residual connections from the second layer on."""

    def __init__(self, input_dim: int, hidden_dim: int, proj_dim: int, num_layers: int = 2,
                 cell_clip: float | None = 3.0, proj_clip: float | None = 3.0, dropout: float = 0.1,
                 residual: bool = True):
        super().__init__()
        self.layers = nn.LayerList([
            BiLstmpLayer(input_dim if k == 0 else proj_dim, hidden_dim, proj_dim, cell_clip, proj_clip)
            for k in range(num_layers)])
        self.dropout = nn.Dropout(dropout)
        self.residual = residual

    def forward(self, x: paddle.Tensor) -> list[paddle.Tensor]:
        """x `[2, B, T, D]` -> list of each layer's output `[2, B, T, P]` (after the residual add)."""
        outs = []
        for k, layer in enumerate(self.layers):
            y = layer(self.dropout(x))
            if self.residual and k > 0:
                y = y + x
            outs.append(y)
            x = y
        return outs
