"""The task models' recurrent layers (`elmo_paddle.recurrent`): a ragged, padded batch gives each row exactly
what the row gives alone — outputs and gradients (inputs and weights) — for LSTM and GRU, 1 and 2 layers,
1 and 2 threads.  That is what `sequence_length` must guarantee: the backward direction starts at each row's
own last token, and padding reaches no real position."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

import elmo_paddle  # noqa: F401  (env before paddle)
from elmo_paddle.recurrent import bidirectional_rnn, run_padded

LENGTHS = [7, 3, 5, 1]


def _run(rnn, x: np.ndarray, lengths: list[int], weights: np.ndarray):
    """Loss = sum of the real positions' outputs times fixed weights; returns outputs, dx, parameter grads."""
    xt = paddle.to_tensor(x, stop_gradient=False)
    out = run_padded(rnn, xt, paddle.to_tensor(lengths))
    mask = (np.arange(x.shape[1])[None] < np.array(lengths)[:, None])[..., None]
    (out * paddle.to_tensor(weights[:, :x.shape[1]] * mask)).sum().backward()
    grads = {n: p.grad.numpy().copy() for n, p in rnn.named_parameters()}
    rnn.clear_gradients(set_to_zero=False)
    return out.numpy(), xt.grad.numpy(), grads


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind,layers", [("lstm", 1), ("lstm", 2), ("gru", 1), ("gru", 2)])
def test_ragged_batch_equals_each_row_alone(kind, layers, threads):
    paddle.base.core.set_num_threads(threads)
    paddle.seed(0)
    rnn = bidirectional_rnn(kind, 6, 5, layers)  # no dropout between layers: the comparison is exact
    rng = np.random.default_rng(1)
    B, T = len(LENGTHS), max(LENGTHS)
    x = rng.normal(size=(B, T, 6)).astype("float32")
    # padding: large, so any leak shows (not 1e3: paddle's GRU backward then gives NaN input gradients even at the
    # real positions, see elmo_paddle/recurrent.py; the task models pad with zeros)
    x[np.arange(T)[None] >= np.array(LENGTHS)[:, None]] = 100.0
    w = rng.normal(size=(B, T, 10)).astype("float32")
    out, dx, grads = _run(rnn, x, LENGTHS, w)
    assert out.shape == (B, T, 10)
    total = {n: np.zeros_like(g) for n, g in grads.items()}
    for b, L in enumerate(LENGTHS):
        o1, dx1, g1 = _run(rnn, x[b:b + 1, :L], [L], w[b:b + 1])
        np.testing.assert_allclose(out[b, :L], o1[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dx[b, :L], dx1[0], rtol=1e-5, atol=1e-6)
        assert not dx[b, L:].any()  # no gradient reaches the padding
        for n in total:
            total[n] += g1[n]
    for n, g in grads.items():
        np.testing.assert_allclose(g, total[n], rtol=1e-4, atol=1e-5, err_msg=n)
    paddle.base.core.set_num_threads(1)


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError):
        bidirectional_rnn("rnn", 4, 4)
