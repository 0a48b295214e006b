"""Task runs data-parallel under `paddle.distributed.launch` (tasks/common/trainer.py, elmo_paddle/dist.py):
two gloo ranks, each on half of every batch, take the steps one process takes on the whole batch; rank 0
alone writes the run; a stopped two-rank run resumes to the same weights; and a run cannot switch its number
of ranks on resume; rank 0 may evaluate for longer than a gloo collective waits."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from test_bidaf_train import _examples, _write_split

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # three launches of two processes each (~1-2 minutes on 2 cores)


def _run(args: list[str], timeout: int = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    d = root / "cmrc2018"
    d.mkdir()
    # 16 training windows, batch 8: every step's batch is full and splits 4 / 4 between the ranks
    for name, ex in (("train", _examples(16, 1)), ("trial", _examples(4, 2)), ("dev", _examples(4, 3))):
        _write_split(d / f"cmrc2018_{name}.json", ex)
    return root


def _args(data: Path, runs: Path, name: str, *extra: str) -> list[str]:
    return ["--data-dir", str(data), "--run-name", name, "--epochs", "1", f"runs_dir={runs}",
            "train_file=cmrc2018/cmrc2018_train.json", "dev_file=cmrc2018/cmrc2018_trial.json",
            "test_file=cmrc2018/cmrc2018_dev.json", "hidden=8", "char_dim=8", "word_dim=8", "batch_size=8",
            "dropout=0", "checkpoint_every=1", *extra]


def _launch(tmp_path: Path, log: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return _run(["-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / log),
                 "tasks/bidaf/finetune.py", *args], env=env)


def _weights(run: Path, step: int) -> dict[str, np.ndarray]:
    return load_file(str(run / "checkpoints" / f"step-{step:08d}" / "weights.safetensors"))


# biases that only shift logits under a softmax (over positions, or over question characters): their true
# gradient is 0, so what they get is rounding noise, which Adam scales up to steps of ~lr (measured: 3e-5 to
# 3e-4 apart after two steps; a weight with a tiny gradient 2.4e-5); a step without the gradient
# all-reduce moves weights by ~lr = 1e-3 apart (each rank steps on its own half batch)
SHIFT_ONLY = {"attention.bias", "start_out.bias", "end_out.bias"}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys() and SHIFT_ONLY <= a.keys()
    for k in a.keys() - SHIFT_ONLY:  # the same sums in another order (two half batches, then their mean)
        np.testing.assert_allclose(a[k], b[k], rtol=1e-3, atol=1e-4, err_msg=k)


def test_two_ranks_take_the_one_process_steps_and_resume(data, tmp_path):
    runs = tmp_path / "runs"
    r = _run(["-m", "tasks.bidaf.finetune", *_args(data, runs, "one", "--max-steps", "2")])
    assert r.returncode == 0, r.stderr[-3000:]
    # two ranks, stopped after step 1 (a finished run), then extended to step 2 with --resume
    r = _launch(tmp_path, "log1", _args(data, runs, "two", "--max-steps", "1"))
    assert r.returncode == 0, (tmp_path / "log1" / "workerlog.0").read_text()[-3000:]
    # rank 0's evaluation at step 2 takes 35 s: longer than a gloo collective waits (30 s), so rank 1 must
    # wait for it through the store (it failed with a gloo TIMEOUT before dist.from_rank0)
    r = _launch(tmp_path, "log2", _args(data, runs, "two", "--max-steps", "2", "--resume"),
                env={"ELMO_PADDLE_FAULT": "slowdev@35:rank0"})
    log0 = (tmp_path / "log2" / "workerlog.0").read_text()
    assert r.returncode == 0, log0[-3000:]
    assert "resumed from" in log0
    one, two = runs / "one", runs / "two"
    for step in (1, 2):
        _assert_same(_weights(one, step), _weights(two, step))
    # a step really moved the weights (the comparison above is not of two untrained models)
    w1, w2 = _weights(one, 1), _weights(one, 2)
    assert any(not np.allclose(w1[k], w2[k]) for k in w1)
    m = json.loads((two / "metrics.json").read_text(encoding="utf-8"))
    assert m["ranks"] == 2 and m["steps"] == 2 and m["test"]["total"] == 4
    assert json.loads((one / "metrics.json").read_text(encoding="utf-8"))["ranks"] == 1
    assert len(list(two.glob("vdlrecords.*"))) == 1  # rank 1 logs nothing
    hist = json.loads((two / "history.json").read_text(encoding="utf-8"))
    assert [h["step"] for h in hist["history"]] == [1, 2] and "f1" in hist["history"][-1]


def test_resume_with_another_number_of_ranks_is_refused(data, tmp_path):
    runs = tmp_path / "runs"
    r = _run(["-m", "tasks.bidaf.finetune", *_args(data, runs, "one", "--max-steps", "1")])
    assert r.returncode == 0, r.stderr[-3000:]
    r = _launch(tmp_path, "log", _args(data, runs, "one", "--max-steps", "2", "--resume"))
    log0 = (tmp_path / "log" / "workerlog.0").read_text()
    assert r.returncode != 0
    assert "error: cannot resume" in log0 and "ranks" in log0 and "Traceback" not in log0
