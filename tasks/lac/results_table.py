"""Markdown table of finished LAC runs: test metrics per run and mean ± std per setting (over seeds).

    python -m tasks.lac.results_table [--runs runs/lac]
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from elmo_paddle.errors import UserError, cli

COLS = ("f1", "seg_f1", "PER_f1", "LOC_f1", "ORG_f1", "TIME_f1")


def _fmt(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{100 * xs[0]:.1f}"
    return f"{100 * statistics.mean(xs):.1f} ± {100 * statistics.stdev(xs):.1f}"


@cli
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.lac.results_table", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="runs/lac", help="folder of run dirs (default runs/lac)")
    args = ap.parse_args(argv)
    files = sorted(Path(args.runs).glob("*/metrics.json"))
    if not files:
        raise UserError(f"no finished runs (*/metrics.json) under {args.runs}")
    rows, groups = [], defaultdict(list)
    for f in files:
        m = json.loads(f.read_text(encoding="utf-8"))
        if "test" not in m:
            continue  # overfit runs report train F1 only
        c = m["config"]
        key = (c["dataset"], "+ELMo" if c["elmo_model"] else "baseline", c["train_fraction"], c["epochs"])
        groups[key].append(m)
        rows.append((m["run_name"], m["train_sentences"], m["steps"], m["train_seconds"],
                     *(m["test"].get(k, float("nan")) for k in COLS)))
    print("| run | train sents | steps | train s | " + " | ".join(f"test {k}" for k in COLS) + " |")
    print("|---" * (4 + len(COLS)) + "|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.0f} | " + " | ".join(f"{100 * x:.1f}" for x in r[4:]) + " |")
    print()
    print("| dataset | variant | fraction | epochs | seeds | " + " | ".join(f"test {k}" for k in COLS) + " |")
    print("|---" * (5 + len(COLS)) + "|")
    for (ds, var, frac, ep), ms in sorted(groups.items()):
        vals = [_fmt([m["test"].get(k, float("nan")) for m in ms]) for k in COLS]
        print(f"| {ds} | {var} | {frac:g} | {ep} | {len(ms)} | " + " | ".join(vals) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
