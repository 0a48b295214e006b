"""The models shipped in pretrained/ (tracked in git): complete, loadable by name, and actually trained."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

import elmo_paddle  # noqa: F401  (env before paddle)
from elmo_paddle import checkpoint as ckpt
from elmo_paddle.model_io import PRETRAINED_DIR, shipped_models

NAME = "zh-char-elmo"  # the default biLM (v3); v2 stays beside it for the tagger trained with it


@pytest.mark.parametrize("name", [NAME, "zh-char-elmo-v2"])
def test_shipped_elmo_is_complete_and_verifies_against_its_manifest(name):
    assert name in shipped_models()
    folder = PRETRAINED_DIR / name
    manifest = ckpt.verify_dir(folder)
    assert {"weights.safetensors", "config.json", "vocab.json", "corpus.json"} <= set(manifest["files"])
    assert (folder / "MODEL_CARD.md").is_file()
    assert all(not f.startswith("/") for f in ckpt.read_json(folder, "corpus.json")["files"]), \
        "the held-out split must be recorded relative to the data dir, to be found on any machine"


def test_load_by_name_encode_and_it_is_a_trained_lm():
    from elmo_paddle import Elmo

    elmo = Elmo(NAME)
    assert elmo.model_dir == PRETRAINED_DIR / NAME
    sents = ["中国人民经济发展很快。", "我们今天在北京工作。"]
    layers = elmo.encode(elmo.batch_to_ids(sents)).numpy()
    assert layers.shape == (2, 3, 11, elmo.output_dim) and np.isfinite(layers).all()
    # an untrained biLM is near the uniform perplexity (the vocab size); a trained one is far below it
    bilm, vocab = elmo.bilm, elmo.vocab
    ids = np.array([[vocab.bos_id] + vocab.encode(list(s)) + [vocab.eos_id] for s in [sents[0]]])
    batch = {"inputs": paddle.to_tensor(ids[:, 1:-1]), "fwd_targets": paddle.to_tensor(ids[:, 2:]),
             "bwd_targets": paddle.to_tensor(ids[:, :-2])}
    with paddle.no_grad():
        out = bilm.lm_loss(batch, sampled=False)
    ppl = math.exp(float(out["fwd_nll"] + out["bwd_nll"]) / float(out["fwd_count"] + out["bwd_count"]))
    assert ppl < len(vocab) / 10, ppl


def test_cli_takes_the_name():
    r = subprocess.run([sys.executable, "-m", "elmo_paddle.perplexity", "--model", NAME, "--max-lines", "5"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-500:]
    assert '"ppl_fwd"' in r.stdout


def test_the_shipped_elmo_tagger_names_the_biLM_it_was_trained_with():
    """The +ELMo tagger (version 2) was trained on v3: it finds v3 by name, and the weights' sha256 it recorded
    is v3's, not that of v2 beside it (which version 1 read)."""
    from tasks.common import elmo_ref

    folder = PRETRAINED_DIR / "lac-pd1998-elmo"
    cfg = ckpt.read_json(folder, "config.json")
    assert Path(elmo_ref.resolve(cfg, folder)).resolve() == (PRETRAINED_DIR / NAME).resolve()
    assert elmo_ref.weights_sha256(PRETRAINED_DIR / NAME) == cfg["elmo_weights_sha256"]
    assert elmo_ref.weights_sha256(PRETRAINED_DIR / "zh-char-elmo-v2") != cfg["elmo_weights_sha256"]


@pytest.mark.parametrize("name", ["lac-pd1998", "lac-pd1998-elmo"])
def test_shipped_tagger_reproduces_its_model_card(name):
    """A shipped tagger tags by name, and its card's predict-path segmentation F1 is what the model gives."""
    import re

    from elmo_paddle.data_dir import resolve_data_dir

    folder = PRETRAINED_DIR / name
    assert name in shipped_models() and (folder / "MODEL_CARD.md").is_file()
    r = subprocess.run([sys.executable, "-m", "tasks.lac.predict", "--model", name], input="我们今天去北京开会了。\n",
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().split()[3] == "北京/LOC", (r.stdout, r.stderr[-500:])
    data = resolve_data_dir()
    if data is None or not (data / "peoples_daily_1998").is_dir():
        pytest.skip("needs the data sets for the card's test score")
    card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    want = float(re.search(r"`pd_lac` \(PER names merged, as trained\) seg F1 \*\*([\d.]+)\*\*", card).group(1))
    r = subprocess.run([sys.executable, "-m", "tasks.lac.score_seg", "--system", name],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-500:]
    import json

    assert round(json.loads(r.stdout[r.stdout.index("{"):r.stdout.rindex("}") + 1])["pd_lac"]["seg_f1"], 2) == want


@pytest.mark.parametrize("name", ["lac-pd1998-elmo", "bidaf-cmrc2018-elmo"])
def test_a_shipped_elmo_task_model_finds_its_biLM_beside_it(name):
    """By name first; the relative path (`../zh-char-elmo`, for a copied pretrained/ folder) must point there too.
    BiDAF keeps its run config under "config" beside "sizes"; shipping rewrites the path there."""
    folder = PRETRAINED_DIR / name
    cfg = ckpt.read_json(folder, "config.json")
    cfg = cfg.get("config", cfg)
    assert cfg["elmo_model"] == NAME and (folder / cfg["elmo_model_relative"]).resolve() == (PRETRAINED_DIR / NAME).resolve()


@pytest.mark.parametrize("name", ["bidaf-cmrc2018", "bidaf-cmrc2018-elmo"])
def test_shipped_reader_reproduces_its_model_card(name, tmp_path):
    """A shipped reader answers by name, and the card's score on the first 50 dev articles is what the
    predict path + the official metric give (the card's whole-dev F1 comes from the same two commands)."""
    import gzip
    import json
    import re

    from elmo_paddle.data_dir import resolve_data_dir

    folder = PRETRAINED_DIR / name
    assert name in shipped_models() and (folder / "MODEL_CARD.md").is_file()
    ckpt.verify_dir(folder)
    context = "《战国无双3》是由光荣和ω-force开发的动作游戏。"
    r = subprocess.run([sys.executable, "-m", "tasks.bidaf.predict", "--model", name, "--context", context,
                        "--question", "《战国无双3》是由哪两个公司合作开发的？"], capture_output=True, text=True, timeout=300)
    # the answer is a span of the context around the reference; these readers' spans run long (their cards:
    # `bidaf-cmrc2018-elmo` v2 answers "光荣和ω-force开发"), so the edges are not asserted, the score below is
    answer = r.stdout.strip()
    assert r.returncode == 0 and "光荣和ω-force" in answer and answer in context, (r.stdout, r.stderr[-500:])
    data = resolve_data_dir()
    if data is None or not (data / "cmrc2018" / "cmrc2018_dev.json.gz").is_file():
        pytest.skip("needs the data sets for the card's dev score")
    with gzip.open(data / "cmrc2018" / "cmrc2018_dev.json.gz", "rt", encoding="utf-8") as fh:
        dev = json.load(fh)
    dev["data"] = dev["data"][:50]
    questions, preds = tmp_path / "dev50.json", tmp_path / "preds.json"
    questions.write_text(json.dumps(dev, ensure_ascii=False), encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "tasks.bidaf.predict", "--model", name, "--input", str(questions),
                        "--output", str(preds)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-500:]
    r = subprocess.run([sys.executable, "-m", "tasks.bidaf.evaluate", str(questions), str(preds)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-500:]
    got = json.loads(r.stdout)
    card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    want = re.search(r"first 50 articles of dev \((\d+) questions\)[^F]*F1 \*\*([\d.]+)\*\*, EM \*\*([\d.]+)\*\*", card)
    assert want, "the card states the score on the first 50 dev articles"
    assert (got["total"], got["f1"], got["em"]) == (int(want.group(1)), float(want.group(2)), float(want.group(3)))
