"""Benchmark: the embedder with and without the packed CPU path (`elmo_paddle/lstm_cpu.py`), same process.

Same model and sentences as `bench/embed.py` (random weights, 1,024 cells, projection 256, 256 random
20-character sentences, batch 32).  The two variants alternate run by run; min and median of `--repeats`.

    PYTHONPATH=. .venv/bin/python bench/embed_packed.py

The last line is `speed-up packed/paddle-loop: X.XX` (median over median).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import embed as bench_embed  # noqa: E402  (the model builder and sentences of bench/embed.py)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    a = bench_embed.parse_args(["--threads", str(args.threads)])
    import elmo_paddle  # noqa: F401  (MKL env vars before paddle loads)
    import paddle

    from elmo_paddle.embedder import ElmoEmbedder
    from elmo_paddle.lstm_cpu import packed_gemm_available

    if not packed_gemm_available():
        raise SystemExit("this paddle build has no bundled MKL packed GEMM: nothing to compare")
    paddle.set_device("cpu")
    with tempfile.TemporaryDirectory(prefix="bench_packed_") as wd:
        emb = ElmoEmbedder(bench_embed.build_ours(a, Path(wd)), threads=args.threads)
    sents = bench_embed.sentences(a)
    bilm = emb.elmo.bilm
    variants = {"packed": lambda: bilm.freeze_for_inference(True),
                "paddle-loop": lambda: bilm.freeze_for_inference(False)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    outs = {}
    for r in range(args.repeats + 1):
        for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            variants[name]()
            t = time.perf_counter()
            outs[name] = emb.embed_sentences(sents, batch_size=a.batch_size)
            if r:  # the first round warms up
                times[name].append(time.perf_counter() - t)
    diff = max(float(abs(x - y).max()) for x, y in zip(outs["packed"], outs["paddle-loop"]))
    print(f"{len(sents)} sentences, batch {a.batch_size}, {args.threads} threads, cell {a.hidden}, projection {a.proj}; "
          f"max abs difference of the outputs {diff:.2e}")
    for name, ts in times.items():
        print(f"{name:>12}: min {min(ts):.3f} s, median {statistics.median(ts):.3f} s "
              f"({len(sents) / statistics.median(ts):.1f} sentences/s)")
    print(f"speed-up packed/paddle-loop: {statistics.median(times['paddle-loop']) / statistics.median(times['packed']):.2f}")


if __name__ == "__main__":
    main()
