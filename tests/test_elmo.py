import shutil

import numpy as np
import paddle
import pytest

import elmo_paddle  # noqa: F401
from elmo_paddle.elmo import Elmo, wrap_with_boundaries
from elmo_paddle.errors import UserError


@pytest.fixture(scope="module")
def elmo(tiny_model_dir):
    e = Elmo(tiny_model_dir, num_output_representations=2, dropout=0.5, l2_coef=0.01)
    e.eval()
    return e


def test_shapes_mask_and_parameters(elmo):
    ids = elmo.batch_to_ids(["中国人民", list("经济"), ""])
    assert ids.dtype == paddle.int64 and list(ids.shape) == [3, 4]
    out = elmo(ids)
    reps = out["elmo_representations"]
    assert len(reps) == 2 and all(list(r.shape) == [3, 4, elmo.output_dim] for r in reps)
    np.testing.assert_array_equal(out["mask"].numpy(), [[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]])
    layers = elmo.encode(ids)
    assert list(layers.shape) == [3, 3, 4, elmo.output_dim] and layers.stop_gradient
    assert np.all(layers.numpy()[1, :, 2:] == 0) and np.all(layers.numpy()[2] == 0)  # padding is zero
    names = [n for n, _ in elmo.named_parameters()]
    assert names and all(n.startswith("scalar_mixes.") for n in names)
    assert all(p.stop_gradient for p in elmo.bilm.parameters())
    # mix_layers on cached layers == forward
    again = elmo.mix_layers(layers, ids != 0)["elmo_representations"][0].numpy()
    np.testing.assert_allclose(again, reps[0].numpy(), rtol=1e-6, atol=1e-7)


def test_boundaries_stripped_and_positions_aligned(elmo):
    ids = elmo.batch_to_ids(["中国人民经济"])
    wrapped, lengths = wrap_with_boundaries(ids)
    assert wrapped.numpy().tolist()[0] == [1, *ids.numpy()[0].tolist(), 2] and int(lengths[0]) == 8
    direct = elmo.bilm(wrapped)
    layers = elmo.encode(ids).numpy()
    for j in range(3):
        np.testing.assert_allclose(layers[0, j], direct[j].numpy()[0, 1:-1], rtol=1e-5, atol=1e-6)
    # the token layer at position t is token t's embedding
    emb = elmo.bilm.token_emb.weight.numpy()[ids.numpy()[0]]
    P = elmo.output_dim // 2
    np.testing.assert_allclose(layers[0, 0, :, :P], emb, rtol=1e-6)


def test_backward_states_aligned_to_sentence_order(elmo):
    """Changing token t changes forward states only at >= t and backward states only at <= t."""
    P = elmo.output_dim // 2
    base = list("中国人民经济发展")
    t = 4
    changed = list(base)
    changed[t] = "北" if base[t] != "北" else "京"
    a = elmo.encode(elmo.batch_to_ids([base])).numpy()[0]
    b = elmo.encode(elmo.batch_to_ids([changed])).numpy()[0]
    assert (elmo.batch_to_ids([base]).numpy() != elmo.batch_to_ids([changed]).numpy()).sum() == 1
    for j in (1, 2):
        fa, fb, ba, bb = a[j, :, :P], b[j, :, :P], a[j, :, P:], b[j, :, P:]
        np.testing.assert_allclose(fa[:t], fb[:t], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ba[t + 1:], bb[t + 1:], rtol=1e-6, atol=1e-6)
        assert np.abs(fa[t:] - fb[t:]).max() > 1e-5  # the change is seen from t on ...
        assert np.abs(ba[:t + 1] - bb[:t + 1]).max() > 1e-5  # ... and backward up to t


def test_same_vectors_regardless_of_batch_and_history(elmo):
    s = "人民经济"
    alone = elmo(elmo.batch_to_ids([s]))["elmo_representations"][0].numpy()[0]
    elmo(elmo.batch_to_ids(["北京" * 20]))  # unrelated history
    batch = ["中国人民经济发展工作社会国家建设改革", s, "我们今天在北京工作了一个新的"]
    out = elmo(elmo.batch_to_ids(batch))["elmo_representations"][0].numpy()[1]
    np.testing.assert_allclose(out[:4], alone, rtol=1e-5, atol=1e-6)
    assert np.all(out[4:] == 0)
    lay_alone = elmo.encode(elmo.batch_to_ids([s])).numpy()[0]
    lay_batch = elmo.encode(elmo.batch_to_ids(batch)).numpy()[1, :, :4]
    np.testing.assert_allclose(lay_batch, lay_alone, rtol=1e-5, atol=1e-6)


def _paddle_path(elmo, ids):
    """`encode` with the packed snapshots dropped: the paddle op-by-op loop, the reference for the numpy path."""
    try:
        elmo.bilm.freeze_for_inference(False)
        assert not elmo.bilm.inference_packed
        return elmo.encode(ids).numpy()
    finally:
        elmo.bilm.freeze_for_inference()


def test_numpy_inference_path_matches_paddle_path(elmo):
    """`encode_array` (all numpy after the token layer, packed GEMM) == the paddle loop, ragged batch included."""
    from elmo_paddle.lstm_cpu import packed_gemm_available

    if not packed_gemm_available():
        pytest.skip("this paddle build has no bundled MKL packed GEMM")
    ids = elmo.batch_to_ids(["中国人民经济发展", "经济", "人民日报社论", ""])
    fast = elmo.encode_array(ids.numpy())
    assert fast.dtype == np.float32 and fast.shape == (4, 3, 8, elmo.output_dim)
    np.testing.assert_allclose(fast, _paddle_path(elmo, ids), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(elmo.encode(ids).numpy(), fast, rtol=0, atol=0)  # encode takes the same path
    assert np.all(fast[1, :, 2:] == 0) and np.all(fast[3] == 0)


def test_task_step_updates_mix_only(tiny_model_dir):
    paddle.seed(0)
    elmo = Elmo(tiny_model_dir, num_output_representations=1, dropout=0.5, l2_coef=0.001)
    head = paddle.nn.Linear(elmo.output_dim, 3)
    params = elmo.parameters() + head.parameters()
    opt = paddle.optimizer.Adam(0.05, parameters=params)
    frozen = {k: v.numpy().copy() for k, v in elmo.bilm.state_dict().items()}
    mix_before = elmo.scalar_mixes[0].scalar_parameters.numpy().copy()
    gamma_before = elmo.scalar_mixes[0].gamma.numpy().copy()
    elmo.train()
    assert elmo.training and not elmo.bilm.training and not elmo.bilm.lstm.dropout.training
    ids = elmo.batch_to_ids(["中国人民经济发展", "我们今天"])
    out = elmo(ids)
    # dropout on the mixed output in training mode
    assert not np.allclose(out["elmo_representations"][0].numpy(), elmo(ids)["elmo_representations"][0].numpy())
    logits = head(out["elmo_representations"][0])
    labels = paddle.to_tensor(np.array([[0, 1, 2, 0, 1, 2, 0, 1], [2, 1, 0, 2, 0, 0, 0, 0]], "int64"))
    loss = paddle.nn.functional.cross_entropy(logits, labels.unsqueeze(-1)) + elmo.l2_penalty()
    loss.backward()
    opt.step()
    opt.clear_grad()
    for k, v in elmo.bilm.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), frozen[k], err_msg=k)
    assert not np.allclose(elmo.scalar_mixes[0].scalar_parameters.numpy(), mix_before)
    assert not np.allclose(elmo.scalar_mixes[0].gamma.numpy(), gamma_before)
    # eval: no dropout, deterministic
    elmo.eval()
    a = elmo(ids)["elmo_representations"][0].numpy()
    np.testing.assert_array_equal(a, elmo(ids)["elmo_representations"][0].numpy())


def test_requires_grad_top_layers(tiny_model_dir):
    elmo = Elmo(tiny_model_dir, requires_grad_top_layers=1, dropout=0.0)
    names = [n for n, p in elmo.named_parameters() if not p.stop_gradient]
    assert any(n.startswith("tuned_lstm_layers.0.") for n in names)
    top = elmo.bilm.lstm.layers[-1]
    low = elmo.bilm.lstm.layers[0]
    top_before, low_before = top.w_hh.numpy().copy(), low.w_hh.numpy().copy()
    opt = paddle.optimizer.Adam(0.05, parameters=elmo.parameters())
    elmo.train()
    loss = (elmo(elmo.batch_to_ids(["中国人民经济"]))["elmo_representations"][0] ** 2).sum()
    loss.backward()
    opt.step()
    assert not np.allclose(top.w_hh.numpy(), top_before)
    np.testing.assert_array_equal(low.w_hh.numpy(), low_before)
    with pytest.raises(UserError):
        Elmo(tiny_model_dir, requires_grad_top_layers=5)


def test_bad_input(elmo):
    with pytest.raises(UserError):
        elmo.batch_to_ids([])
    with pytest.raises(UserError):
        elmo.batch_to_ids([["中国", "人"]])  # a word token for a char model
    with pytest.raises(UserError):
        elmo.batch_to_ids("中国")  # a bare string, not a list of sentences
    ids = elmo.batch_to_ids(["\U0001F600龘"]).numpy()  # OOV chars -> <UNK>
    assert ids[0, 0] == 3 and ids[0, 1] == 3
    out = elmo(elmo.batch_to_ids(["", ""]))  # only empty sentences: one padded step, all masked
    assert list(out["mask"].shape) == [2, 1] and not out["mask"].numpy().any()


def test_full_width_letters_and_digits_map_to_their_ascii_entries(tiny_model_dir):
    """Full-width Ａ/１/ａ (strings and token lists) get the ids of A/1/a.  The vocab here holds the ASCII forms
    only (the tiny model's own vocab may hold neither, and then every form maps to <UNK> and proves nothing)."""
    from elmo_paddle.vocab import SPECIALS, Vocab

    e = Elmo(tiny_model_dir)
    real = e.vocab.itos[len(SPECIALS):]
    rest = [t for t in real[3:] if t not in set("A1aＡ１ａ")]
    e.vocab = Vocab([*SPECIALS, "A", "1", "a", *rest], e.vocab.unit, e.vocab.chars)
    want = [e.vocab.stoi[c] for c in "A1a"]
    assert 3 not in want and "Ａ" not in e.vocab
    assert e.batch_to_ids(["Ａ１ａ"]).numpy()[0].tolist() == want
    assert e.batch_to_ids([["Ａ", "１", "ａ"]]).numpy()[0].tolist() == want


def test_model_dir_errors(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "weights.safetensors").unlink()
    with pytest.raises(UserError, match="missing weights.safetensors"):
        Elmo(broken)
    with pytest.raises(UserError):
        Elmo(tmp_path / "nope")
    # a pretraining output dir resolves to its best/
    assert Elmo(tiny_model_dir.parent).output_dim == Elmo(tiny_model_dir).output_dim
