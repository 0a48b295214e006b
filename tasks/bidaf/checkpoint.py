"""A trained BiDAF folder: model.safetensors (weights), config.json (sizes + run config), vocab.json.

No pickle anywhere: weights go through safetensors, everything else is JSON.  The frozen biLM's weights
are not copied in; config.json names the ELMo model folder and it is loaded from there.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import paddle

from elmo_paddle.errors import UserError
from tasks.common.run import build_elmo as _build_elmo

from elmo_paddle.vocab import TokenIds, token_ids_from_json

from .model import BiDAF, ModelSizes

WEIGHTS, CONFIG, VOCAB = "model.safetensors", "config.json", "vocab.json"


def build_elmo(cfg: dict[str, Any]) -> Any:
    """The ELMo layer a run config describes (1 mix, or 2 with elmo_at_modeling): the same in training and
    when a saved model is loaded (older configs may lack the elmo_* keys: their defaults apply)."""
    return _build_elmo(str(cfg["elmo_model"]), mixes=2 if cfg.get("elmo_at_modeling") else 1,
                       gamma=float(cfg.get("elmo_gamma", 1.0)), dropout=float(cfg.get("elmo_dropout", 0.5)),
                       l2=float(cfg.get("elmo_l2", 0.0)), char_unit=True)  # BiDAF's tokens are characters


def build_reader(cfg: dict[str, Any], char_vocab: int, word_vocab: int) -> BiDAF:
    """A fresh network for a run config (the `BidafConfig` fields), its ELMo layer built first."""
    elmo = build_elmo(cfg) if cfg.get("elmo_model") else None
    sizes = ModelSizes(char_vocab, word_vocab, cfg["char_dim"], cfg["word_dim"], cfg["hidden"], cfg["dropout"],
                       int(elmo.output_dim) if elmo is not None else 0, bool(cfg["elmo_at_modeling"] and elmo))
    return BiDAF(sizes, elmo)


def trainable_state(model: BiDAF) -> dict[str, paddle.Tensor]:
    """State dict without the frozen biLM (ELMo parameters that do not train)."""
    frozen = set()
    if model.elmo is not None:
        frozen = {f"elmo.{k}" for k, v in model.elmo.state_dict().items() if v.stop_gradient}
    return {k: v.contiguous() if hasattr(v, "contiguous") else v
            for k, v in model.state_dict().items() if k not in frozen}


def save_model(model: BiDAF, out_dir: str | Path, chars: TokenIds, words: TokenIds, config: dict[str, Any]) -> None:
    """Write the three files of a model folder (overwriting)."""
    from safetensors.paddle import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(model), str(out / WEIGHTS))
    (out / CONFIG).write_text(json.dumps({"sizes": dataclasses.asdict(model.sizes), "config": config},
                                         ensure_ascii=False, indent=1), encoding="utf-8")
    (out / VOCAB).write_text(json.dumps({"chars": chars.itos, "words": words.itos}, ensure_ascii=False),
                             encoding="utf-8")


def _read(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path} is missing: is {path.parent} a BiDAF model folder written by tasks.bidaf.finetune?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None


def load_model(model_dir: str | Path) -> tuple[BiDAF, TokenIds, TokenIds, dict[str, Any]]:
    """Rebuild the network from a model folder; returns (model in eval mode, chars, words, run config)."""
    from safetensors.paddle import load_file

    d = Path(model_dir)
    if not d.is_dir():
        raise UserError(f"model folder {d} does not exist")
    cfg, voc = _read(d / CONFIG), _read(d / VOCAB)
    try:
        sizes = ModelSizes(**cfg["sizes"])
        chars = token_ids_from_json(voc["chars"], str(d / VOCAB))
        words = token_ids_from_json(voc["words"], str(d / VOCAB))
    except (KeyError, TypeError) as e:
        raise UserError(f"{d}: config.json/vocab.json do not describe a BiDAF model ({e})") from None
    run_cfg = cfg.get("config", {})
    model = BiDAF(sizes, build_elmo(run_cfg) if sizes.elmo_dim else None)
    if not (d / WEIGHTS).is_file():
        raise UserError(f"{d / WEIGHTS} is missing")
    try:
        state = load_file(str(d / WEIGHTS))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise UserError(f"{d / WEIGHTS} is not a readable safetensors file ({e})") from None
    model.set_state_dict(state)
    want = set(trainable_state(model))
    if want - set(state):
        raise UserError(f"{d / WEIGHTS} lacks weights {sorted(want - set(state))[:3]}...: wrong model folder?")
    model.eval()
    return model, chars, words, run_cfg
