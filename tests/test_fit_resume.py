"""Resumable task training (`tasks.common.trainer.fit`): a run stopped at any point and resumed gives the
uninterrupted run's dev history and weights exactly; a fresh run never overwrites checkpoints; a resume
under changed settings is refused; a finished run resumed trains nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

import elmo_paddle  # noqa: F401
from elmo_paddle import vdl_log
from elmo_paddle.errors import UserError
from tasks.common.fit_checkpoint import trainable_arrays
from tasks.common.trainer import FitConfig, TaskHooks, fit

REPO = Path(__file__).resolve().parent.parent


class Stop(Exception):
    """Raised by a loss hook to interrupt a run in-process (the SIGKILL test below uses a real kill)."""


def _model(init_seed: int) -> tuple[paddle.nn.Layer, paddle.optimizer.Optimizer]:
    paddle.seed(init_seed)
    model = paddle.nn.Sequential(paddle.nn.Linear(4, 8), paddle.nn.Dropout(0.3), paddle.nn.Linear(8, 1))
    return model, paddle.optimizer.Adam(0.05, parameters=model.parameters())


def _hooks(stop_at_step: int | None = None) -> TaskHooks:
    rng = np.random.RandomState(0)
    xs = [paddle.to_tensor(rng.randn(6, 4).astype("float32")) for _ in range(5)]
    seen = []

    def batches(epoch):  # the order is a function of the epoch, as the tasks' batchers are
        return [xs[i] for i in np.random.RandomState(epoch).permutation(len(xs))]

    def loss(m, x):
        seen.append(1)
        if stop_at_step is not None and len(seen) > stop_at_step:
            raise Stop()
        return ((m(x) - x.sum(axis=1, keepdim=True)) ** 2).mean()

    def evaluate(m):  # deterministic dev score that changes with the weights
        return {"f1": -float(((m(xs[0]) - xs[0].sum(axis=1, keepdim=True)) ** 2).mean())}

    return TaskHooks(batches, loss, evaluate)


def _cfg(run_dir, **kw) -> FitConfig:
    base = dict(run_dir=run_dir, epochs=4, eval_every=3, seed=5, fingerprint={"lr": 0.05})
    return FitConfig(**{**base, **kw})


@pytest.mark.parametrize("stop_at", [4, 7, 10])  # mid-epoch, right after an evaluation's step, late
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, stop_at):
    model, opt = _model(0)
    full = fit(model, opt, _hooks(), _cfg(tmp_path / "full"))
    want = trainable_arrays(model)

    model, opt = _model(0)
    with pytest.raises(Stop):
        fit(model, opt, _hooks(stop_at), _cfg(tmp_path / "cut"))
    model, opt = _model(123)  # other initial weights: everything must come from the checkpoint
    resumed = fit(model, opt, _hooks(), _cfg(tmp_path / "cut", resume=True))
    assert resumed.history == full.history and resumed.steps == full.steps == 20
    assert resumed.best == full.best and resumed.best_step == full.best_step
    got = trainable_arrays(model)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_checkpoint_every_resumes_mid_epoch_between_evaluations(tmp_path):
    """Evaluations once per epoch (5 steps), a checkpoint every 2 steps: a run stopped at step 9 resumes from
    step 8, inside the second epoch, and still gives the uninterrupted run's history and weights."""
    cfg = dict(eval_every=0, checkpoint_every=2)
    model, opt = _model(0)
    full = fit(model, opt, _hooks(), _cfg(tmp_path / "full", **cfg))
    want = trainable_arrays(model)
    model, opt = _model(0)
    with pytest.raises(Stop):
        fit(model, opt, _hooks(9), _cfg(tmp_path / "cut", **cfg))
    assert (tmp_path / "cut" / "checkpoints" / "step-00000008").is_dir()
    model, opt = _model(123)
    resumed = fit(model, opt, _hooks(), _cfg(tmp_path / "cut", resume=True, **cfg))
    assert resumed.history == full.history and resumed.steps == full.steps == 20
    for k, v in trainable_arrays(model).items():
        np.testing.assert_array_equal(v, want[k], err_msg=k)


@pytest.mark.parametrize("stop_at", [4, 9])
def test_weight_average_resumes_exactly(tmp_path, stop_at):
    """With `ema_decay` the dev scores are the averaged weights' (so they differ from a plain run's), the averages
    travel in every checkpoint, and a stopped and resumed run gives the uninterrupted one's history."""
    cfg = dict(ema_decay=0.9, checkpoint_every=2)
    model, opt = _model(0)
    plain = fit(model, opt, _hooks(), _cfg(tmp_path / "plain", checkpoint_every=2))
    model, opt = _model(0)
    full = fit(model, opt, _hooks(), _cfg(tmp_path / "full", **cfg))
    want = trainable_arrays(model)
    assert full.history != plain.history and full.steps == plain.steps == 20
    model, opt = _model(0)
    with pytest.raises(Stop):
        fit(model, opt, _hooks(stop_at), _cfg(tmp_path / "cut", **cfg))
    assert all((p / "weight_averages.safetensors").is_file() for p in (tmp_path / "cut" / "checkpoints").iterdir())
    model, opt = _model(123)
    resumed = fit(model, opt, _hooks(), _cfg(tmp_path / "cut", resume=True, **cfg))
    assert resumed.history == full.history and resumed.best_step == full.best_step
    for k, v in trainable_arrays(model).items():  # training went on from the raw weights, not the averages
        np.testing.assert_array_equal(v, want[k], err_msg=k)


def test_weight_average_is_the_warmed_up_exponential_average_and_swaps_back():
    from tasks.common.ema import WeightAverage

    model = paddle.nn.Linear(2, 1)
    w0 = model.weight.numpy().copy()
    ema = WeightAverage(model, 0.5)
    want = w0.copy()
    for n, w in enumerate([1.0, 3.0, -2.0]):
        model.weight.set_value(np.full_like(w0, w))
        ema.update()
        d = min(0.5, (1 + n) / (10 + n))  # (1 + n) / (10 + n) while below the decay: 0.1, 0.18, 0.25
        want = d * want + (1 - d) * w
    np.testing.assert_allclose(ema.shadow["weight"], want, rtol=1e-6)
    with ema.applied():
        np.testing.assert_allclose(model.weight.numpy(), want, rtol=1e-6)
    np.testing.assert_array_equal(model.weight.numpy(), np.full_like(w0, -2.0))


def test_a_fresh_run_refuses_a_folder_with_checkpoints(tmp_path):
    model, opt = _model(0)
    fit(model, opt, _hooks(), _cfg(tmp_path, epochs=1))
    with pytest.raises(UserError, match="already holds checkpoints.*--resume"):
        fit(*_model(0), _hooks(), _cfg(tmp_path, epochs=1))


def test_a_run_folder_another_process_trains_is_refused_and_freed_when_it_ends(tmp_path):
    """Two queues that both list a run must not train it at once (both would write its checkpoints)."""
    from tasks.common.fit_checkpoint import hold

    script = ("import sys, time\nfrom pathlib import Path\nsys.path.insert(0, sys.argv[1])\n"
              "from tasks.common.fit_checkpoint import hold\n"
              "with hold(Path(sys.argv[2])):\n    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, str(REPO), str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"being trained by another process \\(pid {holder.pid}\\)"):
            fit(*_model(0), _hooks(), _cfg(tmp_path, epochs=1, resume=True))
    finally:
        holder.kill()  # as kill -9: the kernel frees the lock
        holder.wait()
    with hold(tmp_path):
        pass
    fit(*_model(0), _hooks(), _cfg(tmp_path, epochs=1, resume=True))


@pytest.mark.parametrize("task", ["lac", "bidaf"])
def test_a_task_run_is_claimed_before_its_setup(tmp_path, capsys, task):
    """A second process on a run, or a fresh run on a folder with checkpoints, is refused before the minutes of
    data loading (here the data dir does not exist: the claim's error comes first); a run that fails in its
    setup leaves no empty run folder."""
    import fcntl

    from tasks.bidaf.finetune import main as bidaf_main
    from tasks.lac.finetune import main as lac_main

    main = lac_main if task == "lac" else bidaf_main
    runs = tmp_path / "runs"
    args = ["--data-dir", str(tmp_path / "no-data"), "--run-name", "r", f"runs_dir={runs}"]
    assert main(args) == 2 and "does not exist" in capsys.readouterr().err
    assert not (runs / "r").exists()  # the failed setup left nothing behind

    (runs / "r" / "checkpoints" / "step-00000010").mkdir(parents=True)
    (runs / "r" / "checkpoints" / "step-00000010" / "manifest.json").write_text("{}")
    assert main(args) == 2 and "already holds checkpoints" in capsys.readouterr().err
    with open(runs / "r" / ".train.lock", "a+") as f:  # as another process holding the run
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main([*args, "--resume"]) == 2 and "being trained by another process" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 2 and "does not exist" in capsys.readouterr().err  # freed: setup runs
    assert (runs / "r" / "checkpoints").is_dir()  # a folder that held something is never removed


def test_hold_is_reentrant_in_one_process(tmp_path):
    from tasks.common.fit_checkpoint import hold

    with hold(tmp_path):
        with hold(tmp_path):  # a task's main claims the run, then fit holds it again
            pass
        fit(*_model(0), _hooks(), _cfg(tmp_path, epochs=1))


def test_resume_with_changed_settings_is_refused(tmp_path):
    fit(*_model(0), _hooks(), _cfg(tmp_path, epochs=1))
    with pytest.raises(UserError, match="settings changed.*lr"):
        fit(*_model(0), _hooks(), _cfg(tmp_path, epochs=2, resume=True, fingerprint={"lr": 0.1}))


def test_a_finished_run_resumed_trains_nothing_and_can_be_extended(tmp_path):
    model, opt = _model(0)
    first = fit(model, opt, _hooks(), _cfg(tmp_path, epochs=2))
    again = fit(*_model(9), _hooks(stop_at_step=0), _cfg(tmp_path, epochs=2, resume=True))  # any step would raise
    assert again.history == first.history and again.steps == first.steps == 10
    longer = fit(*_model(9), _hooks(), _cfg(tmp_path, epochs=4, resume=True))
    model, opt = _model(0)
    straight = fit(model, opt, _hooks(), _cfg(tmp_path / "straight", epochs=4))
    # the 2-epoch run evaluated at its end (step 10); otherwise the extended run is the 4-epoch run's curve
    assert [h for h in longer.history if h["step"] != 10] == [h for h in straight.history if h["step"] != 10]
    assert longer.steps == 20


def test_a_corrupt_newest_checkpoint_is_skipped(tmp_path):
    model, opt = _model(0)
    with pytest.raises(Stop):
        fit(model, opt, _hooks(8), _cfg(tmp_path))
    ckpts = sorted((tmp_path / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == ["step-00000003", "step-00000006"]
    w = ckpts[-1] / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:-7])  # truncated
    model, opt = _model(0)
    result = fit(model, opt, _hooks(), _cfg(tmp_path, resume=True))
    model, opt = _model(0)
    assert result.history == fit(model, opt, _hooks(), _cfg(tmp_path / "full")).history


# ---------------------------------------------------------------- a real SIGKILL, through the LAC command

SENTS = ["我们/r 爱/v 北京/LOC", "他/r 去/v 上海/LOC 了/u", "张三/PER 在/p 北京/LOC 工作/v",
         "今天/TIME 我们/r 工作/v", "李四/PER 爱/v 上海/LOC", "他们/r 今天/TIME 去/v 北京/LOC"]


def _lac_data(root: Path) -> Path:
    from tasks.lac.data import words_to_example

    data = root / "data" / "lac_sample"
    (data / "train_data").mkdir(parents=True)
    (data / "test_data").mkdir()
    lines = []
    for s in SENTS:
        ex = words_to_example([tuple(w.split("/")) for w in s.split()])
        lines.append(f"{ex.chars}\t{' '.join(ex.tags)}\n")
    (data / "train_data" / "a_part").write_text("".join(lines * 10), encoding="utf-8")
    (data / "test_data" / "test_part").write_text("".join(lines), encoding="utf-8")
    return root / "data"


def _lac(root: Path, data: Path, name: str, *extra: str, fault: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", ELMO_PADDLE_FAULT=fault)
    cmd = [sys.executable, "-m", "tasks.lac.finetune", "--config", str(REPO / "configs/lac.yaml"), "--dataset", "lac",
           "--data-dir", str(data), "--epochs", "3", "--run-name", name, "--seed", "2", f"runs_dir={root / 'runs'}",
           "emb_dim=8", "hidden_dim=8", "batch_size=8", "eval_every=4", "threads=1", "dropout=0.2", *extra]
    return subprocess.run(cmd, capture_output=True, cwd=root, env=env, timeout=300)


def test_lac_run_killed_with_sigkill_resumes_exactly(tmp_path):
    data = _lac_data(tmp_path)
    straight = _lac(tmp_path, data, "straight")
    assert straight.returncode == 0, straight.stderr.decode()[-1500:]
    killed = _lac(tmp_path, data, "cut", fault="kill@10")
    assert killed.returncode == -9, killed.stderr.decode()[-1500:]
    assert not (tmp_path / "runs" / "cut" / "metrics.json").exists()
    again = _lac(tmp_path, data, "cut")
    assert again.returncode == 2 and "already holds checkpoints" in again.stderr.decode()
    resumed = _lac(tmp_path, data, "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr.decode()[-1500:]
    assert "resumed from" in resumed.stdout.decode() and "step-00000008" in resumed.stdout.decode()
    a = json.loads((tmp_path / "runs" / "straight" / "history.json").read_text())
    b = json.loads((tmp_path / "runs" / "cut" / "history.json").read_text())
    assert a["history"] == b["history"] and a["steps"] == b["steps"] and a["best_step"] == b["best_step"]
    assert (tmp_path / "runs" / "straight" / "best" / "model.safetensors").read_bytes() == \
        (tmp_path / "runs" / "cut" / "best" / "model.safetensors").read_bytes()
    # and VisualDL shows the killed-and-resumed run's curves as the straight run's: from step 1, each step once
    for tag in ("dev/f1", "train/loss"):
        assert vdl_log.shown(tmp_path / "runs" / "cut", tag) == vdl_log.shown(tmp_path / "runs" / "straight", tag), tag

