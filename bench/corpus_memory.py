"""Peak memory of the corpus scan + LM batching at several corpus sizes: it must stay flat.

    PYTHONPATH=. .venv/bin/python bench/corpus_memory.py                  # 50 MB and 200 MB (gzip'd)
    PYTHONPATH=. .venv/bin/python bench/corpus_memory.py --sizes 5 20 --plain
    PYTHONPATH=. .venv/bin/python bench/corpus_memory.py --long-line 50   # one 50 MB line, no newline

Each measurement runs in a fresh subprocess (`--measure FILE`) that scans the corpus (line count, dev split,
vocab), then streams batches over the whole epoch (or `--max-batches`), and reports its peak RSS (VmHWM).
Generated corpora are cached in --workdir (default /tmp/elmo_corpus_memory).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(path: Path, mb: float, gz: bool = False, seed: int = 0) -> Path:
    """Chinese-like text (3000 distinct CJK chars, Zipf-ish, lines of 5-150 chars) of `mb` MB (uncompressed)."""
    if path.exists():
        return path
    rng = random.Random(seed)
    chars = [chr(0x4E00 + i) for i in rng.sample(range(20000), 3000)] + list("，。、“”１２３ＡＢ")
    weights = [1 / (i + 1) for i in range(len(chars))]
    pool = ["".join(rng.choices(chars, weights, k=rng.randint(5, 150))) + "\n" for _ in range(20000)]
    target = int(mb * 1e6)
    tmp = path.with_name(path.name + ".part")
    opener = (lambda p: gzip.open(p, "wt", encoding="utf-8", compresslevel=1)) if gz else \
        (lambda p: open(p, "w", encoding="utf-8"))
    written = 0
    with opener(tmp) as f:
        while written < target:
            block = "".join(rng.choices(pool, k=2000))
            f.write(block)
            written += len(block.encode("utf-8"))
    os.replace(tmp, path)
    return path


def generate_long_line(path: Path, mb: float) -> Path:
    if path.exists():
        return path
    piece = ("中国人民经济发展ａｂ１２" * 1000).encode("utf-8")  # multi-byte chars cut at read boundaries
    with open(path, "wb") as f:
        for _ in range(int(mb * 1e6) // len(piece) + 1):
            f.write(piece)
    return path


def measure(path: str, max_batches: int | None, shuffle_buffer_chars: int = 8_000_000) -> dict:
    sys.path.insert(0, str(REPO))
    import elmo_paddle  # noqa: F401
    from elmo_paddle.lm_data import LMBatcher, scan_corpus

    t0 = time.time()
    base = _peak_rss_mb()
    info, vocab, stats = scan_corpus([path], "char", 0.01, 3, show_progress=False)
    after_scan = _peak_rss_mb()
    b = LMBatcher(info, vocab, 32, 20, seed=1, shuffle_buffer=10_000, shuffle_buffer_chars=shuffle_buffer_chars)
    n = 0
    for _ in b.epoch_batches():
        n += 1
        if max_batches is not None and n >= max_batches:
            break
    return {"file": path, "bytes": os.path.getsize(path), "lines": sum(info.total_lines),
            "train_tokens": info.train_tokens, "vocab": len(vocab), "batches": n,
            "rss_after_import_mb": round(base, 1), "peak_rss_scan_mb": round(after_scan, 1),
            "peak_rss_mb": round(_peak_rss_mb(), 1), "seconds": round(time.time() - t0, 1)}


def run_measure(path: Path, max_batches: int | None = None, shuffle_buffer_chars: int | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", str(path)]
    if max_batches is not None:
        cmd += ["--max-batches", str(max_batches)]
    if shuffle_buffer_chars is not None:
        cmd += ["--shuffle-buffer-chars", str(shuffle_buffer_chars)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[50, 200], help="corpus sizes in MB (uncompressed)")
    ap.add_argument("--plain", action="store_true", help="plain text instead of .gz")
    ap.add_argument("--long-line", type=float, metavar="MB", help="also measure one line of MB megabytes, no newline")
    ap.add_argument("--max-batches", type=int, help="stop batching after N batches (default: the whole epoch)")
    ap.add_argument("--shuffle-buffer-chars", type=int, default=8_000_000,
                    help="the batcher's shuffle-buffer cap in characters (the pretraining default: 8M)")
    ap.add_argument("--workdir", default="/tmp/elmo_corpus_memory")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(measure(a.measure, a.max_batches, a.shuffle_buffer_chars)))
        return
    wd = Path(a.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    rows = []
    for mb in a.sizes:
        p = generate(wd / f"corpus_{mb:g}MB.txt{'' if a.plain else '.gz'}", mb, gz=not a.plain)
        rows.append(run_measure(p, a.max_batches))
    if a.long_line:
        rows.append(run_measure(generate_long_line(wd / f"line_{a.long_line:g}MB.txt", a.long_line), a.max_batches))
    print(f"{'file':42} {'MB on disk':>10} {'lines':>9} {'tokens':>11} {'batches':>8} {'peak RSS MB':>11} {'s':>6}")
    for r in rows:
        print(f"{Path(r['file']).name:42} {r['bytes'] / 1e6:10.1f} {r['lines']:9d} {r['train_tokens']:11d} "
              f"{r['batches']:8d} {r['peak_rss_mb']:11.1f} {r['seconds']:6.1f}")


if __name__ == "__main__":
    main()
