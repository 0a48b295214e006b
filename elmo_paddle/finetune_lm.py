"""Domain transfer: continue training a pretrained biLM (softmax included) on a task's own raw text.

    python -m elmo_paddle.finetune_lm --model models/elmo_small --text dureader_demo/trainset/search.train.json.gz \\
        --output-dir models/elmo_small_dureader --steps 300 --lr 0.001

* The model's vocab and architecture are kept (`bilm.*` overrides are refused; a `data.unit` different from the
  model's is an error).  The share of the new text's tokens that are unknown to the vocab is reported: they
  all map to `<UNK>`, and a high rate means the text does not suit this model.
* Labels are ignored.  `--format` (default `auto`, sniffed per file) turns task files into raw text:
  `plain` (one paragraph per line), `pd1998` (`word/pos` tokens), `lac` (`text<TAB>tags`), `cmrc` (CMRC 2018 /
  SQuAD JSON: every context), `dureader` (DuReader JSON lines: every question and document paragraph).  The
  extracted text goes to OUT/task_text/.
* The last `--dev-fraction` of each file's lines is held out; the dev perplexity of the pretrained model on
  it (step 0) and after fine-tuning are printed and saved in OUT/finetune_result.json.  OUT/best is the
  model directory to use (best dev perplexity, which can be the starting point if fine-tuning did not help),
  OUT/final the last step.
* Training reuses `trainer_lm.run_pretraining(init_from=...)`: checkpoints, `--resume`, VisualDL logs.
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
from pathlib import Path
from typing import Iterator

from .config import load_config, merge, parse_overrides
from . import validate
from .errors import UserError, cli
from .pretrain_config import PretrainConfig, check_config, resolve_text_paths

FORMATS = ("auto", "plain", "pd1998", "lac", "cmrc", "dureader")
_PD_TOKEN = re.compile(r"^\S+/[A-Za-z]+\d*$")


def _read_text(path: Path) -> str:
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not valid UTF-8") from None


def _lines(text: str) -> list[str]:
    # "\n" only: str.splitlines() also splits at U+2028, U+0085 ..., which occur inside JSON strings
    return [ln.rstrip("\r") for ln in text.split("\n")]


def sniff_format(path: Path, text: str) -> str:
    """Guess the task format of a file from its name and first lines."""
    name = path.name.lower().removesuffix(".gz")
    head = [ln for ln in _lines(text[:20000]) if ln.strip()][:20]
    if name.endswith(".json") or (head and head[0].lstrip().startswith("{")):
        first = head[0].lstrip() if head else ""
        return "dureader" if first.startswith("{") and '"documents"' in first else "cmrc"
    if head and all("\t" in ln for ln in head):
        return "lac"
    if head and sum(all(_PD_TOKEN.match(t) for t in ln.split()) for ln in head) >= 0.8 * len(head):
        return "pd1998"
    return "plain"


def extract_lines(path: Path, fmt: str = "auto") -> tuple[str, list[str]]:
    """(format used, raw text lines) of one task file; labels and markup dropped."""
    text = _read_text(path)
    if fmt == "auto":
        fmt = sniff_format(path, text)
    lines: list[str] = []
    if fmt == "plain":
        lines = _lines(text)
    elif fmt == "pd1998":
        lines = ["".join(t.rsplit("/", 1)[0] for t in ln.split()) for ln in _lines(text)]
    elif fmt == "lac":
        lines = [ln.split("\t", 1)[0] for ln in _lines(text)]
    elif fmt == "cmrc":
        try:
            data = json.loads(text)
            seen = dict.fromkeys(p["context"] for art in data["data"] for p in art["paragraphs"])
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path} is not CMRC/SQuAD JSON ({e})") from None
        lines = [c.replace("\n", " ") for c in seen]
    elif fmt == "dureader":
        for i, ln in enumerate(_lines(text)):
            if not ln.strip():
                continue
            try:
                d = json.loads(ln)
                lines.append(d.get("question", ""))
                lines.extend(p for doc in d["documents"] for p in doc["paragraphs"])
            except (ValueError, KeyError, TypeError) as e:
                raise UserError(f"{path}:{i + 1}: not a DuReader JSON line ({e})") from None
        lines = [ln.replace("\n", " ") for ln in lines]
    else:
        raise UserError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt, [ln.strip() for ln in lines if ln.strip()]


def _token_iter(lines: list[str], unit: str) -> Iterator[str]:
    from .text import tokenize

    for ln in lines:
        yield from tokenize(ln, unit)


def prepare_text(paths: list[str], fmt: str, out_dir: Path, vocab, data_dir: str | None) -> tuple[list[str], dict]:
    """Extract raw text of every task file into out_dir/task_text; returns (files, stats incl. OOV rate)."""
    files = resolve_text_paths(paths, data_dir)
    text_dir = out_dir / "task_text"
    text_dir.mkdir(parents=True, exist_ok=True)
    written, per_file = [], []
    n_tok = n_unk = 0
    for k, f in enumerate(files):
        p = Path(f)
        if p.is_dir():
            raise UserError(f"{p} is a folder: pass the task files themselves")
        used, lines = extract_lines(p, fmt)
        if not lines:
            raise UserError(f"{p}: no text found (format {used})")
        toks = list(_token_iter(lines, vocab.unit))
        unk = sum(1 for t in toks if t not in vocab)
        n_tok += len(toks)
        n_unk += unk
        dst = text_dir / f"{k:02d}_{p.name.split('.')[0]}.txt"
        dst.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(str(dst))
        per_file.append({"file": str(p), "format": used, "lines": len(lines), "tokens": len(toks),
                         "oov_rate": round(unk / max(len(toks), 1), 4)})
    stats = {"files": per_file, "tokens": n_tok, "oov_rate": round(n_unk / max(n_tok, 1), 4)}
    return written, stats


def _build_arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m elmo_paddle.finetune_lm",
        description="Continue LM training of a pretrained biLM on a task's raw text (domain transfer).",
        epilog="Overrides use dotted keys of the pretraining config, e.g. train.batch_size=16 train.seq_len=32 "
               "data.eval_max_lines=200 (bilm.* cannot change).")
    ap.add_argument("--model", required=True, help="pretrained model directory (or pretraining output dir)")
    ap.add_argument("--text", required=True, nargs="+", help="task files (plain text or a task format)")
    ap.add_argument("--output-dir", required=True, help="where the fine-tuned model directories go")
    ap.add_argument("--format", default="auto", choices=FORMATS, help="how to read --text files (default: sniff)")
    ap.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: a third of pretraining's)")
    ap.add_argument("--dev-fraction", type=float, default=0.05, help="held-out share of each file's lines")
    ap.add_argument("--data-dir", help="folder with the data sets, for relative --text paths")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted fine-tuning run")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("overrides", nargs="*", help="config overrides as dotted key=value")
    return ap


@cli
def main(argv: list[str] | None = None) -> int:
    args = _build_arg_parser().parse_args(argv)
    validate.positive_int("--steps", args.steps)
    validate.positive_float("--lr", args.lr, allow_none=True)
    validate.fraction("--dev-fraction", args.dev_fraction, high_open=True)
    extra = parse_overrides(args.overrides)
    if "bilm" in extra:
        raise UserError("bilm.* cannot be overridden when fine-tuning: the architecture is the pretrained model's")
    import elmo_paddle  # noqa: F401  (env vars before paddle)

    from . import checkpoint as ckpt
    from .model_io import resolve_model_dir
    from .vocab import Vocab

    model_dir = resolve_model_dir(args.model)
    ckpt.verify_dir(model_dir)
    conf = ckpt.read_json(model_dir, "config.json")
    vocab = Vocab.load(model_dir / "vocab.json")
    unit = extra.get("data", {}).get("unit", vocab.unit)
    if unit != vocab.unit:
        raise UserError(f"data.unit={unit!r} does not match the model's vocab unit {vocab.unit!r}: a fine-tuned "
                        "model keeps its vocab, so the text must be tokenised the same way")
    out = validate.output_dir("--output-dir", args.output_dir)
    files, stats = prepare_text(args.text, args.format, out, vocab, args.data_dir)
    for f in stats["files"]:
        print(f"text: {f['file']} ({f['format']}): {f['lines']} lines, {f['tokens']} tokens, "
              f"{f['oov_rate']:.2%} unknown to the model's vocab")
    if stats["oov_rate"] > 0.2:
        print(f"warning: {stats['oov_rate']:.0%} of the tokens are unknown to the model's vocab (all become <UNK>)")

    cfg, lr = _finetune_config(conf, vocab.unit, files, out, args, extra)
    check_config(cfg)  # the key=value overrides too, before the model is built
    from .trainer_lm import run_pretraining

    best = run_pretraining(cfg, resume=args.resume, progress=not args.no_progress, init_from=model_dir)
    _write_result(out, model_dir, stats, args.steps, lr, best)
    return 0


def _finetune_config(conf: dict, unit: str, files: list[str], out: Path, args: argparse.Namespace,
                     extra: dict) -> tuple[PretrainConfig, float]:
    """(PretrainConfig, peak LR before overrides) of the fine-tuning run: the model's own config with the
    task text, a short schedule (evals and saves at its middle and end) and, by default, a third of the
    pretraining peak LR.  `extra` (key=value overrides) is laid over it."""
    pre = conf.get("pretrain", {}) if isinstance(conf, dict) else {}
    base_train = dict(pre.get("train", {}))
    lr = args.lr if args.lr is not None else float(base_train.get("lr", 0.002)) / 3
    base = {
        "bilm": conf["bilm"],
        "data": {**{k: v for k, v in pre.get("data", {}).items() if k in ("shuffle_buffer", "eval_max_lines")},
                 "train": files, "unit": unit, "dev_fraction": args.dev_fraction, "min_count": 1,
                 "max_train_lines_per_file": None},
        "train": {**base_train, "max_steps": args.steps, "epochs": 1.0, "lr": lr,
                  "warmup_steps": max(1, min(100, args.steps // 10)),
                  "eval_every": max(1, args.steps // 2), "save_every": max(1, args.steps // 2)},
        "output_dir": str(out), "run_name": f"finetune-{out.name}",
    }
    return load_config(PretrainConfig, None, merge(base, extra)), lr


def _write_result(out: Path, model_dir: Path, stats: dict, steps: int, lr: float, best: Path) -> None:
    """OUT/finetune_result.json (dev perplexity before and after, the text's stats) and a summary line."""
    history = json.loads((out / "history.json").read_text()) if (out / "history.json").is_file() else []
    before = next((h for h in history if h["step"] == 0), None)
    after = history[-1] if history else None
    result = {"model": str(model_dir), "text": stats, "steps": steps, "lr": lr,
              "dev_ppl_before": before and before["ppl"], "dev_ppl_after": after and after["ppl"],
              "dev_tokens": after and after["tokens"], "best_model_dir": str(best), "history": history}
    (out / "finetune_result.json").write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    if before and after:
        print(f"dev perplexity on held-out task text: {before['ppl']:.2f} before -> {after['ppl']:.2f} after "
              f"{steps} steps ({int(after['tokens'])} tokens); model directory {best}")


if __name__ == "__main__":
    raise SystemExit(main())
