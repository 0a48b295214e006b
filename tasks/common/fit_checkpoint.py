"""A task run's resumable state on disk: `RUN_DIR/checkpoints/step-N/`.

Each checkpoint holds the trainable weights, the optimizer's accumulators and `fit_state.json` (step, epoch and
batch position, best dev scores, early-stopping counters, the dev history, the run's fingerprint).  It is
written with `elmo_paddle.checkpoint.write_dir`, the writer pretraining uses: into a temporary folder, a sha256
manifest last, renamed into place, so a `kill -9` mid-save leaves the previous checkpoint as it was, and a
checkpoint that does not verify is never resumed from.

Only parameters that train are stored (`trainable_arrays`): the frozen biLM is reloaded from its own model
folder, and the task models keep no other state that changes while training (no batch-norm statistics).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import paddle

from elmo_paddle import checkpoint as ckpt
from elmo_paddle.errors import UserError

STATE, WEIGHTS, OPTIMIZER = "fit_state.json", "weights.safetensors", "optimizer.safetensors"
AVERAGES = "weight_averages.safetensors"  # runs with `ema_decay` (tasks/common/ema.py)


_HELD: set[Path] = set()  # run folders this process holds: `hold` is re-entrant (a task's main, then `fit`)


@contextlib.contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    """Own `run_dir` while training: a second process on the same run (e.g. two queues that both list it) is a
    one-line error instead of both writing its checkpoints and logs.  An flock: the kernel frees it when the
    holder dies, even by `kill -9`, so a crashed run never leaves a stale lock behind."""
    key = Path(run_dir).resolve()
    if key in _HELD:
        yield
        return
    with open(key / ".train.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise UserError(f"{run_dir} is being trained by another process (pid {f.read().strip() or '?'}); "
                            "wait for it or stop it, then --resume") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)


@contextlib.contextmanager
def claim(run_dir: Path, resume: bool) -> Iterator[None]:
    """Hold `run_dir` for a whole task run: setup, training, test scoring and metrics.json.

    Taken before the minutes of data loading and model building, so a second process on the run, or a fresh
    run on a folder with checkpoints, is refused at once; and held until metrics.json is written, so nothing
    resumes a run whose test set is still being scored.
    """
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with hold(run_dir):
            if not resume and ckpt.list_checkpoints(run_dir):
                _refuse_fresh(run_dir)
            yield
    finally:  # a run that failed in its setup (e.g. a wrong --data-dir) leaves no empty folder behind
        if created and {p.name for p in run_dir.iterdir()} <= {".train.lock"}:
            shutil.rmtree(run_dir, ignore_errors=True)


def _refuse_fresh(run_dir: Path) -> None:
    raise UserError(f"{run_dir} already holds checkpoints of an earlier run: pass --resume to continue it, or "
                    "choose another --run-name")


def trainable_arrays(model: paddle.nn.Layer) -> dict[str, np.ndarray]:
    """The state entries that train (`stop_gradient` False), as numpy arrays, by structured name."""
    return {k: v.numpy() for k, v in model.state_dict().items() if not v.stop_gradient}


def save(run_dir: Path, step: int, model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer,
         state: dict[str, Any], keep: int, averages: dict[str, np.ndarray] | None = None) -> Path:
    """Write `run_dir/checkpoints/step-N` atomically (with the weight averages, if the run keeps them), then
    keep the `keep` newest verified ones."""
    arrays, extra = ckpt.optimizer_tensors(optimizer, model)
    tensors = {WEIGHTS: trainable_arrays(model), OPTIMIZER: arrays}
    if averages is not None:
        tensors[AVERAGES] = averages
    path = ckpt.write_dir(Path(run_dir) / "checkpoints" / f"step-{step:08d}",
                          {STATE: {**state, "optimizer_extra": extra}}, tensors)
    ckpt.prune_checkpoints(run_dir, keep)
    return path


def to_resume(run_dir: Path, resume: bool) -> Path | None:
    """The newest checkpoint that verifies when resuming; None for a fresh run.

    A fresh run refuses a folder that holds checkpoints (pass --resume or another run name), as pretraining
    does, so a forgotten --resume never overwrites hours of training.  Leftovers of a save interrupted by a
    crash are repaired first (`recover_output_dir`).
    """
    for note in ckpt.recover_output_dir(run_dir):
        print(f"note: {note}")
    found = ckpt.list_checkpoints(run_dir)
    if not resume:
        if found:
            _refuse_fresh(run_dir)
        return None
    if not found:
        print(f"note: --resume given but no checkpoint in {run_dir}/checkpoints; starting from scratch")
        return None
    last, bad = ckpt.latest_valid_checkpoint(run_dir)
    if last is None:
        raise UserError(f"no checkpoint in {run_dir}/checkpoints verifies against its manifest "
                        f"({', '.join(p.name for p in bad)}): cannot resume")
    if bad:
        print(f"warning: skipping corrupt checkpoint(s) {', '.join(p.name for p in bad)}; resuming from {last.name}")
    return last


def restore(path: Path, model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer,
            fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Load a checkpoint's weights and optimizer state into the run; return its fit state.

    `fingerprint` (the settings that shape the curve: learning rate, batch size, seed, data, model sizes) must
    equal the one the checkpoint was written with: resuming under other settings would not continue the
    same run.
    """
    state = ckpt.read_json(path, STATE)
    saved = state.get("fingerprint", {})
    diff = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k)!r} then, {fingerprint.get(k)!r} now" for k in diff[:4])
        raise UserError(f"cannot resume {path}: the run's settings changed ({shown}); use the original settings "
                        "or another --run-name")
    arrays = ckpt.load_tensors(path / WEIGHTS)
    own = {k: v for k, v in model.state_dict().items() if not v.stop_gradient}
    wrong = sorted(k for k in own if k not in arrays or list(arrays[k].shape) != list(own[k].shape))
    if wrong or set(arrays) - set(own):
        raise UserError(f"{path / WEIGHTS} does not fit this model (e.g. {(wrong or sorted(set(arrays) - set(own)))[0]})")
    ckpt.set_weights(model, arrays)
    ckpt.load_optimizer(optimizer, model, path, state.pop("optimizer_extra", {}))
    return state


def load_averages(path: Path) -> dict[str, np.ndarray]:
    """A checkpoint's weight averages (a run with `ema_decay` writes them with every checkpoint)."""
    if not (path / AVERAGES).is_file():
        raise UserError(f"{path} has no weight averages ({AVERAGES}): it was not written by a run with ema_decay")
    return ckpt.load_tensors(path / AVERAGES)
