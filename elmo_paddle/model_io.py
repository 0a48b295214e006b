"""Model directories on disk: what one holds, finding one, loading it back as a BiLM.

Apart from the training loop so that users of a trained model (Elmo, the embedder, perplexity, the
tasks) do not import the trainer, and the trainer's writer and the readers share one definition.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt
from .bilm import BiLM, BiLMConfig
from .config import from_dict, to_dict
from .errors import UserError
from .pretrain_config import PretrainConfig
from .vocab import Vocab


def model_dir_files(cfg: PretrainConfig, bilm_cfg: BiLMConfig, vocab: Vocab) -> dict[str, Any]:
    """The JSON files of a model directory (config.json, vocab.json): what `load_bilm` reads back."""
    return {"config.json": {"format": ckpt.FORMAT, "bilm": to_dict(bilm_cfg), "pretrain": to_dict(cfg)},
            "vocab.json": vocab.to_json()}


def load_bilm(model_dir: str | os.PathLike, verify: bool = True) -> tuple[BiLM, Vocab, dict]:
    """Load a model directory (verified against its manifest) -> (BiLM in eval mode, vocab, config dict)."""
    model_dir = resolve_model_dir(model_dir)
    if verify:
        ckpt.verify_dir(model_dir)
    conf = ckpt.read_json(model_dir, "config.json")
    if not isinstance(conf, dict) or "bilm" not in conf:
        raise UserError(f"{model_dir}/config.json has no 'bilm' section: not an elmo_paddle model directory")
    bilm_cfg = from_dict(BiLMConfig, conf["bilm"], f"{model_dir}/config.json:bilm")
    vocab = Vocab.load(Path(model_dir) / "vocab.json")
    if len(vocab) != bilm_cfg.vocab_size:
        raise UserError(f"{model_dir}: vocab has {len(vocab)} tokens but the config says {bilm_cfg.vocab_size}")
    if bilm_cfg.token_encoder == "char_cnn" and len(vocab.chars or ()) != bilm_cfg.char_vocab_size:
        raise UserError(f"{model_dir}: the char-CNN model needs {bilm_cfg.char_vocab_size} characters in "
                        f"vocab.json, found {len(vocab.chars or ())}")
    bilm = BiLM(bilm_cfg)
    ckpt.load_model_tensors(bilm, model_dir)
    attach_char_table(bilm, vocab)
    bilm.eval()
    return bilm, vocab, conf


def attach_char_table(bilm: BiLM, vocab: Vocab) -> None:
    """A char-CNN biLM gets the spelling of every vocab token, to read token ids (LM batches, perplexity)."""
    if bilm.cfg.token_encoder == "char_cnn":
        bilm.set_char_table(vocab.char_table(bilm.cfg.max_chars_per_token))


# the models this project ships (tracked in git, each with a MODEL_CARD.md), found by name: pretrained/ in a
# checkout; after `pip install .` the same folders are installed as the package data elmo_paddle/pretrained/
_HERE = Path(__file__).resolve().parent
PRETRAINED_DIR = next((d for d in (_HERE.parent / "pretrained", _HERE / "pretrained") if d.is_dir()),
                      _HERE.parent / "pretrained")


def shipped_models() -> list[str]:
    """Names of the shipped models (`pretrained/<name>/` folders with a manifest)."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(d.name for d in PRETRAINED_DIR.iterdir() if (d / ckpt.MANIFEST).is_file())


def shipped_or_path(path: str | os.PathLike) -> Path:
    """`path` itself, or the shipped model of that name (`lac-pd1998` -> `pretrained/lac-pd1998/`) when no
    such path exists here: how every command that loads a model takes a shipped one by name."""
    p = Path(path)
    if not p.exists() and len(p.parts) == 1 and (PRETRAINED_DIR / p).is_dir():
        return PRETRAINED_DIR / p
    return p


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """Accept a model directory, a pretraining output dir (then its best/, else final/), or the name of a
    shipped model (`zh-char-elmo` -> `pretrained/zh-char-elmo/`) when no such path exists here."""
    p = shipped_or_path(path)
    if (p / "config.json").is_file() or (p / ckpt.MANIFEST).is_file():
        return p
    for sub in ("best", "final"):
        if (p / sub / ckpt.MANIFEST).is_file():
            return p / sub
    if not p.exists():
        names = ", ".join(shipped_models()) or "none"
        raise UserError(f"model directory {p} does not exist (shipped models, usable by name: {names})")
    raise UserError(f"{p} is not a model directory (no config.json/manifest.json, no best/ or final/ inside)")
