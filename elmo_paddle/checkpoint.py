"""Self-describing model directories, written atomically and verified on load.

A model directory holds:
    config.json            {"format": 1, "bilm": {...}, "pretrain": {...}}   (JSON: data, not code)
    vocab.json             the token vocab (and, for a char-CNN token layer, its character vocab)
    weights.safetensors    every biLM weight, softmax weights included
    optimizer.safetensors  optimizer accumulators, keyed by structured parameter name (resume only)
    state.json             step, data position, RNG seeds, best dev perplexity, LR scheduler state
    manifest.json          sha256 and size of every other file: a truncated or tampered file is detected

Weights are safetensors and configs JSON because `paddle.load` unpickles: a crafted `.pdparams` runs code
on load.  Nothing here unpickles.  A directory is first written under a temporary name and renamed into
place only when complete, so a crash mid-save never leaves a half-written checkpoint.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from .errors import UserError

FORMAT = 1
MANIFEST = "manifest.json"


# --- fault injection for the reliability tests (tests/test_faults_*.py) --------------------------------
# ELMO_PADDLE_FAULT is a comma-separated list of KIND@WHERE, each optionally suffixed ":rankN" to fire on
# that fleet rank only (PADDLE_TRAINER_ID; 0 when not under paddle.distributed.launch).  Training-loop
# kinds (WHERE is a step S or an inclusive range S-T): nan (loss becomes NaN), nangrad (gradients become
# NaN while the loss stays finite), exit (os._exit(17) after the step), kill (SIGKILL self after the step).
# Save kinds (N: the N-th write_dir call of this process, 1-based, a directory name such as best or
# step-00000020, or "save" for every call; K: files written before the fault, default 1): killsave@N/K (SIGKILL mid-write), enospc@N/K (OSError ENOSPC
# mid-write), killrename@N (SIGKILL between moving the old directory aside and renaming the new one
# in), pausesave@SECONDS (sleep after the first file of every write, so a test can kill -9 from outside).
# slowdev@SECONDS: a task run's dev evaluation first sleeps that long (rank 0's slow evaluation, e.g. `:rank0`).


def fault_specs() -> list[tuple[str, str]]:
    rank = os.environ.get("PADDLE_TRAINER_ID", "0")
    out = []
    for item in os.environ.get("ELMO_PADDLE_FAULT", "").split(","):
        spec, _, only = item.strip().partition(":")
        if not spec or (only and only != f"rank{rank}"):
            continue
        kind, _, where = spec.partition("@")
        out.append((kind, where))
    return out


def fault_at(kind: str, step: int) -> bool:
    """True if a training-loop fault `kind` is set for `step` (an exact step or an S-T range)."""
    for k, where in fault_specs():
        if k != kind:
            continue
        lo, _, hi = where.partition("-")
        try:
            if int(lo) <= step <= int(hi or lo):
                return True
        except ValueError:
            continue
    return False


def fault_seconds(kind: str) -> float:
    """The seconds of a timing fault `kind` set for this process (e.g. slowdev@35), 0 if none."""
    return sum(float(where) for k, where in fault_specs() if k == kind)


def kill_self() -> None:
    """SIGKILL this process: no cleanup, no atexit, no flushing -- the same as `kill -9` from outside."""
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # not reached


_n_writes = 0


def _save_fault(name: str, phase: str, files_done: int = 0) -> None:
    for kind, where in fault_specs():
        n, _, k = where.partition("/")
        if kind == "pausesave" and phase == "file" and files_done == 1:
            time.sleep(float(where))
        if n not in ("save", str(_n_writes), name):
            continue
        if phase == "file" and files_done == int(k or 1):
            if kind == "killsave":
                kill_self()
            if kind == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if phase == "rename" and kind == "killrename":
            kill_self()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _save_tensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    try:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))
    except Exception as e:  # safetensors wraps an OS error (a full disk: ENOSPC) in its own SafetensorError
        m = re.search(r"os error (\d+)", str(e))
        if m is None:
            raise
        code = int(m.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None


def load_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise UserError(f"{path} is not a valid safetensors file ({e})") from None


def write_dir(final: str | os.PathLike, files: dict[str, Any], tensors: dict[str, dict[str, np.ndarray]]) -> Path:
    """Atomically create directory `final` with JSON `files` (name -> data) and safetensors `tensors`.

    Writes into a temporary sibling, fsyncs, writes the manifest last, then renames over `final`.
    Raises UserError (and leaves any previous `final` untouched) if the disk is full or unwritable.
    """
    global _n_writes
    _n_writes += 1
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    except OSError as e:
        raise UserError(f"cannot write checkpoint in {final.parent}: {e.strerror or e}") from None
    old = None
    try:
        done = 0
        for name, data in files.items():
            (tmp / name).write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
            done += 1
            _save_fault(final.name, "file", done)
        for name, t in tensors.items():
            _save_tensors(t, tmp / name)
            done += 1
            _save_fault(final.name, "file", done)
        manifest = {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size}
                    for p in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "files": manifest}, indent=1))
        for p in tmp.iterdir():
            _fsync_file(p)
        if final.exists():  # replace: move the old one aside first, drop it only after the rename
            # (a crash between the two renames leaves it as .old-NAME-*: recover_output_dir puts it back)
            old = final.with_name(f".old-{final.name}-{os.getpid()}-{time.time_ns()}")
            os.rename(final, old)
            _save_fault(final.name, "rename")
        os.rename(tmp, final)
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final
    except OSError as e:
        _undo_write(tmp, old, final)
        raise UserError(f"cannot write checkpoint {final}: {e.strerror or e}; the previous checkpoint is kept") from None
    except BaseException:
        _undo_write(tmp, old, final)
        raise


def _fsync_dir(d: Path) -> None:
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _undo_write(tmp: Path, old: Path | None, final: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    if old is not None and old.exists() and not final.exists():
        try:  # the old directory was moved aside but the new one never arrived: put the old one back
            os.rename(old, final)
        except OSError:
            pass  # left as .old-*: recover_output_dir restores it on the next start


def verify_dir(path: str | os.PathLike) -> dict[str, Any]:
    """Check a model directory against its manifest; return the manifest.  UserError names what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"model directory {path} does not exist")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise UserError(f"{path} is not a complete model directory: {MANIFEST} is missing")
    try:
        manifest = json.loads(mpath.read_text())
    except ValueError:
        raise UserError(f"{mpath} is corrupt") from None
    for name, meta in manifest.get("files", {}).items():
        f = path / name
        if not f.is_file():
            raise UserError(f"model directory {path} is missing {name}")
        if f.stat().st_size != meta["bytes"] or _sha256(f) != meta["sha256"]:
            raise UserError(f"{f} does not match its checksum in {MANIFEST}: truncated or modified")
    return manifest


def read_json(path: str | os.PathLike, name: str) -> Any:
    f = Path(path) / name
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"model directory {path} is missing {name}") from None
    except ValueError as e:
        raise UserError(f"{f} is not valid JSON ({e})") from None


def model_tensors(model: paddle.nn.Layer) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.state_dict().items()}


def tensors_sha256(arrays: dict[str, np.ndarray]) -> str:
    """One digest of named arrays (names, dtypes, shapes and bytes, in name order): equal digests mean
    bit-identical weights, whether the arrays come from a live model or from a saved weights file."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_model_tensors(model: paddle.nn.Layer, path: str | os.PathLike, name: str = "weights.safetensors",
                       prefix: str = "") -> None:
    """Load safetensors weights into `model`; shape or name mismatches are a clear error."""
    arrays = load_tensors(Path(path) / name)
    own = model.state_dict()
    missing = [k for k in own if prefix + k not in arrays]
    if missing:
        raise UserError(f"{Path(path) / name} lacks weights {missing[:3]}...: it was saved by a different model config")
    adapt = getattr(model, "adapt_loaded_array", None)  # lets a model read older weight layouts
    loaded = {}
    for k, v in own.items():
        a = arrays[prefix + k]
        if adapt is not None:
            a = adapt(k, a, list(v.shape))
        if list(a.shape) != list(v.shape):
            raise UserError(f"weight {k}: checkpoint shape {list(a.shape)} != model shape {list(v.shape)} "
                            "(config or vocab does not match the checkpoint)")
        loaded[k] = paddle.to_tensor(a)
    model.set_state_dict(loaded)


def set_weights(model: paddle.nn.Layer, arrays: dict[str, np.ndarray]) -> None:
    """Load the weights a task checkpoint holds (its trainable ones) into `model`, names already checked.

    Frozen parameters it leaves out (the unused layer weights of a one-layer ELMo mix) keep their values;
    passing them through keeps paddle from warning "Skip loading" about each on every load.
    """
    kept = {k: v for k, v in model.state_dict().items() if k not in arrays}
    model.set_state_dict({**kept, **{k: paddle.to_tensor(a) for k, a in arrays.items()}})


def optimizer_tensors(opt: paddle.optimizer.Optimizer, model: paddle.nn.Layer) -> tuple[dict[str, np.ndarray], dict]:
    """Optimizer state keyed by structured parameter names (paddle's own names depend on creation order)."""
    to_struct = {p.name: n for n, p in model.named_parameters()}
    arrays, extra = {}, {}
    for k, v in opt.state_dict().items():
        if isinstance(v, paddle.Tensor):
            for pn in sorted(to_struct, key=len, reverse=True):
                if k.startswith(pn + "_"):
                    arrays[to_struct[pn] + "::" + k[len(pn) + 1:]] = v.numpy()
                    break
            else:
                arrays["::" + k] = v.numpy()
        else:
            extra[k] = v
    return arrays, extra


def load_optimizer(opt: paddle.optimizer.Optimizer, model: paddle.nn.Layer, path: Path, extra: dict) -> None:
    to_name = {n: p.name for n, p in model.named_parameters()}
    shapes = {n: list(p.shape) for n, p in model.named_parameters()}
    adapt = getattr(model, "adapt_loaded_array", None)
    state: dict[str, Any] = dict(extra)
    for k, v in load_tensors(path / "optimizer.safetensors").items():
        struct, _, suffix = k.partition("::")
        if struct and struct not in to_name:
            raise UserError(f"optimizer state in {path} is for parameter {struct}, which this model lacks")
        if struct and adapt is not None and v.ndim == len(shapes[struct]):
            v = adapt(struct, v, shapes[struct])  # accumulators have their parameter's layout
        state[(to_name[struct] + "_" + suffix) if struct else suffix] = paddle.to_tensor(v)
    opt.set_state_dict(state)


_STEP_DIR = re.compile(r"^step-(\d+)$")


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete step checkpoints under root/checkpoints, oldest first (temporary dirs are ignored)."""
    d = Path(root) / "checkpoints"
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / MANIFEST).is_file()]
    return [p for _, p in sorted(found)]


def checkpoint_step(path: str | os.PathLike) -> int:
    """The training step of a `step-N` checkpoint folder, from its name."""
    m = _STEP_DIR.match(Path(path).name)
    if m is None:
        raise ValueError(f"{path} is not a step-N checkpoint folder")
    return int(m.group(1))


def is_valid(path: str | os.PathLike) -> bool:
    try:
        verify_dir(path)
        return True
    except UserError:
        return False


def latest_valid_checkpoint(root: str | os.PathLike) -> tuple[Path | None, list[Path]]:
    """The newest step checkpoint that verifies against its manifest, and the newer ones that do not."""
    bad = []
    for p in reversed(list_checkpoints(root)):
        if is_valid(p):
            return p, bad
        bad.append(p)
    return None, bad


def prune_checkpoints(root: str | os.PathLike, keep: int) -> None:
    """Keep the `keep` newest step checkpoints; remove leftovers of interrupted writes.

    Only checkpoints older than the `keep`-th newest one that *verifies* are deleted, so a corrupt or
    truncated newer checkpoint can never cause the last good one to be pruned (keep <= 0 keeps all).
    """
    if keep > 0:
        valid = 0
        ckpts = list_checkpoints(root)
        for i in range(len(ckpts) - 1, -1, -1):
            if is_valid(ckpts[i]):
                valid += 1
                if valid == keep:
                    for p in ckpts[:i]:
                        shutil.rmtree(p, ignore_errors=True)
                    break
    d = Path(root) / "checkpoints"
    if d.is_dir():
        for p in d.iterdir():
            if p.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(p, ignore_errors=True)


def recover_output_dir(root: str | os.PathLike) -> list[str]:
    """Repair what a crash can leave in an output dir; returns notes on what was done.

    A crash between the two renames of a replace leaves `best/` (or `final/`, or a step checkpoint)
    missing and the complete previous copy as `.old-NAME-*`: it is renamed back.  Half-written
    `.tmp-*` directories and superseded `.old-*` ones are removed.
    """
    notes = []
    for d in (Path(root), Path(root) / "checkpoints"):
        if not d.is_dir():
            continue
        olds = sorted((p for p in d.iterdir() if p.name.startswith(".old-") and p.is_dir()),
                      key=lambda p: p.stat().st_mtime, reverse=True)
        for p in olds:
            name = p.name[len(".old-"):].rsplit("-", 2)[0]
            target = d / name
            if name and not target.exists() and is_valid(p):
                os.rename(p, target)
                notes.append(f"restored {target} from {p.name} (a save was interrupted)")
        for p in d.iterdir():
            if p.is_dir() and p.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(p, ignore_errors=True)
                notes.append(f"removed {p.name} (left by an interrupted save)")
    return notes
