"""End-to-end pretraining on a tiny synthetic corpus: learning, exact resume, fleet, bad input."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from corpus_fixture import RANK_WEIGHTS_SCRIPT, TINY_OVERRIDES, assert_ranks_identical, make_corpus

REPO = Path(__file__).resolve().parent.parent


def run_cli(args, env=None, timeout=240):
    e = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=REPO, env=e, capture_output=True, text=True, timeout=timeout)


def pretrain(corpus, out, *extra, env=None, resume=False):
    args = ["-m", "elmo_paddle.pretrain", "--output-dir", str(out), "--no-progress",
            f"data.train=[{corpus}]", f"runs_dir={Path(out).parent / 'runs'}", *TINY_OVERRIDES, *extra]
    if resume:
        args.insert(2, "--resume")
    return run_cli(args, env)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("c") / "corpus.txt", 600)


def _weights(d):
    from safetensors.numpy import load_file

    return load_file(str(Path(d) / "weights.safetensors"))


def test_pretrain_learns_and_resume_matches_uninterrupted(corpus, tmp_path):
    """A crash after step 25 resumes from the step-20 checkpoint (not from 0, not from 10) and, with one thread
    (deterministic), ends bit-identical to the uninterrupted run: same history, same final weights."""
    steps = ["train.max_steps=40", "train.eval_every=20", "train.save_every=10", "train.threads=1"]
    env = {"OMP_NUM_THREADS": "1"}
    r = pretrain(corpus, tmp_path / "a", *steps, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    hist = json.loads((tmp_path / "a" / "history.json").read_text())
    assert hist[-1]["ppl"] < 0.6 * hist[0]["ppl"], hist  # it learns: perplexity falls by 40%+
    # crash right after step 25 (last complete checkpoint: step 20), then resume
    r = pretrain(corpus, tmp_path / "b", *steps, env={**env, "ELMO_PADDLE_FAULT": "exit@25"})
    assert r.returncode == 17
    r = pretrain(corpus, tmp_path / "b", *steps, env=env, resume=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.search(r"^resumed from \S+/checkpoints/step-00000020 at step 20/40$", r.stdout, re.M), r.stdout
    hist_b = json.loads((tmp_path / "b" / "history.json").read_text())
    strip = [{k: v for k, v in h.items() if k != "eval_seconds"} for h in hist]
    assert [{k: v for k, v in h.items() if k != "eval_seconds"} for h in hist_b] == strip
    wa, wb = _weights(tmp_path / "a" / "final"), _weights(tmp_path / "b" / "final")
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wb[k], wa[k], err_msg=k)
    for d in ("best", "final"):
        assert (tmp_path / "a" / d / "weights.safetensors").is_file()
    assert len(list((tmp_path / "a" / "checkpoints").iterdir())) == 3  # keep_checkpoints
    # VisualDL shows the resumed run's curve as the uninterrupted one's (it reads one record file per folder)
    from elmo_paddle.vdl_log import shown

    a = shown(tmp_path / "runs" / "a", "train/loss")
    assert shown(tmp_path / "runs" / "b", "train/loss") == a and len(a) >= 4


def test_nan_loss_is_skipped_and_weights_stay_finite(corpus, tmp_path):
    """A NaN loss at step 3 is skipped: every saved model (checkpoints, best, final) has finite weights."""
    r = pretrain(corpus, tmp_path / "n", "train.max_steps=12", "train.eval_every=6", "train.save_every=6",
                 env={"ELMO_PADDLE_FAULT": "nan@3"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "non-finite loss at step 3" in r.stdout + r.stderr
    dirs = [tmp_path / "n" / d for d in ("best", "final")] + sorted((tmp_path / "n" / "checkpoints").iterdir())
    assert len(dirs) == 4, dirs
    for d in dirs:
        w = _weights(d)
        assert w and all(np.isfinite(a).all() for a in w.values()), d


@pytest.mark.parametrize("extra, message", [
    (["bilm.hidden_sz=3"], "unknown key(s) hidden_sz"),
    (["data.train=[/nonexistent/corpus]"], "not found"),
    (["train.optimizer=sgdx"], "adam or adagrad"),
    (["bilm.token_dim=8"], "must equal proj_dim"),
])
def test_bad_config_is_one_line_error(corpus, tmp_path, extra, message):
    r = pretrain(corpus, tmp_path / "x", "train.max_steps=2", *extra)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert message in r.stderr


def test_empty_corpus_and_existing_output(tmp_path, corpus):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"\n  \n\xff\xfe\n")
    r = pretrain(empty, tmp_path / "e", "train.max_steps=2")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no training text" in r.stderr
    out = tmp_path / "o"
    assert pretrain(corpus, out, "train.max_steps=4", "train.save_every=2").returncode == 0
    r = pretrain(corpus, out, "train.max_steps=4")
    assert r.returncode == 2 and "--resume" in r.stderr


def test_two_process_fleet_keeps_ranks_identical(corpus, tmp_path):
    """Data parallelism keeps the ranks in step: each rank's own final weights (saved by the test's wrapper,
    not the program's checksum line) are identical, element by element."""
    log_dir = tmp_path / "log"
    r = run_cli(["-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(log_dir),
                 str(RANK_WEIGHTS_SCRIPT), "--output-dir", str(tmp_path / "f"), "--no-progress",
                 f"data.train=[{corpus}]", f"runs_dir={tmp_path / 'runs'}", *TINY_OVERRIDES, "train.max_steps=20",
                 "train.eval_every=10", "train.save_every=10"], env={"ELMO_TEST_RANK_WEIGHTS": str(tmp_path / "w")},
                timeout=300)
    log0 = (log_dir / "workerlog.0").read_text()
    assert r.returncode == 0, log0[-3000:]
    assert "parameters identical across 2 ranks" in log0
    assert_ranks_identical(tmp_path / "w")
    hist = json.loads((tmp_path / "f" / "history.json").read_text())
    assert hist[-1]["ppl"] < hist[0]["ppl"]
    state = json.loads((tmp_path / "f" / "checkpoints" / "step-00000020" / "state.json").read_text())
    assert len(state["data_states"]) == 2  # each rank's own data position is saved


def test_perplexity_cli_scores_recorded_split_and_text(corpus, tmp_path):
    out = tmp_path / "p"
    assert pretrain(corpus, out, "train.max_steps=6", "train.eval_every=6", "train.save_every=6").returncode == 0
    r = run_cli(["-m", "elmo_paddle.perplexity", "--model", str(out)])
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    hist = json.loads((out / "history.json").read_text())
    assert abs(res["ppl"] - hist[-1]["ppl"]) < 1e-2 * hist[-1]["ppl"]  # same split, same number
    txt = tmp_path / "t.txt"
    txt.write_text("我们喜欢经济。\n", encoding="utf-8")
    r = run_cli(["-m", "elmo_paddle.perplexity", "--model", str(out), "--text", str(txt)])
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["tokens"] == 8
    r = run_cli(["-m", "elmo_paddle.perplexity", "--model", str(tmp_path / "none")])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    # another model's held-out split: a model trained on other text scores those same lines
    other = make_corpus(tmp_path / "other.txt", 200, seed=5)
    out2 = tmp_path / "p2"
    assert pretrain(other, out2, "train.max_steps=6", "train.eval_every=6", "train.save_every=6").returncode == 0
    r = run_cli(["-m", "elmo_paddle.perplexity", "--model", str(out2), "--heldout-from", str(out)])
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["tokens"] == res["tokens"]


def test_resume_with_more_epochs_extends_a_finished_run(corpus, tmp_path):
    out = tmp_path / "e"
    common = ["train.eval_every=1000", "train.save_every=1000", "train.log_every=1000"]
    r = pretrain(corpus, out, "train.epochs=1", *common)
    assert r.returncode == 0, r.stderr[-2000:]
    steps_1 = json.loads((out / "final" / "state.json").read_text())["step"]
    r = pretrain(corpus, out, "train.epochs=1", *common, resume=True)  # same settings: nothing left to do
    assert r.returncode == 0 and json.loads((out / "final" / "state.json").read_text())["step"] == steps_1
    r = pretrain(corpus, out, "train.epochs=2", *common, resume=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "final" / "state.json").read_text())["step"] == 2 * steps_1
