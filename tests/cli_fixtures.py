"""Small task models and hostile input files for the command-line tests (test_validation, test_cli_fuzz).

The models are trained in-process for two or three steps on a few sentences (seconds): the CLI tests need a
model folder of the right shape, not a good model.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Callable, Sequence

from test_bidaf_train import _examples, _write_split
from test_lac_cli import SENTS, _lac_line

REPO = Path(__file__).resolve().parent.parent


def run_main(main: Callable, argv: Sequence[str], cwd: Path | None = None) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of an entry point called in-process, as the shell would see them.

    An exception escaping `main` is a traceback for the user: it is raised here, so the test fails on it.
    argparse's own usage errors exit with SystemExit(2), which is caught and returned like a status."""
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(list(argv))
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(old)
    return rc, out.getvalue(), err.getvalue()


def assert_clean_exit(rc: int, err: str, one_line: bool = False) -> None:
    """Exit 0, or a non-zero exit whose stderr ends in the one error line and holds no traceback.

    `one_line`: for mistakes caught before any work, stderr is that line and nothing else.  Later failures
    may follow warnings or progress lines; argparse's own errors (usage, then `prog: error: ...`) count as
    clean too: that is the library's format, and the last line says what is wrong."""
    assert "Traceback" not in err, err[-3000:]
    if rc == 0:
        return
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, f"exit {rc} with nothing on stderr"
    if lines[0].startswith("usage:"):
        assert rc == 2 and ": error: " in lines[-1], err[-2000:]
        return
    errors = [ln for ln in lines if "error: " in ln]
    # a progress bar rewrites its line with \r: the error then follows it on the same line
    assert len(errors) == 1 and lines[-1].split("\r")[-1].startswith("error: "), err[-3000:]
    if one_line:
        assert len(lines) == 1, err[-3000:]


def write_lac_data(root: Path) -> Path:
    """A data dir holding a tiny `lac_sample` (LAC format: text TAB tags)."""
    d = root / "lac_sample"
    (d / "train_data").mkdir(parents=True, exist_ok=True)
    (d / "test_data").mkdir(exist_ok=True)
    (d / "train_data" / "a_part").write_text("".join(_lac_line(s) for s in SENTS * 10), encoding="utf-8")
    (d / "test_data" / "test_part").write_text("".join(_lac_line(s) for s in SENTS), encoding="utf-8")
    return root


def write_cmrc_data(root: Path) -> Path:
    """A data dir holding tiny CMRC-format train/trial/dev files."""
    d = root / "cmrc2018"
    d.mkdir(parents=True, exist_ok=True)
    for name, ex in (("train", _examples(12, 1)), ("trial", _examples(4, 2)), ("dev", _examples(4, 3))):
        _write_split(d / f"cmrc2018_{name}.json", ex)
    return root


def lac_args(data: Path, runs: Path) -> list[str]:
    return ["--dataset", "lac", "--data-dir", str(data), f"runs_dir={runs}", "emb_dim=8", "hidden_dim=8",
            "elmo_cache_dir=null", "threads=1"]


def bidaf_args(data: Path, runs: Path) -> list[str]:
    return ["--config", str(REPO / "configs" / "bidaf.yaml"), "--data-dir", str(data), f"runs_dir={runs}",
            "train_file=cmrc2018/cmrc2018_train.json", "dev_file=cmrc2018/cmrc2018_trial.json",
            "test_file=cmrc2018/cmrc2018_dev.json", "hidden=8", "char_dim=8", "word_dim=8", "batch_size=4",
            "elmo_cache_dir=null"]


def train_lac(root: Path) -> Path:
    """A LAC model folder (3 steps on the tiny data); returns runs/ok/best."""
    from tasks.lac.finetune import main

    data = write_lac_data(root / "data")
    rc, _, err = run_main(main, lac_args(data, root / "runs") + ["--max-steps", "3", "--run-name", "ok"], cwd=root)
    assert rc == 0, err[-2000:]
    return root / "runs" / "ok" / "best"


def train_bidaf(root: Path) -> Path:
    """A BiDAF model folder (2 steps on the tiny data); returns runs/ok/model."""
    from tasks.bidaf.finetune import main

    data = write_cmrc_data(root / "data")
    rc, _, err = run_main(main, bidaf_args(data, root / "runs") + ["--max-steps", "2", "--run-name", "ok"], cwd=root)
    assert rc == 0, err[-2000:]
    return root / "runs" / "ok" / "model"


def questions_file(path: Path, qas: list[dict], context: str = "北京大学在北京。上海在南方。") -> Path:
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]},
                               ensure_ascii=False), encoding="utf-8")
    return path
