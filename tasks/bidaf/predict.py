"""Answer questions with a trained BiDAF (the command; the answering itself is `inference.predict_features`).

  python -m tasks.bidaf.predict --model runs/bidaf/RUN/model --input questions.json [--output preds.json]
  python -m tasks.bidaf.predict --model runs/bidaf/RUN/model --context "..." --question "..."

--input takes SQuAD/CMRC-style JSON (.json or .json.gz; answers optional) and writes {qid: answer} JSON with
one entry per input question, in input order ("" for a question with an empty text or context, counted on
stderr).  Every question needs a unique id: a missing or duplicate id is an error naming it, since answers
are keyed by id and such a question could not get its own.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

from elmo_paddle import bf16_gemm, validate
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
    p.add_argument("--max-answer-len", type=int,
                   help="longest answer in characters (default: the model's max_answer_len, 64 for the shipped ones)")
    bf16_gemm.add_flag(p)
    return p.parse_args(argv)


def _read_questions(path: str) -> list[QAExample]:
    """The --input questions; a question without a usable id, or an id used twice, is an error.

    Why not skip them (as training does, counting): answers are written as {id: answer}, so such a
    question cannot get an answer of its own, and the output would silently cover fewer questions than the
    input.  The message names the first few and how many there are, so the file can be fixed.
    """
    stats = LoadStats()
    examples = load_squad(path, stats)
    if stats.malformed or stats.duplicate_id:
        bad = [e.split(": ", 1)[-1] for e in stats.examples if e.endswith(("malformed", "duplicate_id"))]
        raise UserError(f"{path}: {stats.duplicate_id} duplicate question id(s) and {stats.malformed} question(s) "
                        f"without a usable id/question/answers (e.g. {'; '.join(bad[:3])}): answers are keyed by "
                        "id, so every question needs a unique one")
    return examples


def _single_question(context: str | None, question: str | None) -> list[QAExample]:
    if context is None or question is None:
        raise UserError("--context and --question go together")
    if not question.strip():
        raise UserError("--question is empty")
    if not context.strip():
        raise UserError("--context is empty")
    return [QAExample("q", context, normalize_width(context), normalize_width(question.strip()), [])]


def _write_answers(answers: dict[str, str], output: str | None) -> None:
    text = json.dumps(answers, ensure_ascii=False, indent=1)
    if not output:
        print(text)
        return
    try:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as e:
        raise UserError(f"cannot write --output {output}: {e.strerror or e}") from None


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if bool(args.input) == (args.context is not None or args.question is not None):
        raise UserError("give either --input FILE, or both --context TEXT and --question TEXT")
    validate.positive_int("--batch-size", args.batch_size)
    if args.max_answer_len is not None:
        validate.positive_int("--max-answer-len", args.max_answer_len)
    if args.output:
        validate.output_file("--output", args.output)  # before the model loads and the questions are answered
    examples = _read_questions(args.input) if args.input else _single_question(args.context, args.question)
    from .checkpoint import load_model

    bf16_gemm.apply_flag(args.bf16, lambda msg: print(f"warning: {msg}", file=sys.stderr))
    model, chars, words, cfg = load_model(args.model)
    max_ctx, stride = int(cfg.get("max_context_len", 400)), int(cfg.get("doc_stride", 300))
    max_q, max_ans = int(cfg.get("max_question_len", 64)), args.max_answer_len or int(cfg.get("max_answer_len", 64))
    cache = None
    if model.elmo is not None:
        from .elmo_cache import ElmoLayerCache
        cache = ElmoLayerCache(model.elmo, max_mb=float(cfg.get("elmo_cache_mb", 1024)))
    fstats: dict[str, int] = {}
    t0 = time.perf_counter()  # the speed a model card reports: questions/s from features to answers
    feats = make_features(examples, max_ctx, stride, max_q, train=False, stats=fstats)
    preds = predict_features(model, examples, feats, chars, words, args.batch_size, max_ans, cache)
    secs = time.perf_counter() - t0
    if not args.input:
        print(preds.get("q", ""))
        return 0
    # one answer per input question, in input order; "" where there was nothing to read
    answers = {e.qid: preds.get(e.qid, "") for e in examples}
    skipped = [e.qid for e in examples if e.qid not in preds]
    _write_answers(answers, args.output)
    print(f"answered {len(preds)} of {len(examples)} questions; {len(skipped)} got \"\" (empty question/context: "
          f"{fstats['empty_question'] + fstats['empty_context']}); "
          f"{fstats['long_context']} contexts longer than {max_ctx} chars read in windows; "
          f"{len(examples) / max(secs, 1e-9):.1f} questions/s ({secs:.1f} s, {len(feats)} windows)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
