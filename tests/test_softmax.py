import numpy as np
import paddle

import elmo_paddle  # noqa: F401
from elmo_paddle import softmax as sm


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


def test_sampled_head_never_builds_full_logits(monkeypatch):
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

    monkeypatch.setattr(sm.paddle, "matmul", spy)
    nll = sm.sampled_softmax_nll(h, w, b, t, sm.LogUniformSampler(V), S)
    assert list(nll.shape) == [64]
    assert shapes and all(s[-1] <= S for s in shapes), shapes  # [N, S], never [N, V]


def test_log_uniform_sampler_range_and_frequency_bias():
    s = sm.LogUniformSampler(1000)
    x = s.sample(20000).numpy()
    assert x.min() >= 1 and x.max() < 1000
    assert (x < 10).mean() > (x > 500).mean()  # frequent (low) ids are sampled more
