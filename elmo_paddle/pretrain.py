"""Pretrain a biLM on raw text: `python -m elmo_paddle.pretrain --config configs/elmo_small.yaml [key=value ...]`.

Runs on one CPU/GPU, or data-parallel under `python -m paddle.distributed.launch` (each rank reads every
world_size-th line).  Checkpoints are written atomically every `save_every` steps (N newest + best by dev
perplexity) and `--resume` continues from the newest one exactly: weights, optimizer, LR schedule, data
position and the per-step random seeds are all restored.
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:
    # run as a script path (paddle.distributed.launch takes a file, not -m): make relative imports work
    import sys as _sys
    from pathlib import Path as _Path

    _sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))
    import elmo_paddle  # noqa: F401  (sets the MKL environment before paddle loads)

    __package__ = "elmo_paddle"

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import from_dict, load_config, to_dict
from .data_dir import resolve_data_dir
from .errors import UserError, cli


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


def _build_arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m elmo_paddle.pretrain",
        description="Pretrain an ELMo biLM on raw text (one paragraph per line, UTF-8, files/folders, .gz ok).",
        epilog="Overrides use dotted keys, e.g. train.max_steps=200 bilm.hidden_dim=256 data.train=[my/corpus]. "
               "Multi-process (the launcher takes a script path): python -m paddle.distributed.launch --nproc_per_node N elmo_paddle/pretrain.py ...")
    ap.add_argument("--config", help="YAML config (configs/elmo_tiny.yaml, elmo_small.yaml, elmo_base.yaml)")
    ap.add_argument("--output-dir", help="where checkpoints and the final model directory go (config: output_dir)")
    ap.add_argument("--data-dir", help="folder with the data sets (default: $ELMO_PADDLE_DATA or ../shared/data)")
    ap.add_argument("--resume", action="store_true",
                    help="continue from the newest complete checkpoint in the output dir (exactly where it stopped)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    ap.add_argument("overrides", nargs="*", help="config overrides as dotted key=value")
    return ap


def _lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    warm = min(cfg.warmup_steps, max(total // 10, 1)) if cfg.lr_schedule != "constant" else 0
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.lr_schedule == "linear":
        return cfg.lr * max(0.0, (total - step) / max(total - warm, 1))
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(total - warm, 1))))
    return cfg.lr


@cli
def main(argv: list[str] | None = None) -> int:
    args = _build_arg_parser().parse_args(argv)
    extra = list(args.overrides)
    if args.output_dir:
        extra.append(f"output_dir={args.output_dir}")
    if args.data_dir:
        extra.append(f"data_dir={args.data_dir}")
    cfg = load_config(PretrainConfig, args.config, extra)
    from .trainer_lm import run_pretraining  # imports paddle: keep --help fast

    try:
        run_pretraining(cfg, resume=args.resume, progress=not args.no_progress)
    except RuntimeError as e:
        # in a multi-process run, a collective fails when another rank died: say so in one line; the
        # launcher stops the job, and --resume continues from the last complete checkpoint
        msg = str(e)
        if int(os.environ.get("PADDLE_TRAINERS_NUM", "1")) > 1 and any(
                k in msg for k in ("gloo", "Connection reset", "TIMEOUT", "NCCL", "Socket")):
            rank = os.environ.get("PADDLE_TRAINER_ID", "?")
            print(f"error: rank {rank} lost contact with the other ranks (one of them died?): "
                  f"{msg.strip().splitlines()[-1][:200]}. Rerun with --resume to continue from the last "
                  "checkpoint", file=sys.stderr)
            return 3
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
