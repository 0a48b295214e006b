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
import os
import sys

from .config import load_config
from .errors import cli
from .pretrain_config import PretrainConfig, check_config


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


@cli
def main(argv: list[str] | None = None) -> int:
    args = _build_arg_parser().parse_args(argv)
    extra = list(args.overrides)
    if args.output_dir:
        extra.append(f"output_dir={args.output_dir}")
    if args.data_dir:
        extra.append(f"data_dir={args.data_dir}")
    cfg = load_config(PretrainConfig, args.config, extra)
    check_config(cfg)  # before paddle loads: a bad value costs no start-up time
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
