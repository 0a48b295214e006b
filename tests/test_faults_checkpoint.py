"""A checkpoint is never lost: pruning, replacing best/, and recovering from a crash between renames."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from elmo_paddle import checkpoint as ckpt
from elmo_paddle.errors import UserError


def _write(d: Path, step: int) -> Path:
    return ckpt.write_dir(d, {"state.json": {"step": step}},
                          {"weights.safetensors": {"w": np.full((4, 4), step, "float32")}})


def _step(root: Path, step: int) -> Path:
    return _write(root / "checkpoints" / f"step-{step:08d}", step)


def _truncate(p: Path) -> None:
    f = p / "weights.safetensors"
    f.write_bytes(f.read_bytes()[:-7])


def test_prune_keeps_newest_and_never_the_only_good_one(tmp_path):
    for s in (10, 20, 30):
        _step(tmp_path, s)
    ckpt.prune_checkpoints(tmp_path, 2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000020", "step-00000030"]
    # the two newest are corrupt (manifest present, data truncated): step 20 is the only good one
    _step(tmp_path, 40)
    for s in (30, 40):
        _truncate(tmp_path / "checkpoints" / f"step-{s:08d}")
    ckpt.prune_checkpoints(tmp_path, 1)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert "step-00000020" in names
    ckpt.verify_dir(tmp_path / "checkpoints" / "step-00000020")
    last, bad = ckpt.latest_valid_checkpoint(tmp_path)
    assert last.name == "step-00000020" and [p.name for p in bad] == ["step-00000040", "step-00000030"]
    ckpt.prune_checkpoints(tmp_path, 0)  # keep <= 0: keep everything
    assert len(ckpt.list_checkpoints(tmp_path)) == 3


def test_failed_rename_into_place_restores_the_old_best(tmp_path, monkeypatch):
    best = _write(tmp_path / "best", 1)
    real = os.rename
    calls = []

    def flaky(a, b):
        calls.append((a, b))
        if len(calls) == 2:  # 1: old best/ -> .old-best-*, 2: new -> best/  (fails: e.g. EIO, ENOSPC)
            raise OSError(errno.EIO, "I/O error")
        return real(a, b)

    monkeypatch.setattr(ckpt.os, "rename", flaky)
    with pytest.raises(UserError, match="previous checkpoint is kept"):
        _write(best, 2)
    monkeypatch.undo()
    ckpt.verify_dir(best)
    assert ckpt.read_json(best, "state.json")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_recover_after_kill_between_the_two_renames(tmp_path):
    best = _write(tmp_path / "best", 1)
    # what a SIGKILL between the renames leaves: best/ moved aside, the new copy still temporary
    os.rename(best, tmp_path / ".old-best-4242-1234567890")
    (tmp_path / ".tmp-best-abc").mkdir()
    (tmp_path / ".tmp-best-abc" / "config.json").write_text("{")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".tmp-step-00000005-x").mkdir()
    notes = ckpt.recover_output_dir(tmp_path)
    assert any("restored" in n for n in notes), notes
    ckpt.verify_dir(best)
    assert ckpt.read_json(best, "state.json")["step"] == 1
    left = [p.name for d in (tmp_path, tmp_path / "checkpoints") for p in d.iterdir() if p.name.startswith(".")]
    assert left == []


def test_recover_ignores_a_corrupt_old_copy_and_keeps_the_current_best(tmp_path):
    best = _write(tmp_path / "best", 2)
    old = _write(tmp_path / "x", 1)
    os.rename(old, tmp_path / ".old-best-1-2")
    ckpt.recover_output_dir(tmp_path)  # best/ exists: the stale .old copy is just removed
    assert ckpt.read_json(best, "state.json")["step"] == 2 and not list(tmp_path.glob(".old-*"))
    # best/ missing and the only .old copy corrupt: nothing is restored from it
    os.rename(best, tmp_path / ".old-best-3-4")
    _truncate(tmp_path / ".old-best-3-4")
    ckpt.recover_output_dir(tmp_path)
    assert not best.exists()


def test_write_dir_under_a_regular_file_is_user_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="cannot write checkpoint in .*Not a directory"):
        _write(tmp_path / "f" / "checkpoints" / "step-00000001", 1)


def test_enospc_mid_write_leaves_no_temp_dir(tmp_path, monkeypatch):
    _write(tmp_path / "best", 1)
    monkeypatch.setenv("ELMO_PADDLE_FAULT", "enospc@save/1")
    with pytest.raises(UserError, match="No space left on device.*previous checkpoint is kept"):
        _write(tmp_path / "best", 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    assert ckpt.read_json(tmp_path / "best", "state.json")["step"] == 1
    ckpt.verify_dir(tmp_path / "best")
