"""Baseline vs +ELMo: `python -m tasks.compare runs/` -> Markdown tables + PNG plots, tables printed.

Reads every `runs/<task>/<run>/metrics.json` (written by the task finetune commands) and `history.json`
(the dev curve), groups runs by task, training fraction and variant (baseline / +ELMo, from the run's
config), and reports mean ± sample standard deviation over seeds with the +ELMo - baseline delta; a second
table lists every run (where and why it stopped, best dev score and step, test scores, training time).  Both tasks
write their scores as percentages under the same lowercase names, so nothing here depends on the task.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from elmo_paddle import validate
from elmo_paddle.errors import UserError, cli
from tasks.common import elmo_ref
from tasks.common.run import SCORE_SCALE

# metrics shown, in this order, where a run has them (keys of metrics.json's "test", scores 0-100)
METRICS = ["f1", "em", "seg_f1", "PER_f1", "LOC_f1", "ORG_f1", "TIME_f1"]
CURVE_METRIC = "f1"  # dev curves and learning curves
COLOURS = {"baseline": "tab:blue", "+ELMo": "tab:red"}


def _warn_skip(m: Path, why: str) -> None:
    print(f"warning: {m} {why}; skipped", file=sys.stderr)


def _read_json(path: Path) -> Any:
    """The parsed file, or None when it cannot be read or parsed (the caller warns)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def _is_score(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _read_run(m: Path) -> dict[str, Any] | None:
    """One run's record, or None (with a warning saying why) for a metrics.json this table cannot use.

    Why skip rather than stop: one hand-edited or half-written run should not hide every other run's scores;
    why check types here: a score that is a string or NaN used to reach `statistics.mean` as a traceback.
    """
    data = _read_json(m)
    if not isinstance(data, dict):
        _warn_skip(m, "is not a readable JSON object")
        return None
    if "test" not in data:
        return None  # e.g. an --overfit run
    if data.get("score_scale") != SCORE_SCALE:
        _warn_skip(m, "was written before task scores were percentages under one set of names (rerun that run)")
        return None
    test, cfg = data["test"], data.get("config", {})
    if not isinstance(test, dict) or not isinstance(cfg, dict):
        _warn_skip(m, "has a 'test' or 'config' entry that is not an object")
        return None
    bad = sorted(k for k, x in test.items() if (k in METRICS or k.endswith("_f1")) and not _is_score(x))
    if bad:
        _warn_skip(m, f"has test scores that are not finite numbers ({', '.join(f'{k}={test[k]!r}' for k in bad[:3])})")
        return None
    hist = _read_json(m.parent / "history.json") if (m.parent / "history.json").is_file() else {}
    hist = hist.get("history", []) if isinstance(hist, dict) else []
    hist = [{k: x for k, x in h.items() if _is_score(x)} for h in hist if isinstance(h, dict)
            and _is_score(h.get("step"))] if isinstance(hist, list) else []
    seconds = data.get("train_seconds")
    early = _early_stopped(data, cfg, hist)
    if early:  # its length came from early stopping, not from its epochs/steps cap
        cfg = {**cfg, **{k: "early stop" for k in ("epochs", "max_steps") if cfg.get(k) is not None}}
    best_dev = data.get("best_dev")
    return {"task": m.parent.parent.name, "name": m.parent.name,
            "variant": _variant(cfg),
            "best_dev": best_dev.get(CURVE_METRIC) if isinstance(best_dev, dict) else None,
            "best_step": data.get("best_step"), "steps": data.get("steps"),
            "early_stop": early,
            "fraction": float(cfg.get("train_fraction", 1.0)) if _is_score(cfg.get("train_fraction", 1.0)) else 1.0,
            "seed": cfg.get("seed"), "test": {k: x for k, x in test.items() if _is_score(x)},
            "train_seconds": seconds if _is_score(seconds) else None, "history": hist, "config": cfg,
            "bilm": _bilm_id(m.parent, cfg)}


# where a +ELMo model reads the mix besides its input: each placement is a variant of its own (the ELMo paper's
# SQuAD model, BiDAF's `elmo_at_modeling`, LAC's `elmo_at_output`), never averaged with the input-only runs
_PLACEMENTS = (("elmo_at_modeling", "+ELMo (also at the modeling layer)"), ("elmo_at_output", "+ELMo (also at output)"))


def _variant(cfg: dict) -> str:
    if not cfg.get("elmo_model"):
        return "baseline"
    label = next((label for key, label in _PLACEMENTS if cfg.get(key)), "+ELMo")
    layer = cfg.get("elmo_only_layer")  # one biLM layer instead of the mix: a control of its own
    if layer is None:
        return label
    return f"{label}, token layer only (no context)" if layer == 0 else f"{label}, layer {layer} only"


def _bilm_id(run_dir: Path, cfg: dict) -> str | None:
    """Which biLM a +ELMo run read: its name plus the weights' sha256 that its saved model recorded.  A name
    alone is not enough: `zh-char-elmo` was v2 for the runs of the fifth to seventh sessions and is v3 since."""
    if not cfg.get("elmo_model"):
        return None
    sha = cfg.get("elmo_weights_sha256")
    for saved in (run_dir / "best" / "config.json", run_dir / "model" / "config.json"):  # LAC's, BiDAF's
        if sha or not saved.is_file():  # metrics.json's config predates the checksum; the saved model has it
            continue
        data = elmo_ref.run_config(_read_json(saved))
        sha = data.get("elmo_weights_sha256") if data is not None else None
    return f"{cfg['elmo_model']} ({sha[:8]})" if isinstance(sha, str) else str(cfg["elmo_model"])


def _early_stopped(data: dict, cfg: dict, hist: list[dict]) -> bool:
    """Whether a run ended by early stopping (`patience` evaluations after its best without a new one).  Then
    its `epochs` / `max_steps` cap never acted, and it compares with runs that had another cap (e.g. the
    full-data LAC baseline run with epochs=30 and the +ELMo runs with 60, all stopped by patience 6)."""
    patience, best = cfg.get("patience"), data.get("best_step")
    if not _is_score(patience) or patience < 1 or not _is_score(best):
        return False
    return sum(1 for h in hist if h["step"] > best) >= patience


def load_runs(root: Path) -> list[dict[str, Any]]:
    """One record per finished run: task, name, variant, fraction, seed, test metrics, dev history."""
    runs = [r for r in (_read_run(m) for m in sorted(root.glob("*/*/metrics.json"))) if r is not None]
    _label_protocols(runs)
    return runs


# config keys that do not change what a score means (seeds, names, paths, evaluation batch size, resuming); the
# +ELMo settings are the variant itself.  `data_dir` is where the data was read, not which data (`dataset`
# and the files say that): a run started with ../shared/data and one with its absolute path are one protocol.
_NOT_PROTOCOL = {"seed", "run_name", "runs_dir", "train_fraction", "eval_batch_size", "elmo_cache_mb", "data_dir",
                 "resume", "checkpoint_every"}


def _label_protocols(runs: list[dict[str, Any]]) -> None:
    """Give each run a `protocol` label: the config values that differ between runs of its task and fraction.

    Runs trained differently (other epochs, data set, model sizes) are then never averaged together.  A key
    a run does not record, or records as None (runs written before the key existed, "not set"), differs from
    nothing.
    """
    for task, frac in {(r["task"], r["fraction"]) for r in runs}:
        rs = [r for r in runs if r["task"] == task and r["fraction"] == frac]
        keys = sorted({k for r in rs for k in r["config"] if k not in _NOT_PROTOCOL and not k.startswith("elmo")})
        varying = [k for k in keys if len({json.dumps(r["config"][k], sort_keys=True) for r in rs
                                           if r["config"].get(k) is not None}) > 1]
        for r in rs:
            r["protocol"] = ", ".join(f"{k}={r['config'].get(k)}" for k in varying)


def _fmt(vals: list[float]) -> str:
    if not vals:
        return "–"
    mean = statistics.mean(vals)
    if len(vals) == 1:  # one seed says nothing about the spread: no "± 0.00"
        return f"{mean:.2f} ± –"
    return f"{mean:.2f} ± {statistics.stdev(vals):.2f}"


def make_table(runs: list[dict[str, Any]]) -> str:
    """Markdown: one row per task/fraction/metric, baseline and +ELMo mean ± sd (n seeds), delta."""
    groups: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        groups[(r["task"], r["fraction"], r.get("protocol", ""))][r["variant"]].append(r)
    lines = ["| task | train fraction | metric | baseline | +ELMo | Δ (+ELMo − baseline) | seeds (base/+ELMo) | train s (base/+ELMo) |",
             "|---|---|---|---|---|---|---|---|"]
    for (task, frac, protocol) in sorted(groups):
        g = groups[(task, frac, protocol)]
        # the input-only +ELMo first (or alone: a baseline-only group), then each other placement, own rows
        elmos = sorted((v for v in g if v != "baseline"), key=lambda v: (v != "+ELMo", v)) or ["+ELMo"]
        for elmo in elmos:
            where = f"{frac:g}" + (f" ({protocol})" if protocol else "") + ("" if elmo == "+ELMo" else f", {elmo}")
            lines.extend(_group_rows(task, where, g.get("baseline", []), g.get(elmo, [])))
    return "\n".join(lines) + "\n"


def _group_rows(task: str, where: str, base: list[dict], elmo: list[dict]) -> list[str]:
    """The table rows of one comparison: each metric's baseline and +ELMo mean ± sd, Δ, seeds, train s."""
    biLMs = sorted({str(r["bilm"]) for r in elmo})
    if len(biLMs) > 1:
        print(f"warning: {task} {where}: the +ELMo runs use {len(biLMs)} different biLMs "
              f"({', '.join(biLMs)}); their scores are averaged together", file=sys.stderr)
    metrics = [k for k in METRICS if any(k in r["test"] for r in base + elmo)]
    if not metrics:
        metrics = sorted({k for r in base + elmo for k, x in r["test"].items() if isinstance(x, (int, float))})
    ts = "/".join(f"{statistics.mean([r['train_seconds'] for r in rs]):.0f}"
                  if rs and all(r["train_seconds"] is not None for r in rs) else "–" for rs in (base, elmo))
    rows = []
    for k in metrics:
        b = [r["test"][k] for r in base if k in r["test"]]
        e = [r["test"][k] for r in elmo if k in r["test"]]
        delta = f"{statistics.mean(e) - statistics.mean(b):+.2f}" if b and e else "–"
        rows.append(f"| {task} | {where} | {k} | {_fmt(b)} | {_fmt(e)} | {delta} | {len(base)}/{len(elmo)} | {ts} |")
    return rows


def make_run_table(runs: list[dict[str, Any]]) -> str:
    """Markdown: one row per run (the numbers behind each mean): where it stopped and why, its best dev score
    and step, its test scores and training time."""
    metrics = [k for k in METRICS if any(k in r["test"] for r in runs)]
    lines = ["| task | run | variant | train fraction | seed | stopped at step | best dev " + CURVE_METRIC
             + " (step) | " + " | ".join(f"test {k}" for k in metrics) + " | train s |",
             "|---|---|---|---|---|---|---|" + "---|" * len(metrics) + "---|"]
    num = lambda x, f="{:.2f}": f.format(x) if _is_score(x) else "–"  # noqa: E731
    for r in sorted(runs, key=lambda r: (r["task"], r["fraction"], r["variant"] != "baseline", str(r["seed"]), r["name"])):
        stop = num(r["steps"], "{:.0f}") + (" (early stop)" if r["early_stop"] else "")
        best = f"{num(r['best_dev'])} ({num(r['best_step'], '{:.0f}')})"
        scores = " | ".join(num(r["test"].get(k)) for k in metrics)
        lines.append(f"| {r['task']} | {r['name']} | {r['variant']} | {r['fraction']:g} | {r['seed']} | {stop} | "
                     f"{best} | {scores} | {num(r['train_seconds'], '{:.0f}')} |")
    return "\n".join(lines) + "\n"


def learning_curve(runs: list[dict[str, Any]], task: str, key: str = CURVE_METRIC
                   ) -> dict[str, list[tuple[float, float, float, int]]]:
    """`{variant: [(fraction, mean, sd, seeds), ...]}` of the test `key` of `task`'s baseline and +ELMo runs.

    Only runs whose test scores have `key` count; sd is 0.0 for one seed (the plot draws no bar then).  Runs of
    one fraction trained differently (the table's protocols) share a point: a warning says so.
    """
    curve = {}
    for variant in ("baseline", "+ELMo"):
        by_fraction, protocols = defaultdict(list), defaultdict(set)
        for r in runs:
            if r["task"] == task and r["variant"] == variant and key in r["test"]:
                by_fraction[r["fraction"]].append(r["test"][key])
                protocols[r["fraction"]].add(r.get("protocol", ""))
        for f in sorted(f for f, p in protocols.items() if len(p) > 1):
            print(f"warning: {task} learning curve: the {variant} point at fraction {f:g} averages runs trained "
                  f"differently ({' / '.join(sorted(protocols[f]))})", file=sys.stderr)
        curve[variant] = [(f, statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
                          for f, v in sorted(by_fraction.items())]
    return curve


def _dev_curves_plot(plt, task: str, tr: list[dict[str, Any]], path: Path) -> None:
    key = CURVE_METRIC
    fig, ax = plt.subplots(figsize=(7, 4.5))
    seen = set()
    for r in tr:
        pts = [(h["step"], h[key]) for h in r["history"] if key in h]
        if not pts:
            continue
        label = f"{r['variant']} (fraction {r['fraction']:g})"
        ax.plot(*zip(*pts), color=COLOURS.get(r["variant"], "tab:purple"), alpha=0.35 + 0.65 * r["fraction"],
                marker=".", label=None if label in seen else label)
        seen.add(label)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"dev {key}")
    ax.set_title(f"{task}: dev {key} during training")
    ax.grid(alpha=0.3)
    if seen:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _learning_curve_plot(plt, task: str, runs: list[dict[str, Any]], path: Path) -> None:
    """Left: test score against the fraction of training data; right: the +ELMo gain at each fraction.

    Why the second panel: the question a learning curve answers here is how the gain changes with labelled
    data (the ELMo paper's sample-efficiency figure), and two close curves on one F1 axis hide it.
    """
    key = CURVE_METRIC
    curve = learning_curve(runs, task)
    fig, (ax, gain) = plt.subplots(1, 2, figsize=(10, 4.5))
    for variant, pts in curve.items():
        if pts:
            f, m, sd, n = zip(*pts)
            ax.errorbar(f, m, yerr=sd, marker="o", capsize=3, color=COLOURS[variant],
                        label=f"{variant} ({min(n)}-{max(n)} seeds)" if min(n) != max(n) else f"{variant} ({n[0]} seeds)")
    base = {f: m for f, m, _, _ in curve["baseline"]}
    deltas = [(f, m - base[f]) for f, m, _, _ in curve["+ELMo"] if f in base]
    if deltas:
        gain.bar(range(len(deltas)), [d for _, d in deltas], width=0.5, color=COLOURS["+ELMo"], alpha=0.7)
        gain.set_xticks(range(len(deltas)), [f"{f:.0%}" for f, _ in deltas])
        gain.set_xlim(-0.75, len(deltas) - 0.25)
        for i, (_, d) in enumerate(deltas):
            gain.annotate(f"{d:+.2f}", (i, d), ha="center", va="bottom", fontsize=9)
    gain.set_xlabel("fraction of training data")
    gain.set_ylabel(f"+ELMo − baseline, test {key} (means)")
    gain.set_title("gain from ELMo")
    gain.grid(alpha=0.3, axis="y")
    ax.set_xscale("log")
    fractions = sorted({f for pts in curve.values() for f, *_ in pts})
    ax.set_xticks(fractions, [f"{f:.0%}" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("fraction of training data")
    ax.set_ylabel(f"test {key}")
    ax.set_title(f"{task}: learning curve (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_plots(runs: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Per task: dev-metric curves of every run (baseline vs +ELMo colours) and the learning curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for task in sorted({r["task"] for r in runs}):
        dev, lc = out_dir / f"{task}_dev_curves.png", out_dir / f"{task}_learning_curve.png"
        _dev_curves_plot(plt, task, [r for r in runs if r["task"] == task], dev)
        _learning_curve_plot(plt, task, runs, lc)
        written += [dev, lc]
    return written


@cli
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.compare",
                                 description="Compare baseline and +ELMo task runs: Markdown table + PNG plots.")
    ap.add_argument("runs_dir", nargs="?", default="runs", help="folder holding <task>/<run>/metrics.json (default runs)")
    ap.add_argument("--output", help="where to write comparison.md and the PNGs (default: the runs folder)")
    ap.add_argument("--no-plots", action="store_true", help="only the table")
    args = ap.parse_args(argv)
    root = Path(args.runs_dir)
    if args.output:
        validate.output_dir("--output", args.output)  # before reading every run
    if not root.is_dir():
        raise UserError(f"runs folder {root} does not exist (run tasks.lac.finetune / tasks.bidaf.finetune first)")
    runs = load_runs(root)
    if not runs:
        raise UserError(f"no finished task runs (*/*/metrics.json with test scores) under {root}")
    out = validate.output_dir("--output", args.output or root)
    table, per_run = make_table(runs), make_run_table(runs)
    (out / "comparison.md").write_text("# Baseline vs +ELMo\n\nScores (0-100) on each task's test split; "
                                       "mean ± sd over seeds.\n\n" + table + "\n## Per run\n\n" + per_run,
                                       encoding="utf-8")
    print(table)
    print(per_run)
    if not args.no_plots:
        for p in make_plots(runs, out):
            print(f"wrote {p}")
    print(f"wrote {out / 'comparison.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
