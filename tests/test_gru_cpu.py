"""The numpy + MKL GRU kernel (`elmo_paddle.gru_cpu.BiGru`) against its reference, paddle's own bidirectional
GRU with `sequence_length`: ragged, unsorted batches (a row of length 1, padding ids and large padding inputs),
1 and 2 layers, 1 and 2 threads, inputs as ids, as vectors, or both; float32 and (on AMX CPUs) bf16.  Then
the LAC tagger's fast decode path (`FrozenEmissions`) against its paddle path, baseline and +ELMo."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

import elmo_paddle.bf16_gemm as bf16_gemm
from elmo_paddle import gru_cpu
from elmo_paddle.recurrent import bidirectional_rnn, run_padded

pytestmark = pytest.mark.skipif(not gru_cpu.available(), reason="needs a CPU paddle build with its bundled MKL")

LENGTHS = [5, 9, 1, 7, 9, 3]
V, E, D2 = 30, 6, 4  # vocabulary, embedding width, width of the extra input (an ELMo mix)


def _reference(rnn, emb: np.ndarray, ids: np.ndarray, extra: np.ndarray | None) -> np.ndarray:
    x = emb[ids] if extra is None else np.concatenate([emb[ids], extra], axis=-1)
    with paddle.no_grad():
        return run_padded(rnn, paddle.to_tensor(x), paddle.to_tensor(LENGTHS)).numpy()


def _batch(with_extra: bool):
    rng = np.random.default_rng(0)
    B, T = len(LENGTHS), max(LENGTHS)
    ids = rng.integers(1, V, size=(B, T))
    pad = np.arange(T)[None] >= np.array(LENGTHS)[:, None]
    ids[pad] = 0
    extra = rng.normal(size=(B, T, D2)).astype("float32") if with_extra else None
    if extra is not None:
        extra[pad] = 50.0  # padding must reach no real position
    emb = rng.normal(size=(V, E)).astype("float32")
    return ids, extra, emb


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("inputs", ["ids", "x", "ids+x"])
def test_float32_kernel_equals_paddle_gru(inputs, layers, threads):
    paddle.base.core.set_num_threads(threads)
    paddle.seed(layers)
    ids, extra, emb = _batch(with_extra=inputs != "ids")
    rnn = bidirectional_rnn("gru", E + (D2 if extra is not None else 0), 8, layers)
    want = _reference(rnn, emb, ids, extra)
    if inputs == "x":  # no table: the whole input as vectors
        got = gru_cpu.BiGru(rnn, bf16=False)(LENGTHS, x=np.concatenate([emb[ids], extra], axis=-1))
    else:
        got = gru_cpu.BiGru(rnn, emb, bf16=False)(LENGTHS, ids=ids, x=extra)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
    assert not got[np.arange(ids.shape[1])[None] >= np.array(LENGTHS)[:, None]].any()  # zeros past each length
    assert gru_cpu.numpy_blas_wins() == (threads == 1)  # both GEMM paths are the ones checked here
    paddle.base.core.set_num_threads(1)


def test_numpy_blas_runs_one_thread_inside_the_kernel_only():
    """On one thread the GEMMs go to numpy's BLAS, held to one thread while the kernel runs (a user's --threads 1
    must mean one thread), and its own setting comes back after."""
    import threadpoolctl

    paddle.base.core.set_num_threads(1)
    blas = threadpoolctl.ThreadpoolController().select(user_api="blas")
    before = [lib["num_threads"] for lib in blas.info()]
    with blas.limit(limits=2):
        outside = [lib["num_threads"] for lib in blas.info()]
        with gru_cpu.float32_gemm() as mm:
            assert mm is not gru_cpu.gemm and all(lib["num_threads"] == 1 for lib in blas.info())
            a, b = np.ones((3, 4), dtype=np.float32), np.ones((4, 5), dtype=np.float32)
            out = np.empty((3, 5), dtype=np.float32)
            mm(a, b, out)
            assert (out == 4).all()
        assert [lib["num_threads"] for lib in blas.info()] == outside
    assert [lib["num_threads"] for lib in blas.info()] == before


def test_bf16_kernel_is_close_to_paddle_gru(monkeypatch):
    monkeypatch.setenv("ELMO_PADDLE_BF16", "1")
    monkeypatch.setattr(bf16_gemm, "_state", {})
    if not bf16_gemm.available():
        pytest.skip("no AMX (amx_bf16 in /proc/cpuinfo) or no oneDNN in this paddle: the bf16 path is off here")
    paddle.seed(3)
    ids, extra, emb = _batch(with_extra=True)
    rnn = bidirectional_rnn("gru", E + D2, 16, 2)
    k = gru_cpu.BiGru(rnn, emb)
    assert k.bf16
    got, want = k(LENGTHS, ids=ids, x=extra), _reference(rnn, emb, ids, extra)
    err = np.abs(got - want).max()
    assert 0 < err < 0.03, err  # bf16 inputs to the GEMMs (8 significant bits), float32 sums
    monkeypatch.setattr(bf16_gemm, "_state", {})


def test_wrong_inputs_are_an_error():
    rnn = bidirectional_rnn("gru", E, 4, 1)
    with pytest.raises(ValueError):
        gru_cpu.BiGru(rnn)(LENGTHS, ids=np.zeros((6, 9), dtype=np.int64))  # no table to look ids up in
    with pytest.raises(ValueError):
        gru_cpu.BiGru(rnn, np.zeros((V, E), dtype="float32"))(LENGTHS)


@pytest.mark.parametrize("at_output", [None, False, True])  # None: the baseline tagger (no ELMo)
def test_tagger_fast_decode_equals_its_paddle_path(at_output):
    from tasks.lac.model import FrozenEmissions, LacTagger
    from test_lac_model import FakeElmo

    paddle.seed(4)
    elmo = None if at_output is None else FakeElmo(2 if at_output else 1)
    model = LacTagger(V, 11, emb_dim=E, hidden_dim=8, elmo=elmo, elmo_at_output=bool(at_output), dropout=0.3)
    model.eval()
    ids, _, _ = _batch(with_extra=False)
    char_ids, lengths = paddle.to_tensor(ids), paddle.to_tensor(LENGTHS)
    elmo_ids = char_ids if elmo is not None else None  # FakeElmo embeds the same ids
    frozen = FrozenEmissions(model)
    got = frozen(char_ids, lengths, elmo_ids)
    want = model.emissions(char_ids, lengths, elmo_ids).numpy()
    real = np.arange(ids.shape[1])[None] < np.array(LENGTHS)[:, None]
    np.testing.assert_allclose(got[real], want[real], rtol=1e-5, atol=1e-5)
    assert model.decode(char_ids, lengths, elmo_ids, frozen) == model.decode(char_ids, lengths, elmo_ids)
