"""Copy a trained task model (a LAC tagger or a BiDAF reader, its best/ folder) into `pretrained/<name>/`.

    python experiments/ship_task_model.py --model runs_full/lac/elmo-f1-s1/best --name lac-pd1998-elmo

Keeps every JSON file and the weights bit for bit and writes a fresh sha256 manifest (atomically).  A +ELMo
model must name a *shipped* biLM (`elmo_model: zh-char-elmo`, checked against its recorded weights' sha256):
its `elmo_model_relative` is rewritten to point at that biLM from the new folder, so a fresh clone finds it
by name or by path.  A model trained on a biLM outside `pretrained/` is refused (a fresh clone would not
have it).  The MODEL_CARD.md beside it is written by hand: shipping a new version over an old one keeps the
old card (the folder is replaced whole, which deleted it before) and says that its scores need updating.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from any folder
import elmo_paddle  # noqa: E402,F401  (env before paddle)
from elmo_paddle import checkpoint as ckpt
from elmo_paddle.model_io import PRETRAINED_DIR
from tasks.common import elmo_ref

CARD = "MODEL_CARD.md"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="the task model folder (a run's best/)")
    ap.add_argument("--name", required=True, help="folder name under pretrained/")
    args = ap.parse_args(argv)
    src = Path(args.model)
    manifest = ckpt.verify_dir(src)
    names = sorted(manifest["files"])
    files = {n: ckpt.read_json(src, n) for n in names if n.endswith(".json")}
    tensors = {n: ckpt.load_tensors(src / n) for n in names if n.endswith(".safetensors")}
    cfg = elmo_ref.run_config(files["config.json"])  # edited in place below
    dest = PRETRAINED_DIR / args.name
    if cfg.get("elmo_model"):
        bilm = Path(elmo_ref.resolve(cfg, src)).resolve()
        if bilm.parent != PRETRAINED_DIR.resolve() or cfg["elmo_model"] != bilm.name:
            raise SystemExit(f"{src} was trained with the biLM {bilm}, not a shipped one: ship that biLM first")
        cfg["elmo_model_relative"] = os.path.relpath(bilm, dest.resolve())
    card = dest / CARD
    old_card = card.read_text(encoding="utf-8") if card.is_file() else None
    out = ckpt.write_dir(dest, files, tensors)
    print(f"shipped {src} as {out}")
    if old_card is not None:
        (out / CARD).write_text(old_card, encoding="utf-8")
        print(f"kept the previous {CARD}: update its scores, speed and command for this model")


if __name__ == "__main__":
    main()
