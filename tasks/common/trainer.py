"""The one training loop both task adapters (LAC, BiDAF) use.

It owns what every task run needs and nothing task-specific: epochs/steps, periodic dev evaluation, keeping
the best checkpoint by a dev metric, early stopping, VisualDL scalars and hparams, a tqdm progress bar, and a
NaN guard (gradient clipping is the optimizer's: `tasks.common.run.build_optimizer`).  The task supplies the model, the optimizer and its `TaskHooks`
(batches, loss, dev evaluation); `FitConfig` says how long to train and when to evaluate and stop.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import paddle
from tqdm import tqdm

from elmo_paddle.errors import UserError


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
    """The state of one `fit` call (step, best dev scores, history) and its pieces: a step, an evaluation, an epoch."""

    def __init__(self, model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer, hooks: TaskHooks,
                 cfg: FitConfig, writer: Any) -> None:
        self.model, self.optimizer, self.hooks, self.cfg, self.writer = model, optimizer, hooks, cfg, writer
        self.best: dict[str, float] = {}
        self.best_step, self.step, self.evals_since_best = -1, 0, 0
        self.history: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self.stop = False
        self.bad = 0  # consecutive non-finite losses
        self.bar = tqdm(total=cfg.max_steps, desc=cfg.desc, unit="step", dynamic_ncols=True, leave=False)

    def train_step(self, batch: Any) -> float | None:
        """One optimizer step; None (and no step) when the loss is not finite."""
        loss = self.hooks.loss(self.model, batch)
        value = float(loss)
        if not math.isfinite(value):
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
        self.optimizer.step()
        self.optimizer.clear_grad()
        self.step += 1
        self.bar.update(1)
        return value

    def log_train(self, value: float, n_ex: int, seconds: float) -> None:
        self.writer.add_scalar("train/loss", value, self.step)
        self.writer.add_scalar("train/lr", float(self.optimizer.get_lr()), self.step)
        self.writer.add_scalar("train/examples_per_s", n_ex / max(seconds, 1e-9), self.step)
        self.bar.set_postfix(loss=f"{value:.3f}", best=f"{self.best.get(self.cfg.metric, float('nan')):.2f}")

    def evaluate(self) -> None:
        """Score dev, log it, keep the best (saving it), and decide whether to stop (patience, stop_at)."""
        cfg = self.cfg
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
            if not all(bool(paddle.isfinite(p).all()) for p in self.model.parameters()):
                raise UserError(f"the weights became non-finite by step {self.step} (a NaN/Inf learning rate or "
                                "update?): not saving them; the best model saved so far (if any) is kept")
            if self.hooks.save_best is not None:
                self.hooks.save_best(self.model, m)
        else:
            self.evals_since_best += 1
        if (cfg.patience is not None and self.evals_since_best >= cfg.patience) \
                or (cfg.stop_at is not None and self.best[cfg.metric] >= cfg.stop_at):
            self.stop = True

    def epoch(self, epoch: int) -> None:
        """Train on one epoch's batches, evaluating every `eval_every` steps; ends early on a stop."""
        cfg, size_of = self.cfg, self.hooks.batch_size_of
        t0, n_ex = time.time(), 0
        for batch in self.hooks.train_batches(epoch):
            value = self.train_step(batch)
            if value is None:
                continue
            n_ex += size_of(batch) if size_of else 1
            if self.step % cfg.log_every == 0:
                self.log_train(value, n_ex, time.time() - t0)
            if cfg.eval_every and self.step % cfg.eval_every == 0:
                self.train_seconds += time.time() - t0
                self.evaluate()
                t0, n_ex = time.time(), 0
            if cfg.max_steps is not None and self.step >= cfg.max_steps:
                self.stop = True
            if self.stop:
                break
        self.train_seconds += time.time() - t0

    def run(self) -> FitResult:
        self.model.train()
        for epoch in range(self.cfg.epochs):
            self.epoch(epoch)
            # once per epoch, or a last time when stopping between scheduled evaluations
            if not self.cfg.eval_every or (self.stop and (not self.history or self.history[-1]["step"] != self.step)):
                self.evaluate()
            if self.stop:
                break
        self.bar.close()
        if self.cfg.hparams:
            self.writer.add_hparams(_scalar_hparams(self.cfg.hparams), [f"dev/{k}" for k in (self.best or {})])
        return FitResult(best=self.best, best_step=self.best_step, steps=self.step,
                         train_seconds=self.train_seconds, history=self.history)


def fit(model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer, hooks: TaskHooks, cfg: FitConfig) -> FitResult:
    """Train `model` and keep the best dev result; writes `cfg.run_dir/history.json` (the `FitResult`:
    best dev scores, their step, steps, training seconds and every dev evaluation)."""
    from visualdl import LogWriter

    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with LogWriter(logdir=str(run_dir)) as writer:
        result = _Fit(model, optimizer, hooks, cfg, writer).run()
    (run_dir / "history.json").write_text(json.dumps(result.__dict__, indent=1, ensure_ascii=False))
    return result
