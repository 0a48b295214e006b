"""The one-command pipeline at CI scale: pretrain -> 4 task runs -> comparison; a rerun skips everything."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from elmo_paddle.data_dir import resolve_data_dir

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_pipeline_tiny_end_to_end_and_idempotent(tmp_path):
    data = resolve_data_dir()
    if data is None or not (data / "cmrc2018").is_dir():
        pytest.skip("needs the data sets (../shared/data or ELMO_PADDLE_DATA)")
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "elmo_paddle.pipeline", "--config", "configs/pipeline_tiny.yaml",
           f"runs_dir={runs}", f"elmo.output_dir={tmp_path / 'elmo'}"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "estimated" in r.stdout  # the plan with time estimates comes first
    for task in ("lac", "bidaf"):
        for variant in ("baseline", "elmo"):
            assert (runs / task / f"{variant}-f0.01-s1" / "metrics.json").is_file(), (task, variant)
    assert any((runs / "elmo").rglob("vdlrecords*"))  # the pretraining curves land beside the tasks' runs
    table = (runs / "comparison.md").read_text()
    assert "| lac | 0.01 | f1 |" in table and "| bidaf | 0.01 | f1 |" in table
    for png in ("lac_dev_curves.png", "lac_learning_curve.png", "bidaf_dev_curves.png", "bidaf_learning_curve.png"):
        assert (runs / png).stat().st_size > 5000
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert "5 already done" in again.stdout  # pretrain + 4 task runs skipped; only compare reruns


def test_plan_uses_a_trained_biLM_by_name_without_pretraining():
    from elmo_paddle.config import load_config
    from elmo_paddle.pipeline import PipelineConfig, plan

    cfg = load_config(PipelineConfig, str(REPO / "configs/pipeline_tiny.yaml"), ["elmo.model=zh-char-elmo"])
    steps = plan(cfg)
    assert not any(s.name == "pretrain ELMo" for s in steps)
    elmo_runs = [s for s in steps if " elmo-" in s.name]
    assert elmo_runs and all(s.cmd[s.cmd.index("--elmo-model") + 1] == "zh-char-elmo" for s in elmo_runs)
    pretraining = plan(load_config(PipelineConfig, str(REPO / "configs/pipeline_tiny.yaml"), []))
    assert pretraining[0].name == "pretrain ELMo"


def test_variants_pick_the_runs_and_bad_ones_are_one_error():
    """`bidaf.variants=[baseline]` runs the baselines while the biLM for the +ELMo runs still trains."""
    from elmo_paddle.config import load_config
    from elmo_paddle.errors import UserError
    from elmo_paddle.pipeline import PipelineConfig, check_pipeline_config, plan

    tiny = str(REPO / "configs/pipeline_tiny.yaml")
    cfg = load_config(PipelineConfig, tiny, ["lac.enabled=false", "bidaf.variants=[baseline]"])
    names = [s.name for s in plan(cfg)]
    assert names == ["bidaf baseline-f0.01-s1", "compare"], names  # no pretraining: no +ELMo run needs it
    for bad in ("[]", "[elmo, crf]", "baseline"):
        cfg = load_config(PipelineConfig, tiny, [f"bidaf.variants={bad}"])
        with pytest.raises(UserError, match="bidaf.variants"):
            check_pipeline_config(cfg)


@pytest.mark.parametrize("overrides,want", [([], "threads=1"), (["jobs=1"], None), (["jobs=1", "threads=1"], "threads=1"),
                                            (["threads=3"], "threads=3")])
def test_each_task_run_gets_the_threads_asked_for(overrides, want):
    """Side by side: one thread each; one after another: the task's default, unless `threads` says otherwise.
    The count is in the command itself (LAC's key; BiDAF reads OMP_NUM_THREADS, set by the runner)."""
    from elmo_paddle.config import load_config
    from elmo_paddle.pipeline import PipelineConfig, _env, plan, run_threads

    cfg = load_config(PipelineConfig, str(REPO / "configs/pipeline_tiny.yaml"), ["elmo.model=zh-char-elmo", *overrides])
    lac = [s.cmd for s in plan(cfg) if s.name.startswith("lac ")]
    bidaf = [s.cmd for s in plan(cfg) if s.name.startswith("bidaf ")]
    assert lac and bidaf
    assert all([c for c in cmd if c.startswith("threads=")] == ([want] if want else []) for cmd in lac)
    assert not any(c.startswith("threads=") for cmd in bidaf for c in cmd)
    assert _env(run_threads(cfg)).get("OMP_NUM_THREADS") == (want.split("=")[1] if want else os.environ.get("OMP_NUM_THREADS"))


def test_task_runs_go_side_by_side_longest_first_and_a_failure_is_one_error(tmp_path):
    """Two 1-second steps with jobs=2 finish in about 1 s, not 2; a failing one is reported after the rest."""
    import time

    from elmo_paddle.errors import UserError
    from elmo_paddle.pipeline import Step, _run_side_by_side

    def step(name, seconds, est, rc=0):
        code = f"import time,sys; print('{name}', flush=True); time.sleep({seconds}); sys.exit({rc})"
        return Step(name, [sys.executable, "-c", code], tmp_path / f"{name}.done", est)

    t0 = time.time()
    _run_side_by_side([step("a", 1.5, 1), step("b", 1.5, 2)], 2, tmp_path / "logs", t0)
    assert time.time() - t0 < 2.8  # overlapped (serial would take >= 3 s)
    assert (tmp_path / "logs" / "a.log").read_text().strip() == "a"
    with pytest.raises(UserError, match="step 'bad' failed .exit 3.*logs/bad.log"):
        _run_side_by_side([step("bad", 0, 1, rc=3), step("slow", 1, 5)], 2, tmp_path / "logs", time.time())
    assert (tmp_path / "logs" / "slow.log").read_text().strip() == "slow"  # the other step still ran to its end
