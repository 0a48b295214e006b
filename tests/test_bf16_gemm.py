"""The opt-in bf16 path (ELMO_PADDLE_BF16=1, AMX CPUs): GEMMs against numpy, the frozen biLM against float32.

Skipped with the reason where the CPU has no AMX; off unless asked for (the default stays float32)."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

import elmo_paddle.bf16_gemm as bf16_gemm


@pytest.fixture
def bf16_on(monkeypatch):
    monkeypatch.setenv("ELMO_PADDLE_BF16", "1")
    monkeypatch.setattr(bf16_gemm, "_state", {})
    if not bf16_gemm.available():
        pytest.skip("no AMX (amx_bf16 in /proc/cpuinfo) or no oneDNN in this paddle: the bf16 path is off here")
    yield
    monkeypatch.setattr(bf16_gemm, "_state", {})


def test_off_unless_asked(monkeypatch):
    monkeypatch.delenv("ELMO_PADDLE_BF16", raising=False)
    monkeypatch.setattr(bf16_gemm, "_state", {})
    assert not bf16_gemm.available()


def test_the_bf16_flag_turns_the_path_on_or_says_why_not(monkeypatch):
    """`--bf16` (embed and the predict CLIs) sets the path on before a model loads; without AMX it warns."""
    # apply_flag writes os.environ itself: setenv first, so that teardown unsets it again (a leaked "1" would
    # turn bf16 on for the session-scoped models other tests build between tests)
    monkeypatch.setenv("ELMO_PADDLE_BF16", "0")
    monkeypatch.setattr(bf16_gemm, "_state", {})
    said: list[str] = []
    bf16_gemm.apply_flag(False, said.append)
    assert not bf16_gemm.available() and said == []
    monkeypatch.setattr(bf16_gemm, "_has_amx", lambda: False)
    bf16_gemm.apply_flag(True, said.append)
    assert not bf16_gemm.available() and len(said) == 1 and "--bf16 ignored" in said[0]


def test_rounding_to_bf16_is_to_nearest_even():
    x = np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -2.5, 1e-30], dtype=np.float32)
    back = (bf16_gemm.to_bf16(x).astype(np.uint32) << 16).view(np.float32)
    # 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1); 1 + 3 * 2^-8 rounds up
    np.testing.assert_array_equal(back[:4], np.array([1.0, 1.0, 1.0 + 2**-6, -2.5], dtype=np.float32))
    assert abs(back[4] - 1e-30) / 1e-30 < 2**-8


def test_round_into_equals_the_numpy_rounding_on_views(bf16_on):
    """oneDNN's reorder (`round_into`) against `to_bf16`: ties to even, signs, tiny and huge values, into
    and from strided views (a transpose, a column block), as the training kernel uses it."""
    rng = np.random.default_rng(3)
    a = (rng.normal(size=(37, 20)) * np.exp(rng.normal(scale=8, size=(37, 20)))).astype(np.float32)
    a[0, :4] = [1.0 + 2**-8, 1.0 + 3 * 2**-8, -(1.0 + 2**-8), np.inf]
    want = bf16_gemm.to_bf16(a)
    np.testing.assert_array_equal(bf16_gemm.round_into(a, np.empty((37, 20), np.uint16)), want)
    np.testing.assert_array_equal(bf16_gemm.round_into(a.T, np.empty((20, 37), np.uint16)), want.T)
    block = np.zeros((37, 50), np.uint16)
    bf16_gemm.round_into(a, block[:, 10:30])
    np.testing.assert_array_equal(block[:, 10:30], want)
    assert not block[:, :10].any() and not block[:, 30:].any()  # nothing written outside the view


@pytest.mark.parametrize("shape", [(64, 257, 32), (512, 128, 7), (5, 3, 1)])
def test_bf16_matrix_matches_the_product_of_the_rounded_inputs(bf16_on, shape):
    m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(m, k)).astype(np.float32), rng.normal(size=(k, n)).astype(np.float32)
    c = np.empty((m, n), dtype=np.float32)
    mat = bf16_gemm.Bf16Matrix(a)
    mat.matmul_into(b, c)
    up = lambda x: (bf16_gemm.to_bf16(x).astype(np.uint32) << 16).view(np.float32).astype(np.float64)  # noqa: E731
    np.testing.assert_allclose(c, up(a) @ up(b), rtol=1e-4, atol=1e-4 * np.abs(c).max())
    assert np.abs(c - a.astype(np.float64) @ b).max() < 3e-2 * np.abs(c).max()  # and near the float32 product


def test_frozen_bilm_in_bf16_is_close_to_float32(bf16_on, monkeypatch):
    from elmo_paddle.elmo import Elmo

    sents = [list("中国人民经济发展很快"), list("我们今天去北京")]
    outs = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("ELMO_PADDLE_BF16", flag)
        monkeypatch.setattr(bf16_gemm, "_state", {})
        elmo = Elmo("zh-char-elmo", num_output_representations=1, dropout=0.0)
        elmo.eval()
        with paddle.no_grad():
            outs[flag] = elmo(elmo.batch_to_ids(sents))["elmo_representations"][0].numpy()
    diff = np.abs(outs["1"] - outs["0"]).max() / np.abs(outs["0"]).max()
    assert 0 < diff < 2e-2  # different (bf16 ran), and close


@pytest.mark.parametrize("bf16", [False, True])
def test_step_outer_sum_adds_every_step_once(bf16_on, monkeypatch, bf16):
    """The weight gradients' sum over steps: full chunks, a partial last chunk, and the float32 rank-B path."""
    from elmo_paddle import lstm_cpu

    monkeypatch.setattr(lstm_cpu._StepOuterSum, "K_TARGET", 28)  # 4 steps of B = 7 per GEMM: 19 = 4 * 4 + 3
    rng = np.random.default_rng(2)
    a = rng.normal(size=(19, 33, 7)).astype(np.float32)
    b = rng.normal(size=(19, 12, 7)).astype(np.float32)
    dw = np.full((33, 12), 0.5, dtype=np.float32)  # added to, not overwritten
    acc = lstm_cpu._StepOuterSum(dw, 7, bf16)
    for t in range(19):
        acc.add(a[t], b[t])
    acc.flush()
    up = (lambda x: (bf16_gemm.to_bf16(x).astype(np.uint32) << 16).view(np.float32)) if bf16 else (lambda x: x)
    want = 0.5 + np.einsum("tmb,tnb->mn", up(a).astype(np.float64), up(b).astype(np.float64))
    np.testing.assert_allclose(dw, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("T,B,threads", [(6, 5, 1), (20, 64, 1), (20, 64, 2)])  # chunks: one partial; 2 full + 1
def test_bf16_training_kernel_gradients_are_close_to_float32(bf16_on, T, B, threads):
    """The training kernel in bf16: outputs and every gradient within bf16 rounding of the float32 kernel
    (2 threads: one direction per thread, each with its own oneDNN primitives, as pretraining runs it)."""
    from elmo_paddle.lstm_cpu import _mkl

    before = _mkl().MKL_Get_Max_Threads()
    paddle.base.core.set_num_threads(threads)
    try:
        _compare_bf16_kernel(T, B)
    finally:
        paddle.base.core.set_num_threads(before)


def _compare_bf16_kernel(T: int, B: int) -> None:
    from elmo_paddle.lstm_cpu import PackedLstmp

    rng = np.random.default_rng(1)
    D, H, P = 16, 32, 8
    w = [rng.normal(scale=0.3, size=s).astype(np.float32) for s in ((2, 4 * H, D), (2, 4 * H, P), (2, 4 * H), (2, P, H))]
    x = rng.normal(size=(T, 2, D, B)).astype(np.float32)
    dout = rng.normal(size=(T, 2, P, B)).astype(np.float32)
    res = {}
    for bf16 in (False, True):
        layer = PackedLstmp(*w, 3.0, 3.0, bf16=bf16)
        res[bf16] = (layer(x, keep=True), *layer.backward(dout))
    for name, a, b in zip(("out", "dx", "dw_ih", "dw_hh", "dbias", "dw_proj"), res[False], res[True]):
        scale = np.abs(a).max()
        assert 0 < np.abs(a - b).max() < 3e-2 * scale, name
