import numpy as np
import paddle
import pytest

import elmo_paddle  # noqa: F401
from elmo_paddle.errors import UserError
from elmo_paddle.scalar_mix import ScalarMix


def _layers(B=2, L=3, T=4, D=5, seed=0):
    return np.random.RandomState(seed).randn(B, L, T, D).astype("float32")


def test_mix_matches_hand_computation():
    x = _layers()
    w = np.array([0.1, -0.2, 0.5], "float32")
    mix = ScalarMix(3, initial_scalar_parameters=w.tolist(), gamma_init=2.0)
    s = np.exp(w) / np.exp(w).sum()
    expect = 2.0 * (s[0] * x[:, 0] + s[1] * x[:, 1] + s[2] * x[:, 2])
    np.testing.assert_allclose(mix(paddle.to_tensor(x)).numpy(), expect, rtol=1e-5, atol=1e-6)
    # a list of [B, T, D] tensors gives the same
    got = mix([paddle.to_tensor(x[:, j]) for j in range(3)]).numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


def test_default_is_average_and_top_only():
    x = _layers()
    np.testing.assert_allclose(ScalarMix(3)(paddle.to_tensor(x)).numpy(), x.mean(1), rtol=1e-5, atol=1e-6)
    top = ScalarMix(3, gamma_init=0.5, top_layer_only=True)
    np.testing.assert_allclose(top(paddle.to_tensor(x)).numpy(), 0.5 * x[:, 2], rtol=1e-6)
    assert float(top.l2_penalty()) == 0.0


def test_only_layer_returns_that_layer_alone():
    x = _layers()
    token = ScalarMix(3, gamma_init=0.5, only_layer=0, l2_coef=0.1)  # the context-free token layer
    np.testing.assert_allclose(token(paddle.to_tensor(x)).numpy(), 0.5 * x[:, 0], rtol=1e-6)
    np.testing.assert_allclose(token.weights().numpy(), [1.0, 0.0, 0.0])
    assert float(token.l2_penalty()) == 0.0 and token.scalar_parameters.stop_gradient
    np.testing.assert_allclose(ScalarMix(3, only_layer=-2)(paddle.to_tensor(x)).numpy(), x[:, 1], rtol=1e-6)
    for bad in (3, -4):
        with pytest.raises(UserError, match="only_layer must be in -3..2"):
            ScalarMix(3, only_layer=bad)
    with pytest.raises(UserError, match="contradicts"):
        ScalarMix(3, top_layer_only=True, only_layer=0)


def test_l2_penalty_is_lambda_times_squared_norm():
    w = [0.3, -1.0, 2.0]
    mix = ScalarMix(3, initial_scalar_parameters=w, l2_coef=0.01)
    assert float(mix.l2_penalty()) == pytest.approx(0.01 * sum(v * v for v in w), rel=1e-6)
    assert float(ScalarMix(3).l2_penalty()) == 0.0


def test_layer_norm_is_masked_and_per_sentence():
    x = _layers(B=2, T=4)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
    mix = ScalarMix(3, do_layer_norm=True)
    got = mix(paddle.to_tensor(x), paddle.to_tensor(mask)).numpy()
    expect = np.zeros_like(x[:, 0])
    for b in range(2):
        n = mask[b].sum()
        for j in range(3):
            h = x[b, j]
            real = h[:n]
            expect[b] += (h - real.mean()) / np.sqrt(real.var() + 1e-12) / 3
    np.testing.assert_allclose(got[mask], expect[mask], rtol=1e-4, atol=1e-5)
    # batch independence: sentence 1 alone gives the same vectors
    alone = mix(paddle.to_tensor(x[1:]), paddle.to_tensor(mask[1:])).numpy()
    np.testing.assert_allclose(alone[0, :2], got[1, :2], rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError):
        mix(paddle.to_tensor(x))  # layer norm needs the mask


def test_gradients_reach_w_and_gamma():
    mix = ScalarMix(3, initial_scalar_parameters=[0.0, 1.0, -1.0], l2_coef=0.1)
    loss = (mix(paddle.to_tensor(_layers())) ** 2).sum() + mix.l2_penalty()
    loss.backward()
    assert mix.scalar_parameters.grad is not None and float(paddle.abs(mix.scalar_parameters.grad).sum()) > 0
    assert mix.gamma.grad is not None and float(paddle.abs(mix.gamma.grad).sum()) > 0


def test_bad_arguments():
    with pytest.raises(UserError):
        ScalarMix(3, initial_scalar_parameters=[0.0, 1.0])
    with pytest.raises(UserError):
        ScalarMix(3)(paddle.to_tensor(_layers(L=2)))
