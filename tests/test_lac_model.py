"""LAC model: the CRF against brute force, learning a tiny set, the +ELMo wiring with a fake ELMo, save/load."""
from __future__ import annotations

import itertools

import numpy as np
import paddle
import pytest

from tasks.lac.batching import char_vocab, example_batches
from tasks.lac.checkpoint import load_model, save_model
from tasks.lac.data import words_to_example
from tasks.lac.metrics import ChunkMetrics
from tasks.lac.model import CRF, LacTagger, batch_tensors


def test_crf_matches_brute_force():
    paddle.seed(3)
    rng = np.random.default_rng(0)
    n, t = 3, 4
    crf = CRF(n)
    em = rng.normal(size=(3, t, n)).astype("float32") * 2
    lengths = np.array([2, 4, 3])  # unsorted: the Viterbi sorts rows by length inside
    mask = paddle.to_tensor(np.arange(t)[None] < lengths[:, None])
    tr, st, en = crf.transitions.numpy(), crf.start.numpy(), crf.end.numpy()
    logz = crf.log_partition(paddle.to_tensor(em), mask).numpy()
    paths = crf.viterbi(em, lengths)
    for b in range(3):
        ys = list(itertools.product(range(n), repeat=int(lengths[b])))
        sc = np.array([st[y[0]] + en[y[-1]] + sum(em[b, i, y[i]] for i in range(len(y)))
                       + sum(tr[y[i - 1], y[i]] for i in range(1, len(y))) for y in ys])
        assert logz[b] == pytest.approx(np.log(np.exp(sc).sum()), rel=1e-5)
        assert tuple(paths[b]) == ys[int(sc.argmax())]
        tags = np.zeros((3, t), dtype="int64")
        tags[b, :lengths[b]] = ys[5]
        gold = crf.score(paddle.to_tensor(em), paddle.to_tensor(tags), mask).numpy()[b]
        assert gold == pytest.approx(sc[5], rel=1e-5)


TINY = [[("我们", "r"), ("爱", "v"), ("北京", "LOC")], [("他", "r"), ("去", "v"), ("上海", "LOC"), ("了", "u")],
        [("张三", "PER"), ("在", "p"), ("北京", "LOC"), ("工作", "v")], [("今天", "TIME"), ("我们", "r"), ("工作", "v")],
        [("李四", "PER"), ("爱", "v"), ("上海", "LOC")], [("他们", "r"), ("今天", "TIME"), ("去", "v"), ("北京", "LOC")]]


def _train(model, exs, vocab, tag_index, steps, elmo=False):
    opt = paddle.optimizer.Adam(0.05, parameters=[p for p in model.parameters() if not p.stop_gradient])
    batch = example_batches(exs, vocab, tag_index, len(exs))[0]
    ids, lengths, tag_ids = batch_tensors(batch.char_ids, batch.lengths, batch.tag_ids)
    elmo_ids = model.elmo.batch_to_ids(batch.tokens) if elmo else None
    model.train()
    for _ in range(steps):
        loss = model.loss(ids, lengths, tag_ids, elmo_ids)
        loss.backward()
        opt.step()
        opt.clear_grad()
    model.eval()
    return float(loss)


def _f1(model, exs, vocab, tag_index, tags, elmo=False):
    m = ChunkMetrics()
    for b in example_batches(exs, vocab, tag_index, 8):
        ids, lengths = batch_tensors(b.char_ids, b.lengths)
        elmo_ids = model.elmo.batch_to_ids(b.tokens) if elmo else None
        for row, path in zip(b.index, model.decode(ids, lengths, elmo_ids)):
            m.update(exs[row].tags, [tags[i] for i in path])
    return m.result()["f1"]


def _assert_same_model(a, b, exs, vocab, tag_index, elmo=False):
    """Save/load is exact: every parameter (trained and frozen) and the emissions on every example are equal
    bit for bit (an equal F1 on six sentences would hide most differences)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sb[k].numpy(), sa[k].numpy(), err_msg=k)
    batch = example_batches(exs, vocab, tag_index, len(exs))[0]
    ids, lengths = batch_tensors(batch.char_ids, batch.lengths)
    a.eval()
    b.eval()
    with paddle.no_grad():
        ea, eb = (m.emissions(ids, lengths, m.elmo.batch_to_ids(batch.tokens) if elmo else None) for m in (a, b))
    np.testing.assert_array_equal(eb.numpy(), ea.numpy())


def _setup():
    exs = [words_to_example(w) for w in TINY]
    tags = sorted({t for e in exs for t in e.tags})
    return exs, tags, {t: i for i, t in enumerate(tags)}, char_vocab(e.chars for e in exs)


def test_tagger_learns_a_tiny_set_and_is_not_trivially_right():
    paddle.seed(0)
    exs, tags, tag_index, vocab = _setup()
    model = LacTagger(len(vocab), len(tags), emb_dim=16, hidden_dim=16)
    before = _f1(model, exs, vocab, tag_index, tags)
    _train(model, exs, vocab, tag_index, 60)
    after = _f1(model, exs, vocab, tag_index, tags)
    assert before < 50, "an untrained model must not already be right (else this test cannot fail)"
    assert after == 100.0


class FakeElmo(paddle.nn.Layer):
    """Same interface as elmo_paddle.elmo.Elmo: a frozen 'biLM' (an embedding) + a trainable gamma."""

    output_dim = 6

    def __init__(self, n_outputs: int = 1) -> None:
        super().__init__()
        self.table = {}
        self.bilm = paddle.nn.Embedding(100, self.output_dim)
        for p in self.bilm.parameters():
            p.stop_gradient = True
        self.gammas = paddle.nn.ParameterList([self.create_parameter([1], default_initializer=paddle.nn.initializer.Constant(1.0))
                                               for _ in range(n_outputs)])

    def batch_to_ids(self, tokens):
        t = max(len(x) for x in tokens)
        ids = np.zeros((len(tokens), t), dtype="int64")
        for i, toks in enumerate(tokens):
            ids[i, :len(toks)] = [self.table.setdefault(c, len(self.table) + 1) for c in toks]
        return paddle.to_tensor(ids)

    def forward(self, ids):
        h = self.bilm(ids)
        return {"elmo_representations": [g * h for g in self.gammas], "mask": ids != 0}

    def l2_penalty(self):
        return 0.0 * sum(g.sum() for g in self.gammas)


@pytest.mark.parametrize("at_output", [False, True])
def test_elmo_variant_trains_only_the_mix_and_saves_without_bilm(tmp_path, at_output):
    paddle.seed(1)
    exs, tags, tag_index, vocab = _setup()
    elmo = FakeElmo(2 if at_output else 1)
    model = LacTagger(len(vocab), len(tags), emb_dim=8, hidden_dim=8, elmo=elmo, elmo_at_output=at_output)
    frozen = elmo.bilm.weight.numpy().copy()
    gamma = elmo.gammas[0].numpy().copy()
    _train(model, exs, vocab, tag_index, 5, elmo=True)
    assert np.array_equal(elmo.bilm.weight.numpy(), frozen)
    assert not np.array_equal(elmo.gammas[0].numpy(), gamma)
    state = model.trainable_state()
    assert "elmo.bilm.weight" not in state and any(k.startswith("elmo.gammas") for k in state)
    cfg = dict(emb_dim=8, hidden_dim=8, num_layers=2, dropout=0.0, crf_lr=1.0, elmo_model=None,
               elmo_at_output=at_output, elmo_gamma=1.0, elmo_dropout=0.0)
    save_model(tmp_path, model, cfg, vocab, tags)
    loaded = load_model(tmp_path, elmo=FakeElmo(2 if at_output else 1))[0]
    loaded.elmo.bilm.weight.set_value(elmo.bilm.weight)  # the real Elmo reloads its biLM from its dir
    loaded.elmo.table = elmo.table
    _assert_same_model(model, loaded, exs, vocab, tag_index, elmo=True)


def test_checkpoint_round_trip_is_exact_and_not_pickle(tmp_path):
    paddle.seed(2)
    exs, tags, tag_index, vocab = _setup()
    model = LacTagger(len(vocab), len(tags), emb_dim=8, hidden_dim=8)
    cfg = dict(emb_dim=8, hidden_dim=8, num_layers=2, dropout=0.0, crf_lr=1.0, elmo_model=None,
               elmo_at_output=False, elmo_gamma=1.0, elmo_dropout=0.5)
    save_model(tmp_path, model, cfg, vocab, tags)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "manifest.json", "model.safetensors", "tags.json", "vocab.json"]
    loaded, cfg2, vocab2, tags2 = load_model(tmp_path)
    for k, v in model.state_dict().items():
        assert np.array_equal(v.numpy(), loaded.state_dict()[k].numpy()), k
    assert cfg2 == cfg and vocab2.itos == vocab.itos and tags2 == tags


def test_real_elmo_layer_plugs_in(request, tmp_path):
    """With the real elmo_paddle.elmo.Elmo on a tiny pretrained biLM (skipped where it is not available)."""
    pytest.importorskip("elmo_paddle.elmo", reason="elmo_paddle.elmo not in this checkout")
    try:
        model_dir = request.getfixturevalue("tiny_model_dir")
    except pytest.FixtureLookupError:
        pytest.skip("no tiny_model_dir fixture (tests/conftest.py) to build a biLM")
    from tasks.common.run import build_elmo

    paddle.seed(4)
    exs, tags, tag_index, vocab = _setup()
    elmo = build_elmo(str(model_dir), mixes=2, gamma=1.0, dropout=0.0, l2=0.001)
    model = LacTagger(len(vocab), len(tags), emb_dim=8, hidden_dim=8, elmo=elmo, elmo_at_output=True)
    bilm_before = [p.numpy().copy() for p in elmo._bilm.parameters()] if hasattr(elmo, "_bilm") else []
    _train(model, exs, vocab, tag_index, 3, elmo=True)
    for p, before in zip(elmo._bilm.parameters() if hasattr(elmo, "_bilm") else [], bilm_before):
        assert np.array_equal(p.numpy(), before), "the biLM must stay frozen"
    cfg = dict(emb_dim=8, hidden_dim=8, num_layers=2, dropout=0.0, crf_lr=1.0, elmo_model=str(model_dir),
               elmo_at_output=True, elmo_gamma=1.0, elmo_dropout=0.0, elmo_l2=0.001)
    save_model(tmp_path, model, cfg, vocab, tags)
    loaded = load_model(tmp_path)[0]  # rebuilds Elmo from cfg['elmo_model']
    _assert_same_model(model, loaded, exs, vocab, tag_index, elmo=True)


@pytest.mark.parametrize("scale", [0.0, 0.01, 1.0, 30.0])  # 0: all ties; small: the bound fails, full max
def test_best_after_is_the_full_max(scale):
    """The Viterbi's max over predecessors from each row's best few equals the full max exactly, whether the
    top predecessors settle a row or it falls back (flat scores), and with ties."""
    from tasks.lac.model import best_after

    rng = np.random.default_rng(5)
    n = 40
    trans = (rng.normal(size=(n, n)) * 3).astype("float32")
    prev = (rng.normal(size=(17, n)) * scale).astype("float32")
    prev[3] = prev[3].max()  # a row of ties
    cand = np.empty((n, 20, n), dtype="float32")
    want = (prev.T[:, :, None] + trans[:, None, :]).max(0)
    np.testing.assert_array_equal(best_after(prev, trans, trans.max(0), cand, top=4), want)
