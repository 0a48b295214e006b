"""What every task run does around its own model: command line -> config, seeding, the optimizer, the frozen
ELMo layer, and metrics.json.

The LAC and BiDAF commands share these so that a flag, a seed or an ELMo setting means the same thing in both.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any, Sequence, TypeVar

from elmo_paddle.config import load_config, parse_overrides
from elmo_paddle.errors import UserError

T = TypeVar("T")

# metrics.json's `score_scale`: every score is a percentage (0-100) under a lowercase name in both tasks
# (f1, em, precision, recall, seg_f1, PER_f1...); runs written before lack it and `tasks.compare` skips them
SCORE_SCALE = "percent"

# the flags both tasks take; each sets the config key of the same name
COMMON_FLAGS = ("elmo_model", "train_fraction", "seed", "run_name", "epochs", "max_steps", "resume")

# config keys a resumed run may change: how long it trains and where/how fast it runs, not what it learns
RESUMABLE_CHANGES = ("epochs", "max_steps", "patience", "run_name", "runs_dir", "threads", "data_dir", "resume",
                     "elmo_cache_mb", "elmo_cache_dir", "eval_every", "eval_batch_size", "checkpoint_every")


def run_parser(prog: str, description: str, config_default: str | None, config_help: str) -> argparse.ArgumentParser:
    """The command line of a task's finetune: --config, the common flags, and trailing key=value overrides.

    The task adds its own flags before parsing; overrides may come before or after the flags.
    """
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Any other config key can be set as key=value (e.g. lr=0.002 dropout=0.3).")
    p.add_argument("--config", default=config_default, help=config_help)
    p.add_argument("--elmo-model", help="pretrained ELMo model folder: train the +ELMo variant (sets elmo_model)")
    p.add_argument("--train-fraction", type=float, help="deterministic random subsample (0-1] of the training data "
                   "by seed (e.g. 0.05, 0.2, 1.0)")
    p.add_argument("--seed", type=int, help="seed for subsampling, init and shuffling")
    p.add_argument("--run-name", help="log/checkpoint folder under runs_dir (default: named after the variant "
                   "and seed)")
    p.add_argument("--data-dir", help="data folder (default $ELMO_PADDLE_DATA, else ../shared/data)")
    p.add_argument("--epochs", type=int, help="passes over the training data")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps (smoke runs)")
    p.add_argument("--resume", action="store_true", default=None,
                   help="continue the run of the same name from its newest checkpoint (same curve as an "
                        "uninterrupted run); with a larger --epochs/--max-steps, extend a finished one")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override any config key")
    return p


def load_run_config(cls: type[T], args: argparse.Namespace, flags: Sequence[str] = COMMON_FLAGS) -> T:
    """`cls` from --config, then the key=value overrides, then the `flags` given (a flag wins over key=value)."""
    overrides = parse_overrides(args.overrides)
    overrides.update({k: getattr(args, k) for k in flags if getattr(args, k) is not None})
    cfg = load_config(cls, args.config, overrides)
    if getattr(cfg, "elmo_model", None):
        from . import elmo_ref
        cfg.elmo_model = elmo_ref.canonical(cfg.elmo_model)  # a missing biLM fails here, before any work
    return cfg


def fit_fingerprint(cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings a resumed run must share with its checkpoint (all but `RESUMABLE_CHANGES`)."""
    return {k: v for k, v in cfg.items() if k not in RESUMABLE_CHANGES}


def seed_everything(seed: int) -> None:
    """Seed python's `random`, numpy and paddle, in that order (the order every reported run used)."""
    import numpy as np
    import paddle

    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def build_optimizer(model: Any, lr: float, clip_norm: float | None) -> Any:
    """Adam over the trainable parameters (the frozen biLM excluded), gradients clipped to a global norm > 0."""
    import paddle

    clip = paddle.nn.ClipGradByGlobalNorm(clip_norm) if clip_norm and clip_norm > 0 else None
    return paddle.optimizer.Adam(lr, parameters=[p for p in model.parameters() if not p.stop_gradient],
                                 grad_clip=clip)


def build_elmo(model_dir: str, *, mixes: int, gamma: float, dropout: float, l2: float,
               char_unit: bool = False, only_layer: int | None = None) -> Any:
    """The frozen-biLM ELMo layer (`elmo_paddle.elmo.Elmo`) with `mixes` scalar mixes.

    One mix feeds the task's input; a second one feeds a later layer (LAC's `elmo_at_output`, BiDAF's
    `elmo_at_modeling`).  `model_dir` may be a shipped model's name (`zh-char-elmo`); a missing one is a
    one-line error from `Elmo` that lists the shipped names.  `char_unit`: the task's tokens are characters, so a word-unit biLM is refused.
    `only_layer`: every mix is that one biLM layer (0: the context-free token layer) instead of a learnt mix.
    """
    try:
        from elmo_paddle.elmo import Elmo
    except ImportError as e:
        raise UserError(f"--elmo-model needs elmo_paddle.elmo, which cannot be imported here: {e}") from None
    elmo = Elmo(str(model_dir), num_output_representations=mixes, dropout=dropout, gamma_init=gamma,
                layer_norm=False, l2_coef=l2, only_layer=only_layer)
    if char_unit and getattr(elmo, "unit", "char") != "char":
        # a word-unit biLM would need word->char broadcasting (not built)
        raise UserError(f"{model_dir}: this task needs a character-unit ELMo model, this one uses "
                        f"{elmo.unit!r} tokens")
    return elmo


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """`run_dir/metrics.json`: what `tasks.compare` reads (test scores, config, times, data counts)."""
    import os

    text = json.dumps({"score_scale": SCORE_SCALE, **metrics}, indent=1, ensure_ascii=False)
    final = Path(run_dir) / "metrics.json"
    tmp = final.with_name(f".metrics.json.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, final)  # atomic: the pipeline reads "metrics.json exists" as "this run finished"
