"""BiDAF end to end: it can fit a few examples, +ELMo (fake module, same interface) trains only the mixes,
and the finetune / predict CLIs write a complete model folder and answers."""
from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

import tasks.bidaf.checkpoint as checkpoint
import tasks.bidaf.finetune as finetune
import tasks.common.elmo_ref as elmo_ref
from elmo_paddle.runtime import to_tensors
from tasks.bidaf.checkpoint import load_model, save_model, trainable_state
from tasks.bidaf.data import QAExample, build_vocab, encode_batch, make_features
from tasks.bidaf.inference import predict_features
from tasks.bidaf.model import BiDAF, ModelSizes
from tasks.bidaf.predict import main as predict_main


class FakeElmo(nn.Layer):
    """Same interface as elmo_paddle.elmo.Elmo: frozen 'biLM' (an embedding), trainable scalar mixes."""

    def __init__(self, num_output_representations: int = 1, dim: int = 6, **_):
        super().__init__()
        self.output_dim = dim
        self.emb = nn.Embedding(997, dim)
        self.emb.weight.stop_gradient = True
        self.weights = nn.ParameterList([self.create_parameter([3], default_initializer=nn.initializer.Constant(0.0))
                                         for _ in range(num_output_representations)])
        self.gammas = nn.ParameterList([self.create_parameter([1], default_initializer=nn.initializer.Constant(1.0))
                                        for _ in range(num_output_representations)])

    def batch_to_ids(self, token_lists):
        T = max(len(t) for t in token_lists)
        ids = np.zeros((len(token_lists), T), dtype="int64")
        for i, toks in enumerate(token_lists):
            ids[i, :len(toks)] = [1 + sum(map(ord, t)) % 996 for t in toks]
        return paddle.to_tensor(ids)

    def encode(self, ids):
        with paddle.no_grad():
            e = self.emb(ids)
            return paddle.stack([e, paddle.tanh(e), 0.5 * e], axis=1)

    def mix_layers(self, layers, mask):
        m = mask.astype("float32").unsqueeze(-1)
        reps = [g * (F.softmax(w).reshape([1, 3, 1, 1]) * layers).sum(axis=1) * m
                for w, g in zip(self.weights, self.gammas)]
        return {"elmo_representations": reps, "mask": mask}

    def forward(self, ids):
        return self.mix_layers(self.encode(ids), ids != 0)

    def l2_penalty(self):
        return paddle.to_tensor(0.0)


def _examples(n: int, seed: int = 0) -> list[QAExample]:
    rng = random.Random(seed)
    pool = [chr(c) for c in range(0x4E00, 0x4E00 + 300)]
    out = []
    for i in range(n):
        ans = "".join(rng.choices(pool, k=rng.randint(2, 4)))
        left = "".join(rng.choices(pool, k=rng.randint(5, 25)))
        ctx = left + ans + "".join(rng.choices(pool, k=rng.randint(5, 25)))
        q = "".join(rng.choices(pool, k=6))
        out.append(QAExample(f"q{i}", ctx, ctx, q, [ans], len(left), len(left) + len(ans) - 1))
    return out


def _setup(examples, elmo=None, at_modeling=False):
    feats = make_features(examples, 400, 300, 64, train=True)
    chars = build_vocab([f.c_chars + f.q_chars for f in feats])
    words = build_vocab([f.c_words + f.q_words for f in feats])
    sizes = ModelSizes(len(chars), len(words), 16, 16, 16, 0.0, elmo.output_dim if elmo else 0, at_modeling)
    return feats, chars, words, BiDAF(sizes, elmo)


def test_bidaf_fits_a_few_examples():
    paddle.seed(0)
    examples = _examples(8)
    feats, chars, words, model = _setup(examples)
    opt = paddle.optimizer.Adam(0.01, parameters=model.parameters())
    batch = to_tensors(encode_batch(feats, chars, words))
    model.train()
    losses = []
    for _ in range(60):
        loss = model.loss(batch)
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    assert losses[-1] < 0.2 * losses[0], losses[::10]
    preds = predict_features(model, examples, make_features(examples, 400, 300, 64, False), chars, words)
    exact = sum(preds[e.qid] == e.answers[0] for e in examples)
    assert exact >= 6, (exact, preds)


def test_masked_logits_and_shapes():
    examples = _examples(3)
    feats, chars, words, model = _setup(examples)
    arrays = encode_batch(feats, chars, words)
    model.eval()
    s, e = model(to_tensors(arrays))
    assert s.shape == list(arrays["c_char"].shape)
    for i, n in enumerate(arrays["c_len"]):
        assert (s.numpy()[i, n:] < -1e29).all() and (s.numpy()[i, :n] > -1e29).all()


@pytest.mark.parametrize("at_modeling", [False, True])
def test_elmo_mix_trains_and_bilm_stays_frozen(tmp_path, at_modeling):
    paddle.seed(0)
    from tasks.bidaf.elmo_cache import ElmoLayerCache
    from tasks.bidaf.inference import elmo_inputs

    elmo = FakeElmo(2 if at_modeling else 1)
    examples = _examples(4)
    feats, chars, words, model = _setup(examples, elmo, at_modeling)
    cache = ElmoLayerCache(elmo, max_mb=1)
    frozen_before = elmo.emb.weight.numpy().copy()
    params = [p for p in model.parameters() if not p.stop_gradient]
    opt = paddle.optimizer.Adam(0.05, parameters=params)
    batch = to_tensors(encode_batch(feats, chars, words))
    for _ in range(3):
        loss = model.loss(batch, *elmo_inputs(feats, cache))
        loss.backward()
        assert elmo.weights[0].grad is not None and float(elmo.weights[0].grad.abs().sum()) > 0
        if at_modeling:
            assert float(elmo.weights[1].grad.abs().sum()) > 0
        opt.step()
        opt.clear_grad()
    assert np.array_equal(elmo.emb.weight.numpy(), frozen_before)
    assert cache.report()["hits"] > 0          # the second step found the layers cached
    assert not any(k.startswith("elmo.emb") for k in trainable_state(model))


def _write_split(path: Path, examples: list[QAExample]) -> None:
    data = {"version": "v1.0", "data": [{"id": e.qid, "paragraphs": [{"context": e.context, "qas": [
        {"id": e.qid, "question": e.question, "answers": [{"text": e.answers[0], "answer_start": e.start}]}]}]}
        for e in examples]}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


@pytest.mark.parametrize("use_elmo", [False, True])
def test_finetune_and_predict_cli(tmp_path, monkeypatch, capsys, use_elmo):
    d = tmp_path / "data" / "cmrc2018"
    d.mkdir(parents=True)
    for name, ex in (("train", _examples(12, 1)), ("trial", _examples(4, 2)), ("dev", _examples(4, 3))):
        _write_split(d / f"cmrc2018_{name}.json", ex)
    extra = ["ema_decay=0.99"]  # the baseline also scores and saves a moving average of its weights
    if use_elmo:
        monkeypatch.setattr(checkpoint, "build_elmo", lambda cfg: FakeElmo(2 if cfg.get("elmo_at_modeling") else 1))
        # the fake biLM has no model folder: name it as given (tests/test_elmo_ref.py covers the real naming)
        monkeypatch.setattr(elmo_ref, "canonical", lambda ref: ref)
        monkeypatch.setattr(elmo_ref, "record", lambda cfg, task_dir: cfg)
        monkeypatch.setattr(elmo_ref, "resolve", lambda cfg, task_dir: cfg["elmo_model"])
        extra = ["--elmo-model", str(tmp_path), "elmo_at_modeling=true"]
    args = ["--data-dir", str(tmp_path / "data"), "--run-name", "t", "--max-steps", "2", "--epochs", "1",
            f"runs_dir={tmp_path / 'runs'}", "train_file=cmrc2018/cmrc2018_train.json",
            "dev_file=cmrc2018/cmrc2018_trial.json", "test_file=cmrc2018/cmrc2018_dev.json",
            "hidden=8", "char_dim=8", "word_dim=8", "batch_size=4", *extra]
    assert finetune.main(args) == 0
    run = tmp_path / "runs" / "t"
    m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert m["test"]["total"] == 4 and m["steps"] == 2 and "f1" in m["dev_best"] and m["train_seconds"] >= 0
    assert set(json.loads((run / "test_predictions.json").read_text(encoding="utf-8"))) == {"q0", "q1", "q2", "q3"}
    for f in ("model.safetensors", "config.json", "vocab.json"):
        assert (run / "model" / f).is_file()
    model, *_ = load_model(run / "model")
    assert (model.elmo is not None) == use_elmo
    capsys.readouterr()
    assert predict_main(["--model", str(run / "model"), "--context", "北京大学在北京。", "--question", "哪里？"]) == 0
    answer = capsys.readouterr().out.strip()
    assert answer and answer in "北京大学在北京。", answer  # a span of the context: not empty ("" is in any string)
    out = tmp_path / "p.json"
    assert predict_main(["--model", str(run / "model"), "--input", str(d / "cmrc2018_dev.json"),
                         "--output", str(out)]) == 0
    preds = json.loads(out.read_text(encoding="utf-8"))
    contexts = {e.qid: e.context for e in _examples(4, 3)}
    assert preds.keys() == contexts.keys()
    assert all(preds[q] and preds[q] in contexts[q] for q in preds), preds
    assert predict_main(["--model", str(run / "model"), "--input", str(d / "cmrc2018_dev.json"),
                         "--output", str(out), "--max-answer-len", "2"]) == 0  # decoding reads at most 2 characters
    short = json.loads(out.read_text(encoding="utf-8"))
    assert short.keys() == contexts.keys() and all(0 < len(a) <= 2 and a in contexts[q] for q, a in short.items())


def test_cli_user_mistakes_exit_2(tmp_path, capsys):
    assert finetune.main(["--data-dir", str(tmp_path), "no_such_key=1"]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert finetune.main(["--data-dir", str(tmp_path), "--max-steps", "1"]) == 2   # no CMRC files there
    assert "does not exist" in capsys.readouterr().err
    assert finetune.main(["--data-dir", str(tmp_path), "ema_decay=1"]) == 2
    assert "ema_decay must be in (0, 1)" in capsys.readouterr().err
    assert predict_main(["--model", str(tmp_path), "--context", "x", "--question", " "]) == 2
    assert predict_main(["--model", str(tmp_path / "none"), "--context", "x", "--question", "y"]) == 2
    assert predict_main(["--model", str(tmp_path), "--context", "x", "--question", "y", "--max-answer-len", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 3 and "Traceback" not in err and "--max-answer-len" in err


@pytest.mark.parametrize("placement", ["elmo_at_modeling=true", "elmo_only_layer=0"])
def test_finetune_with_real_elmo(tmp_path, tiny_model_dir, placement):
    """The real Elmo layer (tiny pretrained biLM from conftest) through finetune and predict; with
    elmo_only_layer=0 the saved reader reads the token layer alone (the context-free control)."""
    pytest.importorskip("elmo_paddle.elmo")
    d = tmp_path / "data" / "cmrc2018"
    d.mkdir(parents=True)
    for name, ex in (("train", _examples(6, 1)), ("trial", _examples(3, 2)), ("dev", _examples(3, 3))):
        _write_split(d / f"cmrc2018_{name}.json", ex)
    args = ["--data-dir", str(tmp_path / "data"), "--run-name", "e", "--max-steps", "2",
            "--elmo-model", str(tiny_model_dir), f"runs_dir={tmp_path / 'runs'}", placement,
            "train_file=cmrc2018/cmrc2018_train.json", "dev_file=cmrc2018/cmrc2018_trial.json",
            "test_file=cmrc2018/cmrc2018_dev.json", "hidden=8", "char_dim=8", "word_dim=8", "batch_size=3"]
    assert finetune.main(args) == 0
    m = json.loads((tmp_path / "runs" / "e" / "metrics.json").read_text(encoding="utf-8"))
    assert m["test"]["total"] == 3 and m["elmo_cache"]["entries"] > 0
    assert predict_main(["--model", str(tmp_path / "runs" / "e" / "model"), "--context", "北京 大学",
                         "--question", "哪里"]) == 0
    with warnings.catch_warnings(record=True) as caught:  # frozen mix weights are not saved, nor warned about
        warnings.simplefilter("always")
        model = checkpoint.load_model(tmp_path / "runs" / "e" / "model")[0]
    assert not [w for w in caught if "Skip loading" in str(w.message)]
    assert [mix.only_layer for mix in model.elmo.scalar_mixes] == ([0] if placement == "elmo_only_layer=0"
                                                                    else [None, None])
