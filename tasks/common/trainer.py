"""The one training loop both task adapters (LAC, BiDAF) use.

It owns what every task run needs and nothing task-specific: epochs/steps, gradient clipping, periodic
dev evaluation, keeping the best checkpoint by a dev metric, early stopping, VisualDL scalars and hparams,
a tqdm progress bar, and a NaN guard.  The task supplies the model, the batches, a loss function and an
evaluation function.
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


def fit(model: paddle.nn.Layer,
        optimizer: paddle.optimizer.Optimizer,
        train_batches: Callable[[int], Iterable[Any]],
        loss_fn: Callable[[paddle.nn.Layer, Any], paddle.Tensor],
        evaluate: Callable[[paddle.nn.Layer], dict[str, float]],
        *,
        run_dir: str | Path,
        metric: str = "f1",
        epochs: int = 1,
        max_steps: int | None = None,
        eval_every: int = 0,
        log_every: int = 10,
        patience: int | None = None,
        save_best: Callable[[paddle.nn.Layer, dict[str, float]], None] | None = None,
        hparams: dict[str, Any] | None = None,
        batch_size_of: Callable[[Any], int] | None = None,
        desc: str = "train",
        stop_at: float | None = None) -> FitResult:
    """Train `model` and keep the best dev result.

    Args:
        train_batches: called with the epoch number, returns that epoch's batches (so the task can reshuffle).
        loss_fn: `(model, batch) -> scalar loss`; the model is in train mode.
        evaluate: `(model) -> {metric: value}`; called in eval mode, under no_grad.
        run_dir: VisualDL log folder (`runs/<task>/<run-name>`); `metrics.json` with the history goes there too.
        metric: key of `evaluate`'s result that selects the best checkpoint (higher is better).
        eval_every: evaluate every N steps; 0 means once per epoch.
        patience: stop after this many evaluations without improvement (None: never).
        save_best: called with the model and metrics each time the dev metric improves.
        hparams: recorded in VisualDL's hparams view (gamma, dropout, ELMo model, train fraction, seed...).
        batch_size_of: number of examples in a batch, for the examples/s scalar.
        stop_at: stop as soon as the dev metric reaches this value (e.g. 1.0 when overfitting a tiny set).
    """
    from visualdl import LogWriter

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    best: dict[str, float] = {}
    best_step, step, evals_since_best = -1, 0, 0
    history: list[dict[str, float]] = []
    train_seconds = 0.0
    stop = reached = False
    with LogWriter(logdir=str(run_dir)) as writer:
        def run_eval() -> None:
            nonlocal best, best_step, evals_since_best, reached
            model.eval()
            with paddle.no_grad():
                m = evaluate(model)
            model.train()
            m = {k: float(v) for k, v in m.items()}
            history.append({"step": step, **m})
            for k, v in m.items():
                writer.add_scalar(f"dev/{k}", v, step)
            if not best or m[metric] > best[metric]:
                best, best_step, evals_since_best = m, step, 0
                if save_best is not None:
                    save_best(model, m)
            else:
                evals_since_best += 1
            if stop_at is not None and best[metric] >= stop_at:
                reached = True

        model.train()
        total = max_steps
        bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=False)
        for epoch in range(epochs):
            t0, n_ex = time.time(), 0
            for batch in train_batches(epoch):
                loss = loss_fn(model, batch)
                value = float(loss)
                if not math.isfinite(value):
                    # a NaN step must not poison the weights: skip it, and say so
                    optimizer.clear_grad()
                    tqdm.write(f"warning: non-finite loss at step {step}; step skipped")
                    continue
                loss.backward()
                optimizer.step()
                optimizer.clear_grad()
                step += 1
                n_ex += batch_size_of(batch) if batch_size_of else 1
                bar.update(1)
                if step % log_every == 0:
                    el = time.time() - t0
                    writer.add_scalar("train/loss", value, step)
                    writer.add_scalar("train/lr", float(optimizer.get_lr()), step)
                    writer.add_scalar("train/examples_per_s", n_ex / max(el, 1e-9), step)
                    bar.set_postfix(loss=f"{value:.3f}", best=f"{best.get(metric, float('nan')):.4f}")
                if eval_every and step % eval_every == 0:
                    train_seconds += time.time() - t0
                    run_eval()
                    t0, n_ex = time.time(), 0
                    if (patience is not None and evals_since_best >= patience) or reached:
                        stop = True
                if max_steps is not None and step >= max_steps:
                    stop = True
                if stop:
                    break
            train_seconds += time.time() - t0
            if not eval_every or (stop and (not history or history[-1]["step"] != step)):
                run_eval()
                if (patience is not None and evals_since_best >= patience) or reached:
                    stop = True
            if stop:
                break
        bar.close()
        if hparams:
            writer.add_hparams(_scalar_hparams(hparams), [f"dev/{k}" for k in (best or {})])
    result = FitResult(best=best, best_step=best_step, steps=step, train_seconds=train_seconds, history=history)
    (run_dir / "history.json").write_text(json.dumps(result.__dict__, indent=1, ensure_ascii=False))
    return result
