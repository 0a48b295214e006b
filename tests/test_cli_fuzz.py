"""Every entry point under hypothesis: random flag values (out-of-range, NaN, inf, junk strings) and small
hostile files (binary, bad UTF-8, UTF-16, NUL bytes, truncated gzip, a folder, a missing path, random JSON).

The property (`cli_fixtures.assert_clean_exit`): exit 0, or a non-zero exit whose stderr ends in the one
`error: ...` line and holds no traceback (an exception escaping `main` fails the test).  Entry points are
called in-process (paddle loads once), with few examples each: a valid draw really trains, embeds or
exports (capped at two steps), so the whole file stays around a minute.  `ELMO_FUZZ_EXAMPLES=N` multiplies
the number of examples for a longer local run.
"""
from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_fixtures import (REPO, assert_clean_exit, bidaf_args, lac_args, run_main, train_bidaf, train_lac,
                          write_cmrc_data, write_lac_data)
from corpus_fixture import TINY_OVERRIDES, make_corpus

SCALE = int(os.environ.get("ELMO_FUZZ_EXAMPLES", "1"))


def fuzz(n: int):
    return settings(max_examples=n * SCALE, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


INTS = st.one_of(st.integers(-2, 3), st.sampled_from(["nan", "x", "", "1e9", "-0"]))
RATES = st.sampled_from(["nan", "inf", "-inf", "-0.005", "0", "0.01", "1e-3", "x", ""])
FRACTIONS = st.sampled_from(["0", "0.5", "1", "1.5", "-0.1", "nan", "x"])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Named hostile inputs, plus a good one of each kind."""
    d = tmp_path_factory.mktemp("hostile")
    good = make_corpus(d / "good.txt", 60)
    out = {"good": good, "folder": d, "missing": d / "missing.txt", "empty": d / "empty.txt",
           "binary": d / "binary.bin", "bad_utf8": d / "bad.txt", "utf16": d / "utf16.txt", "nul": d / "nul.txt",
           "long_line": d / "long.txt", "truncated_gz": d / "trunc.txt.gz", "json_list": d / "list.json"}
    out["empty"].write_bytes(b"")
    out["binary"].write_bytes(bytes(range(256)) * 8)
    out["bad_utf8"].write_bytes("我们研究经济\n".encode() + b"\xff\xfe\xc3(\n")
    out["utf16"].write_bytes("我们研究经济\n".encode("utf-16"))
    out["nul"].write_bytes(b"abc\x00def\n")
    out["long_line"].write_text("我们研究经济" * 3000 + "\n", encoding="utf-8")
    out["truncated_gz"].write_bytes(gzip.compress(good.read_bytes())[:40])
    out["json_list"].write_text("[1, 2, 3]", encoding="utf-8")
    return out


HOSTILE = st.sampled_from(["good", "folder", "missing", "empty", "binary", "bad_utf8", "utf16", "nul", "long_line",
                           "truncated_gz", "json_list"])


def mixed(valid: dict, hostile: dict):
    """Flag values where at most two flags are hostile and the rest valid, so that some draws get past the
    checks and do the real work (with every flag drawn at random, nearly every draw fails the first check)."""
    keys = sorted(valid)
    return st.sets(st.sampled_from(keys), max_size=2).flatmap(lambda bad: st.fixed_dictionaries(
        {k: hostile[k] if k in bad else st.just(valid[k]) for k in keys}))


def _tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="fuzz-"))


def _out_path(kind: str, tmp: Path, name: str) -> str:
    """An output path: fine, under a regular file, an existing folder, or in /proc."""
    (tmp / "afile").write_text("x")
    return {"ok": str(tmp / "o" / name), "under_file": str(tmp / "afile" / name), "folder": str(tmp),
            "proc": f"/proc/nope/{name}"}[kind]


OUTS = st.sampled_from(["ok", "under_file", "folder", "proc"])


def _check(main, argv, cwd):
    rc, _, err = run_main(main, argv, cwd=cwd)
    assert_clean_exit(rc, err)
    return rc


# ------------------------------------------------------------------ biLM entry points
PRETRAIN_VALID = dict(bs="4", seq="8", lr="0.01", steps="2", epochs="1", dev="0.1", text="good")
PRETRAIN_HOSTILE = dict(bs=INTS, seq=INTS, lr=RATES, steps=st.sampled_from(["-1", "0", "null"]),
                        epochs=st.sampled_from(["-1", "0", "0.001", "nan"]), dev=FRACTIONS, text=HOSTILE)


@fuzz(8)
@given(kw=mixed(PRETRAIN_VALID, PRETRAIN_HOSTILE))
def test_pretrain(files, kw):
    from elmo_paddle.pretrain import main

    tmp = _tmp()
    _check(main, ["--output-dir", str(tmp / "o"), "--no-progress", f"data.train=[{files[kw['text']]}]",
                  *TINY_OVERRIDES, f"train.batch_size={kw['bs']}", f"train.seq_len={kw['seq']}",
                  f"train.lr={kw['lr']}", f"train.max_steps={kw['steps']}", f"train.epochs={kw['epochs']}",
                  f"data.dev_fraction={kw['dev']}", f"runs_dir={tmp / 'runs'}", "train.eval_every=2",
                  "train.save_every=2"], tmp)


LM_VALID = dict(steps="1", lr="", dev="0.1", text="good", out="ok", fmt="auto")
LM_HOSTILE = dict(steps=st.sampled_from(["-1", "0", "x"]), lr=RATES, dev=FRACTIONS, text=HOSTILE, out=OUTS,
                  fmt=st.sampled_from(["plain", "cmrc", "dureader", "lac"]))


@fuzz(6)
@given(kw=mixed(LM_VALID, LM_HOSTILE))
def test_finetune_lm(tiny_model_dir, files, kw):
    from elmo_paddle.finetune_lm import main

    tmp = _tmp()
    argv = ["--model", str(tiny_model_dir), "--text", str(files[kw["text"]]), "--output-dir",
            _out_path(kw["out"], tmp, "ft"), "--steps", kw["steps"], "--dev-fraction", kw["dev"], "--format",
            kw["fmt"], "--no-progress", f"runs_dir={tmp / 'runs'}"]
    _check(main, argv + (["--lr", kw["lr"]] if kw["lr"] else []), tmp)


@fuzz(12)
@given(max_len=INTS, max_lines=INTS, texts=st.lists(HOSTILE, min_size=1, max_size=2))
def test_perplexity(tiny_model_dir, files, max_len, max_lines, texts):
    from elmo_paddle.perplexity import main

    _check(main, ["--model", str(tiny_model_dir), "--max-len", str(max_len), "--max-lines", str(max_lines),
                  "--text", *[str(files[t]) for t in texts]], _tmp())


@fuzz(12)
@given(bs=INTS, max_length=INTS, threads=st.sampled_from(["-1", "0", "1"]), mb=RATES, text=HOSTILE, out=OUTS,
       suffix=st.sampled_from([".npz", ".txt", ".h5"]), layers=st.sampled_from(["all", "top", "average"]))
def test_embed(tiny_model_dir, files, bs, max_length, threads, mb, text, out, suffix, layers):
    from elmo_paddle.embed import main

    tmp = _tmp()
    _check(main, ["--model", str(tiny_model_dir), "--input", str(files[text]), "--output",
                  _out_path(out, tmp, "v" + suffix), "--batch-size", str(bs), "--max-length", str(max_length),
                  "--threads", threads, "--max-output-mb", mb, "--layers", layers, "--no-progress"], tmp)


@fuzz(3)
@given(out=st.sampled_from(["under_file", "proc", "file"]))
def test_export_output_paths(tiny_model_dir, out):
    """Only the refusals: a successful export (tracing the graph, ~30 s) is test_export.py's job."""
    from elmo_paddle.export import main

    tmp = _tmp()
    path = _out_path("under_file" if out == "file" else out, tmp, "exp")
    path = str(tmp / "afile") if out == "file" else path  # the regular file itself
    rc = _check(main, ["--model", str(tiny_model_dir), "--output", path, "--no-check"], tmp)
    assert rc == 2


# ------------------------------------------------------------------ task entry points
@pytest.fixture(scope="module")
def task_models(tmp_path_factory):
    return train_lac(tmp_path_factory.mktemp("lacm")), train_bidaf(tmp_path_factory.mktemp("bidafm"))


@fuzz(10)
@given(bs=INTS, max_chars=INTS, mode=st.sampled_from(["seg", "lac"]), text=HOSTILE,
       user_dict=st.one_of(st.none(), HOSTILE))
def test_lac_predict(task_models, files, bs, max_chars, mode, text, user_dict):
    from tasks.lac.predict import main

    argv = ["--model", str(task_models[0]), "--input", str(files[text]), "--batch-size", str(bs),
            "--max-chars", str(max_chars), "--mode", mode]
    _check(main, argv + (["--dict", str(files[user_dict])] if user_dict else []), _tmp())


JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                    max_leaves=12)
QA = st.fixed_dictionaries({}, optional={"id": JSON | st.sampled_from(["a", "b"]), "question": JSON | st.just("哪里？"),
                                         "answers": JSON})
SQUAD = st.builds(lambda ctx, qas: {"data": [{"paragraphs": [{"context": ctx, "qas": qas}]}]},
                  st.one_of(st.just("北京大学在北京。"), JSON), st.lists(QA, max_size=4))


@fuzz(12)
@given(doc=st.one_of(SQUAD, JSON), bs=INTS, out=st.one_of(st.none(), OUTS))
def test_bidaf_predict(task_models, doc, bs, out):
    from tasks.bidaf.predict import main

    tmp = _tmp()
    q = tmp / "q.json"
    q.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    argv = ["--model", str(task_models[1]), "--input", str(q), "--batch-size", str(bs)]
    _check(main, argv + (["--output", _out_path(out, tmp, "p.json")] if out else []), tmp)


TASK_VALID = dict(epochs="1", steps="2", lr="0.01", bs="4", frac="1", dropout="0.1", runs="ok")
TASK_HOSTILE = dict(epochs=INTS, steps=st.sampled_from(["-1", "0", "x"]), lr=RATES, bs=INTS, frac=FRACTIONS,
                    dropout=FRACTIONS, runs=OUTS)


@pytest.fixture(scope="module")
def task_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("taskdata")
    return write_lac_data(root), write_cmrc_data(root)


def _task_argv(args, data, tmp, *, epochs, steps, lr, bs, frac, dropout, runs):
    return args(data, _out_path(runs, tmp, "runs")) + [
        "--epochs", str(epochs), "--max-steps", steps, "--train-fraction", frac, "--run-name", "f",
        f"lr={lr}", f"batch_size={bs}", f"dropout={dropout}"]


@fuzz(6)
@given(kw=mixed(TASK_VALID, TASK_HOSTILE))
def test_lac_finetune(task_data, kw):
    from tasks.lac.finetune import main

    tmp = _tmp()
    _check(main, _task_argv(lac_args, task_data[0], tmp, **kw), tmp)


@fuzz(6)
@given(kw=mixed(TASK_VALID, TASK_HOSTILE))
def test_bidaf_finetune(task_data, kw):
    from tasks.bidaf.finetune import main

    tmp = _tmp()
    _check(main, _task_argv(bidaf_args, task_data[1], tmp, **kw), tmp)


@fuzz(10)
@given(metrics=st.lists(st.one_of(JSON, st.fixed_dictionaries(
    {"score_scale": st.just("percent"), "test": st.one_of(JSON, st.dictionaries(
        st.sampled_from(["f1", "em", "seg_f1", "total"]), JSON, max_size=3))},
    optional={"config": JSON, "train_seconds": JSON})), min_size=1, max_size=3),
    history=JSON, out=st.one_of(st.none(), OUTS))
def test_compare(metrics, history, out):
    from tasks.compare import main

    tmp = _tmp()
    for i, m in enumerate(metrics):
        d = tmp / "runs" / "lac" / f"r{i}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(m), encoding="utf-8")
        (d / "history.json").write_text(json.dumps(history), encoding="utf-8")
    argv = [str(tmp / "runs")] + (["--output", _out_path(out, tmp, "cmp")] if out else [])
    _check(main, argv, tmp)


@fuzz(12)
@given(fractions=st.lists(FRACTIONS, max_size=2), seeds=st.lists(INTS, max_size=2), runs=OUTS,
       est=st.sampled_from(["-1", "nan", "1"]))
def test_pipeline_dry_run(fractions, seeds, runs, est):
    from elmo_paddle.pipeline import main

    tmp = _tmp()
    _check(main, ["--config", str(REPO / "configs" / "pipeline_tiny.yaml"), "--dry-run",
                  f"lac.fractions=[{','.join(fractions)}]", f"bidaf.seeds=[{','.join(map(str, seeds))}]",
                  f"runs_dir={_out_path(runs, tmp, 'runs')}", f"lac.est_minutes={est}"], tmp)
