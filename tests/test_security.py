"""Model directories are data, not code: nothing in them is unpickled, and tampering is detected.

`paddle.load` / `pickle.load` would run a crafted `__reduce__` payload.  `load_bilm` reads only JSON and
safetensors, verified against manifest.json first.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest

from elmo_paddle import checkpoint as ckpt
from elmo_paddle.errors import UserError
from elmo_paddle.model_io import load_bilm

REPO = Path(__file__).resolve().parent.parent


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"weight": _Payload(marker)}, protocol=2)


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    return d


def test_pickle_files_in_a_model_dir_are_never_loaded(model_copy, tmp_path):
    marker = tmp_path / "PWNED"
    for name in ("model.pdparams", "bilm.pdparams", "optimizer.pdopt", "weights.pkl"):
        (model_copy / name).write_bytes(_evil_pickle(marker))
    load_bilm(model_copy)  # loads fine: the extra files are not part of the model
    assert not marker.exists()


def test_weights_replaced_by_pickle_is_checksum_error_and_payload_never_runs(model_copy, tmp_path):
    marker = tmp_path / "PWNED"
    (model_copy / "weights.safetensors").write_bytes(_evil_pickle(marker))
    with pytest.raises(UserError, match="checksum"):
        load_bilm(model_copy)
    assert not marker.exists()
    # an attacker who also rewrites the manifest: still not unpickled, still a UserError
    man = json.loads((model_copy / ckpt.MANIFEST).read_text())
    data = (model_copy / "weights.safetensors").read_bytes()
    import hashlib

    man["files"]["weights.safetensors"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (model_copy / ckpt.MANIFEST).write_text(json.dumps(man))
    with pytest.raises(UserError, match="not a valid safetensors file"):
        load_bilm(model_copy)
    assert not marker.exists()
    with pytest.raises(UserError):
        load_bilm(model_copy, verify=False)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "config"])
def test_truncated_or_tampered_files_fail_the_checksum(model_copy, damage):
    f = model_copy / ("config.json" if damage == "config" else "weights.safetensors")
    data = bytearray(f.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data.replace(b'"num_layers": 2', b'"num_layers": 3')
    f.write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum"):
        load_bilm(model_copy)


def test_missing_manifest_is_user_error(model_copy):
    (model_copy / ckpt.MANIFEST).unlink()
    (model_copy / "config.json").unlink()
    with pytest.raises(UserError):
        load_bilm(model_copy)


def test_codebase_never_unpickles():
    """No paddle.load / pickle.load(s) / torch.load / np.load(allow_pickle=True) in shipped code."""
    bad = re.compile(r"paddle\.load\(|pickle\.loads?\(|torch\.load\(|allow_pickle\s*=\s*True|import pickle|"
                     r"jsonpickle|dill\.|joblib\.load")
    hits = []
    for d in ("elmo_paddle", "tasks", "bench"):
        for f in (REPO / d).rglob("*.py"):
            for i, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if bad.search(line) and not line.lstrip().startswith("#"):
                    hits.append(f"{f.relative_to(REPO)}:{i}: {line.strip()}")
    assert not hits, hits
