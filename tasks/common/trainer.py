"""The one training loop both task adapters (LAC, BiDAF) use.

It owns what every task run needs and nothing task-specific: epochs/steps, periodic dev evaluation, keeping
the best checkpoint by a dev metric, early stopping, VisualDL scalars and hparams, a tqdm progress bar, a
NaN guard (gradient clipping is the optimizer's: `tasks.common.run.build_optimizer`) and resumable runs.

Resume is exact: a checkpoint (`tasks.common.fit_checkpoint`) is written after every dev evaluation (and
every `checkpoint_every` steps), with the data position; paddle is reseeded from (seed, step) before every
step, so dropout after a resume draws what the uninterrupted run drew, and the batches of an epoch are a
function of the epoch.  A run killed at any point and resumed gives the uninterrupted run's curve and weights
(tests/test_fit_resume.py, with a real SIGKILL).  The task supplies the model, the optimizer and its `TaskHooks`
(batches, loss, dev evaluation); `FitConfig` says how long to train and when to evaluate and stop.

Data parallel under `python -m paddle.distributed.launch` (`elmo_paddle.dist`): each rank's `train_batches`
yields its share of every batch (`shard`), the gradients are averaged over the ranks before each step, and
rank 0 alone evaluates, decides to stop (made known to all through the launcher's store, `dist.from_rank0`),
logs and writes checkpoints; every rank resumes from the same checkpoint.  Why: a BiDAF step costs about
its batch size (B = 16: 0.77 s, B = 32: 1.57 s on one core, bench/bidaf_step.py), so two ranks on two cores
train 1.88x as fast as one process (bench/bidaf_ranks.sh; paddle's own 2 threads: 0.79x), enough to fit a
+ELMo run inside one session.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import paddle
from tqdm import tqdm

from elmo_paddle import checkpoint as ckpt
from elmo_paddle import dist, vdl_log
from elmo_paddle.errors import UserError

from . import fit_checkpoint
from .ema import WeightAverage


@dataclass
class FitConfig:
    """How a `fit` call trains, evaluates, stops and logs."""

    run_dir: str | Path                  # VisualDL logs (`runs/<task>/<run-name>`) and history.json go here
    metric: str = "f1"                   # key of the dev scores that selects the best checkpoint (higher is better)
    epochs: int = 1
    max_steps: int | None = None
    eval_every: int = 0                  # evaluate every N steps; 0: once per epoch
    log_every: int = 10                  # steps between train/* scalars
    patience: int | None = None          # stop after this many evaluations without improvement (None: never)
    stop_at: float | None = None         # stop once the dev metric reaches this (e.g. overfitting a tiny set)
    max_bad_steps: int = 20              # stop (one-line error) after this many consecutive non-finite losses
    desc: str = "train"                  # progress-bar label
    hparams: dict[str, Any] | None = None  # VisualDL's hparams view (ELMo model, gamma, train fraction, seed...)
    seed: int = 0                        # paddle is reseeded from (seed, step) before every step (resume-exact)
    resume: bool = False                 # continue from the newest checkpoint in run_dir/checkpoints
    checkpoint_every: int = 0            # also checkpoint every N steps (0: only after each dev evaluation)
    keep_checkpoints: int = 2            # newest verified checkpoints kept (older ones are pruned)
    ema_decay: float | None = None       # evaluate and save a moving average of the weights (tasks/common/ema.py)
    fingerprint: dict[str, Any] | None = None  # settings a resumed run must share with the checkpoint's run


@dataclass
class TaskHooks:
    """What the task supplies to `fit`."""

    train_batches: Callable[[int], Iterable[Any]]           # epoch -> its batches (so the task can reshuffle)
    loss: Callable[[paddle.nn.Layer, Any], paddle.Tensor]   # (model in train mode, batch) -> scalar loss
    evaluate: Callable[[paddle.nn.Layer], dict[str, float]]  # model (eval mode, no_grad) -> dev scores
    save_best: Callable[[paddle.nn.Layer, dict[str, float]], None] | None = None  # on each dev improvement
    batch_size_of: Callable[[Any], int] | None = None       # examples in a batch, for the examples/s scalar


@dataclass
class FitResult:
    """What `fit` returns: the best dev metrics, when they were reached, and the full dev history."""

    best: dict[str, float]
    best_step: int
    steps: int
    train_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def shard(items: list[Any]) -> list[Any] | None:
    """This rank's share of a batch's examples (every world-th from its rank on), or None for a batch too small
    to give every rank one: all ranks skip it alike.  One process: the batch itself."""
    rank, world = dist.setup()
    if world == 1:
        return items
    return items[rank::world] if len(items) >= world else None


class _NoWriter:
    """What ranks other than 0 log to: nothing (rank 0 writes the run's one VisualDL record file)."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    add_hparams = add_scalar

    def flush(self) -> None:
        pass


def _scalar_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    # VisualDL's hparams view raises on bools and accepts only str/int/float
    out = {}
    for k, v in hparams.items():
        if isinstance(v, bool):
            v = int(v)
        elif v is None:
            v = "none"
        elif not isinstance(v, (int, float, str)):
            v = str(v)
        out[k] = v
    return out


class _Fit:
    """The state of one `fit` call (step, data position, best dev scores, history) and its pieces: a step, an
    evaluation, a checkpoint, an epoch."""

    def __init__(self, model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer, hooks: TaskHooks,
                 cfg: FitConfig, writer: Any) -> None:
        self.model, self.optimizer, self.hooks, self.cfg, self.writer = model, optimizer, hooks, cfg, writer
        self.best: dict[str, float] = {}
        self.best_step, self.step, self.evals_since_best = -1, 0, 0
        self.epoch, self.batch_in_epoch = 0, 0  # the data position: batches of `epoch` already consumed
        self.history: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self.stop = self.stopped_early = False
        self.bad = 0  # consecutive non-finite losses
        self.bar: Any = None
        self.rank, self.world = dist.setup()
        self.lead = self.rank == 0  # evaluates, logs, saves; the other ranks only train
        self.ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay and self.lead else None
        self.params = [p for p in model.parameters() if not p.stop_gradient]
        # the rank count shapes the curve (each rank draws its own dropout): a resume must keep it
        self.fingerprint = {**(cfg.fingerprint or {}), **({"ranks": self.world} if self.world > 1 else {})}

    # ------------------------------------------------------------ resume
    # what a checkpoint's fit_state.json holds, besides the fingerprint
    STATE_KEYS = ("step", "epoch", "batch_in_epoch", "best", "best_step", "evals_since_best", "history",
                  "train_seconds", "stopped_early")

    def state(self) -> dict[str, Any]:
        st = {**{k: getattr(self, k) for k in self.STATE_KEYS}, "fingerprint": self.fingerprint}
        if self.ema is not None:
            st["ema_updates"] = self.ema.updates
        return st

    def resume_from(self, path: Path) -> None:
        st = fit_checkpoint.restore(path, self.model, self.optimizer, self.fingerprint)
        for k in self.STATE_KEYS:
            setattr(self, k, st[k])
        if not self.lead:
            return
        if self.ema is not None:
            self.ema.load(fit_checkpoint.load_averages(path), st["ema_updates"])
        print(f"resumed from {path} at step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch})")

    def save_checkpoint(self) -> None:
        if not self.lead:
            return
        self.check_finite()
        self.writer.flush()  # what VisualDL holds up to this step is on disk before the checkpoint is
        fit_checkpoint.save(Path(self.cfg.run_dir), self.step, self.model, self.optimizer, self.state(),
                            self.cfg.keep_checkpoints, self.ema.shadow if self.ema is not None else None)

    def check_finite(self) -> None:
        if not all(bool(paddle.isfinite(p).all()) for p in self.model.parameters() if not p.stop_gradient):
            raise UserError(f"the weights became non-finite by step {self.step} (a NaN/Inf learning rate or "
                            "update?): not saving them; the best model saved so far (if any) is kept")

    # ------------------------------------------------------------ training
    def train_step(self, batch: Any) -> float | None:
        """One optimizer step; None (and no step) when the loss is not finite."""
        # dropout draws depend on the step (and rank) only: resume-exact
        paddle.seed(self.cfg.seed * 1_000_003 + self.step * self.world + self.rank)
        loss = self.hooks.loss(self.model, batch)
        value = float(loss)
        # every rank skips together: one rank skipping alone would leave the others in the gradient all-reduce
        if not dist.all_true(math.isfinite(value), self.world):
            # a NaN step must not poison the weights: skip it, say so, and give up on a run that only makes NaN
            self.optimizer.clear_grad()
            self.bad += 1
            tqdm.write(f"warning: non-finite loss at step {self.step}; step skipped ({self.bad} in a row)")
            if self.bad >= self.cfg.max_bad_steps:
                raise UserError(f"{self.bad} consecutive non-finite losses at step {self.step}: stopping. Lower the "
                                "learning rate or check the data; the best model saved so far (if any) is kept")
            return None
        self.bad = 0
        loss.backward()
        dist.average_gradients(self.params, self.world)
        self.optimizer.step()
        self.optimizer.clear_grad()
        if self.ema is not None:
            self.ema.update()
        self.step += 1
        self.bar.update(1)
        if ckpt.fault_at("kill", self.step):  # fault injection for the resume tests (ELMO_PADDLE_FAULT=kill@S)
            ckpt.kill_self()
        return value

    def log_train(self, value: float, n_ex: int, seconds: float) -> None:
        self.writer.add_scalar("train/loss", value, self.step)
        self.writer.add_scalar("train/lr", float(self.optimizer.get_lr()), self.step)
        self.writer.add_scalar("train/examples_per_s", n_ex * self.world / max(seconds, 1e-9), self.step)
        self.bar.set_postfix(loss=f"{value:.3f}", best=f"{self.best.get(self.cfg.metric, float('nan')):.2f}")

    def evaluate(self) -> None:
        """Score dev, log it, keep the best (saving it), decide whether to stop (patience, stop_at), and
        checkpoint the run (after the decision, so a resumed run knows it).  With `ema_decay` the averaged
        weights are scored and saved; training goes on from the raw ones.  Rank 0 does all of it; the other
        ranks keep only the step (their history decides when the last evaluation is due, as rank 0's does)
        and learn rank 0's decision to stop."""
        cfg, stop = self.cfg, False
        if self.lead:
            self.score_dev()
            stop = (cfg.patience is not None and self.evals_since_best >= cfg.patience) \
                or (cfg.stop_at is not None and self.best[cfg.metric] >= cfg.stop_at)
        else:
            self.history.append({"step": self.step})
        if stop:
            self.stop = self.stopped_early = True
        self.save_checkpoint()
        # the other ranks wait here through the evaluation and the save, for as long as they take
        if dist.from_rank0(f"fit/eval/{self.step}", "stop" if stop else "go", self.world) == "stop":
            self.stop = self.stopped_early = True

    def score_dev(self) -> None:
        """Rank 0's part of `evaluate`: the dev scores, their log and history entry, the best so far."""
        cfg = self.cfg
        time.sleep(ckpt.fault_seconds("slowdev"))  # fault injection: a slow evaluation (tests/test_task_parallel.py)
        with self.ema.applied() if self.ema is not None else nullcontext():
            self.model.eval()
            with paddle.no_grad():
                m = self.hooks.evaluate(self.model)
            self.model.train()
            m = {k: float(v) for k, v in m.items()}
            self.history.append({"step": self.step, **m})
            for k, v in m.items():
                self.writer.add_scalar(f"dev/{k}", v, self.step)
            if not self.best or m[cfg.metric] > self.best[cfg.metric]:
                self.best, self.best_step, self.evals_since_best = m, self.step, 0
                self.check_finite()
                if self.hooks.save_best is not None:
                    self.hooks.save_best(self.model, m)
            else:
                self.evals_since_best += 1

    def epoch_batches(self) -> Iterable[Any]:
        """This epoch's batches from the data position on (a resumed run skips those it already trained on)."""
        for i, batch in enumerate(self.hooks.train_batches(self.epoch)):
            if i >= self.batch_in_epoch:
                self.batch_in_epoch = i + 1
                yield batch

    def run_epoch(self) -> None:
        """Train on the rest of this epoch's batches, evaluating every `eval_every` steps; ends early on a stop."""
        cfg, size_of = self.cfg, self.hooks.batch_size_of
        t0, n_ex = time.time(), 0
        for batch in self.epoch_batches():
            value = self.train_step(batch)
            if value is None:
                continue
            n_ex += size_of(batch) if size_of else 1
            if self.step % cfg.log_every == 0:
                self.log_train(value, n_ex, time.time() - t0)
            if cfg.max_steps is not None and self.step >= cfg.max_steps:
                self.stop = True
            if (cfg.eval_every and self.step % cfg.eval_every == 0) or self.stop:
                self.train_seconds += time.time() - t0
                self.evaluate()
                t0, n_ex = time.time(), 0
            elif cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
            if self.stop:
                return
        self.train_seconds += time.time() - t0
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        last_eval = self.history[-1]["step"] if self.history else -1
        if (not cfg.eval_every or self.epoch >= cfg.epochs) and last_eval != self.step:
            self.evaluate()  # once per epoch, and always after the last one

    def run(self) -> FitResult:
        self.model.train()
        done = lambda: self.stopped_early or (self.cfg.max_steps is not None and self.step >= self.cfg.max_steps)  # noqa: E731
        self.bar = tqdm(total=self.cfg.max_steps, initial=self.step, desc=self.cfg.desc, unit="step",
                        dynamic_ncols=True, leave=False, disable=not self.lead)
        while self.epoch < self.cfg.epochs and not done():
            self.run_epoch()
        if not self.history or self.history[-1]["step"] != self.step:
            self.evaluate()  # a run extended by --resume with nothing left to train, or an empty last epoch
        self.bar.close()
        if self.cfg.hparams:
            self.writer.add_hparams(_scalar_hparams(self.cfg.hparams), [f"dev/{k}" for k in (self.best or {})])
        return FitResult(best=self.best, best_step=self.best_step, steps=self.step,
                         train_seconds=self.train_seconds, history=self.history)


def fit(model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer, hooks: TaskHooks, cfg: FitConfig) -> FitResult:
    """Train `model` and keep the best dev result; writes `cfg.run_dir/history.json` (the `FitResult`:
    best dev scores, their step, steps, training seconds and every dev evaluation).

    With `cfg.resume`, continues from the newest verified checkpoint in `cfg.run_dir/checkpoints` (a finished
    run returns its result without training; a larger `epochs`/`max_steps` extends it).  Without it, a
    run_dir that holds checkpoints is refused with a one-line error, and so is a run_dir another process is
    training (`fit_checkpoint.hold`).  Under the launcher, ranks other than 0 write nothing (`_follow`).
    """
    rank, world = dist.setup()
    if rank != 0:
        return _follow(model, optimizer, hooks, cfg, world)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with fit_checkpoint.hold(run_dir):
        last = fit_checkpoint.to_resume(run_dir, cfg.resume)
        dist.from_rank0("fit/start", "go", world)  # the checkpoint to resume is settled before the others look
        # a resumed run appends to its one record file, cut back to the checkpoint (VisualDL shows only one)
        step = ckpt.checkpoint_step(last) if last is not None else 0
        with vdl_log.open_writer(run_dir, step if cfg.resume else None) as writer:
            run = _Fit(model, optimizer, hooks, cfg, writer)
            if last is not None:
                run.resume_from(last)
            dist.broadcast_parameters(run.params, world)
            result = run.run()
        (run_dir / "history.json").write_text(json.dumps(result.__dict__, indent=1, ensure_ascii=False))
    return result


def _follow(model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer, hooks: TaskHooks, cfg: FitConfig,
            world: int) -> FitResult:
    """A rank other than 0: once rank 0 has settled which checkpoint the run resumes from, resume from the
    same one, start from rank 0's weights and train this rank's shares; its result holds no dev scores."""
    dist.from_rank0("fit/start", None, world)
    last = ckpt.latest_valid_checkpoint(Path(cfg.run_dir))[0] if cfg.resume else None
    run = _Fit(model, optimizer, hooks, cfg, _NoWriter())
    if last is not None:
        run.resume_from(last)
    dist.broadcast_parameters(run.params, world)
    return run.run()
