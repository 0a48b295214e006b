"""The numpy CRF kernel (tasks/lac/crf_kernel.py) against the reference CRF (paddle autograd through the
forward algorithm, itself checked against brute-force enumeration in test_lac_model.py): values and the
gradients of every input, on ragged batches (lengths 1 to T) and a weighted loss."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from tasks.lac.crf_kernel import CrfNll, forward_backward
from tasks.lac.model import CRF


def _inputs(seed: int, b: int = 5, t: int = 7, n: int = 6):
    rng = np.random.default_rng(seed)
    lengths = np.array([t, 1, 3, t - 1, 2][:b])
    em = (rng.normal(size=(b, t, n)) * 3).astype("float32")
    tags = rng.integers(0, n, size=(b, t))
    tags[np.arange(t)[None] >= lengths[:, None]] = 0
    return em, tags, lengths


def _grads(crf: CRF, em: np.ndarray, tags, lengths, kernel: bool, weights):
    e = paddle.to_tensor(em, stop_gradient=False)
    mask = paddle.to_tensor(np.arange(em.shape[1])[None] < lengths[:, None])
    tag_t = paddle.to_tensor(tags)
    if kernel:
        nll = CrfNll.apply(e, crf.transitions, crf.start, crf.end, tag_t, paddle.to_tensor(lengths))
    else:
        nll = crf.nll_reference(e, tag_t, mask)
    (nll * paddle.to_tensor(weights)).sum().backward()
    out = [nll.numpy(), e.grad.numpy()] + [p.grad.numpy() for p in (crf.transitions, crf.start, crf.end)]
    crf.clear_gradients()
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_matches_reference_values_and_gradients(seed):
    paddle.seed(seed)
    crf = CRF(6)
    with paddle.no_grad():  # larger transition scores than the init, to exercise the scaling
        crf.transitions.set_value(crf.transitions * 30)
    em, tags, lengths = _inputs(seed)
    weights = np.array([0.2, 1.0, -0.5, 0.7, 0.3], dtype="float32")
    ref = _grads(crf, em, tags, lengths, False, weights)
    got = _grads(crf, em, tags, lengths, True, weights)
    for name, r, g in zip(("nll", "emissions", "transitions", "start", "end"), ref, got):
        np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-4, err_msg=name)
    assert np.abs(got[1][1, 1:]).max() == 0  # nothing flows past a sequence's end


def test_marginals_sum_to_one_per_position():
    em, _, lengths = _inputs(4)
    rng = np.random.default_rng(1)
    trans, start, end = rng.normal(size=(6, 6)), rng.normal(size=6), rng.normal(size=6)
    alpha, beta, log_z = forward_backward(em.astype(np.float64), trans, start, end, lengths)
    for b, n in enumerate(lengths):
        p = np.exp(alpha[b, :n] + beta[b, :n] - log_z[b])
        np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-9)


def test_tagger_uses_the_kernel_on_cpu_and_learns():
    from tasks.lac.model import LacTagger

    paddle.seed(0)
    model = LacTagger(10, 4, emb_dim=8, hidden_dim=8, num_layers=1)
    ids = paddle.to_tensor(np.array([[1, 2, 3, 4], [5, 6, 0, 0]]))
    tags = paddle.to_tensor(np.array([[0, 1, 2, 3], [3, 2, 0, 0]]))
    lengths = paddle.to_tensor(np.array([4, 2]))
    opt = paddle.optimizer.Adam(0.1, parameters=model.parameters())
    first = None
    for _ in range(30):
        loss = model.loss(ids, lengths, tags)
        first = first if first is not None else float(loss)
        loss.backward()
        opt.step()
        opt.clear_grad()
    assert float(loss) < 0.1 * first
    em = model.emissions(ids, lengths)
    ref = model.crf.nll_reference(em, tags, ids != 0)
    np.testing.assert_allclose(model.crf.nll(em, tags, ids != 0).numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)


def test_viterbi_finds_the_best_path_on_ragged_batches():
    import itertools

    paddle.seed(7)
    crf = CRF(4)
    with paddle.no_grad():
        crf.transitions.set_value(crf.transitions * 20)
    rng = np.random.default_rng(3)
    em = rng.normal(size=(6, 6, 4)).astype("float32")
    lengths = np.array([6, 1, 3, 5, 2, 6])
    tr, st, en = crf.transitions.numpy(), crf.start.numpy(), crf.end.numpy()
    for b, path in enumerate(crf.viterbi(em, lengths)):
        n = int(lengths[b])
        score = lambda y: st[y[0]] + en[y[-1]] + sum(em[b, i, y[i]] for i in range(n)) \
            + sum(tr[y[i - 1], y[i]] for i in range(1, n))  # noqa: E731
        best = max(itertools.product(range(4), repeat=n), key=score)
        assert len(path) == n and score(tuple(path)) == pytest.approx(score(best), abs=1e-4)
