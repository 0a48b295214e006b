"""A trained BiDAF folder: model.safetensors (weights), config.json (sizes + run config), vocab.json.

No pickle anywhere: weights go through safetensors, everything else is JSON.  The folder is written
atomically with a sha256 manifest (`elmo_paddle.checkpoint.write_dir`) and verified on load: a flipped byte
or a truncated file is a one-line error naming the file.  The frozen biLM's weights are not copied in;
config.json names the ELMo model as `tasks.common.elmo_ref` records it, and it is loaded from there.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import paddle

from elmo_paddle import checkpoint as ckpt
from elmo_paddle.errors import UserError
from elmo_paddle.model_io import shipped_or_path
from tasks.common import elmo_ref
from tasks.common.run import build_elmo as _build_elmo

from elmo_paddle.vocab import TokenIds, token_ids_from_json

from .model import BiDAF, ModelSizes

WEIGHTS, CONFIG, VOCAB = "model.safetensors", "config.json", "vocab.json"


def build_elmo(cfg: dict[str, Any]) -> Any:
    """The ELMo layer a run config describes (1 mix, or 2 with elmo_at_modeling; one layer alone with
    elmo_only_layer): the same in training and when a saved model is loaded (older configs may lack the
    elmo_* keys: their defaults apply)."""
    return _build_elmo(str(cfg["elmo_model"]), mixes=2 if cfg.get("elmo_at_modeling") else 1,
                       gamma=float(cfg.get("elmo_gamma", 1.0)), dropout=float(cfg.get("elmo_dropout", 0.5)),
                       l2=float(cfg.get("elmo_l2", 0.0)), char_unit=True,  # BiDAF's tokens are characters
                       only_layer=cfg.get("elmo_only_layer"))


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
    """Write the three files of a model folder and its manifest, atomically (replacing an older one)."""
    out = Path(out_dir)
    ckpt.write_dir(out, {CONFIG: {"sizes": dataclasses.asdict(model.sizes), "config": elmo_ref.record(config, out)},
                         VOCAB: {"chars": chars.itos, "words": words.itos}},
                   {WEIGHTS: {k: v.numpy() for k, v in trainable_state(model).items()}})


def load_weights(model: BiDAF, model_dir: str | Path) -> None:
    """The trainable weights of a verified model folder into `model` (its frozen biLM stays as it is)."""
    d = Path(model_dir)
    state = ckpt.load_tensors(d / WEIGHTS)
    want = set(trainable_state(model))
    if want - set(state):
        raise UserError(f"{d / WEIGHTS} lacks weights {sorted(want - set(state))[:3]}...: wrong model folder?")
    ckpt.set_weights(model, state)


def load_model(model_dir: str | Path) -> tuple[BiDAF, TokenIds, TokenIds, dict[str, Any]]:
    """Rebuild the network from a verified model folder; returns (model in eval mode, chars, words, run config)."""
    d = shipped_or_path(model_dir)  # a path, or a shipped model's name
    if not d.is_dir():
        raise UserError(f"model folder {d} does not exist")
    for name in (CONFIG, VOCAB, WEIGHTS):
        if not (d / name).is_file():
            raise UserError(f"{d / name} is missing: is {d} a BiDAF model folder written by tasks.bidaf.finetune?")
    ckpt.verify_dir(d)
    cfg, voc = ckpt.read_json(d, CONFIG), ckpt.read_json(d, VOCAB)
    try:
        sizes = ModelSizes(**cfg["sizes"])
        chars = token_ids_from_json(voc["chars"], str(d / VOCAB))
        words = token_ids_from_json(voc["words"], str(d / VOCAB))
    except (KeyError, TypeError) as e:
        raise UserError(f"{d}: config.json/vocab.json do not describe a BiDAF model ({e})") from None
    run_cfg = cfg.get("config", {})
    if sizes.elmo_dim:
        run_cfg = {**run_cfg, "elmo_model": elmo_ref.resolve(run_cfg, d)}
    model = BiDAF(sizes, build_elmo(run_cfg) if sizes.elmo_dim else None)
    load_weights(model, d)
    model.eval()
    return model, chars, words, run_cfg
