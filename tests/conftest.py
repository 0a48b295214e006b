"""Shared fixtures: `tiny_model_dir` is a small pretrained biLM model directory, built once per session."""
from __future__ import annotations

import gzip
import os
import random
from pathlib import Path

import pytest

import elmo_paddle  # noqa: F401  (sets MKL env vars before paddle loads)

_PD_RAW = "lm_raw_zh/pd1998_train_raw.txt.gz"


@pytest.fixture(autouse=True)
def _float32_unless_asked(monkeypatch):
    """The suite checks float32 numerics: a user's ELMO_PADDLE_BF16=1 must not reach it (tests/test_bf16_gemm.py
    turns the bf16 path on where it tests it)."""
    import elmo_paddle.bf16_gemm as bf16_gemm

    monkeypatch.delenv("ELMO_PADDLE_BF16", raising=False)
    monkeypatch.setattr(bf16_gemm, "_state", {})


def _fixture_lines(n: int = 400) -> list[str]:
    """Real text from the data dir when present, else deterministic synthetic 'sentences'."""
    from elmo_paddle.data_dir import resolve_data_dir

    root = resolve_data_dir()
    if root is not None and (root / _PD_RAW).is_file():
        out = []
        with gzip.open(root / _PD_RAW, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    out.append(line.strip()[:60])
                if len(out) >= n:
                    return out
        if out:
            return out
    rng = random.Random(0)
    words = ["中国", "人民", "经济", "发展", "北京", "我们", "今天", "工作", "社会", "国家", "建设", "改革",
             "的", "了", "在", "是", "和", "有", "一个", "新", "，", "。"]
    return ["".join(rng.choice(words) for _ in range(rng.randint(5, 20))) + "。" for _ in range(n)]


def build_tiny_model(out: Path, text_file: Path | None = None, steps: int = 30) -> Path:
    """Pretrain a ~0.1M-parameter biLM for a few steps (a few seconds); returns the model directory."""
    from elmo_paddle.config import load_config
    from elmo_paddle.pretrain_config import PretrainConfig
    from elmo_paddle.trainer_lm import run_pretraining

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if text_file is None:
        text_file = out / "fixture_text.txt"
        text_file.write_text("\n".join(_fixture_lines()) + "\n", encoding="utf-8")
    cfg = load_config(PretrainConfig, None, {
        "bilm": {"token_dim": 16, "proj_dim": 16, "hidden_dim": 32, "num_layers": 2, "dropout": 0.1},
        "data": {"train": [str(text_file)], "min_count": 2, "dev_fraction": 0.05, "eval_max_lines": 20},
        "train": {"batch_size": 8, "seq_len": 16, "lr": 0.01, "max_steps": steps, "eval_every": steps,
                  "save_every": steps, "log_every": 10, "warmup_steps": 5, "threads": 1},
        "output_dir": str(out / "run"), "run_name": "tiny"})
    cwd = os.getcwd()
    os.chdir(out)  # VisualDL logs go to ./runs: keep them out of the repo
    try:
        return run_pretraining(cfg, resume=False, progress=False)
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A small pretrained char-level biLM model directory (vocab, weights, manifest)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_elmo"))
