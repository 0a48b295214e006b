"""Fault injection on real (tiny) pretraining runs in subprocesses: kill -9, a dead fleet rank, NaN/Inf
losses, a full disk, an unwritable output dir.  What must survive: every checkpoint on disk verifies,
`--resume` continues from the newest complete one, and the resumed run reproduces an uninterrupted one.

Faults come from ELMO_PADDLE_FAULT (see elmo_paddle/checkpoint.py: fault_specs).  The kill trials are
drawn from a fixed seed (ELMO_FAULT_SEED, default 7); ELMO_FAULT_TRIALS scales the slow variant.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from corpus_fixture import (RANK_WEIGHTS_SCRIPT, TINY_OVERRIDES, assert_ranks_identical, make_corpus, resize_tmpfs,
                            small_tmpfs)
from elmo_paddle import checkpoint as ckpt

REPO = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("ELMO_FAULT_SEED", "7"))
MAX_STEPS = 40
STEPS = [f"train.max_steps={MAX_STEPS}", "train.eval_every=10", "train.save_every=5", "train.keep_checkpoints=3",
         "train.threads=1"]


def _env(extra: dict | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ELMO_PADDLE_FAULT"}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(extra or {}))
    return env


def pretrain_args(corpus, out, *extra, resume=False):
    args = [sys.executable, "-m", "elmo_paddle.pretrain", "--output-dir", str(out), "--no-progress",
            f"data.train=[{corpus}]", *TINY_OVERRIDES, *STEPS, *extra]
    if resume:
        args.insert(3, "--resume")
    return args


def pretrain(corpus, out, *extra, fault=None, resume=False, timeout=240, cwd=None):
    """Run one pretraining process (cwd = out's parent, so VisualDL logs stay out of the repo)."""
    env = _env({"ELMO_PADDLE_FAULT": fault} if fault else None)
    return subprocess.run(pretrain_args(corpus, out, *extra, resume=resume), cwd=cwd or Path(out).parent, env=env,
                          capture_output=True, text=True, timeout=timeout)


def history(out) -> list[dict]:
    return json.loads((Path(out) / "history.json").read_text())


def assert_history_matches(got, ref):
    """Bit-identical (one thread is deterministic): every step, perplexity and token count, eval time aside."""
    def strip(hist):
        return [{k: v for k, v in h.items() if k != "eval_seconds"} for h in hist]

    assert strip(got) == strip(ref)


def assert_weights_equal(got_dir, ref_dir):
    got, ref = _weights(Path(got_dir)), _weights(Path(ref_dir))
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def step_dirs(out) -> list[Path]:
    d = Path(out) / "checkpoints"
    return sorted(p for p in d.iterdir() if p.name.startswith("step-")) if d.is_dir() else []


def assert_on_disk_state_is_sound(out, keep=3) -> int:
    """Every checkpoint dir under its final name verifies; best/ verifies or is recoverable.  -> newest step."""
    dirs = step_dirs(out)
    for p in dirs:
        ckpt.verify_dir(p)  # raises UserError if half-written
        assert _weights_finite(p), p
    assert len(dirs) <= keep + 1, dirs  # at most one extra: killed between rename and prune
    best = Path(out) / "best"
    if best.exists():
        ckpt.verify_dir(best)
    else:  # killed between moving the old best aside and renaming the new one in: the old one is whole
        olds = list(Path(out).glob(".old-best-*"))
        if olds:
            assert any(ckpt.is_valid(p) for p in olds), olds
    return int(dirs[-1].name[5:]) if dirs else 0


def _weights_finite(d: Path) -> bool:
    from safetensors.numpy import load_file

    return all(np.isfinite(a).all() for a in load_file(str(d / "weights.safetensors")).values())


def _weights(d: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(d / "weights.safetensors"))


def one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    errs = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(errs) == 1, stderr[-3000:]
    return errs[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("fc") / "corpus.txt", 600)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """An uninterrupted run with the same seed: the history every interrupted run must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "out"
    r = pretrain(corpus, out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


# ------------------------------------------------------------------------------------------- kill -9
def _plan_trials(rng: random.Random, n: int, kinds: list[str]) -> list[str]:
    """n fault kinds: every one of `kinds` once (shuffled), then random ones."""
    base = kinds[:]
    rng.shuffle(base)
    return (base + [rng.choice(kinds) for _ in range(max(0, n - len(base)))])[:n]


def _fault_for(kind: str, rng: random.Random, resume_step: int) -> tuple[str, str]:
    """(ELMO_PADDLE_FAULT value, description)."""
    if kind == "kill@step":
        s = rng.randint(resume_step + 1, min(resume_step + 8, MAX_STEPS - 1))
        return f"kill@{s}", f"SIGKILL after step {s}"
    if kind == "killsave@step":
        s = min(MAX_STEPS, (resume_step // 5 + rng.randint(1, 2)) * 5)
        k = rng.randint(1, 6)  # 6 files before the manifest: config, vocab, corpus, state, weights, optimizer
        return f"killsave@step-{s:08d}/{k}", f"SIGKILL inside the write of checkpoint step {s} after {k} file(s)"
    if kind == "killsave@best":
        k = rng.randint(1, 5)
        return f"killsave@best/{k}", f"SIGKILL inside the write of best/ after {k} file(s)"
    if kind == "killrename@best":
        return "killrename@best", "SIGKILL between moving the old best/ aside and renaming the new one in"
    if kind == "external":
        return "pausesave@0.6", "kill -9 from outside while a checkpoint write is paused mid-way"
    raise AssertionError(kind)


def _run_killed(corpus, out, fault: str, resume: bool, rng: random.Random, timeout=240):
    """Run with `fault`; for pausesave (every checkpoint write pauses after its first file) kill -9 the
    process from outside once the k-th temporary checkpoint dir (k drawn from rng) shows up."""
    env = _env({"ELMO_PADDLE_FAULT": fault} if fault else None)
    proc = subprocess.Popen(pretrain_args(corpus, out, resume=resume), cwd=Path(out).parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if fault and fault.startswith("pausesave"):
        want, seen, t0 = rng.randint(1, 3), set(), time.time()
        while proc.poll() is None and time.time() - t0 < timeout:
            tmps = {p.name for d in (Path(out), Path(out) / "checkpoints") if d.is_dir()
                    for p in d.iterdir() if p.name.startswith(".tmp-")}
            seen |= tmps
            if len(seen) >= want and tmps:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    so, se = proc.communicate(timeout=timeout)
    return proc.returncode, so, se


def _kill_chain(corpus, reference, out, n_trials: int, kinds: list[str]) -> list[str]:
    rng = random.Random(SEED * 1000 + n_trials)
    log, resume_step, resumed = [], 0, False
    for kind in _plan_trials(rng, n_trials, kinds):
        if resume_step >= MAX_STEPS - 5:
            break  # (slow runs with many trials) too little of the run left to kill it again
        fault, what = _fault_for(kind, rng, resume_step)
        rc, so, se = _run_killed(corpus, out, fault, resumed, rng)
        if resumed:
            m = re.search(r"resumed from \S+step-(\d+)", so)
            assert m and int(m.group(1)) == resume_step, so[-2000:]  # the newest complete checkpoint
        assert rc == -signal.SIGKILL, (what, rc, se[-3000:])
        resume_step = assert_on_disk_state_is_sound(out)
        resumed = resume_step > 0
        log.append(f"{what} -> resumes from step {resume_step}")
    r = pretrain(corpus, out, resume=resumed)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_on_disk_state_is_sound(out)
    # nothing half-written is left behind: the next start cleaned every .tmp-*/.old-* dir
    leftovers = [p.name for d in (Path(out), Path(out) / "checkpoints") for p in d.iterdir()
                 if p.name.startswith((".tmp-", ".old-"))]
    assert not leftovers, leftovers
    assert_history_matches(history(out), history(reference))
    assert_weights_equal(out / "final", reference / "final")
    ckpt.verify_dir(out / "best")
    assert json.loads((out / "best" / "state.json").read_text())["best_ppl"] == min(h["ppl"] for h in history(out))
    return log


def test_kill9_at_random_points_resumes_exactly(corpus, reference, tmp_path):
    # one kill inside a step-checkpoint write, one between best/'s two renames, one kill -9 from outside
    log = _kill_chain(corpus, reference, tmp_path / "out", 3, ["killsave@step", "killrename@best", "external"])
    print("\n".join(log))


@pytest.mark.slow
def test_kill9_many_random_points(corpus, reference, tmp_path):
    n = int(os.environ.get("ELMO_FAULT_TRIALS", "6"))
    kinds = ["kill@step", "killsave@step", "killsave@best", "killrename@best", "external"]
    log = _kill_chain(corpus, reference, tmp_path / "out", n, kinds)
    print("\n".join(log))


# ------------------------------------------------------------------------------------------ NaN / Inf
def test_nan_storm_skips_then_stops_with_one_line_error(corpus, tmp_path):
    """Skipped steps leave the weights alone: checkpoint 15, taken after NaN steps 12-14, holds exactly the
    weights after step 11 (the last good one), which a run stopped after step 11 saved as checkpoint 12."""
    out = tmp_path / "out"
    r = pretrain(corpus, out, "train.max_bad_steps=6", fault="nan@3,nan@12-40")
    text = r.stdout + r.stderr
    assert "non-finite loss at step 3 (skipped; 1 in a row)" in text
    assert r.returncode == 2, text[-3000:]
    err = one_line_error(r.stderr)
    assert "6 consecutive non-finite losses at step 17" in err and "last good checkpoint" in err
    # checkpoints 5, 10 and 15 (taken during the NaN run: weights still the last good ones) all verify
    assert [p.name for p in step_dirs(out)] == ["step-00000005", "step-00000010", "step-00000015"]
    assert_on_disk_state_is_sound(out)
    good = tmp_path / "good"  # the same run, stopped (and saved) right after step 11, before the storm
    r = pretrain(corpus, good, "train.save_every=12", fault="nan@3,exit@12")
    assert r.returncode == 17, r.stderr[-3000:]
    assert_weights_equal(out / "checkpoints" / "step-00000015", good / "checkpoints" / "step-00000012")
    wa, wb = _weights(out / "checkpoints" / "step-00000010"), _weights(out / "checkpoints" / "step-00000015")
    assert not all(np.array_equal(wa[k], wb[k]) for k in wa)  # 10 -> 15: steps 10, 11 trained


def test_nan_weights_are_never_saved(corpus, tmp_path):
    out = tmp_path / "out"
    # the loss stays finite but the gradients of step 7 are NaN: the weights become NaN
    r = pretrain(corpus, out, fault="nangrad@7")
    assert r.returncode == 2, (r.stdout + r.stderr)[-3000:]
    assert "weights became non-finite at step 10; not saving" in one_line_error(r.stderr)
    assert [p.name for p in step_dirs(out)] == ["step-00000005"]
    assert_on_disk_state_is_sound(out)
    assert _weights_finite(out / "best")
    # and the run resumes from the good checkpoint once the fault is gone
    r = pretrain(corpus, out, "train.max_steps=12", resume=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "step-00000005" in r.stdout


# ------------------------------------------------------------------------------- disk full / unwritable
def test_disk_full_while_saving_keeps_previous_checkpoint(corpus, reference, tmp_path):
    out = tmp_path / "out"
    r = pretrain(corpus, out, fault="enospc@step-00000015/3")
    assert r.returncode == 2, (r.stdout + r.stderr)[-3000:]
    err = one_line_error(r.stderr)
    assert "No space left on device" in err and "step-00000015" in err and "previous checkpoint is kept" in err
    assert [p.name for p in step_dirs(out)] == ["step-00000005", "step-00000010"]
    assert not list((out / "checkpoints").glob(".tmp-*"))  # the partial write was removed
    assert_on_disk_state_is_sound(out)
    # ENOSPC while replacing best/: the old best/ stays
    r = pretrain(corpus, out, fault="enospc@best/2", resume=True)
    assert r.returncode == 2 and "best" in one_line_error(r.stderr)
    assert json.loads((out / "best" / "state.json").read_text())["step"] == 10
    assert_on_disk_state_is_sound(out)
    # space is back: resume finishes and matches the uninterrupted run
    r = pretrain(corpus, out, resume=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_history_matches(history(out), history(reference))


def test_real_enospc_on_a_small_tmpfs_keeps_previous_checkpoints(corpus, reference, tmp_path):
    """A real full disk (a 700 KB tmpfs: best/ is ~110 KB, a checkpoint ~270 KB), not the fault hook: the write
    that does not fit ends the run with exit 2 and one line, leaves no .tmp-*, every checkpoint on disk
    verifies; with more space, --resume finishes with the uninterrupted run's history and weights."""
    with small_tmpfs(tmp_path / "disk", 700) as disk:
        out = disk / "out"
        r = pretrain(corpus, out, cwd=tmp_path)
        assert r.returncode == 2, (r.stdout + r.stderr)[-3000:]
        err = one_line_error(r.stderr)
        assert "No space left on device" in err and "previous checkpoint is kept" in err, err
        assert len(step_dirs(out)) >= 1
        leftovers = [p.name for d in (out, out / "checkpoints") for p in d.iterdir() if p.name.startswith(".tmp-")]
        assert not leftovers, leftovers
        assert_on_disk_state_is_sound(out)
        resize_tmpfs(disk, 8192)
        r = pretrain(corpus, out, resume=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        assert_history_matches(history(out), history(reference))
        assert_weights_equal(out / "final", reference / "final")


def test_output_dir_under_a_regular_file_is_one_line_error(corpus, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    r = pretrain(corpus, blocker / "out", cwd=tmp_path)
    assert r.returncode == 2
    err = one_line_error(r.stderr)
    assert "cannot create output dir" in err and "Not a directory" in err


# ---------------------------------------------------------------------------------- fleet: a rank dies
def _launch(corpus, out, log_dir, *extra, fault=None, resume=False, timeout=120):
    args = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(log_dir),
            str(RANK_WEIGHTS_SCRIPT), "--output-dir", str(out), "--no-progress",
            f"data.train=[{corpus}]", *TINY_OVERRIDES, *STEPS, "train.max_steps=20", *extra]
    if resume:
        args.insert(args.index("--no-progress"), "--resume")
    env = _env({"ELMO_PADDLE_FAULT": fault} if fault else None)
    env["ELMO_TEST_RANK_WEIGHTS"] = str(Path(log_dir).with_name(Path(log_dir).name + "-weights"))
    t0 = time.time()
    try:
        r = subprocess.run(args, cwd=Path(out).parent, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the fleet launcher hung for {timeout}s")
    return r, time.time() - t0


def _assert_launcher_names_the_dead_rank(text: str, log_dir: Path) -> None:
    """The launcher polls once a second and names the first failed container in rank order: rank 1, dead by the
    fault with its exit code 17, or rank 0, if it already stopped on the broken connection with its own exit
    code 3 and one-line error (measured: rank 0 in 3 of 4 runs).  Any other rank, code or a traceback fails."""
    m = re.search(r"Container rank ([01]) status failed .* code (-?\d+) log \S*workerlog\.([01])", text)
    assert m and m.group(1) == m.group(3), text[-3000:]
    assert (m.group(1), m.group(2)) in {("1", "17"), ("0", "3")}, m.group(0)[-300:]
    log0, log1 = ((log_dir / f"workerlog.{r}").read_text() for r in (0, 1))
    # no Python traceback (paddle's "C++ Traceback" banner on the launcher's SIGTERM to the survivor is fine)
    assert not re.search(r"^Traceback \(most recent call last\)", log0 + log1, re.M), (log0 + log1)[-3000:]
    if m.group(1) == "0":
        assert "error: rank 0 lost contact with the other ranks" in log0, log0[-2000:]
    assert "step 10/20" in log0 and "step 15/20" not in log0, log0[-2000:]  # the job stopped at step 12


def test_fleet_rank_death_stops_job_and_resume_completes(corpus, tmp_path):
    """Rank 1 dies (exit 17) after step 12: the job stops within the timeout, checkpoints 5 and 10 verify, and
    --resume under the launcher finishes with both ranks' own weights identical."""
    out, logs = tmp_path / "out", tmp_path / "log"
    r, took = _launch(corpus, out, logs, fault="exit@12:rank1")
    assert took < 120
    assert r.returncode != 0
    _assert_launcher_names_the_dead_rank(r.stdout + r.stderr, logs)
    assert [p.name for p in step_dirs(out)] == ["step-00000005", "step-00000010"]
    assert_on_disk_state_is_sound(out)
    r, took = _launch(corpus, out, tmp_path / "log2", resume=True, timeout=240)
    log0 = (tmp_path / "log2" / "workerlog.0").read_text()
    assert r.returncode == 0, log0[-3000:]
    assert re.search(r"^resumed from \S+/step-00000010 at step 10/20$", log0, re.M), log0[-3000:]
    assert_ranks_identical(tmp_path / "log2-weights")
    ckpt.verify_dir(out / "final")
    assert json.loads((out / "final" / "state.json").read_text())["step"] == 20


@pytest.mark.slow
def test_fleet_rank0_death_and_resume_matches_uninterrupted(corpus, tmp_path):
    ref, _ = _launch(corpus, tmp_path / "ref", tmp_path / "lr", timeout=240)
    assert ref.returncode == 0
    out = tmp_path / "out"
    r, took = _launch(corpus, out, tmp_path / "l1", fault="kill@13:rank0")  # SIGKILL on rank 0
    assert took < 120 and r.returncode != 0
    # rank 0 fails first and is first in rank order: always the one named, with SIGKILL's code
    assert re.search(r"Container rank 0 status failed .* code -9 log \S*workerlog\.0", r.stdout + r.stderr)
    assert_on_disk_state_is_sound(out)
    r, _ = _launch(corpus, out, tmp_path / "l2", resume=True, timeout=240)
    assert r.returncode == 0, (tmp_path / "l2" / "workerlog.0").read_text()[-3000:]
    assert_history_matches(history(out), history(tmp_path / "ref"))
    assert_ranks_identical(tmp_path / "l2-weights")
    assert_weights_equal(out / "final", tmp_path / "ref" / "final")


@pytest.mark.slow
def test_nan_on_one_fleet_rank_is_skipped_by_all(corpus, tmp_path):
    # one rank's loss is NaN: both ranks skip the step together (no rank left waiting in an all-reduce)
    r, took = _launch(corpus, tmp_path / "out", tmp_path / "log", fault="nan@4:rank1", timeout=240)
    log0 = (tmp_path / "log" / "workerlog.0").read_text()
    assert r.returncode == 0, log0[-3000:]
    assert "non-finite loss at step 4" in log0 and "parameters identical across 2 ranks" in log0
    assert_ranks_identical(tmp_path / "log-weights")


@pytest.mark.slow
def test_fleet_waits_out_a_slow_rank0_evaluation(corpus, tmp_path):
    """A gloo collective gives up after 30 s; rank 0's dev evaluations (at the start and at step 5 here) take
    31 s each, and the other rank waits them out through the launcher's store (`dist.from_rank0`) instead of
    timing out in the next step's all-reduce."""
    out, logs = tmp_path / "out", tmp_path / "log"
    r, _ = _launch(corpus, out, logs, "train.max_steps=5", "train.eval_every=5", fault="slowdev@31:rank0",
                   timeout=300)
    log0 = (logs / "workerlog.0").read_text()
    assert r.returncode == 0, log0[-3000:]
    assert len(json.loads((out / "history.json").read_text())) == 2  # step 0 and step 5 were evaluated
