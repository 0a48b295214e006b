"""Answer questions with a trained BiDAF: library function for the trainer, CLI for users.

  python -m tasks.bidaf.predict --model runs/bidaf/RUN/model --input questions.json [--output preds.json]
  python -m tasks.bidaf.predict --model runs/bidaf/RUN/model --context "..." --question "..."

--input takes SQuAD/CMRC-style JSON (.json or .json.gz; answers optional) and writes {qid: answer} JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

import paddle

from elmo_paddle.errors import UserError, cli
from elmo_paddle.runtime import to_tensors
from elmo_paddle.text import normalize_width

from .data import Feature, LoadStats, QAExample, Vocab, encode_batch, load_squad, make_features
from .decode import best_spans


def elmo_inputs(feats: Sequence[Feature], cache: Any) -> tuple[Any, Any]:
    """Cached frozen biLM layers for the batch's contexts and questions (None, None without ELMo)."""
    if cache is None:
        return None, None
    return cache([f.c_chars for f in feats]), cache([f.q_chars for f in feats])


def predict_features(model: paddle.nn.Layer, examples: Sequence[QAExample], feats: Sequence[Feature],
                     chars: Vocab, words: Vocab, batch_size: int = 64, max_answer_len: int = 64,
                     elmo_cache: Any = None) -> dict[str, str]:
    """{qid: answer text cut from the original context}, best span over all windows of each question."""
    by_id = {e.qid: e for e in examples}
    order = sorted(range(len(feats)), key=lambda i: len(feats[i].c_chars))  # similar lengths: less padding
    best: dict[str, tuple[float, str]] = {}
    was_training = model.training
    model.eval()
    with paddle.no_grad():
        for b in range(0, len(order), batch_size):
            fb = [feats[i] for i in order[b:b + batch_size]]
            arrays = encode_batch(fb, chars, words)
            s, e = model(to_tensors(arrays), *elmo_inputs(fb, elmo_cache))
            # logits, not per-window probabilities, so scores of different windows are comparable
            st, en, sc = best_spans(s.numpy(), e.numpy(), max_answer_len, arrays["c_len"])
            for f, i, j, score in zip(fb, st, en, sc):
                if f.qid not in best or score > best[f.qid][0]:
                    ctx = by_id[f.qid].context
                    best[f.qid] = (float(score), ctx[f.offset + int(i): f.offset + int(j) + 1].strip())
    if was_training:
        model.train()
    return {q: a for q, (_, a) in best.items()}


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
