"""Copy the small records of finished task runs into `results/`, which git tracks.

Why: a run folder (`runs_*/<task>/<run>/`) holds checkpoints, models and layer caches, hundreds of MB that
never go into git, and the eleventh session began on a new checkout without any of them: the per-run records
behind finished rows (stop steps, per-seed scores) were lost with them.  What `tasks.compare` reads of a run is
small (metrics.json, history.json and the saved model's config.json, a few KB), so it is kept in git after
every queue of `experiments/long_runs.sh`, and `python -m tasks.compare results/<runs_dir>` rebuilds the tables
and plots from a fresh clone.  The VisualDL record files come too (70-500 KB a run: the loss at every step, the
dev scores), so that `visualdl --logdir results/<runs_dir>/<task> --language en` shows the curves side by side.

    python experiments/keep_results.py RUNS_DIR [RUNS_DIR ...] [--into results]
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

# what tasks.compare reads of a finished run: its scores and config, its dev curve, the saved model's config
# (which records the biLM's weights checksum; LAC saves its model as best/, BiDAF as model/); and VisualDL's records
KEPT = ("metrics.json", "history.json", "best/config.json", "model/config.json", "vdlrecords.*.log")


def keep(runs_dir: Path, into: Path) -> list[Path]:
    """Copy every finished run's records (those with a metrics.json) under `into / runs_dir.name`; the copies
    that changed are returned.  Unfinished runs are left out: their records would be half a curve."""
    copied = []
    for metrics in sorted(runs_dir.glob("*/*/metrics.json")):
        run = metrics.parent
        dest = into / runs_dir.name / run.relative_to(runs_dir)
        for src in sorted(p for pattern in KEPT for p in run.glob(pattern)):
            dst = dest / src.relative_to(run)
            if not src.is_file() or (dst.is_file() and dst.read_bytes() == src.read_bytes()):
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            copied.append(dst)
    return copied


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs_dirs", nargs="+", type=Path, help="folders holding <task>/<run>/metrics.json")
    ap.add_argument("--into", type=Path, default=Path("results"), help="where the records go (default results)")
    args = ap.parse_args(argv)
    for runs_dir in args.runs_dirs:
        if not runs_dir.is_dir():
            print(f"keep_results: {runs_dir} is not a folder; skipped", file=sys.stderr)
            continue
        copied = keep(runs_dir, args.into)
        print(f"keep_results: {runs_dir} -> {args.into / runs_dir.name}: {len(copied)} file(s) new or changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
