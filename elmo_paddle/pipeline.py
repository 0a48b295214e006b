"""The whole comparison in one command: `python -m elmo_paddle.pipeline --config configs/pipeline_demo.yaml`.

Steps: pretrain (or reuse) an ELMo biLM -> train each task's baseline and +ELMo for every training
fraction and seed -> `tasks.compare` table and plots.  Every step is a subprocess running the same public
command a user would type (printed before it runs).  The task runs do not depend on each other: `jobs` of
them run side by side, one CPU thread each, longest first (on 2 cores the demo's four runs took 17:10 of wall
time for 968 CPU-seconds when run one after another, leaving a core idle); their output goes to
`RUNS/logs/<step>.log`.  `threads` sets each run's threads instead (`jobs=1 threads=1`: one run after another on
one core, the other core left to a second job).  Finished steps are skipped, so the command is
idempotent and resumable: pretraining and a task run that died resume from their last checkpoints.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import load_config
from . import validate
from .errors import UserError, cli


@dataclass
class ElmoStep:
    model: str | None = None  # a trained biLM to use (model dir or shipped name, e.g. zh-char-elmo): no pretraining
    config: str = "configs/elmo_small.yaml"
    output_dir: str = "models/elmo_demo"
    overrides: list = field(default_factory=list)
    est_minutes: float = 10.0  # shown in the plan; measured on 2 CPU cores


@dataclass
class TaskStep:
    config: str = ""
    fractions: list = field(default_factory=lambda: [1.0])
    seeds: list = field(default_factory=lambda: [1])
    overrides: list = field(default_factory=list)
    elmo_overrides: list = field(default_factory=list)  # extra overrides for the +ELMo variant only
    est_minutes: float = 5.0  # per run (+ELMo runs are estimated at 2x)
    enabled: bool = True
    # which runs: e.g. [baseline] first while the biLM the +ELMo runs should use is still training
    variants: list = field(default_factory=lambda: ["baseline", "elmo"])


@dataclass
class PipelineConfig:
    elmo: ElmoStep = field(default_factory=ElmoStep)
    lac: TaskStep = field(default_factory=lambda: TaskStep(config="configs/lac.yaml"))
    bidaf: TaskStep = field(default_factory=lambda: TaskStep(config="configs/bidaf.yaml"))
    runs_dir: str = "runs"
    data_dir: str | None = None
    jobs: int = 2  # task runs side by side (one thread each); 1: one after another, with paddle's own threads
    threads: int = 0  # CPU threads of each task run; 0: 1 when runs go side by side (jobs > 1), else the task's own


@dataclass
class Step:
    name: str
    cmd: list
    done: Path  # the file whose existence means the step is finished
    est_minutes: float


def _elmo_step(cfg: PipelineConfig, py: str, data: list[str]) -> tuple[list[Step], str]:
    """The pretraining step (none when `elmo.model` names a trained biLM) and the biLM the +ELMo runs use."""
    if cfg.elmo.model:
        return [], str(cfg.elmo.model)
    elmo_dir = Path(cfg.elmo.output_dir)
    pre = [py, "-m", "elmo_paddle.pretrain", "--config", cfg.elmo.config, "--output-dir", str(elmo_dir), *data,
           "--no-progress", f"runs_dir={Path(cfg.runs_dir) / 'elmo'}", *map(str, cfg.elmo.overrides)]
    if (elmo_dir / "checkpoints").is_dir() and not (elmo_dir / "final" / "manifest.json").is_file():
        pre.insert(3, "--resume")
    step = Step("pretrain ELMo", pre, elmo_dir / "final" / "manifest.json", cfg.elmo.est_minutes)
    return [step], str(elmo_dir / "best")


def check_pipeline_config(cfg: PipelineConfig) -> None:
    """Fractions, seeds and the runs folder make sense before the first step starts (a bad value would
    otherwise surface minutes later, inside the step that uses it)."""
    for task in ("lac", "bidaf"):
        t: TaskStep = getattr(cfg, task)
        if not isinstance(t.fractions, list) or not t.fractions or not isinstance(t.seeds, list) or not t.seeds:
            raise UserError(f"{task}.fractions and {task}.seeds must be non-empty lists")
        for f in t.fractions:
            validate.fraction(f"{task}.fractions", f)
        for seed in t.seeds:
            validate.non_negative_int(f"{task}.seeds", seed)
        validate.non_negative_float(f"{task}.est_minutes", t.est_minutes)
        if not isinstance(t.variants, list) or not t.variants or not set(t.variants) <= {"baseline", "elmo"}:
            raise UserError(f"{task}.variants must be a non-empty list of baseline and elmo, got {t.variants!r}")
    validate.non_negative_float("elmo.est_minutes", cfg.elmo.est_minutes)
    validate.positive_int("jobs", cfg.jobs)
    validate.non_negative_int("threads", cfg.threads)
    validate.output_dir("runs_dir", cfg.runs_dir, create=False)


def run_threads(cfg: PipelineConfig) -> int:
    """Threads of each task run: `threads`, else 1 when runs go side by side, else 0 (the task's default)."""
    return cfg.threads or (1 if cfg.jobs > 1 else 0)


def plan(cfg: PipelineConfig) -> list[Step]:
    """The ordered steps of the pipeline, each with its command and completion marker (a task run's thread
    count is in its command: LAC's `threads` key; the runs also get OMP_NUM_THREADS, see `_env`)."""
    py = sys.executable
    data = ["--data-dir", cfg.data_dir] if cfg.data_dir else []
    steps, elmo_model = _elmo_step(cfg, py, data)
    if not any(t.enabled and "elmo" in t.variants for t in (cfg.lac, cfg.bidaf)):
        steps = []  # no +ELMo run: nothing to pretrain
    for task in ("lac", "bidaf"):
        t: TaskStep = getattr(cfg, task)
        if not t.enabled:
            continue
        for frac in t.fractions:
            for seed in t.seeds:
                for variant in [v for v in ("baseline", "elmo") if v in t.variants]:
                    name = f"{variant}-f{frac:g}-s{seed}"
                    run_dir = Path(cfg.runs_dir) / task / name
                    cmd = [py, "-m", f"tasks.{task}.finetune", "--config", t.config, "--train-fraction", str(frac),
                           "--seed", str(seed), "--run-name", name, "--resume", *data]
                    if variant == "elmo":
                        cmd += ["--elmo-model", elmo_model]
                    cmd += [f"runs_dir={Path(cfg.runs_dir) / task}", *map(str, t.overrides)]
                    if variant == "elmo":
                        cmd += list(map(str, t.elmo_overrides))
                    if task == "lac" and run_threads(cfg):
                        cmd.append(f"threads={run_threads(cfg)}")
                    est = t.est_minutes * (2 if variant == "elmo" else 1)
                    steps.append(Step(f"{task} {name}", cmd, run_dir / "metrics.json", est))
    steps.append(Step("compare", [py, "-m", "tasks.compare", cfg.runs_dir], Path("/nonexistent/always-run"), 0.2))
    return steps


def _env(threads: int) -> dict:
    """The task runs' environment: OMP_NUM_THREADS bounds the threads of everything without a `threads` key."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else dict(os.environ)


def _run_step(s: Step, t_start: float, threads: int = 0) -> None:
    """One step in the foreground (its output on the terminal); a failure is a one-line error."""
    print(f"\n[{s.name}] (~{s.est_minutes:.0f} min; {(time.time() - t_start) / 60:.1f} min elapsed)\n$ {shlex.join(s.cmd)}",
          flush=True)
    t0 = time.time()
    rc = subprocess.call(s.cmd, env=_env(threads))
    if rc != 0:
        raise UserError(f"step '{s.name}' failed (exit {rc}); fix the cause and rerun the same command: "
                        "finished steps are skipped")
    print(f"[{s.name}] done in {(time.time() - t0) / 60:.1f} min", flush=True)


def _run_side_by_side(steps: list[Step], jobs: int, log_dir: Path, t_start: float, threads: int = 1) -> None:
    """Run `steps` as up to `jobs` concurrent subprocesses, longest first; each one's output to a log file.

    A failed step stops nothing already running; the first failure is reported (with its log's tail) once
    the others have finished, and a rerun resumes or skips them.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    env = _env(threads)
    queue = sorted(steps, key=lambda s: -s.est_minutes)
    running: list[tuple[Step, subprocess.Popen, Path, float]] = []
    failed: list[tuple[Step, int, Path]] = []
    while queue or running:
        while queue and len(running) < jobs:
            s = queue.pop(0)
            log = log_dir / (s.name.replace(" ", "_") + ".log")
            print(f"[{s.name}] started ({(time.time() - t_start) / 60:.1f} min elapsed; log {log})\n"
                  f"$ {shlex.join(s.cmd)}", flush=True)
            with open(log, "w", encoding="utf-8") as f:
                proc = subprocess.Popen(s.cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
            running.append((s, proc, log, time.time()))
        time.sleep(0.5)
        for item in [r for r in running if r[1].poll() is not None]:
            s, proc, log, t0 = item
            running.remove(item)
            print(f"[{s.name}] {'done' if proc.returncode == 0 else f'FAILED (exit {proc.returncode})'} in "
                  f"{(time.time() - t0) / 60:.1f} min", flush=True)
            if proc.returncode != 0:
                failed.append((s, proc.returncode, log))
    if failed:
        s, rc, log = failed[0]
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or [""]
        raise UserError(f"step '{s.name}' failed (exit {rc}): {tail[0][-300:]} (whole output: {log}); fix the "
                        "cause and rerun the same command: finished steps are skipped")


@cli
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m elmo_paddle.pipeline", description=__doc__.split("\n\n")[0],
                                 epilog="Scales: configs/pipeline_demo.yaml (~4 min on 2 cores, shipped biLM), "
                                        "configs/pipeline_tiny.yaml (CI smoke test). The reported results "
                                        "come from the commands listed in RESULTS.md.")
    ap.add_argument("--config", default="configs/pipeline_demo.yaml", help="pipeline YAML (default: the demo scale)")
    ap.add_argument("--data-dir", help="data folder (default: $ELMO_PADDLE_DATA or ../shared/data)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and the commands, run nothing")
    ap.add_argument("--jobs", type=int, help="task runs side by side, one thread each (default: the config's "
                    "jobs, 2); 1 runs them one after another")
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. lac.seeds=[1,2,3]")
    args = ap.parse_args(argv)
    extra = list(args.overrides) + ([f"data_dir={args.data_dir}"] if args.data_dir else []) \
        + ([f"jobs={args.jobs}"] if args.jobs is not None else [])
    cfg = load_config(PipelineConfig, args.config, extra)
    check_pipeline_config(cfg)
    steps = plan(cfg)
    todo = [s for s in steps if not s.done.is_file()]
    total_est = sum(s.est_minutes for s in todo)
    print(f"pipeline: {len(steps)} steps, {len(steps) - len(todo)} already done; "
          f"estimated {total_est:.0f} min on 2 CPU cores for the rest")
    for i, s in enumerate(steps, 1):
        state = "done, skipped" if s.done.is_file() else f"~{s.est_minutes:.0f} min"
        print(f"  {i:2d}. {s.name:<28} {state}")
    if args.dry_run:
        for s in todo:
            print("$ " + shlex.join(s.cmd))
        return 0
    t_start = time.time()
    pre = [s for s in todo if s.name == "pretrain ELMo"]
    tasks = [s for s in todo if s.name not in ("pretrain ELMo", "compare")]
    for s in pre:  # the +ELMo runs need the biLM first
        _run_step(s, t_start)
    if cfg.jobs > 1 and len(tasks) > 1:
        _run_side_by_side(tasks, cfg.jobs, Path(cfg.runs_dir) / "logs", t_start, run_threads(cfg))
    else:
        for s in tasks:
            _run_step(s, t_start, run_threads(cfg))
    for s in todo:
        if s.name == "compare":
            _run_step(s, t_start)
    print(f"\npipeline finished in {(time.time() - t_start) / 60:.1f} min. "
          f"See {cfg.runs_dir}/comparison.md, the PNGs beside it, and: visualdl --logdir {cfg.runs_dir} --language en")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
