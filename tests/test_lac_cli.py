"""LAC CLIs end to end via subprocess: finetune on a tiny LAC-format fixture, then predict's I/O contract."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.lac.data import words_to_example

REPO = Path(__file__).resolve().parent.parent
SENTS = [[("我们", "r"), ("爱", "v"), ("北京", "LOC")], [("他", "r"), ("去", "v"), ("上海", "LOC"), ("了", "u")],
         [("张三", "PER"), ("在", "p"), ("北京", "LOC"), ("工作", "v")], [("今天", "TIME"), ("我们", "r"), ("工作", "v")],
         [("李四", "PER"), ("爱", "v"), ("上海", "LOC")], [("他们", "r"), ("今天", "TIME"), ("去", "v"), ("北京", "LOC")]]


def _run(*args: str, stdin: bytes = b"", cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", *args], input=stdin, capture_output=True, cwd=cwd, env=env,
                          timeout=120)


def _lac_line(words) -> str:
    ex = words_to_example(words)
    return f"{ex.chars}\t{' '.join(ex.tags)}\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("lac")
    data = root / "data" / "lac_sample"
    (data / "train_data").mkdir(parents=True)
    (data / "test_data").mkdir()
    # 10 copies so the every-10th-line dev split holds each sentence too; one malformed line
    (data / "train_data" / "a_part").write_text("".join(_lac_line(s) for s in SENTS * 10) + "坏\tn-B n-I\n",
                                                encoding="utf-8")
    (data / "test_data" / "test_part").write_text("".join(_lac_line(s) for s in SENTS), encoding="utf-8")
    proc = _run("tasks.lac.finetune", "--config", str(REPO / "configs/lac.yaml"), "--dataset", "lac",
                "--data-dir", str(root / "data"), "--epochs", "25", "--run-name", "tiny", "--seed", "3",
                f"runs_dir={root / 'runs'}", "emb_dim=16", "hidden_dim=16", "lr=0.02", "batch_size=16",
                "dropout=0.0", "patience=3", cwd=root)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return root, proc


def test_finetune_outputs(trained):
    root, proc = trained
    err = proc.stderr.decode()
    assert "warning: skipped 1 malformed" in err and "a_part:61" in err
    run = root / "runs" / "tiny"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["f1"] > 90 and "seg_f1" in metrics["test"] and "PER_f1" in metrics["test"]
    assert metrics["config"]["seed"] == 3 and metrics["train_seconds"] > 0
    assert sorted(p.name for p in (run / "best").iterdir()) == ["config.json", "manifest.json", "model.safetensors", "tags.json",
                                                                 "vocab.json"]
    assert any(p.name.startswith("vdlrecords") for p in run.iterdir())


def test_predict_io_contract(trained, tmp_path):
    root, _ = trained
    model = str(root / "runs" / "tiny" / "best")
    long_line = "我们爱北京，" * 60
    text = ("我们爱北京\n\n张三 去 上海\n".encode("utf-8") + b"\xff\xfe\xe4\n" + long_line.encode("utf-8")
            + "\nＡＢ１２今天\n".encode("utf-8"))
    proc = _run("tasks.lac.predict", "--model", model, "--mode", "lac", "--max-chars", "100", "--batch-size", "2",
                stdin=text)
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode("utf-8").split("\n")
    assert out[-1] == "" and len(out) - 1 == 6  # one output line per input line
    assert out[0] == "我们/r 爱/v 北京/LOC"
    assert out[1] == ""
    assert "张三" in out[2] and all("/" in tok for tok in out[2].split(" "))
    assert "".join(t.rsplit("/", 1)[0] for t in out[4].split(" ")) == long_line  # nothing truncated
    assert "".join(t.rsplit("/", 1)[0] for t in out[5].split(" ")) == "ＡＢ１２今天"  # input chars kept
    err = proc.stderr.decode()
    assert "stdin:4: invalid UTF-8" in err and "stdin:5: 360 characters, tagged in 4 chunks" in err
    assert "Traceback" not in err

    src = tmp_path / "in.txt"
    src.write_text("我们爱北京\n他们今天去上海\n", encoding="utf-8")
    dic = tmp_path / "dict.txt"
    dic.write_text("爱北京/v\n", encoding="utf-8")
    proc = _run("tasks.lac.predict", "--model", model, "--mode", "seg", "--input", str(src), "--dict", str(dic))
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert lines[0] == "我们 爱北京" and lines[1].replace(" ", "") == "他们今天去上海" and "  " not in lines[1]


def test_predict_bf16_flag(trained):
    """`--bf16` tags as float32 does on this tiny model (AMX CPUs), or warns and stays float32 (others)."""
    root, _ = trained
    model = str(root / "runs" / "tiny" / "best")
    plain = _run("tasks.lac.predict", "--model", model, stdin="我们爱北京\n张三去上海了\n".encode())
    bf16 = _run("tasks.lac.predict", "--model", model, "--bf16", stdin="我们爱北京\n张三去上海了\n".encode())
    assert plain.returncode == 0 and bf16.returncode == 0, bf16.stderr.decode()
    assert bf16.stdout == plain.stdout
    from elmo_paddle.bf16_gemm import _has_amx

    assert ("--bf16 ignored" in bf16.stderr.decode()) == (not _has_amx())  # (an AMX CPU whose oneDNN fails: rare)


def test_clear_errors_not_tracebacks(tmp_path):
    proc = _run("tasks.lac.finetune", "--dataset", "pd1998", "--data-dir", str(tmp_path / "none"),
                f"runs_dir={tmp_path}")
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.startswith("error: ") and "does not exist" in err and "Traceback" not in err
    proc = _run("tasks.lac.predict", "--model", str(tmp_path))
    assert proc.returncode == 2 and "not a LAC model dir" in proc.stderr.decode()


def test_ner_only_model_refuses_seg_mode(trained, tmp_path):
    """A model whose tags include O (MSRA NER) has no segmentation: --mode seg is a one-line error, lac works."""
    from elmo_paddle import checkpoint as ckpt

    root, _ = trained
    best = root / "runs" / "tiny" / "best"
    tags = ckpt.read_json(best, "tags.json")
    ner = tmp_path / "ner"
    jsons = {name: ckpt.read_json(best, name) for name in ("config.json", "vocab.json")}
    ckpt.write_dir(ner, {**jsons, "tags.json": tags[:-1] + ["O"]},
                   {"model.safetensors": ckpt.load_tensors(best / "model.safetensors")})
    proc = _run("tasks.lac.predict", "--model", str(ner), "--mode", "seg", stdin="我们爱北京\n".encode())
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "tags entities only" in err and "Traceback" not in err
    proc = _run("tasks.lac.predict", "--model", str(ner), stdin="我们爱北京\n".encode())
    assert proc.returncode == 0, proc.stderr.decode()
    assert "".join(t.rsplit("/", 1)[0] for t in proc.stdout.decode().split()) == "我们爱北京"
