"""The pretraining config: typed dataclasses (saved as config.json's `pretrain` section) and what they imply.

Its own module so that the CLI (`pretrain`), the training loop (`trainer_lm`), LM fine-tuning and the
benchmarks can all import the config without importing each other (pretrain <-> trainer_lm was a cycle),
and without importing paddle: `python -m elmo_paddle.pretrain --help` stays fast.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .data_dir import resolve_data_dir
from . import validate as v
from .errors import UserError


@dataclass
class DataConfig:
    """Where the text is and how it becomes tokens."""

    train: list = field(default_factory=lambda: ["lm_raw_zh"])  # files/folders; relative ones are looked up in the data dir
    unit: str = "char"  # char (one token per character) or word (jieba)
    dev_fraction: float = 0.01  # last fraction of each file's lines held out for perplexity
    min_count: int = 3  # rarer tokens become <UNK>
    max_vocab: int | None = None
    max_train_lines_per_file: int | None = None  # use only the first N training lines of each file (small runs)
    eval_max_lines: int | None = None  # score only the first N held-out lines (faster periodic evals)
    shuffle_buffer: int = 10000


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping."""

    batch_size: int = 32
    seq_len: int = 20  # tokens per window (the LSTM is unrolled this far; state is not carried over)
    optimizer: str = "adam"  # adam or adagrad (bilm-tf: adagrad, lr 0.2)
    lr: float = 0.002
    lr_schedule: str = "linear"  # constant, linear (warmup then linear decay to 0) or cosine
    warmup_steps: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 5.0  # global-norm clip (bilm-tf: 10)
    epochs: float = 1.0  # train length in passes over the training text (fractions allowed) ...
    max_steps: int | None = None  # ... or in steps (wins when set)
    eval_every: int = 500
    save_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 20
    seed: int = 1
    threads: int = 0  # 0: paddle's default
    max_bad_steps: int = 20  # stop after this many consecutive non-finite losses


@dataclass
class PretrainConfig:
    """Everything `pretrain` needs; saved into the model directory as JSON."""

    bilm: dict = field(default_factory=dict)  # BiLMConfig fields
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "models/elmo"
    run_name: str | None = None  # VisualDL run folder under runs_dir (default: output_dir's name)
    runs_dir: str = "runs/elmo"  # VisualDL logs: runs_dir/run_name (visualdl --logdir runs)
    data_dir: str | None = None


def check_config(cfg: PretrainConfig) -> None:
    """Every size, count, rate and fraction of a pretraining config makes sense, or one UserError line.

    Why here and not where each value is used: `batch_size=0` used to surface as a ZeroDivisionError deep
    in the batcher, `epochs=-1` as a one-step run that saved a model, `lr=-0.005` as a run that diverged to
    perplexity 1e24 and exited 0.  The bilm.* section is checked by `BiLMConfig.validate`.
    """
    d, t = cfg.data, cfg.train
    v.fraction("data.dev_fraction", d.dev_fraction, high_open=True)
    v.positive_int("data.min_count", d.min_count)
    for key in ("max_vocab", "max_train_lines_per_file", "eval_max_lines"):
        v.positive_int(f"data.{key}", getattr(d, key), allow_none=True)
    v.positive_int("data.shuffle_buffer", d.shuffle_buffer)
    for key in ("batch_size", "seq_len", "eval_every", "save_every", "keep_checkpoints", "log_every",
                "max_bad_steps"):
        v.positive_int(f"train.{key}", getattr(t, key))
    v.positive_int("train.max_steps", t.max_steps, allow_none=True)
    v.positive_float("train.lr", t.lr)
    v.positive_float("train.epochs", t.epochs)
    v.one_of("train.optimizer", t.optimizer, ("adam", "adagrad"))
    v.one_of("train.lr_schedule", t.lr_schedule, ("constant", "linear", "cosine"))
    v.non_negative_int("train.warmup_steps", t.warmup_steps)
    v.non_negative_int("train.threads", t.threads)
    v.non_negative_float("train.weight_decay", t.weight_decay)
    v.non_negative_float("train.grad_clip", t.grad_clip)
    if not isinstance(t.seed, int) or isinstance(t.seed, bool):
        raise UserError(f"train.seed must be a whole number, got {t.seed!r}")


def resolve_text_paths(paths: list[str], data_dir: str | None) -> list[str]:
    """Existing paths are used as given; others are looked up inside the data directory."""
    out = []
    root = resolve_data_dir(data_dir)
    for p in paths:
        if Path(p).exists():
            out.append(p)
        elif root is not None and (root / p).exists():
            out.append(str(root / p))
        else:
            where = f" (nor in data dir {root})" if root else " and no data dir is set (--data-dir or ELMO_PADDLE_DATA)"
            raise UserError(f"training text {p!r} not found{where}")
    return out


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """The learning rate of `step` of `total`: warmup (at most a tenth of the run), then the schedule."""
    warm = min(cfg.warmup_steps, max(total // 10, 1)) if cfg.lr_schedule != "constant" else 0
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.lr_schedule == "linear":
        return cfg.lr * max(0.0, (total - step) / max(total - warm, 1))
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(total - warm, 1))))
    return cfg.lr
