"""Held-out perplexity of a model directory: `python -m elmo_paddle.perplexity --model models/elmo_small`.

Scores the held-out split recorded in the model directory (`corpus.json`: the last `dev_fraction` of every
training file's lines), or other text given with `--text`, with the full softmax: per line, the forward LM
predicts every token and `</S>`, the backward LM every token and `<S>`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import validate
from .errors import UserError, cli


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m elmo_paddle.perplexity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True,
                    help="model directory, a pretraining output dir (its best/), or a shipped model's name")
    ap.add_argument("--text", nargs="*", help="score these files instead (every line is held-out text)")
    ap.add_argument("--heldout-from", metavar="DIR",
                    help="score the held-out split recorded in another model directory (e.g. a fine-tuned "
                         "model's task text, to compare models on the same lines)")
    ap.add_argument("--data-dir", help="where recorded data-dir-relative text lives (default: $ELMO_PADDLE_DATA "
                                       "or ../shared/data)")
    ap.add_argument("--max-lines", type=int, help="score only the first N held-out lines")
    ap.add_argument("--max-len", type=int, default=256, help="longer lines are scored in pieces of this length")
    args = ap.parse_args(argv)
    validate.positive_int("--max-len", args.max_len)
    validate.positive_int("--max-lines", args.max_lines, allow_none=True)
    return args


def _text_info(paths: list[str]):
    """The --text files as an all-held-out split; files with nothing scorable are one line naming why.

    Why count here: the reader skips lines with invalid UTF-8 or NUL bytes (it never guesses), and binary
    input used to end in "the dev split is empty (raise data.dev_fraction)", which is about something else.
    """
    from .lm_data import CorpusInfo
    from .text import ReadStats, iter_file_lines, list_text_files

    files = list_text_files(paths)
    stats = ReadStats()
    counts = [sum(1 for _ in iter_file_lines(f, stats)) for f in files]
    if not sum(counts):
        raise UserError(f"no text to score in {', '.join(map(str, files))}: {stats.lines} lines read, "
                        f"{stats.empty} empty, {stats.bad_utf8} with invalid UTF-8 or NUL bytes (binary data? "
                        "the text must be UTF-8)")
    return CorpusInfo([str(f) for f in files], [0] * len(files), counts, 0, 0, dev_fraction=1.0)


def _recorded_info(args: argparse.Namespace, model_dir: Path):
    """The held-out split recorded in the model dir (or --heldout-from's), its files found here."""
    from . import checkpoint as ckpt
    from .lm_data import CorpusInfo
    from .model_io import resolve_model_dir
    from .pretrain_config import resolve_text_paths

    split_dir = resolve_model_dir(args.heldout_from) if args.heldout_from else model_dir
    if not (Path(split_dir) / "corpus.json").is_file():
        raise UserError(f"{split_dir} records no held-out split (corpus.json); pass --text FILE")
    info = CorpusInfo(**ckpt.read_json(split_dir, "corpus.json"))
    try:  # paths as recorded, else relative to the data dir (shipped models record "lm_raw_zh/...")
        info.files = resolve_text_paths(info.files, args.data_dir)
    except UserError as e:
        raise UserError(f"the held-out text recorded in {split_dir}/corpus.json is missing here: {e}") from None
    return info


@cli
def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from .lm_data import dev_batches
    from .model_io import load_bilm, resolve_model_dir
    from .text import ReadStats
    from .trainer_lm import evaluate_perplexity

    model_dir = resolve_model_dir(args.model)
    bilm, vocab, _ = load_bilm(model_dir)
    info = _text_info(args.text) if args.text else _recorded_info(args, model_dir)
    t0 = time.time()
    stats = ReadStats()
    res = evaluate_perplexity(bilm, dev_batches(info, vocab, 32, args.max_len, args.max_lines, stats=stats))
    res["seconds"] = round(time.time() - t0, 1)
    res["skipped_bad_utf8_lines"] = stats.bad_utf8
    if stats.bad_utf8:
        print(f"warning: skipped {stats.bad_utf8} line(s) with invalid UTF-8 or NUL bytes "
              f"(e.g. {'; '.join(stats.examples[:3])})", file=sys.stderr)
    print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in res.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
