"""A trained tagger on disk: model.safetensors + config.json + vocab.json + tags.json (no pickle)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from elmo_paddle.errors import UserError
from tasks.common.run import build_elmo

from elmo_paddle.vocab import TokenIds

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
    """Write the four files; weights via safetensors (frozen biLM weights are not copied)."""
    from safetensors.paddle import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.trainable_state().items()},
              str(out_dir / "model.safetensors"))
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=1, ensure_ascii=False), encoding="utf-8")
    (out_dir / "vocab.json").write_text(json.dumps(vocab.itos, ensure_ascii=False), encoding="utf-8")
    (out_dir / "tags.json").write_text(json.dumps(tags, ensure_ascii=False), encoding="utf-8")


def load_model(model_dir: str | Path, elmo=None) -> tuple[LacTagger, dict[str, Any], TokenIds, list[str]]:
    """Load a saved tagger (eval mode); a missing/incomplete dir is a UserError naming what is missing."""
    from safetensors.paddle import load_file

    d = Path(model_dir)
    missing = [f for f in FILES if not (d / f).is_file()]
    if missing:
        raise UserError(f"{d} is not a LAC model dir (missing {', '.join(missing)}); "
                        "train one with python -m tasks.lac.finetune (it saves runs/lac/<run>/best)")
    try:
        cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
        vocab = char_vocab_from_json(json.loads((d / "vocab.json").read_text(encoding="utf-8")), str(d / "vocab.json"))
        tags = json.loads((d / "tags.json").read_text(encoding="utf-8"))
        weights = load_file(str(d / "model.safetensors"))
    except (ValueError, OSError) as e:
        raise UserError(f"{d}: cannot read the model files ({e})") from None
    model = build_tagger(cfg, len(vocab), len(tags), elmo)
    state = model.state_dict()
    unknown = sorted(set(weights) - set(state))
    if unknown:
        raise UserError(f"{d}/model.safetensors has weights this network lacks: {', '.join(unknown[:5])}")
    absent = sorted(k for k in model.trainable_state() if k not in weights)
    if absent:
        raise UserError(f"{d}/model.safetensors lacks weights: {', '.join(absent[:5])}")
    model.set_state_dict(weights)
    model.eval()
    return model, cfg, vocab, tags
