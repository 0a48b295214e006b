"""How a task model names the frozen biLM it was trained with.

A +ELMo task model does not copy the biLM's weights (17 MB and more); its config names the biLM.  A name
typed at training time (`models/elmo/best`) is relative to wherever the run was started, so a saved model used
from another folder, or moved, could not find it (a bug report: "models/elmo_demo/best does not exist").  And
a biLM folder whose weights changed (a new version shipped under the same name) would load silently and
give the task model features it was never trained on.  So a task run records:

- `elmo_model`: a shipped model's name (`zh-char-elmo`), else the biLM folder's absolute path;
- `elmo_model_relative`: the biLM folder relative to the task model's folder (found again when both move
  together, e.g. a project folder copied elsewhere);
- `elmo_weights_sha256`: the biLM weights' checksum from its manifest: a different biLM is a one-line error.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from elmo_paddle import checkpoint as ckpt
from elmo_paddle.errors import UserError
from elmo_paddle.model_io import PRETRAINED_DIR, resolve_model_dir

WEIGHTS = "weights.safetensors"


def run_config(saved: Any) -> dict[str, Any] | None:
    """The run config inside a task model's config.json (the same dict object, not a copy): LAC saves it as
    the whole file, BiDAF nests it under "config" beside the network's "sizes".  None if it is not a dict."""
    if not isinstance(saved, dict):
        return None
    inner = saved.get("config", saved) if "sizes" in saved else saved
    return inner if isinstance(inner, dict) else None


def weights_sha256(bilm_dir: Path) -> str:
    """The biLM weights' sha256 as its manifest records it (the folder is verified first)."""
    files = ckpt.verify_dir(bilm_dir).get("files", {})
    if WEIGHTS not in files:
        raise UserError(f"{bilm_dir} is not a biLM model folder (no {WEIGHTS} in its manifest)")
    return files[WEIGHTS]["sha256"]


def canonical(ref: str) -> str:
    """A shipped model's name as given; any other biLM folder as its absolute path (best/ of an output dir)."""
    d = resolve_model_dir(ref)
    if d.resolve() == (PRETRAINED_DIR / Path(ref).name).resolve():
        return Path(ref).name
    return str(d.resolve())


def record(cfg: dict[str, Any], task_dir: Path) -> dict[str, Any]:
    """`cfg` with the three keys above filled in for a task model saved to `task_dir` (no-op without ELMo)."""
    if not cfg.get("elmo_model"):
        return cfg
    bilm_dir = resolve_model_dir(cfg["elmo_model"]).resolve()
    return {**cfg, "elmo_model": canonical(cfg["elmo_model"]),
            "elmo_model_relative": os.path.relpath(bilm_dir, Path(task_dir).resolve()),
            "elmo_weights_sha256": weights_sha256(bilm_dir)}


def resolve(cfg: dict[str, Any], task_dir: Path) -> str:
    """The biLM folder a saved task model was trained with: its name or absolute path, else the path
    relative to `task_dir`; the weights must be the recorded ones.  Models saved before these keys existed
    fall back to `elmo_model` as written."""
    tried, mismatched = [], []
    candidates = [str(cfg["elmo_model"])]
    if cfg.get("elmo_model_relative"):
        candidates.append(str(Path(task_dir) / cfg["elmo_model_relative"]))
    for c in candidates:
        try:
            d = resolve_model_dir(c)
        except UserError:
            tried.append(c)
            continue
        want = cfg.get("elmo_weights_sha256")
        if want is None or weights_sha256(d) == want:
            return str(d)
        mismatched.append(str(d))
    if mismatched:
        raise UserError(f"{task_dir}: the biLM at {mismatched[0]} is not the one this model was trained with "
                        "(its weights' sha256 differs from config.json's elmo_weights_sha256)")
    raise UserError(f"{task_dir}: cannot find the biLM this model was trained with (tried {', '.join(tried)})")
