"""The config checks both task runs share (LAC and BiDAF), on top of `elmo_paddle.validate`.

Why: `lr=nan`, `batch_size=0` or `epochs=-1` used to reach the training loop, where they became a
traceback, a one-step run, or a saved model full of NaN; a `runs_dir` under a regular file failed only
after the data was read and the model built.  Each task's `configure()` calls `check_task_config` with its
own extra sizes, so a key means the same thing, and is checked the same way, in both.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from elmo_paddle import validate as v
from elmo_paddle.errors import UserError


def check_task_config(cfg: Any, sizes: Sequence[str] = ()) -> None:
    """The shared keys of a task config, then the task's own `sizes` (whole numbers >= 1)."""
    v.positive_float("lr", cfg.lr)
    for key in ("batch_size", "epochs", *sizes):
        v.positive_int(key, getattr(cfg, key))
    v.positive_int("max_steps", cfg.max_steps, allow_none=True)
    v.positive_int("patience", cfg.patience, allow_none=True)
    v.non_negative_int("eval_every", cfg.eval_every)
    v.non_negative_int("checkpoint_every", cfg.checkpoint_every)
    v.fraction("train_fraction", cfg.train_fraction)
    for key in ("dropout", "elmo_dropout"):
        v.fraction(key, getattr(cfg, key), low_open=False, high_open=True)
    v.non_negative_float("elmo_l2", cfg.elmo_l2)
    v.non_negative_float("elmo_cache_mb", cfg.elmo_cache_mb)
    if not isinstance(cfg.elmo_gamma, (int, float)) or not math.isfinite(cfg.elmo_gamma):
        raise UserError(f"elmo_gamma must be a finite number, got {cfg.elmo_gamma!r}")
    name = None if cfg.run_name is None else str(cfg.run_name)
    if name is not None and (not name.strip() or name in (".", "..") or "/" in name or "\\" in name):
        raise UserError(f"run_name must name one folder inside runs_dir (no '/', not '.' or '..'), got {name!r}")
    v.output_dir("runs_dir", cfg.runs_dir, create=False)
