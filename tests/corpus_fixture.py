"""A small synthetic Chinese corpus with learnable structure, so LM tests don't need the real data."""
from __future__ import annotations

import contextlib
import gzip
import random
import subprocess
from pathlib import Path

import pytest

_SUBJ = ["我们", "他们", "老师", "学生", "记者", "中国", "北京", "公司"]
_VERB = ["喜欢", "研究", "发展", "参观", "报道", "建设", "讨论", "学习"]
_OBJ = ["经济", "文化", "科学", "历史", "工作", "技术", "问题", "城市"]


def make_corpus(path: Path, n_lines: int = 400, seed: int = 0, gz: bool = False) -> Path:
    """Write `n_lines` template sentences (subject verb object 。) to `path`; returns the path."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        k = rng.randint(1, 3)
        lines.append("，".join(f"{rng.choice(_SUBJ)}{rng.choice(_VERB)}{rng.choice(_OBJ)}" for _ in range(k)) + "。")
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


TINY_OVERRIDES = [
    "bilm.token_dim=16", "bilm.proj_dim=16", "bilm.hidden_dim=32", "bilm.num_layers=2",
    "data.min_count=1", "data.dev_fraction=0.05", "train.batch_size=8", "train.seq_len=12",
    "train.lr=0.02", "train.warmup_steps=5", "train.log_every=5",
]


RANK_WEIGHTS_SCRIPT = Path(__file__).resolve().parent / "rank_weights_pretrain.py"


def assert_ranks_identical(dump_dir: Path, world: int = 2) -> None:
    """Every rank's final weights (written by rank_weights_pretrain.py) equal rank 0's, element by element."""
    from safetensors.numpy import load_file

    import numpy as np

    ws = [load_file(str(Path(dump_dir) / f"rank{r}.safetensors")) for r in range(world)]
    for r, w in enumerate(ws[1:], 1):
        assert w.keys() == ws[0].keys()
        for k in w:
            np.testing.assert_array_equal(w[k], ws[0][k], err_msg=f"rank {r}: {k}")


@contextlib.contextmanager
def small_tmpfs(path: Path, size_kb: int):
    """Mount a `size_kb` tmpfs at `path` (a real full disk: ENOSPC from the kernel, not a hook); skips the
    test with the reason where mounting is not allowed (not root / no CAP_SYS_ADMIN / no mount binary)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                           capture_output=True, text=True, timeout=30)
    except OSError as e:
        pytest.skip(f"cannot run mount for a real ENOSPC test: {e}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a real ENOSPC test: {r.stderr.strip() or r.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def resize_tmpfs(path: Path, size_kb: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size_kb}k", str(path)], check=True, capture_output=True)
