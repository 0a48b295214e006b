"""DuReader 2.0 (JSON Lines, multi-document) -> QAExamples, with paragraph selection as in Baidu's BiDAF baseline.

Train: the passage is the answer document's `most_related_para` and the gold span is `answer_spans[0]` (word
indices into its segmented paragraph, turned into character offsets).  Dev/test: from each of the first
`max_docs` documents take the paragraph with the highest recall of question words (ties: the shorter one),
as the baseline's `find_best_question_match` does, and join them (newline-separated) into one context; the
best span over all windows is the answer.  Paragraph text is the join of `segmented_paragraphs` (not
`paragraphs`, which differ in 40% of cases) so word->character offsets are exact.

DuReader's official metric is ROUGE-L/BLEU-4 over free-text answers; with these readers the CMRC metric
(max over `answers`) is only a proxy, for smoke tests of the pipeline on DuReader-format input.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from elmo_paddle.text import normalize_width

from .data import LoadStats, QAExample
from .jsonio import read_json_lines


def _recall(para: Sequence[str], question: Sequence[str]) -> float:
    if not question:
        return 0.0
    common = Counter(para) & Counter(question)
    return sum(common.values()) / len(question)


def best_paragraph(doc: dict[str, Any], question: Sequence[str]) -> int:
    """Index of the paragraph with the highest question-word recall (ties: shorter paragraph)."""
    paras = doc.get("segmented_paragraphs") or []
    if not paras:
        return -1
    return min(range(len(paras)), key=lambda i: (-_recall(paras[i], question), len(paras[i])))


def load_dureader(path: str | os.PathLike, train: bool, stats: LoadStats | None = None,
                  max_docs: int = 5) -> list[QAExample]:
    """Read a DuReader JSON Lines file (.json / .json.gz) into QAExamples; bad entries are counted."""
    path = Path(path)
    stats = stats if stats is not None else LoadStats()
    out: list[QAExample] = []
    for n, q in enumerate(read_json_lines(path), 1):
        try:
            qid = str(q["question_id"])
            question = normalize_width(str(q.get("question", "")).strip())
            docs = q["documents"]
            seg_q = q.get("segmented_question") or list(question)
            answers = [str(a) for a in q.get("answers", [])]
        except (KeyError, TypeError, AttributeError):
            stats.note("malformed", f"{path}:{n}")
            continue
        stats.questions += 1
        stats.answers += len(answers)
        if not question:
            stats.note("empty_question", qid)
        try:
            if train:
                spans, adocs = q.get("answer_spans") or [], q.get("answer_docs") or []
                if not spans or not adocs:
                    stats.note("no_span_questions", qid)
                    continue
                doc = docs[adocs[0]]
                seg = doc["segmented_paragraphs"][doc["most_related_para"]]
                s, e = spans[0]
                context = "".join(seg)
                start = sum(len(w) for w in seg[:s])
                end = start + sum(len(w) for w in seg[s:e + 1]) - 1
                if not 0 <= start <= end < len(context):
                    stats.note("not_in_context", qid)
                    continue
                stats.exact += 1
                out.append(QAExample(qid, context, normalize_width(context), question,
                                     answers or [context[start:end + 1]], start, end))
            else:
                parts = []
                for doc in docs[:max_docs]:
                    i = best_paragraph(doc, seg_q)
                    if i >= 0:
                        parts.append("".join(doc["segmented_paragraphs"][i]))
                context = "\n".join(parts)
                if not context.strip():
                    stats.note("empty_context", qid)
                out.append(QAExample(qid, context, normalize_width(context), question, answers))
        except (KeyError, TypeError, IndexError, ValueError):
            stats.note("malformed", f"{path}:{n} ({qid})")
    return out
