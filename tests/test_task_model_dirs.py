"""Task model folders (LAC, BiDAF) are verified on load like biLM folders, and a +ELMo task model finds its
biLM by name or by a path that survives moving the project, and never loads a different biLM."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import elmo_paddle  # noqa: F401
from elmo_paddle import checkpoint as ckpt
from elmo_paddle.errors import UserError
from tasks.common import elmo_ref
from tasks.lac.checkpoint import load_model, save_model
from tasks.lac.model import LacTagger
from tasks.lac.tags import all_tags

from tasks.lac.batching import char_vocab

SHIPPED = Path(__file__).resolve().parent.parent / "pretrained" / "zh-char-elmo"
CFG = dict(emb_dim=8, hidden_dim=8, num_layers=1, dropout=0.0, crf_lr=1.0, elmo_model=None, elmo_at_output=False,
           elmo_gamma=1.0, elmo_dropout=0.5)


def _tagger(tmp_path: Path) -> Path:
    vocab = char_vocab(["中国"], 1)
    tags = all_tags(["n", "LOC"])
    save_model(tmp_path / "tagger", LacTagger(len(vocab), len(tags), emb_dim=8, hidden_dim=8, num_layers=1),
               CFG, vocab, tags)
    return tmp_path / "tagger"


def test_task_model_folder_has_a_manifest_and_loads(tmp_path):
    d = _tagger(tmp_path)
    assert set(ckpt.verify_dir(d)["files"]) == {"config.json", "vocab.json", "tags.json", "model.safetensors"}
    assert load_model(d)[1] == CFG


@pytest.mark.parametrize("damage", ["flip", "truncate", "edit_config"])
def test_a_damaged_task_model_is_a_one_line_error_naming_the_file(tmp_path, damage):
    d = _tagger(tmp_path)
    target = d / ("config.json" if damage == "edit_config" else "model.safetensors")
    data = bytearray(target.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        data = data[:-100]
    else:
        data = data.replace(b'"hidden_dim": 8', b'"hidden_dim": 9')
    target.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"{target.name} does not match its checksum"):
        load_model(d)


def test_shipped_bilm_is_recorded_by_name_with_its_checksum(tmp_path):
    rec = elmo_ref.record({"elmo_model": elmo_ref.canonical("zh-char-elmo")}, tmp_path / "task")
    assert rec["elmo_model"] == "zh-char-elmo"
    assert rec["elmo_weights_sha256"] == ckpt.verify_dir(SHIPPED)["files"]["weights.safetensors"]["sha256"]
    assert Path(elmo_ref.resolve(rec, tmp_path / "elsewhere")).resolve() == SHIPPED.resolve()


def test_a_project_folder_moved_elsewhere_still_finds_its_bilm(tmp_path):
    proj = tmp_path / "proj"
    shutil.copytree(SHIPPED, proj / "models" / "my-elmo")
    task = proj / "runs" / "lac" / "best"
    task.mkdir(parents=True)
    rec = elmo_ref.record({"elmo_model": elmo_ref.canonical(str(proj / "models" / "my-elmo"))}, task)
    assert rec["elmo_model"] == str((proj / "models" / "my-elmo").resolve())
    assert rec["elmo_model_relative"] == "../../../models/my-elmo"
    shutil.move(proj, tmp_path / "moved")  # the absolute path is gone; the relative one still resolves
    found = elmo_ref.resolve(rec, tmp_path / "moved" / "runs" / "lac" / "best")
    assert Path(found).resolve() == (tmp_path / "moved" / "models" / "my-elmo").resolve()


def test_a_different_bilm_under_the_recorded_name_is_refused(tmp_path):
    bilm = tmp_path / "elmo"
    shutil.copytree(SHIPPED, bilm)
    rec = elmo_ref.record({"elmo_model": str(bilm)}, tmp_path / "task")
    arrays = ckpt.load_tensors(bilm / "weights.safetensors")
    arrays = {k: (v + np.float32(0.01) if i == 0 else v) for i, (k, v) in enumerate(sorted(arrays.items()))}
    files = {n: ckpt.read_json(bilm, n) for n in ("config.json", "vocab.json", "corpus.json") if (bilm / n).is_file()}
    ckpt.write_dir(bilm, files, {"weights.safetensors": arrays})  # a valid folder, other weights
    with pytest.raises(UserError, match="not the one this model was trained with"):
        elmo_ref.resolve(rec, tmp_path / "task")


def test_a_missing_bilm_names_what_was_tried(tmp_path):
    rec = {"elmo_model": str(tmp_path / "gone"), "elmo_model_relative": "../gone", "elmo_weights_sha256": "0"}
    with pytest.raises(UserError, match="cannot find the biLM.*tried"):
        elmo_ref.resolve(rec, tmp_path / "task")


def test_a_shipped_task_model_loads_by_name(tmp_path, monkeypatch):
    import elmo_paddle.model_io as model_io

    monkeypatch.setattr(model_io, "PRETRAINED_DIR", tmp_path / "pretrained")
    saved = _tagger(tmp_path)
    shutil.copytree(saved, tmp_path / "pretrained" / "lac-test")
    monkeypatch.chdir(tmp_path)  # no folder named lac-test here: the name means pretrained/lac-test
    assert load_model("lac-test")[1] == CFG
    with pytest.raises(UserError, match="not a LAC model dir"):
        load_model("no-such-model")


def test_run_config_finds_the_run_config_of_either_task():
    lac = {"elmo_model": "zh-char-elmo", "emb_dim": 64}
    bidaf = {"sizes": {"hidden": 64}, "config": {"elmo_model": "zh-char-elmo"}}
    assert elmo_ref.run_config(lac) is lac  # LAC: the whole file
    assert elmo_ref.run_config(bidaf) is bidaf["config"]  # BiDAF: nested beside the sizes, the same object
    assert elmo_ref.run_config([1, 2]) is None and elmo_ref.run_config({"sizes": {}, "config": 3}) is None


def test_shipping_a_new_version_keeps_the_hand_written_card(tmp_path, monkeypatch, capsys):
    """experiments/ship_task_model.py replaces the folder whole; the card beside the old version must survive
    (it was deleted once, in the fourteenth session's shipping of bidaf-cmrc2018-elmo v2)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ship", Path(__file__).resolve().parent.parent / "experiments"
                                                  / "ship_task_model.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    monkeypatch.setattr(ship, "PRETRAINED_DIR", tmp_path / "pretrained")
    (tmp_path / "pretrained" / "lac-test").mkdir(parents=True)
    (tmp_path / "pretrained" / "lac-test" / "MODEL_CARD.md").write_text("# lac-test v1\n", encoding="utf-8")
    ship.main(["--model", str(_tagger(tmp_path)), "--name", "lac-test"])
    dest = tmp_path / "pretrained" / "lac-test"
    assert (dest / "MODEL_CARD.md").read_text(encoding="utf-8") == "# lac-test v1\n"
    assert load_model(dest)[1] == CFG  # the manifest still verifies: the card is not one of its files
    assert "update its scores" in capsys.readouterr().out
