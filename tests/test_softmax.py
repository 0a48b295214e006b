import numpy as np
import paddle

import elmo_paddle  # noqa: F401
import pytest

from elmo_paddle import lstm_cpu, softmax as sm, softmax_cpu

KERNEL_HERE = softmax_cpu.applies(paddle.zeros([1], dtype="float32"))
PATHS = ["reference", pytest.param("kernel", marks=pytest.mark.skipif(not KERNEL_HERE, reason="no MKL kernel"))]


@pytest.fixture
def path(request, monkeypatch):
    """Run a test on the paddle-op reference (`sampled_logits_nll`) or on the numpy kernel (`SampledNll`)."""
    if request.param == "reference":
        monkeypatch.setattr(softmax_cpu, "applies", lambda h: False)
    return request.param


def _setup(V=50, P=8, N=64, seed=0):
    paddle.seed(seed)
    rng = np.random.default_rng(seed)
    h = paddle.to_tensor(rng.normal(size=(N, P)).astype("float32"))
    w = paddle.to_tensor(rng.normal(size=(V, P)).astype("float32"))
    b = paddle.to_tensor(rng.normal(size=(V,)).astype("float32"))
    t = paddle.to_tensor(rng.integers(1, V, size=N))
    return h, w, b, t


def test_every_real_target_has_finite_sampled_loss():
    # <S> (id 1) is the backward LM's target at the start of each line: it must be sampleable
    h, w, b, _ = _setup()
    t = paddle.to_tensor([1, 2, 3, 4, 49] * 4)
    nll = sm.sampled_softmax_nll(h[:20], w, b, t, sm.LogUniformSampler(50), 16)
    assert bool(paddle.isfinite(nll).all())


def test_training_with_sampled_softmax_fits_like_full_softmax():
    # the sampled loss's value is offset from the full one (log-Q corrected true logit, as in TF), but its
    # gradients train the same model: compare the *full* NLL reached by both ways of training
    rng = np.random.default_rng(1)
    V, P, N = 60, 16, 512
    feats = rng.normal(size=(N, P)).astype("float32")
    true_w = rng.normal(size=(V, P)).astype("float32")
    logits = feats @ true_w.T
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    targets = np.array([rng.choice(V - 1, p=p_[1:] / p_[1:].sum()) + 1 for p_ in probs])
    h, t = paddle.to_tensor(feats), paddle.to_tensor(targets)
    result = {}
    for mode in ("full", "sampled"):
        paddle.seed(0)
        head = sm.SoftmaxHead(V, P, num_samples=12)
        opt = paddle.optimizer.Adam(0.05, parameters=head.parameters())
        for _ in range(150):
            loss = head.nll(h, t, sampled=mode == "sampled").mean()
            loss.backward()
            opt.step()
            opt.clear_grad()
        result[mode] = float(head.nll(h, t, sampled=False).mean())
    start = float(np.log(V))
    assert result["full"] < 0.8 * start
    assert result["sampled"] < result["full"] + 0.15 * (start - result["full"]), result


@pytest.mark.parametrize("path", PATHS, indirect=True)
def test_sampled_head_never_builds_full_logits(monkeypatch, path):
    V, S = 200_000, 32
    h, _, _, _ = _setup(V=10)
    w = paddle.zeros([V, 8])
    b = paddle.zeros([V])
    t = paddle.to_tensor(np.arange(1, 65) * 1000)
    shapes = []
    real = paddle.matmul

    def spy(x, y, *a, **k):
        out = real(x, y, *a, **k)
        shapes.append(list(out.shape))
        return out

    def gemm_spy(a, b, c, *args, **kw):
        shapes.append(list(c.shape))
        return real_gemm(a, b, c, *args, **kw)

    real_gemm = softmax_cpu.gemm
    monkeypatch.setattr(sm.paddle, "matmul", spy)
    monkeypatch.setattr(softmax_cpu, "gemm", gemm_spy)
    nll = sm.sampled_softmax_nll(h, w, b, t, sm.LogUniformSampler(V), S)
    assert list(nll.shape) == [64]
    assert shapes and all(s[-1] <= S for s in shapes), shapes  # [N, S], never [N, V]


def test_log_uniform_sampler_range_and_frequency_bias():
    s = sm.LogUniformSampler(1000)
    x = s.sample(20000).numpy()
    assert x.min() >= 1 and x.max() < 1000
    assert (x < 10).mean() > (x > 500).mean()  # frequent (low) ids are sampled more


# ----------------------------------------------------------------------------- numpy references
def _np_logsumexp(x, axis=-1):
    m = x.max(axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis, keepdims=True))).squeeze(axis)


def _np_log_q(ids, V, offset=1):
    """The log-uniform sampler's log-probability of each id, written from its formula."""
    k = ids.astype("float64") - offset
    return np.log(np.log((k + 2) / (k + 1)) / np.log(V - offset + 1))


def test_full_softmax_nll_matches_numpy():
    """Per-token NLL = logsumexp(h W^T + b) - (h W^T + b)[target], in float64."""
    h, w, b, t = _setup()
    logits = h.numpy().astype("float64") @ w.numpy().astype("float64").T + b.numpy()
    ref = _np_logsumexp(logits) - logits[np.arange(len(logits)), t.numpy()]
    np.testing.assert_allclose(sm.full_softmax_nll(h, w, b, t).numpy(), ref, rtol=1e-5, atol=1e-5)


class _FixedSampler(sm.LogUniformSampler):
    """The real sampler's log Q, but `sample` returns fixed ids (so the loss is a deterministic function)."""

    def __init__(self, V, ids):
        super().__init__(V)
        self.ids = np.asarray(ids, dtype="int64")

    def sample(self, num):
        assert num == len(self.ids)
        return paddle.to_tensor(self.ids)


@pytest.mark.parametrize("path", PATHS, indirect=True)
def test_sampled_softmax_nll_matches_numpy_with_log_q_and_accidental_hits(path):
    """With fixed sampled ids: every logit minus log(S q(id)) (the log-Q correction), sampled columns equal to a
    row's target removed (accidental hits), then logsumexp - true logit.  Ids 3 and 7 are sampled and are
    targets of some rows, so both corrections are exercised (a duplicate id 5 too)."""
    V, S = 50, 6
    h, w, b, _ = _setup(V=V, N=8)
    t = np.array([3, 7, 10, 3, 1, 49, 7, 20])
    ids = np.array([3, 7, 5, 5, 30, 2])
    got = sm.sampled_softmax_nll(h, w, b, paddle.to_tensor(t), _FixedSampler(V, ids), S).numpy()
    H, W, B = (a.numpy().astype("float64") for a in (h, w, b))
    true = (H * W[t]).sum(1) + B[t] - (_np_log_q(t, V) + np.log(S))
    unmasked = H @ W[ids].T + B[ids] - (_np_log_q(ids, V) + np.log(S))
    samp = np.where(t[:, None] == ids[None, :], -np.inf, unmasked)  # an accidental hit is not a negative
    ref = _np_logsumexp(np.concatenate([true[:, None], samp], 1)) - true
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # the two corrections matter here: without them the reference moves well beyond the tolerance
    no_mask = _np_logsumexp(np.concatenate([true[:, None], unmasked], 1)) - true
    assert np.abs(no_mask - ref).max() > 1e-2
    no_logq = (H * W[t]).sum(1) + B[t]
    assert np.abs(_np_logsumexp(np.concatenate([no_logq[:, None], samp], 1)) - no_logq - ref).max() > 1e-2


@pytest.mark.skipif(not KERNEL_HERE, reason="no MKL kernel")
@pytest.mark.parametrize("frozen,threads", [("", 1), ("", 2), ("weight", 1), ("h", 1)])
def test_sampled_kernel_values_and_gradients_equal_the_reference(frozen, threads):
    """`SampledNll` against `sampled_logits_nll` on the same ids (hits, a repeated sample, a repeated target)
    and a non-uniform upstream gradient: the NLL and the gradients of h, weight and bias; frozen inputs get
    none."""
    V, S = 40, 9
    h0, w0, b0, _ = _setup(V=V, P=6, N=12, seed=3)
    t = paddle.to_tensor(np.array([3, 7, 10, 3, 1, 39, 7, 20, 5, 5, 2, 11]))
    ids = paddle.to_tensor(np.array([3, 7, 5, 5, 30, 2, 1, 17, 39]))
    sampler = sm.LogUniformSampler(V)
    lq_t, lq_s = sampler.log_q(t) + np.log(S), sampler.log_q(ids) + np.log(S)
    g = paddle.to_tensor(np.linspace(0.5, 2.0, 12).astype("float32"))
    res = {}
    before = lstm_cpu._mkl().MKL_Get_Max_Threads()
    paddle.base.core.set_num_threads(threads)  # the kernel's GEMMs are MKL's, which follow this
    for name in ("reference", "kernel"):
        h, w, b = (paddle.to_tensor(a.numpy(), stop_gradient=(n == frozen))
                   for n, a in (("h", h0), ("weight", w0), ("bias", b0)))
        if name == "reference":
            nll = sm.sampled_logits_nll(h, w, b, t, ids, lq_t, lq_s)
        else:
            nll = softmax_cpu.SampledNll.apply(h, w, b, t.numpy(), ids.numpy(), lq_t.numpy(), lq_s.numpy())
        (nll * g).sum().backward()
        res[name] = [nll.numpy()] + [None if v.grad is None else v.grad.numpy() for v in (h, w, b)]
    paddle.base.core.set_num_threads(before)
    for what, a, k in zip(("nll", "dh", "dweight", "dbias"), res["reference"], res["kernel"]):
        if a is None:
            assert k is None, what
            continue
        assert np.abs(a).max() > 0, what
        np.testing.assert_allclose(k, a, rtol=1e-5, atol=1e-5 * np.abs(a).max(), err_msg=what)
    assert (res["kernel"][1] is None) == (frozen == "h") and (res["kernel"][2] is None) == (frozen == "weight")


def test_log_uniform_sampler_follows_its_distribution():
    """200k draws against P(k) = log((k+2)/(k+1)) / log(n+1): chi-square over the first 30 ids and a tail bin.
    The bound is the 0.999 quantile of chi2(30 dof), ~59.7: a correct sampler fails it one time in 1000
    (the seed is fixed, so it does not flake); an off-by-one id shift gives a statistic in the thousands."""
    V, N = 1000, 200_000
    paddle.seed(0)
    s = sm.LogUniformSampler(V)
    x = s.sample(N).numpy()
    assert x.min() >= 1 and x.max() < V
    p = np.exp(_np_log_q(np.arange(1, V), V))
    np.testing.assert_allclose(p.sum(), 1.0, atol=1e-6)  # the formula itself is a distribution over 1..V-1
    for big in (V, 800_000):  # log Q in float32 stays exact to 1e-5 for the rare ids of a large vocab too
        ids = np.arange(1, big)
        np.testing.assert_allclose(sm.LogUniformSampler(big).log_q(paddle.to_tensor(ids)).numpy(),
                                   _np_log_q(ids, big), atol=1e-5)
    counts = np.bincount(x, minlength=V)[1:]
    obs = np.append(counts[:30], counts[30:].sum())
    exp = N * np.append(p[:30], p[30:].sum())
    chi2 = ((obs - exp) ** 2 / exp).sum()
    assert chi2 < 59.7, (chi2, obs[:5], exp[:5])
