import json

import numpy as np
import pytest

import elmo_paddle  # noqa: F401
from elmo_paddle.errors import UserError
from elmo_paddle.finetune_lm import extract_lines, main
from elmo_paddle.vocab import Vocab

LAC_LINES = ["从法律上说,乞讨儿童本不应存在.\tp-B n-B n-I", "小和尚玩虚的,你不说,我倒要问你了\tn-B n-I"]


def test_extract_task_formats(tmp_path):
    lac = tmp_path / "lac_part"
    lac.write_text("\n".join(LAC_LINES) + "\n", encoding="utf-8")
    assert extract_lines(lac) == ("lac", ["从法律上说,乞讨儿童本不应存在.", "小和尚玩虚的,你不说,我倒要问你了"])
    pd = tmp_path / "pd.txt"
    pd.write_text("迈向/v  充满/v  希望/n  的/u\n中共中央/nt  总书记/n\n", encoding="utf-8")
    assert extract_lines(pd) == ("pd1998", ["迈向充满希望的", "中共中央总书记"])
    cm = tmp_path / "c.json"
    cm.write_text(json.dumps({"data": [{"paragraphs": [{"context": "甲乙", "qas": []},
                                                       {"context": "甲乙", "qas": []}]}]}), encoding="utf-8")
    assert extract_lines(cm) == ("cmrc", ["甲乙"])
    du = tmp_path / "d.json"
    du.write_text(json.dumps({"question": "问", "documents": [{"paragraphs": ["段一", "段二"]}]}) + "\n",
                  encoding="utf-8")
    assert extract_lines(du) == ("dureader", ["问", "段一", "段二"])
    plain = tmp_path / "p.txt"
    plain.write_text("今天 天气\n\n好\n", encoding="utf-8")
    assert extract_lines(plain) == ("plain", ["今天 天气", "好"])


def test_finetune_continues_training_and_reports_ppl(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """Fine-tuning starts from the model's weights and vocab, changes the weights, and the perplexity of the
    held-out task text falls (the task text is repetitive: a few steps learn it)."""
    from safetensors.numpy import load_file

    monkeypatch.chdir(tmp_path)  # VisualDL logs go to ./runs
    src = tmp_path / "task.txt"
    lines = [f"{w}经济发展和人民生活{w}" for w in "中国北京今天我们工作社会国家建设改革" * 3]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "ft"
    assert main(["--model", str(tiny_model_dir), "--text", str(src), "--output-dir", str(out), "--steps", "12",
                 "--dev-fraction", "0.2", "--no-progress", "train.batch_size=4", "train.seq_len=8"]) == 0
    res = json.loads((out / "finetune_result.json").read_text())
    assert res["text"]["oov_rate"] >= 0 and res["history"][0]["step"] == 0
    assert 0 < res["dev_ppl_after"] < res["dev_ppl_before"], res["history"]
    assert "before ->" in capsys.readouterr().out
    assert Vocab.load(out / "best" / "vocab.json").itos == Vocab.load(tiny_model_dir / "vocab.json").itos
    before, after = (load_file(str(d / "weights.safetensors")) for d in (tiny_model_dir, out / "final"))
    assert before.keys() == after.keys()
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert any(k.startswith("lstm.") for k in changed) and any(k.startswith("token_emb") for k in changed), changed
    from elmo_paddle.elmo import Elmo

    assert Elmo(out / "final").output_dim == Elmo(tiny_model_dir).output_dim


@pytest.mark.parametrize("extra", [["data.unit=word"], ["bilm.hidden_dim=8"]])
def test_finetune_refuses_vocab_or_architecture_change(tiny_model_dir, tmp_path, capsys, extra):
    src = tmp_path / "t.txt"
    src.write_text("中国\n北京\n", encoding="utf-8")
    assert main(["--model", str(tiny_model_dir), "--text", str(src), "--output-dir", str(tmp_path / "o"),
                 "--steps", "2", "--no-progress", *extra]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_finetune_missing_inputs(tiny_model_dir, tmp_path, capsys):
    assert main(["--model", str(tiny_model_dir), "--text", str(tmp_path / "nope.txt"),
                 "--output-dir", str(tmp_path / "o"), "--data-dir", str(tmp_path)]) == 2
    assert main(["--model", str(tmp_path), "--text", str(tmp_path), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 2 and "Traceback" not in err
    with pytest.raises(UserError):
        extract_lines(tmp_path / "missing.json")
