"""Char-CNN token layer end to end: char vocab, pretraining on word units, ELMo on out-of-vocab words."""
import json

import numpy as np
import pytest

import elmo_paddle  # noqa: F401  (env before paddle)
from corpus_fixture import make_corpus
from elmo_paddle.errors import UserError
from elmo_paddle.vocab import Vocab
from test_pretrain import pretrain, run_cli

CHAR_CNN = ["data.unit=word", "bilm.token_encoder=char_cnn", "bilm.max_chars_per_token=6",
            "bilm.char_dim=8", "bilm.cnn_filters=[[1,16],[2,16]]", "bilm.token_dim=16", "bilm.proj_dim=16",
            "bilm.hidden_dim=32", "data.min_count=2", "data.dev_fraction=0.05", "train.batch_size=8",
            "train.seq_len=8", "train.lr=0.02", "train.warmup_steps=5", "train.log_every=5"]


def test_char_vocab_spells_tokens():
    v = Vocab.build([["北京", "北京", "上海", "京城"]], "word", min_count=2, with_chars=True)
    assert v.itos[4:] == ["北京"] and v.chars[6:] == ["京", "北"]  # chars counted over all tokens
    bow, eow = 1, 2
    assert v.char_ids("北京", 5) == [bow, 7, 6, eow, 0]
    assert v.char_ids("北京京京", 5) == [bow, 7, 6, 6, eow]  # cut, still ends in <eow>
    assert v.char_ids("上", 4) == [bow, 5, eow, 0]  # unknown character
    assert v.char_ids("<S>", 4) == [bow, 3, eow, 0] and v.char_ids("</S>", 4) == [bow, 4, eow, 0]
    assert v.char_ids("<PAD>", 4) == [0, 0, 0, 0]
    assert v.char_table(4).shape == (len(v), 4)
    with pytest.raises(UserError):
        Vocab.build([["a"]], "char").char_ids("a", 4)  # no char vocab


def test_char_vocab_round_trips(tmp_path):
    v = Vocab.build([["北京", "北京"]], "word", min_count=1, with_chars=True)
    v.save(tmp_path / "v.json")
    w = Vocab.load(tmp_path / "v.json")
    assert w.chars == v.chars and w.itos == v.itos


@pytest.fixture(scope="module")
def char_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("cc")
    corpus = make_corpus(d / "corpus.txt", 500)
    r = pretrain(corpus, d / "m", *CHAR_CNN, "train.max_steps=40", "train.eval_every=20", "train.save_every=20")
    assert r.returncode == 0, r.stderr[-2000:]
    return d / "m"


def test_char_cnn_pretraining_learns_and_saves_its_char_vocab(char_model):
    hist = json.loads((char_model / "history.json").read_text())
    assert hist[-1]["ppl"] < 0.6 * hist[0]["ppl"], hist
    vocab = json.loads((char_model / "best" / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["unit"] == "word" and vocab["chars"][:6] == ["<pad>", "<bow>", "<eow>", "<bos>", "<eos>", "<unk>"]
    conf = json.loads((char_model / "best" / "config.json").read_text())
    assert conf["bilm"]["char_vocab_size"] == len(vocab["chars"])
    r = run_cli(["-m", "elmo_paddle.perplexity", "--model", str(char_model)])
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["ppl"] == pytest.approx(hist[-1]["ppl"], rel=0.2)


def test_elmo_spells_out_of_vocab_words(char_model):
    import paddle

    from elmo_paddle.elmo import Elmo
    from elmo_paddle.embedder import ElmoEmbedder

    elmo = Elmo(char_model / "best", dropout=0.0)
    assert "参观学习" not in elmo.vocab and "参观" in elmo.vocab
    sents = [["我们", "参观", "城市"], ["我们", "参观学习", "城市"], ["我们", "<UNK>", "城市"]]
    ids = elmo.batch_to_ids(sents)
    assert ids.shape == [3, 3, 6]
    layers = elmo.encode(ids).numpy()  # [B, 3, T, D]
    tok = layers[:, 0, 1]
    assert np.abs(tok[1] - tok[2]).max() > 1e-4  # an unseen word is not <UNK>: its characters count
    assert np.abs(tok[1] - tok[0]).max() > 1e-4
    # padding and determinism: the same sentence alone gives the same vectors
    alone = elmo.encode(elmo.batch_to_ids([sents[1][:2]])).numpy()
    both = elmo.encode(elmo.batch_to_ids([sents[1][:2], sents[0]])).numpy()
    np.testing.assert_allclose(alone[0], both[0][:, :2], atol=1e-5)
    assert np.abs(both[0][:, 2]).max() == 0  # padding position is zero
    from test_elmo import _paddle_path  # the numpy inference path spells words as the paddle path does

    np.testing.assert_allclose(elmo.encode_array(ids.numpy()), _paddle_path(elmo, ids), rtol=1e-4, atol=1e-5)
    out = elmo(ids)
    assert out["mask"].numpy().all() and out["elmo_representations"][0].shape == [3, 3, elmo.output_dim]
    with pytest.raises(UserError, match="character ids"):
        elmo.encode(paddle.to_tensor([[4, 5]], dtype="int64"))
    vecs = ElmoEmbedder(char_model / "best").embed_sentences(["我们参观学习城市", ""])
    assert vecs[0].shape[0] == 3 and vecs[1].shape[1] == 0


def test_char_cnn_export_is_refused_clearly(char_model, tmp_path):
    r = run_cli(["-m", "elmo_paddle.export", "--model", str(char_model / "best"), "--output", str(tmp_path / "e")])
    assert r.returncode != 0 and "embedding' token layer" in r.stderr and "Traceback" not in r.stderr
