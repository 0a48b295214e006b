"""Answer questions with a trained BiDAF (the command; the answering itself is `inference.predict_features`).

  python -m tasks.bidaf.predict --model runs/bidaf/RUN/model --input questions.json [--output preds.json]
  python -m tasks.bidaf.predict --model runs/bidaf/RUN/model --context "..." --question "..."

--input takes SQuAD/CMRC-style JSON (.json or .json.gz; answers optional) and writes {qid: answer} JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from elmo_paddle.errors import UserError, cli
from elmo_paddle.text import normalize_width

from .data import LoadStats, QAExample, load_squad, make_features
from .inference import predict_features


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tasks.bidaf.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder written by tasks.bidaf.finetune (…/model)")
    p.add_argument("--input", help="SQuAD/CMRC-style JSON or JSON.gz of questions to answer")
    p.add_argument("--output", help="where to write {qid: answer} JSON for --input (default: stdout)")
    p.add_argument("--context", help="a single passage (use with --question)")
    p.add_argument("--question", help="a single question about --context")
    p.add_argument("--batch-size", type=int, default=64, help="windows per forward pass (default 64)")
    return p.parse_args(argv)


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if bool(args.input) == (args.context is not None or args.question is not None):
        raise UserError("give either --input FILE, or both --context TEXT and --question TEXT")
    from .checkpoint import load_model

    model, chars, words, cfg = load_model(args.model)
    max_ctx, stride = int(cfg.get("max_context_len", 400)), int(cfg.get("doc_stride", 300))
    max_q, max_ans = int(cfg.get("max_question_len", 64)), int(cfg.get("max_answer_len", 64))
    cache = None
    if model.elmo is not None:
        from .elmo_cache import ElmoLayerCache
        cache = ElmoLayerCache(model.elmo, max_mb=float(cfg.get("elmo_cache_mb", 1024)))
    if args.input:
        stats = LoadStats()
        examples = load_squad(args.input, stats)
    else:
        if args.context is None or args.question is None:
            raise UserError("--context and --question go together")
        if not args.question.strip():
            raise UserError("--question is empty")
        if not args.context.strip():
            raise UserError("--context is empty")
        examples = [QAExample("q", args.context, normalize_width(args.context),
                              normalize_width(args.question.strip()), [])]
    fstats: dict[str, int] = {}
    feats = make_features(examples, max_ctx, stride, max_q, train=False, stats=fstats)
    preds = predict_features(model, examples, feats, chars, words, args.batch_size, max_ans, cache)
    skipped = [e.qid for e in examples if e.qid not in preds]
    if args.input:
        text = json.dumps(preds, ensure_ascii=False, indent=1)
        if args.output:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
        else:
            print(text)
        print(f"answered {len(preds)} of {len(examples)} questions; skipped {len(skipped)} "
              f"(empty question/context: {fstats['empty_question'] + fstats['empty_context']}); "
              f"{fstats['long_context']} contexts longer than {max_ctx} chars read in windows", file=sys.stderr)
    else:
        print(preds.get("q", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
