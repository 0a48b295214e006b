"""Copy a trained biLM model directory into `pretrained/<name>/`, the form the project ships it in.

    python experiments/ship_model.py --model models/zh-char-elmo --name zh-char-elmo

Keeps the weights bit for bit (safetensors), `config.json`, `vocab.json` and `corpus.json` (the held-out split,
with paths made relative to the data dir, so `python -m elmo_paddle.perplexity --model <name>` finds the text
on any machine with the data dir); drops the training state (`state.json`: history, optimizer bookkeeping).
Writes atomically with a fresh sha256 manifest.  The MODEL_CARD.md beside it is written by hand.

`--corpus-from FILE`: a model continued with `elmo_paddle.finetune_lm` records the plain-text copies it
trained on (`OUT/task_text/*.txt`); when they split exactly as an earlier corpus.json (same files' line
counts, same held-out tokens), ship that one instead, so the held-out split stays findable in the data dir.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from any folder
import elmo_paddle  # noqa: E402,F401  (env before paddle)
from elmo_paddle import checkpoint as ckpt
from elmo_paddle.data_dir import resolve_data_dir
from elmo_paddle.model_io import PRETRAINED_DIR, resolve_model_dir


def relative_to_data_dir(path: str, data_dir: Path | None) -> str:
    """`/any/where/data/lm_raw_zh/x.txt.gz` -> `lm_raw_zh/x.txt.gz` when it lies in the data dir."""
    p = Path(path).resolve()
    if data_dir is not None and p.is_relative_to(data_dir.resolve()):
        return str(p.relative_to(data_dir.resolve()))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model directory or pretraining output dir (its best/)")
    ap.add_argument("--name", required=True, help="folder name under pretrained/")
    ap.add_argument("--data-dir", help="the data dir the corpus paths are made relative to")
    ap.add_argument("--corpus-from", help="a corpus.json with the same split (see above) to ship instead")
    args = ap.parse_args()
    src = resolve_model_dir(args.model)
    ckpt.verify_dir(src)
    files = {n: ckpt.read_json(src, n) for n in ("config.json", "vocab.json", "corpus.json")}
    root = resolve_data_dir(args.data_dir)
    files["corpus.json"]["files"] = [relative_to_data_dir(f, root) for f in files["corpus.json"]["files"]]
    if args.corpus_from:
        import json

        other = json.loads(Path(args.corpus_from).read_text(encoding="utf-8"))
        same = ("train_lines", "total_lines", "train_tokens", "dev_tokens", "dev_fraction")
        if any(other.get(k) != files["corpus.json"].get(k) for k in same):
            raise SystemExit(f"{args.corpus_from} does not split the text as {src}/corpus.json does")
        files["corpus.json"] = other
    tensors = {"weights.safetensors": ckpt.load_tensors(src / "weights.safetensors")}
    out = ckpt.write_dir(PRETRAINED_DIR / args.name, files, tensors)
    print(f"shipped {src} as {out}")


if __name__ == "__main__":
    main()
