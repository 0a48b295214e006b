"""The task models' recurrent layers: bidirectional LSTM / GRU stacks over padded, ragged batches.

Why paddle's fused `nn.LSTM` / `nn.GRU` with `sequence_length`, and not the biLM's numpy kernel
(`lstm_cpu.PackedLstmp`): at the task models' sizes the fused CPU kernel is the faster one.  One BiLSTM
layer, hidden 64, B = 32, T = 400, forward + backward on one core: 174 ms fused against 208 ms for
`PackedLstmp` with an identity projection (input 512: 370 against 448 ms; sixth session).  On a GPU build
the same call runs cuDNN.  `sequence_length` starts each row's backward direction at the row's own last
token, so padding never reaches a real position (tests/test_recurrent.py: a ragged batch against each row
alone, values and gradients).  Pad with moderate values (the task models pad with zeros): with padding
inputs of ~1e3, paddle 3.3.1's GRU backward returns NaN input gradients at the real positions too (measured;
its LSTM does not).  The biLM keeps its LSTMP (`lstm.py`): paddle's LSTM with a projection has no
fused kernel.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

_KINDS = {"lstm": nn.LSTM, "gru": nn.GRU}


def bidirectional_rnn(kind: str, input_dim: int, hidden: int, num_layers: int = 1, dropout: float = 0.0) -> nn.Layer:
    """A `num_layers` stack of bidirectional `kind` ("lstm" or "gru") layers, `dropout` between layers.

    Input `[B, T, input_dim]` (batch-major), output `[B, T, 2 * hidden]` (forward and backward states
    concatenated); run it with `run_padded`.  The layer is paddle's own, so its parameter names (and saved
    models) are those of `nn.LSTM` / `nn.GRU`.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, not {kind!r}")
    return _KINDS[kind](input_dim, hidden, num_layers=num_layers, direction="bidirect",
                        dropout=dropout if num_layers > 1 else 0.0)


def run_padded(rnn: nn.Layer, x: paddle.Tensor, lengths: paddle.Tensor) -> paddle.Tensor:
    """Outputs `[B, T, 2H]` of `rnn` over `x [B, T, D]` whose row b is real for its first `lengths[b]` steps
    (outputs past a row's length are zeros)."""
    out, _ = rnn(x, sequence_length=lengths.astype("int64"))
    return out
