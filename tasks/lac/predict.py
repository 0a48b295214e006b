"""Tag raw text with a trained LAC model: one sentence per input line, one output line per input line.

    python -m tasks.lac.predict --model runs/lac/<run>/best [--mode seg|lac] [--input FILE] [--batch-size N]
        [--dict FILE] [--max-chars N]

seg: words separated by single spaces.  lac: `word/TAG` separated by single spaces (Baidu lac CLI format).
An NER-only model (MSRA) segments nothing: it prints entities and the text between them, `text/O`, in lac mode
only.
An empty input line gives an empty output line.  Lines longer than --max-chars characters are tagged in
chunks (a warning names the line); nothing is truncated.  Invalid UTF-8 bytes are replaced (with a warning
naming the line) so the output stays line-aligned with the input.
"""
from __future__ import annotations

import argparse
import sys
from typing import BinaryIO, Iterator

from elmo_paddle import bf16_gemm
from elmo_paddle.errors import UserError, cli


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def read_blocks(fh: BinaryIO, size: int, where: str) -> Iterator[list[tuple[int, str]]]:
    """Yield blocks of (line number, text) so large inputs stream through in batches."""
    block: list[tuple[int, str]] = []
    for lineno, raw in enumerate(fh, 1):
        raw = raw.rstrip(b"\r\n")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            _warn(f"{where}:{lineno}: invalid UTF-8 at byte {e.start}; undecodable bytes replaced by U+FFFD")
            text = raw.decode("utf-8", errors="replace")
        block.append((lineno, text))
        if len(block) >= size:
            yield block
            block = []
    if block:
        yield block


def format_words(words: list[tuple[str, str]], mode: str) -> str:
    return " ".join(w if mode == "seg" else f"{w}/{t}" for w, t in words)


@cli
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.lac.predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model dir saved by finetune (runs/lac/<run>/best)")
    ap.add_argument("--mode", choices=("seg", "lac"), default="lac",
                    help="seg: words only; lac: word/TAG (default)")
    ap.add_argument("--input", help="input file, one sentence per line (default: stdin)")
    ap.add_argument("--batch-size", type=int, default=128, help="sentences per model call (default 128)")
    ap.add_argument("--dict", help="forced segmentations: one 'word' or 'word/TAG' per line")
    ap.add_argument("--max-chars", type=int, default=256,
                    help="longer lines are tagged in chunks of this many characters, with a warning (default 256)")
    bf16_gemm.add_flag(ap)
    args = ap.parse_args(argv)
    if args.batch_size < 1 or args.max_chars < 1:
        raise UserError("--batch-size and --max-chars must be positive")

    from .tagger import Tagger, UserDict

    bf16_gemm.apply_flag(args.bf16, _warn)

    user_dict = UserDict.load(args.dict, _warn) if args.dict else None
    tagger = Tagger(args.model, batch_size=args.batch_size, max_chars=args.max_chars, user_dict=user_dict,
                    warn=_warn)
    if args.mode == "seg" and not tagger.segments:
        raise UserError(f"{args.model} tags entities only (it was trained without word segmentation): "
                        "use --mode lac")
    if args.input:
        try:
            fh: BinaryIO = open(args.input, "rb")
        except OSError as e:
            raise UserError(f"cannot open {args.input}: {e.strerror or e}") from None
        where = args.input
    else:
        fh, where = sys.stdin.buffer, "stdin"
    out = sys.stdout.buffer  # UTF-8 whatever the locale says
    with fh:
        for block in read_blocks(fh, max(args.batch_size * 8, 256), where):
            results = tagger.tag([t for _, t in block], names=[f"{where}:{n}" for n, _ in block])
            out.write("".join(format_words(words, args.mode) + "\n" for words in results).encode("utf-8"))
            out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
