"""Embed a text file with a pretrained biLM, one sentence per line:

    python -m elmo_paddle.embed --model models/elmo_small --input sents.txt --output vecs.npz --layers all

Output (`.npz`, or `.hdf5`/`.h5` with h5py installed): one array per input line under the key `"<line index>"`
(0-based; empty lines give T = 0), plus `sentence_to_index`, a JSON string mapping each line's text to its
key (as AllenNLP's `elmo` command writes).  `--layers all`: `[3, T, D]`; `top`: `[T, D]` (the top LSTM
layer); `average`: `[T, D]` (mean of the 3 layers).  Lines longer than `--max-length` tokens are chunked
(see elmo_paddle.embedder), with a warning naming each such line.  Before any work the command checks the
output path, says how many tokens it will embed and about how many MB it will write, and refuses input
whose vectors would exceed `--max-output-mb` (default 2048).  The file is written to a temporary name and
renamed when complete.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from pathlib import Path

import numpy as np

from . import bf16_gemm, validate
from .errors import UserError, cli

LAYER_CHOICES = ("all", "top", "average")


def read_sentences(path: str | os.PathLike) -> list[str]:
    """All lines of a UTF-8 text file (.gz ok), newline stripped; empty lines are kept (they get T = 0)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"input {p} is a folder: give a text file, one sentence per line")
    if not p.is_file():
        raise UserError(f"input file {p} does not exist")
    try:
        raw = gzip.open(p, "rb").read() if p.suffix == ".gz" else p.read_bytes()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read {p}: {e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UserError(f"{p}:{line}: not valid UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.rstrip("\r") for ln in lines]


def select_layers(arr: np.ndarray, layers: str) -> np.ndarray:
    if layers == "all":
        return arr
    if layers == "top":
        return arr[-1]
    return arr.mean(axis=0)


def write_output(path: Path, arrays: list[np.ndarray], sentences: list[str]) -> None:
    index = json.dumps({s: str(i) for i, s in enumerate(sentences)}, ensure_ascii=False)
    suffix = path.suffix.lower()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npz":
            with open(tmp, "wb") as f:
                np.savez(f, sentence_to_index=np.array(index), **{str(i): a for i, a in enumerate(arrays)})
        else:
            import h5py

            with h5py.File(tmp, "w") as f:
                for i, a in enumerate(arrays):
                    f.create_dataset(str(i), data=a)
                f.create_dataset("sentence_to_index", data=np.array([index], dtype=h5py.string_dtype()))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def _build_arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m elmo_paddle.embed",
                                 description="Write ELMo vectors for each line of a text file.")
    ap.add_argument("--model", required=True,
                    help="model directory, a pretraining output dir (its best/), or a shipped model's name")
    ap.add_argument("--input", required=True, help="UTF-8 text, one sentence per line (.gz ok)")
    ap.add_argument("--output", required=True, help="OUT.npz or OUT.hdf5")
    ap.add_argument("--layers", choices=LAYER_CHOICES, default="all",
                    help="all: [3,T,D]; top: top LSTM layer [T,D]; average: mean of the layers [T,D]")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=256,
                    help="longer sentences are split into chunks of this many tokens, embedded separately")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: paddle's default)")
    ap.add_argument("--token-cache", help=".npz of context-free token vectors: built on first use, then reused")
    ap.add_argument("--max-output-mb", type=float, default=2048,
                    help="refuse, before any work, input whose vectors (all layers) would exceed this many MB "
                         "(default 2048; every token is 3 x 2*proj_dim float32 values)")
    ap.add_argument("--no-progress", action="store_true")
    bf16_gemm.add_flag(ap)
    return ap


def _check_args(args: argparse.Namespace) -> Path:
    """Flag values and the output path, before the model loads or anything is computed."""
    validate.positive_int("--batch-size", args.batch_size)
    validate.positive_int("--max-length", args.max_length)
    validate.non_negative_int("--threads", args.threads)
    validate.positive_float("--max-output-mb", args.max_output_mb)
    out = Path(args.output)
    if out.suffix.lower() not in (".npz", ".hdf5", ".h5"):
        raise UserError(f"--output must end in .npz, .hdf5 or .h5, not {out.name!r}")
    if out.suffix.lower() != ".npz":
        try:
            import h5py  # noqa: F401
        except ImportError:
            raise UserError("writing .hdf5 needs h5py (pip install h5py), or write .npz instead") from None
    validate.output_file("--output", out)
    if args.token_cache and not Path(args.token_cache).is_file():
        validate.output_file("--token-cache", args.token_cache)
    return out


def plan_work(token_lists: list[list[str]], args: argparse.Namespace, num_layers: int, dim: int,
              where: str) -> str:
    """Say what will be computed and written, warn about chunked lines, and refuse work over the bound.

    Why: every token gets num_layers x dim float32 values, all held in memory and then written, so one
    100k-character line is 300 MB of output, and a 1.75M-character one ran for minutes towards 5 GB with
    no word.  `--max-output-mb` bounds what is held (all layers, before --layers selects); over it, the
    command stops here, before any work, and says how to go on.
    """
    tokens = sum(len(t) for t in token_lists)
    long_lines = [(i, len(t)) for i, t in enumerate(token_lists) if len(t) > args.max_length]
    held_mb = tokens * num_layers * dim * 4 / 2 ** 20
    written_mb = held_mb / (1 if args.layers == "all" else num_layers)
    if held_mb > args.max_output_mb:
        longest = max(range(len(token_lists)), key=lambda i: len(token_lists[i]))
        raise UserError(f"{where}: {tokens} tokens would need {held_mb:,.0f} MB of vectors ({num_layers} layers x "
                        f"{dim} floats per token; the longest line, {longest + 1}, has {len(token_lists[longest])} "
                        f"tokens), over --max-output-mb {args.max_output_mb:g}: split the input, or raise the limit")
    for i, n in long_lines[:5]:
        print(f"warning: {where}:{i + 1}: {n} tokens, embedded in {-(-n // args.max_length)} chunks of "
              f"{args.max_length} (no context across chunks)", file=sys.stderr)
    if len(long_lines) > 5:
        print(f"warning: {len(long_lines) - 5} more line(s) longer than --max-length {args.max_length} chunked",
              file=sys.stderr)
    return (f"embedding {len(token_lists)} lines ({tokens} tokens, {len(long_lines)} chunked): "
            f"about {written_mb:,.1f} MB to {args.output}")


@cli
def main(argv: list[str] | None = None) -> int:
    args = _build_arg_parser().parse_args(argv)
    out = _check_args(args)
    sentences = read_sentences(args.input)
    if not sentences:
        raise UserError(f"{args.input} has no lines to embed")
    import elmo_paddle  # noqa: F401  (env vars before paddle)
    import logging

    from .elmo import sentences_to_token_lists
    from .embedder import ElmoEmbedder

    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s", stream=sys.stderr)
    bf16_gemm.apply_flag(args.bf16, lambda msg: print(f"warning: {msg}", file=sys.stderr))
    emb = ElmoEmbedder(args.model, max_length=args.max_length, threads=args.threads or None,
                       token_cache=args.token_cache)
    token_lists = sentences_to_token_lists(sentences, emb.vocab.unit)
    print(plan_work(token_lists, args, emb.num_layers, emb.output_dim, args.input), file=sys.stderr)
    quiet = logging.getLogger("elmo_paddle.embedder")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its chunk count: warned above, line by line
    try:
        arrays = emb.embed_sentences(token_lists, batch_size=args.batch_size, progress=not args.no_progress)
    finally:
        quiet.setLevel(level)
    write_output(out, [select_layers(a, args.layers) for a in arrays], sentences)
    st = emb.last_stats
    print(f"wrote {len(arrays)} sentences ({st['tokens']} tokens, {st['oov_rate']:.2%} unknown, "
          f"{st['chunked']} chunked) to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
