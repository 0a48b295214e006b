"""Issue 15: the shared validation layer (elmo_paddle/validate.py) and every bad-input probe of the issue,
each giving one clean error line (exit 2) or correct output.  Most probes call the entry point's `main`
in-process (seconds); one per kind of failure goes through a real subprocess, where the exit status and
the absence of a traceback are what the user sees."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cli_fixtures import (REPO, assert_clean_exit, bidaf_args, lac_args, questions_file, run_main, train_bidaf,
                          write_cmrc_data, write_lac_data)
from corpus_fixture import TINY_OVERRIDES, make_corpus
from elmo_paddle import validate as v
from elmo_paddle.errors import UserError


# ------------------------------------------------------------------ the layer itself
@pytest.mark.parametrize("check, good, bad", [
    (v.positive_int, [1, 7, 2.0], [0, -1, 1.5, "3", True, None, float("nan")]),
    (v.non_negative_int, [0, 3], [-1, 0.5, None]),
    (v.positive_float, [1e-9, 0.5, 3], [0, -0.005, float("nan"), float("inf"), "0.1", None, False]),
    (v.non_negative_float, [0, 0.0, 5.0], [-1e-9, float("nan"), float("-inf")]),
    (v.fraction, [1e-6, 0.5, 1.0], [0, 1.01, -0.1, float("nan")]),
])
def test_number_checks(check, good, bad):
    for x in good:
        check("key", x)
    for x in bad:
        with pytest.raises(UserError, match="^key must be"):
            check("key", x)


def test_none_means_unset_only_where_allowed():
    v.positive_int("max_steps", None, allow_none=True)
    v.positive_float("lr", None, allow_none=True)
    with pytest.raises(UserError, match="max_steps must be a whole number >= 1, got None"):
        v.positive_int("max_steps", None)


def test_fraction_open_ends_and_one_of():
    v.fraction("dropout", 0.0, low_open=False, high_open=True)
    with pytest.raises(UserError, match=r"dropout must be in \[0, 1\)"):
        v.fraction("dropout", 1.0, low_open=False, high_open=True)
    v.one_of("optimizer", "adam", ("adam", "adagrad"))
    with pytest.raises(UserError, match="optimizer must be adam or adagrad, got 'sgd'"):
        v.one_of("optimizer", "sgd", ("adam", "adagrad"))


def test_output_dir_and_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(UserError, match="is under .*afile, which is a file, not a folder"):
        v.output_dir("runs_dir", f / "a" / "b")
    with pytest.raises(UserError, match="afile is a file, not a folder"):
        v.output_dir("runs_dir", f)
    with pytest.raises(UserError, match="cannot write there"):
        v.output_dir("runs_dir", "/proc/no/such")
    probe = tmp_path / "new" / "deeper"
    v.output_dir("runs_dir", probe, create=False)
    assert not (tmp_path / "new").exists()  # create=False leaves nothing behind
    assert v.output_dir("runs_dir", probe) == probe and probe.is_dir() and not list(probe.iterdir())
    with pytest.raises(UserError, match="is a folder; give a file name"):
        v.output_file("--output", tmp_path)
    with pytest.raises(UserError, match="--output .*o.npz is under .*afile, which is a file"):
        v.output_file("--output", f / "o.npz")
    assert v.output_file("--output", tmp_path / "x" / "o.npz").parent.is_dir()


# ------------------------------------------------------------------ pretraining and LM fine-tuning
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("vc") / "corpus.txt", 200)


@pytest.mark.parametrize("extra, message", [
    (["train.batch_size=0"], "train.batch_size must be a whole number >= 1, got 0"),
    (["train.epochs=-1", "train.max_steps=null"], "train.epochs must be a finite number > 0, got -1.0"),
    (["train.lr=-0.005"], "train.lr must be a finite number > 0, got -0.005"),
    (["train.lr=nan"], "train.lr must be a finite number > 0, got nan"),
    (["train.seq_len=0"], "train.seq_len must be a whole number >= 1"),
    (["train.max_steps=0"], "train.max_steps must be a whole number >= 1"),
    (["data.dev_fraction=1"], "data.dev_fraction must be in (0, 1)"),
    (["train.lr_schedule=step"], "train.lr_schedule must be constant, linear or cosine"),
])
def test_pretrain_bad_values_are_one_line(corpus, tmp_path, extra, message):
    from elmo_paddle.pretrain import main

    rc, _, err = run_main(main, ["--output-dir", str(tmp_path / "o"), f"data.train=[{corpus}]", *TINY_OVERRIDES,
                                 *extra])
    assert rc == 2 and err.startswith(f"error: {message}"), err
    assert_clean_exit(rc, err, one_line=True)
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_pretrain_runs_dir_under_a_file_fails_before_the_corpus_scan(corpus, tmp_path):
    from elmo_paddle.trainer_lm import run_pretraining  # noqa: F401  (paddle loaded before timing)
    from elmo_paddle.pretrain import main

    f = tmp_path / "afile"
    f.write_text("x")
    rc, out, err = run_main(main, ["--output-dir", str(tmp_path / "o"), f"data.train=[{corpus}]",
                                   *TINY_OVERRIDES, f"runs_dir={f}/runs"])
    assert rc == 2 and "runs_dir" in err and "which is a file" in err and "corpus:" not in out
    assert_clean_exit(rc, err, one_line=True)


def test_pretrain_bad_value_in_a_subprocess_has_no_traceback(corpus, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "elmo_paddle.pretrain", "--output-dir", str(tmp_path / "o"),
                        f"data.train=[{corpus}]", "train.batch_size=0"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr == "error: train.batch_size must be a whole number >= 1, got 0\n"


def test_finetune_lm_bad_values(tiny_model_dir, corpus, tmp_path):
    from elmo_paddle.finetune_lm import main

    base = ["--model", str(tiny_model_dir), "--text", str(corpus), "--output-dir", str(tmp_path / "ft"),
            "--steps", "2", "--no-progress"]
    for extra, message in ((["train.batch_size=0"], "train.batch_size must be"), (["--lr", "nan"], "--lr must be"),
                           (["--lr", "-1"], "--lr must be"), (["--steps", "0"], "--steps must be")):
        rc, _, err = run_main(main, base + extra)
        assert rc == 2 and message in err, (extra, err)
        assert_clean_exit(rc, err)


# ------------------------------------------------------------------ perplexity
def test_perplexity_max_len_and_binary_text(tiny_model_dir, corpus, tmp_path):
    from elmo_paddle.perplexity import main

    binary = tmp_path / "bin.txt"
    binary.write_bytes(bytes(range(256)) * 40)
    for argv, message in (
            (["--text", str(corpus), "--max-len", "0"], "--max-len must be a whole number >= 1, got 0"),
            (["--text", str(corpus), "--max-len", "-5"], "--max-len must be a whole number >= 1, got -5"),
            (["--text", str(corpus), "--max-lines", "0"], "--max-lines must be"),
            (["--text", str(binary)], "no text to score in")):
        rc, _, err = run_main(main, ["--model", str(tiny_model_dir), *argv])
        assert rc == 2 and message in err and "dev split is empty" not in err, err
        assert_clean_exit(rc, err, one_line=True)
    assert "with invalid UTF-8 or NUL bytes (binary data?" in err


def test_perplexity_counts_and_reports_skipped_lines(tiny_model_dir, tmp_path):
    from elmo_paddle.perplexity import main

    text = tmp_path / "mixed.txt"
    text.write_bytes("我们研究经济\n".encode() + b"\xff\xfe bad\n" + "中国发展\n".encode() + b"\xc3(\n")
    rc, out, err = run_main(main, ["--model", str(tiny_model_dir), "--text", str(text)])
    assert rc == 0, err
    res = json.loads(out)
    assert res["skipped_bad_utf8_lines"] == 2 and res["tokens"] == 6 + 1 + 4 + 1  # two lines, each + </S>
    assert err.startswith("warning: skipped 2 line(s) with invalid UTF-8") and "mixed.txt:2" in err


# ------------------------------------------------------------------ embed
def test_embed_input_folder_and_output_checked_first(tiny_model_dir, tmp_path):
    from elmo_paddle.embed import main

    inp = tmp_path / "in.txt"
    inp.write_text("中国\n", encoding="utf-8")
    f = tmp_path / "afile"
    f.write_text("x")
    rc, _, err = run_main(main, ["--model", str(tiny_model_dir), "--input", str(tmp_path), "--output",
                                 str(tmp_path / "o.npz")])
    assert rc == 2 and "is a folder" in err and "does not exist" not in err
    # the output path is checked before the model is even looked at (a missing model would be the error)
    for out in (f / "o.npz", "/proc/no/o.npz", tmp_path):
        rc, _, err = run_main(main, ["--model", str(tmp_path / "no-model"), "--input", str(inp), "--output", str(out)])
        assert rc == 2 and "--output" in err and "no-model" not in err, err
        assert_clean_exit(rc, err, one_line=True)


def test_embed_refuses_a_huge_line_up_front(tmp_path):
    """The issue's 1.75M-character line: 264 s and a 5 GB npz before; now one line in seconds, nothing written."""
    from elmo_paddle.embed import main

    inp = tmp_path / "long.txt"
    inp.write_text("我们爱北京天安门" * 218750 + "\n", encoding="utf-8")
    out = tmp_path / "l.npz"
    t0 = time.time()
    rc, _, err = run_main(main, ["--model", "zh-char-elmo", "--input", str(inp), "--output", str(out),
                                 "--no-progress"])
    assert time.time() - t0 < 30
    assert rc == 2 and re.search(r"1750000 tokens would need \d{1,2},\d{3} MB", err) and "--max-output-mb 2048" in err
    assert_clean_exit(rc, err, one_line=True)
    assert not out.exists() and not list(tmp_path.glob(".l.npz*"))


def test_embed_says_what_it_writes_and_warns_per_chunked_line(tiny_model_dir, tmp_path):
    from elmo_paddle.embed import main

    inp = tmp_path / "in.txt"
    inp.write_text("中国\n" + "我们研究经济" * 10 + "\n\n", encoding="utf-8")
    out = tmp_path / "o.npz"
    rc, _, err = run_main(main, ["--model", str(tiny_model_dir), "--input", str(inp), "--output", str(out),
                                 "--max-length", "16", "--no-progress"])
    assert rc == 0, err
    lines = err.splitlines()
    assert lines[0] == f"warning: {inp}:2: 60 tokens, embedded in 4 chunks of 16 (no context across chunks)"
    mb = 62 * 3 * 32 * 4 / 2 ** 20
    assert lines[1] == f"embedding 3 lines (62 tokens, 1 chunked): about {mb:,.1f} MB to {out}"
    with np.load(out) as z:
        assert z["1"].shape == (3, 60, 32) and z["2"].shape == (3, 0, 32)
    rc, _, err = run_main(main, ["--model", str(tiny_model_dir), "--input", str(inp), "--output", str(out),
                                 "--max-output-mb", "0.01"])
    assert rc == 2 and "62 tokens would need 0 MB" in err and "the longest line, 2, has 60 tokens" in err


# ------------------------------------------------------------------ task runs: configure()
@pytest.mark.parametrize("extra, message", [
    (["lr=nan"], "lr must be a finite number > 0, got nan"),
    (["batch_size=0"], "batch_size must be a whole number >= 1, got 0"),
    (["--epochs", "-1"], "epochs must be a whole number >= 1, got -1"),
    (["--max-steps", "0"], "max_steps must be a whole number >= 1, got 0"),
    (["dropout=1.5"], "dropout must be in [0, 1)"),
    (["runs_dir={afile}/r"], "is under"),
    (["runs_dir=/proc/x"], "cannot write there"),
])
@pytest.mark.parametrize("task", ["lac", "bidaf"])
def test_task_configure_rejects(tmp_path, task, extra, message):
    from tasks.bidaf.finetune import main as bidaf_main
    from tasks.lac.finetune import main as lac_main

    f = tmp_path / "afile"
    f.write_text("x")
    extra = [e.format(afile=f) for e in extra]
    main, args = (lac_main, lac_args) if task == "lac" else (bidaf_main, bidaf_args)
    rc, _, err = run_main(main, args(tmp_path / "nodata", tmp_path / "runs") + extra, cwd=tmp_path)
    assert rc == 2 and message in err, err  # the data dir does not exist: the config is checked first
    assert_clean_exit(rc, err, one_line=True)


def test_task_configure_accepts_the_shipped_configs():
    from tasks.bidaf.finetune import configure as bidaf_configure
    from tasks.lac.finetune import configure as lac_configure

    assert lac_configure(["--config", str(REPO / "configs/lac.yaml"), "runs_dir=/tmp"]).lr > 0
    assert bidaf_configure(["--config", str(REPO / "configs/bidaf.yaml"), "runs_dir=/tmp"])[0].lr > 0


def test_task_run_with_bad_value_in_a_subprocess(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    data = write_lac_data(tmp_path / "data")
    r = subprocess.run([sys.executable, "-m", "tasks.lac.finetune", *lac_args(data, tmp_path / "runs"), "lr=nan"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr == "error: lr must be a finite number > 0, got nan\n"
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ BiDAF predict
@pytest.fixture(scope="module")
def bidaf_model(tmp_path_factory):
    return train_bidaf(tmp_path_factory.mktemp("bidaf"))


def test_bidaf_predict_refuses_duplicate_and_missing_ids(bidaf_model, tmp_path):
    from tasks.bidaf.predict import main

    q = questions_file(tmp_path / "q.json", [{"id": "a", "question": "哪里？"}, {"id": "a", "question": "什么？"},
                                            {"question": "谁？"}, {"id": "b", "question": "哪？"}])
    rc, out, err = run_main(main, ["--model", str(bidaf_model), "--input", str(q)])
    assert rc == 2 and out == ""
    assert "1 duplicate question id(s) and 1 question(s) without a usable id" in err and "a: duplicate_id" in err
    assert_clean_exit(rc, err, one_line=True)


def test_bidaf_predict_answers_every_question_in_input_order(bidaf_model, tmp_path):
    from tasks.bidaf.predict import main

    q = questions_file(tmp_path / "q.json", [{"id": "z", "question": "哪里？"}, {"id": "e", "question": "  "},
                                            {"id": "a", "question": "什么？"}])
    out = tmp_path / "sub" / "p.json"
    rc, _, err = run_main(main, ["--model", str(bidaf_model), "--input", str(q), "--output", str(out)])
    assert rc == 0, err
    answers = json.loads(out.read_text(encoding="utf-8"))
    assert list(answers) == ["z", "e", "a"] and answers["e"] == ""
    assert "answered 2 of 3 questions; 1 got \"\" (empty question/context: 1)" in err
    assert re.search(r"; [0-9.]+ questions/s \([0-9.]+ s, \d+ windows\)", err)  # the speed a model card reports


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "-1"], "--batch-size must be a whole number >= 1, got -1"),
    (["--batch-size", "0"], "--batch-size must be a whole number >= 1, got 0"),
    (["--output", "{afile}/p.json"], "which is a file, not a folder"),
])
def test_bidaf_predict_flags_checked_before_the_model_loads(tmp_path, argv, message):
    from tasks.bidaf.predict import main

    f = tmp_path / "afile"
    f.write_text("x")
    data = write_cmrc_data(tmp_path / "data")
    rc, out, err = run_main(main, ["--model", str(tmp_path / "no-model"), "--input",
                                   str(data / "cmrc2018" / "cmrc2018_dev.json"), *[a.format(afile=f) for a in argv]])
    assert rc == 2 and message in err and out == ""
    assert_clean_exit(rc, err, one_line=True)


# ------------------------------------------------------------------ compare, export, pipeline, lac.predict
def _metrics(root: Path, name: str, test: object) -> None:
    d = root / "lac" / name
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"score_scale": "percent", "test": test, "config": {}}))


def test_compare_skips_a_run_whose_score_is_a_string(tmp_path):
    from tasks.compare import main

    _metrics(tmp_path, "bad", {"f1": "high"})
    _metrics(tmp_path, "good", {"f1": 50.0})
    rc, out, err = run_main(main, [str(tmp_path), "--no-plots"])
    assert rc == 0 and "| lac | 1 | f1 | 50.00 ± – |" in out
    assert err == f"warning: {tmp_path / 'lac' / 'bad' / 'metrics.json'} has test scores that are not finite " \
                  "numbers (f1='high'); skipped\n"
    (tmp_path / "lac" / "good" / "metrics.json").write_text(json.dumps([1, 2]))
    rc, _, err = run_main(main, [str(tmp_path), "--no-plots"])
    assert rc == 2 and err.splitlines()[-1].startswith("error: no finished task runs")
    assert_clean_exit(rc, err)


def test_output_under_a_file_for_compare_and_export(tmp_path, tiny_model_dir):
    from elmo_paddle.export import main as export_main
    from tasks.compare import main as compare_main

    f = tmp_path / "afile"
    f.write_text("x")
    _metrics(tmp_path / "runs", "good", {"f1": 50.0})
    for main, argv in ((compare_main, [str(tmp_path / "runs"), "--output", str(f / "c")]),
                       (export_main, ["--model", str(tiny_model_dir), "--output", str(f / "e")])):
        rc, _, err = run_main(main, argv)
        assert rc == 2 and "which is a file, not a folder" in err
        assert_clean_exit(rc, err, one_line=True)


def test_pipeline_checks_fractions_and_seeds(tmp_path):
    from elmo_paddle.pipeline import main

    for extra, message in ((["lac.fractions=[0]"], "lac.fractions must be in (0, 1]"),
                           (["bidaf.seeds=[-1]"], "bidaf.seeds must be a whole number >= 0"),
                           (["lac.fractions=[]"], "must be non-empty lists")):
        rc, _, err = run_main(main, ["--config", str(REPO / "configs/pipeline_tiny.yaml"), "--dry-run", *extra])
        assert rc == 2 and message in err, err
        assert_clean_exit(rc, err, one_line=True)
