"""A trained tagger on disk: model.safetensors + config.json + vocab.json + tags.json (no pickle).

Written atomically with a sha256 manifest (`elmo_paddle.checkpoint.write_dir`, as biLM folders are) and
verified on load, so a flipped byte or a truncated file is a one-line error naming the file, not a tagger
that silently tags differently.  A +ELMo tagger names its biLM as `tasks.common.elmo_ref` records it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from elmo_paddle import checkpoint as ckpt
from elmo_paddle.errors import UserError
from elmo_paddle.model_io import shipped_or_path
from elmo_paddle.vocab import TokenIds
from tasks.common import elmo_ref
from tasks.common.run import build_elmo

from .batching import char_vocab_from_json
from .model import LacTagger

FILES = ("model.safetensors", "config.json", "vocab.json", "tags.json")


def build_tagger(cfg: dict[str, Any], vocab_size: int, num_tags: int, elmo=None) -> LacTagger:
    """The network described by a config dict (the `LacConfig` fields)."""
    if elmo is None and cfg.get("elmo_model"):
        # one mix feeds the BiGRU, a second one its output (elmo_at_output)
        elmo = build_elmo(cfg["elmo_model"], mixes=2 if cfg["elmo_at_output"] else 1, gamma=cfg["elmo_gamma"],
                          dropout=cfg["elmo_dropout"], l2=cfg.get("elmo_l2", 0.0))
    return LacTagger(vocab_size, num_tags, emb_dim=cfg["emb_dim"], hidden_dim=cfg["hidden_dim"],
                     num_layers=cfg["num_layers"], dropout=cfg["dropout"], crf_lr=cfg["crf_lr"],
                     elmo=elmo, elmo_at_output=cfg["elmo_at_output"])


def save_model(out_dir: Path, model: LacTagger, cfg: dict[str, Any], vocab: TokenIds, tags: list[str]) -> None:
    """Write the four files and the manifest, atomically (frozen biLM weights are not copied)."""
    weights = {k: v.detach().numpy() for k, v in model.trainable_state().items()}
    ckpt.write_dir(out_dir, {"config.json": elmo_ref.record(cfg, out_dir), "vocab.json": vocab.itos,
                             "tags.json": tags}, {"model.safetensors": weights})


def load_model(model_dir: str | Path, elmo=None) -> tuple[LacTagger, dict[str, Any], TokenIds, list[str]]:
    """Load a saved tagger (eval mode); a missing, incomplete or modified dir is a UserError naming the file."""
    d = shipped_or_path(model_dir)  # a path, or a shipped model's name
    missing = [f for f in FILES if not (d / f).is_file()]
    if missing:
        raise UserError(f"{d} is not a LAC model dir (missing {', '.join(missing)}); "
                        "train one with python -m tasks.lac.finetune (it saves runs/lac/<run>/best)")
    ckpt.verify_dir(d)
    cfg = ckpt.read_json(d, "config.json")
    vocab = char_vocab_from_json(ckpt.read_json(d, "vocab.json"), str(d / "vocab.json"))
    tags = ckpt.read_json(d, "tags.json")
    weights = ckpt.load_tensors(d / "model.safetensors")
    if elmo is None and cfg.get("elmo_model"):
        cfg = {**cfg, "elmo_model": elmo_ref.resolve(cfg, d)}
    model = build_tagger(cfg, len(vocab), len(tags), elmo)
    state = model.state_dict()
    unknown = sorted(set(weights) - set(state))
    if unknown:
        raise UserError(f"{d}/model.safetensors has weights this network lacks: {', '.join(unknown[:5])}")
    absent = sorted(k for k in model.trainable_state() if k not in weights)
    if absent:
        raise UserError(f"{d}/model.safetensors lacks weights: {', '.join(absent[:5])}")
    ckpt.set_weights(model, weights)
    model.eval()
    return model, cfg, vocab, tags
