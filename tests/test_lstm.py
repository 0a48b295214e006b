"""LSTMP layer, direction alignment and training of both LSTM implementations (fast: tiny sizes)."""
import elmo_paddle  # noqa: F401  (env before paddle)
import numpy as np
import paddle
import pytest

from elmo_paddle.bilm import BiLM, BiLMConfig
from elmo_paddle.lstm import BiLstmpLayer, reverse_padded


def test_reverse_padded_is_an_involution_and_keeps_padding():
    x = paddle.to_tensor(np.arange(1, 13).reshape(2, 6).astype("int64"))
    x[1, 4:] = 0
    lengths = paddle.to_tensor([6, 4])
    r = reverse_padded(x, lengths).numpy()
    assert r.tolist() == [[6, 5, 4, 3, 2, 1], [10, 9, 8, 7, 0, 0]]
    assert (reverse_padded(paddle.to_tensor(r), lengths).numpy() == x.numpy()).all()
    # trailing feature axes follow along
    f = paddle.randn([2, 6, 3])
    np.testing.assert_array_equal(reverse_padded(reverse_padded(f, lengths), lengths).numpy(), f.numpy())
    np.testing.assert_array_equal(reverse_padded(f, lengths).numpy()[1, 4:], f.numpy()[1, 4:])


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _numpy_lstmp(x, w_ih, w_hh, b, w_proj, cell_clip, proj_clip):
    """Slow reference for one direction: x [T, B, D]; weights stored [out, in] as in PyTorch; gates i, f, o, g."""
    T, B, _ = x.shape
    H, P = w_hh.shape[0] // 4, w_proj.shape[0]
    h, c, outs = np.zeros((B, P)), np.zeros((B, H)), []
    for t in range(T):
        z = x[t] @ w_ih.T + h @ w_hh.T + b
        i, f, o, g = _sigmoid(z[:, :H]), _sigmoid(z[:, H:2 * H]), _sigmoid(z[:, 2 * H:3 * H]), np.tanh(z[:, 3 * H:])
        c = np.clip(f * c + i * g, -cell_clip, cell_clip)
        h = np.clip((o * np.tanh(c)) @ w_proj.T, -proj_clip, proj_clip)
        outs.append(h)
    return np.stack(outs)


def _reference(layer, x):
    """The float64 numpy reference for both directions of `layer` on x `[T, 2, D, B]` -> `[T, 2, P, B]`."""
    w_ih, w_hh, b, w_proj = (p.numpy().astype("float64") for p in (layer.w_ih, layer.w_hh, layer.bias, layer.w_proj))
    x = np.asarray(x, dtype="float64")
    return np.stack([_numpy_lstmp(x[:, d].transpose(0, 2, 1), w_ih[d], w_hh[d], b[d, :, 0], w_proj[d],
                                  layer.cell_clip or np.inf, layer.proj_clip or np.inf).transpose(0, 2, 1)
                     for d in range(2)], axis=1)


def _layer(cell_clip=0.4, proj_clip=0.3, D=5, H=6, P=4, seed=0):
    paddle.seed(seed)
    layer = BiLstmpLayer(D, H, P, cell_clip, proj_clip)
    for p in layer.parameters():  # large weights, so that both clips are active
        p.set_value(paddle.uniform(p.shape, min=-1.0, max=1.0))
    return layer


def test_lstmp_matches_numpy_reference_with_active_clipping():
    """Every paddle driver of the one cell (no-grad loop, training PyLayer, autograd loop) == the float64 reference."""
    layer = _layer()
    x = np.random.default_rng(0).normal(size=(7, 2, 5, 3)).astype("float32")  # [T, 2, D, B]
    ref = _reference(layer, x)
    with paddle.no_grad():
        y = layer(paddle.to_tensor(x)).numpy()  # [T, 2, P, B]
    xt = paddle.to_tensor(x, stop_gradient=False)
    for got in (y, layer(xt).numpy(), layer.autograd_forward(xt).numpy()):
        np.testing.assert_allclose(got, ref, atol=1e-5)
    assert (np.abs(y) >= 0.3 - 1e-6).mean() > 0.1, "projection clip should be active in this test"
    # and the cell clip: with it removed the outputs change
    with paddle.no_grad():
        y_nocc = _layer(cell_clip=None)(paddle.to_tensor(x)).numpy()
    assert np.abs(y_nocc - y).max() > 1e-3


def _kernel(name, monkeypatch):
    """Pick the training kernel behind the PyLayer: "numpy" (lstm_cpu, CPU + MKL) or "paddle" (ops; GPU builds)."""
    import elmo_paddle.lstm as lstm_mod
    import elmo_paddle.lstm_cpu as lc

    if name == "numpy" and not lc.packed_gemm_available():
        pytest.skip("this paddle build has no bundled MKL packed GEMM")
    used = []
    real = lstm_mod.numpy_kernel_applies
    monkeypatch.setattr(lstm_mod, "numpy_kernel_applies", lambda x: used.append(1) or (name == "numpy" and real(x)))
    return used


@pytest.mark.parametrize("kernel,threads", [("numpy", 1), ("numpy", 2), ("paddle", 1)])
@pytest.mark.parametrize("clips", [(0.4, 0.3), (None, None)])
def test_lstmp_hand_written_backward_matches_autograd(clips, kernel, threads, monkeypatch):
    used = _kernel(kernel, monkeypatch)
    layer = _layer(*clips)
    x = paddle.randn([7, 2, 5, 3])  # [T, 2, D, B]
    x.stop_gradient = False
    r = paddle.randn([7, 2, 4, 3])
    grads = []
    import elmo_paddle.lstm_cpu as lc

    before = lc._mkl().MKL_Get_Max_Threads() if lc.packed_gemm_available() else 1
    paddle.base.core.set_num_threads(threads)
    try:
        for fn in (layer.forward, layer.autograd_forward):
            y = fn(x)
            (y * r).sum().backward()
            grads.append([y.numpy(), x.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()])
            x.clear_grad()
            layer.clear_gradients()
    finally:
        paddle.base.core.set_num_threads(before)
    assert used, "the PyLayer did not run"
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("kernel", ["numpy", "paddle"])
def test_bilm_gradients_on_a_ragged_batch_match_autograd(kernel, monkeypatch):
    """Whole biLM, padded rows of different lengths: the training kernel's gradients == paddle autograd's."""
    import elmo_paddle.lstm as lstm_mod

    _kernel(kernel, monkeypatch)
    m = _tiny_bilm("lstmp", cell_clip=0.5, proj_clip=0.5)
    m.eval()  # no dropout: the two runs must see the same function
    ids = np.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0], [14, 15, 0, 0, 0, 0]])
    batch = {"inputs": paddle.to_tensor(ids), "fwd_targets": paddle.to_tensor(np.roll(ids, -1, 1) * (ids != 0)),
             "bwd_targets": paddle.to_tensor(np.roll(ids, 1, 1) * (ids != 0))}
    results = []
    for autograd in (False, True):
        if autograd:
            monkeypatch.setattr(lstm_mod.BiLstmpLayer, "forward", lstm_mod.BiLstmpLayer.autograd_forward)
        out = m.lm_loss(batch, sampled=False)
        (out["fwd_nll"] + out["bwd_nll"]).backward()
        results.append({n: p.grad.numpy().copy() for n, p in m.named_parameters() if p.grad is not None})
        m.clear_gradients()
    assert results[0].keys() == results[1].keys() and any(k.startswith("lstm.") for k in results[0])
    for k in results[0]:
        np.testing.assert_allclose(results[0][k], results[1][k], atol=2e-5, rtol=1e-4, err_msg=k)


def test_lstmp_frozen_input_or_frozen_weights():
    layer = _layer()
    x = paddle.randn([7, 2, 5, 3])  # frozen input (e.g. a frozen lower layer)
    layer(x).sum().backward()
    assert layer.w_hh.grad is not None and layer.w_ih.grad is not None
    layer.clear_gradients()
    for p in layer.parameters():
        p.stop_gradient = True
    x.stop_gradient = False
    y_ref = layer.autograd_forward(x)
    y_ref.sum().backward()
    g_ref = x.grad.numpy()
    x.clear_grad()
    layer(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), g_ref, atol=2e-5)


def _tiny_bilm(impl, **kw):
    paddle.seed(1)
    cfg = BiLMConfig(vocab_size=30, token_dim=8, proj_dim=8, hidden_dim=12, num_layers=2, dropout=0.0,
                     lstm_impl=impl, **kw)
    return BiLM(cfg)


@pytest.mark.parametrize("impl", ["lstmp", "fused"])
def test_directions_only_see_their_side(impl):
    """Forward state at t depends on tokens <= t only, backward state at t on tokens >= t only (also with
    padding): the alignment that the old Paddle ELMo got wrong."""
    m = _tiny_bilm(impl)
    m.eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(2, 30, size=(2, 9))
    ids[1, 6:] = 0  # second row has length 6
    t = 3
    changed_after, changed_before = ids.copy(), ids.copy()
    changed_after[:, t + 1:] = rng.integers(2, 30, size=(2, 9 - t - 1))
    changed_after[1, 6:] = 0
    changed_before[:, :t] = rng.integers(2, 30, size=(2, t))
    with paddle.no_grad():
        base, after, before = (m(paddle.to_tensor(v))[1:] for v in (ids, changed_after, changed_before))
    P = 8
    for lb, la, lbf in zip(base, after, before):
        lb, la, lbf = lb.numpy(), la.numpy(), lbf.numpy()
        np.testing.assert_allclose(la[:, :t + 1, :P], lb[:, :t + 1, :P], atol=1e-6)  # fwd ignores the future
        assert np.abs(la[:, t + 1:6, :P] - lb[:, t + 1:6, :P]).max() > 1e-4
        np.testing.assert_allclose(lbf[:, t:6, P:], lb[:, t:6, P:], atol=1e-6)  # bwd ignores the past
        assert np.abs(lbf[:, :t, P:] - lb[:, :t, P:]).max() > 1e-4
    # both states at t have read token t itself: changing only token t moves both, and nothing beyond
    only_t = ids.copy()
    only_t[:, t] = (ids[:, t] - 2 + 5) % 28 + 2
    with paddle.no_grad():
        y = m(paddle.to_tensor(only_t))[1].numpy()
    assert np.abs(y[:, t, :P] - base[0].numpy()[:, t, :P]).max() > 1e-4
    assert np.abs(y[:, t, P:] - base[0].numpy()[:, t, P:]).max() > 1e-4
    np.testing.assert_allclose(y[:, t + 1:6, P:], base[0].numpy()[:, t + 1:6, P:], atol=1e-6)
    np.testing.assert_allclose(y[:, :t, :P], base[0].numpy()[:, :t, :P], atol=1e-6)


@pytest.mark.parametrize("impl", ["lstmp", "fused"])
def test_both_impls_train(impl):
    m = _tiny_bilm(impl)
    opt = paddle.optimizer.Adam(learning_rate=0.05, parameters=m.parameters())
    rng = np.random.default_rng(0)
    seq = rng.integers(2, 30, size=(4, 12))
    batch = {"inputs": paddle.to_tensor(seq[:, 1:-1]), "fwd_targets": paddle.to_tensor(seq[:, 2:]),
             "bwd_targets": paddle.to_tensor(seq[:, :-2])}
    losses = []
    for _ in range(30):
        out = m.lm_loss(batch)
        loss = (out["fwd_nll"] + out["bwd_nll"]) / (out["fwd_count"] + out["bwd_count"])
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    assert losses[-1] < 0.6 * losses[0], losses


def test_unknown_impl_is_a_user_error():
    from elmo_paddle.errors import UserError
    with pytest.raises(UserError):
        _tiny_bilm("cudnn")


@pytest.mark.parametrize("clips,threads", [((0.4, 0.3), 1), ((None, None), 1), ((0.4, 0.3), 2)])
def test_packed_kernel_matches_the_reference(clips, threads, monkeypatch):
    """The second kernel of the cell (MKL packed GEMM, numpy element-wise; with 2 threads one direction per
    thread) == the same float64 reference as the paddle path, for any batch width."""
    import elmo_paddle.lstm_cpu as lc

    if not lc.packed_gemm_available():
        pytest.skip("this paddle build has no bundled MKL packed GEMM")
    threaded = []
    one_direction = lc._single_mkl_thread
    monkeypatch.setattr(lc, "_single_mkl_thread", lambda *a: threaded.append(1) or one_direction(*a))
    before = lc._mkl().MKL_Get_Max_Threads()
    paddle.base.core.set_num_threads(threads)
    try:
        assert lc._mkl().MKL_Get_Max_Threads() == threads
        layer = _layer(*clips)
        packed = lc.PackedLstmp(*(p.numpy() for p in (layer.w_ih, layer.w_hh, layer.bias, layer.w_proj)),
                                layer.cell_clip, layer.proj_clip)
        rng = np.random.default_rng(1)
        for B in (3, 1, 5, 2, 4, 6, 3):  # more widths than packings kept
            x = rng.normal(size=(7, 2, 5, B)).astype("float32")
            np.testing.assert_allclose(packed(x), _reference(layer, x), atol=1e-5)
    finally:
        paddle.base.core.set_num_threads(before)
    assert bool(threaded) == (threads > 1)


def test_bilm_packed_snapshot_follows_freeze_and_unfreeze():
    """`BiLM.freeze_for_inference` snapshots the weights; unfreezing drops the snapshot (new weights are seen)."""
    import elmo_paddle.lstm_cpu as lc

    if not lc.packed_gemm_available():
        pytest.skip("this paddle build has no bundled MKL packed GEMM")
    m = _tiny_bilm("lstmp")
    m.eval()
    ids = paddle.to_tensor(np.array([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]]))
    lengths = paddle.to_tensor([5, 3])
    assert m.freeze_for_inference() and m.inference_packed
    with paddle.no_grad():
        ref = np.stack([h.numpy() for h in m(ids)], axis=1)
    np.testing.assert_allclose(m.packed_layers(ids, lengths), ref, atol=1e-5)
    assert not m.freeze_for_inference(False) and not m.inference_packed
    with pytest.raises(RuntimeError):
        m.packed_layers(ids, lengths)


def test_packed_path_can_be_switched_off(monkeypatch):
    import elmo_paddle.lstm_cpu as lc

    monkeypatch.setattr(lc, "_lib", None)
    monkeypatch.setenv("ELMO_PADDLE_PACKED_GEMM", "0")
    m = _tiny_bilm("lstmp")
    assert not m.freeze_for_inference() and not m.inference_packed and not lc.packed_gemm_available()
    monkeypatch.setattr(lc, "_lib", None)  # the next user probes again


def test_train_threads_setting_reaches_mkl():
    """`train.threads` must change the threads paddle's MKL uses (it was silently ignored once)."""
    import elmo_paddle.lstm_cpu as lc
    from elmo_paddle.runtime import set_threads

    if not lc.packed_gemm_available():
        pytest.skip("no bundled MKL to ask")
    before = lc._mkl().MKL_Get_Max_Threads()
    try:
        for n in (2, 1):
            set_threads(n)
            assert lc._mkl().MKL_Get_Max_Threads() == n
    finally:
        set_threads(before)


def _numpy_lstm(x, w_ih, w_hh, b):
    """Plain LSTM (paddle.nn.LSTM's gate order i, f, g, o; h is the full H state): x [T, B, D] -> h [T, B, H]."""
    T, B, _ = x.shape
    H = w_hh.shape[1]
    h, c, outs = np.zeros((B, H)), np.zeros((B, H)), []
    for t in range(T):
        z = x[t] @ w_ih.T + h @ w_hh.T + b
        i, f, g, o = _sigmoid(z[:, :H]), _sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), _sigmoid(z[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        outs.append(h)
    return np.stack(outs)


def test_fused_impl_matches_its_numpy_reference():
    """The "fused" approximation is what lstm.py says: per direction a plain LSTM on the full state, then the
    projection and the projection clip (no cell clip), in float64 numpy."""
    from elmo_paddle.lstm import FusedBiLstmLayer

    paddle.seed(3)
    layer = FusedBiLstmLayer(5, 6, 4, cell_clip=0.4, proj_clip=0.3)
    for p in layer.parameters():  # large weights: the clip is active
        p.set_value(paddle.uniform(p.shape, min=-1.0, max=1.0))
    x = np.random.default_rng(2).normal(size=(7, 2, 5, 3)).astype("float32")  # [T, 2, D, B]
    with paddle.no_grad():
        got = layer(paddle.to_tensor(x)).numpy()  # [T, 2, P, B]
    ref = []
    for d in range(2):
        rnn = {n: p.numpy().astype("float64") for n, p in layer.rnns[d].named_parameters()}
        h = _numpy_lstm(x[:, d].transpose(0, 2, 1).astype("float64"), rnn["weight_ih_l0"], rnn["weight_hh_l0"],
                        rnn["bias_ih_l0"] + rnn["bias_hh_l0"])
        ref.append(np.clip(h @ layer.w_proj.numpy()[d].astype("float64"), -0.3, 0.3).transpose(0, 2, 1))
    np.testing.assert_allclose(got, np.stack(ref, axis=1), atol=1e-5)
    assert (np.abs(got) >= 0.3 - 1e-6).mean() > 0.1, "projection clip should be active in this test"


@pytest.mark.parametrize("grad", [False, True])
def test_ragged_batch_through_both_directions_matches_the_reference(grad):
    """Layer level, rows of different lengths: `bidirectional_layers` == the float64 reference run forward over
    each row's first L steps and backward over them reversed, position by position (no-grad path: the packed
    kernel where MKL is present; with grad: the training PyLayer)."""
    from elmo_paddle.lstm import BiLstmpStack, bidirectional_layers

    paddle.seed(5)
    stack = BiLstmpStack(5, 6, 4, num_layers=1, cell_clip=0.4, proj_clip=0.3, dropout=0.0, residual=False)
    stack.eval()
    layer = stack.layers[0]
    for p in layer.parameters():
        p.set_value(paddle.uniform(p.shape, min=-1.0, max=1.0))
    lengths = np.array([7, 3, 5, 1])
    x = np.random.default_rng(4).normal(size=(4, 7, 5)).astype("float32")  # [B, T, D]
    xt = paddle.to_tensor(x, stop_gradient=not grad)
    with paddle.set_grad_enabled(grad):
        got = bidirectional_layers(stack, xt, paddle.to_tensor(lengths))[0].numpy()  # [B, T, 2P]
    for b, L in enumerate(lengths):
        xb = x[b, :L][:, None, :, None].repeat(2, axis=1)  # [L, 2, D, 1]: direction 1 gets the reversed row
        xb[:, 1] = xb[::-1, 1]
        ref = _reference(layer, xb)[:, :, :, 0]  # [L, 2, P]
        np.testing.assert_allclose(got[b, :L, :4], ref[:, 0], atol=1e-5, err_msg=f"row {b} forward")
        np.testing.assert_allclose(got[b, :L, 4:], ref[::-1, 1], atol=1e-5, err_msg=f"row {b} backward")
