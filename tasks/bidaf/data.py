"""CMRC 2018 (SQuAD-v1.1 JSON) -> examples with exact character spans -> windowed, id-mapped features.

Offsets: `answer_start` indexes the *original* context string in code points.  `normalize_width` is
length-preserving, so spans found in the normalised context are valid in the original one too, and answers
are always cut from the original context (what the metric compares against).

Known quirks fixed here (see ../shared/data/cmrc2018/SOURCE.md): answers off by one, and `answer_start == -1`.
A reference whose text is not at its offset is searched for in the context and the occurrence nearest to the
given start is used; references whose text is nowhere in the context stay references for the metric but give
no training span.  Everything fixed or dropped is counted in `LoadStats`.

Long contexts: the model sees windows of at most `max_context_len` characters, `doc_stride` apart.  A training
question uses the one window that contains its answer with the most context around it; at prediction time
every window is scored and the best span over all windows wins.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from elmo_paddle.errors import UserError
from elmo_paddle.text import normalize_width
from elmo_paddle.vocab import TokenIds, build_token_ids

from .jsonio import read_json

@dataclass
class QAExample:
    """One question: normalised text for the model, original context for the answers."""

    qid: str
    context: str           # original context (answers are cut from it)
    norm_context: str      # normalize_width(context): same length
    question: str          # normalised question
    answers: list[str]     # every reference text (the metric takes the max over them)
    start: int = -1        # training span, character offsets, inclusive; -1: no usable span
    end: int = -1


@dataclass
class LoadStats:
    """What the reader fixed or dropped; `summary()` is printed and saved with the run."""

    questions: int = 0
    answers: int = 0
    exact: int = 0
    fixed_near: int = 0        # text found within `max_shift` chars of the given start (off by one etc.)
    fixed_far: int = 0         # text found elsewhere in the context (includes answer_start == -1)
    not_in_context: int = 0    # reference text nowhere in the context: kept for the metric only
    no_span_questions: int = 0  # questions left with no usable span (dropped from training)
    empty_question: int = 0
    empty_context: int = 0
    malformed: int = 0         # entries with missing/wrong-typed fields, skipped
    duplicate_id: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, kind: str, where: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 8:
            self.examples.append(f"{where}: {kind}")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        d = {k: v for k, v in self.__dict__.items() if k != "examples"}
        s = ", ".join(f"{k}={v}" for k, v in d.items())
        return s + (f" (e.g. {'; '.join(self.examples)})" if self.examples else "")


def locate_answer(context: str, text: str, start: int, max_shift: int = 5) -> tuple[int, str]:
    """Return (character start, how) for `text` in `context` given a possibly wrong `start`.

    how is 'exact', 'near' (within max_shift), 'far' (elsewhere: nearest occurrence) or 'missing' (-1).
    """
    if not text:
        return -1, "missing"
    if 0 <= start and context[start:start + len(text)] == text:
        return start, "exact"
    occ, i = [], context.find(text)
    while i != -1:
        occ.append(i)
        i = context.find(text, i + 1)
    if not occ:
        return -1, "missing"
    best = min(occ, key=lambda o: abs(o - max(start, 0)))
    return best, ("near" if start >= 0 and abs(best - start) <= max_shift else "far")


def _iter_qas(obj: Any, path: Path, stats: LoadStats) -> Iterable[tuple[str, dict]]:
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise UserError(f"{path}: not a SQuAD-style file (expected an object with a 'data' list)")
    for di, doc in enumerate(obj["data"]):
        paras = doc.get("paragraphs") if isinstance(doc, dict) else None
        if not isinstance(paras, list):
            stats.note("malformed", f"{path}: data[{di}]")
            continue
        for pi, para in enumerate(paras):
            if not isinstance(para, dict) or not isinstance(para.get("context"), str) \
                    or not isinstance(para.get("qas"), list):
                stats.note("malformed", f"{path}: data[{di}].paragraphs[{pi}]")
                continue
            for qa in para["qas"]:
                yield para["context"], qa


def load_squad(path: str | os.PathLike, stats: LoadStats | None = None, max_shift: int = 5) -> list[QAExample]:
    """Read a SQuAD-v1.1 style file (.json / .json.gz) into examples; bad entries are counted, not fatal."""
    path = Path(path)
    stats = stats if stats is not None else LoadStats()
    seen: set[str] = set()
    out: list[QAExample] = []
    for context, qa in _iter_qas(read_json(path), path, stats):
        if not isinstance(qa, dict) or not isinstance(qa.get("id"), (str, int)) \
                or not isinstance(qa.get("question", ""), str) or not isinstance(qa.get("answers", []), list):
            stats.note("malformed", f"{path}: question {qa.get('id') if isinstance(qa, dict) else '?'}")
            continue
        qid = str(qa["id"]).strip()
        if qid in seen:
            stats.note("duplicate_id", f"{path}: {qid}")
            continue
        seen.add(qid)
        stats.questions += 1
        ex = QAExample(qid, context, normalize_width(context), normalize_width(qa.get("question", "").strip()), [])
        if not ex.question:
            stats.note("empty_question", qid)
        if not context.strip():
            stats.note("empty_context", qid)
        for ans in qa.get("answers", []):
            if not isinstance(ans, dict) or not isinstance(ans.get("text"), str):
                stats.note("malformed", f"{qid} answer")
                continue
            text = ans["text"]
            try:
                given = int(ans.get("answer_start", -1))
            except (TypeError, ValueError):
                given = -1
            ex.answers.append(text)
            stats.answers += 1
            s, how = locate_answer(context, text, given, max_shift)
            if how == "missing" and text.strip() != text:  # padded text: look for its trimmed form
                s, how = locate_answer(context, text.strip(), given, max_shift)
            elif s >= 0:  # train on the span without surrounding whitespace
                s += len(text) - len(text.lstrip())
            if how == "exact":
                stats.exact += 1
            elif how == "near":
                stats.note("fixed_near", f"{qid} ({given}->{s})")
            elif how == "far":
                stats.note("fixed_far", f"{qid} ({given}->{s})")
            else:
                stats.note("not_in_context", f"{qid} ({text[:20]!r})")
            if s >= 0 and ex.start < 0 and text.strip():  # train on the first usable reference
                ex.start, ex.end = s, s + len(text.strip()) - 1
        if ex.start < 0:
            stats.no_span_questions += 1
        out.append(ex)
    if not out:
        raise UserError(f"{path}: no questions found")
    return out


def references(examples: Sequence[QAExample]) -> dict[str, list[str]]:
    """{qid: reference texts} for the metric."""
    return {e.qid: e.answers for e in examples}


# ----------------------------------------------------------------------------------------------- tokens
def word_pieces(text: str) -> list[tuple[int, int]]:
    """jieba word boundaries as (start, end_exclusive) covering every character of `text`."""
    import jieba  # lazy: its dictionary takes a second to load

    jieba.setLogLevel(logging.WARNING)
    spans, pos = [], 0
    for w in jieba.cut(text):
        spans.append((pos, pos + len(w)))
        pos += len(w)
    if pos != len(text):  # jieba always covers the text; guard anyway so offsets can never drift
        spans = [(i, i + 1) for i in range(len(text))]
    return spans


def char_tokens(text: str) -> list[str]:
    """One token per character; whitespace becomes a visible placeholder so offsets stay 1:1."""
    return [c if not c.isspace() else "<SP>" for c in text]


def char_words(text: str) -> list[str]:
    """The jieba word each character belongs to (word embeddings are broadcast to their characters)."""
    out: list[str] = []
    for s, e in word_pieces(text):
        w = text[s:e]
        out.extend([w if w.strip() else "<SP>"] * (e - s))
    return out


def word_sequence(per_char: Sequence[str]) -> list[str]:
    """Collapse the per-character word list back to one entry per word (for counting word frequencies)."""
    return [w for i, w in enumerate(per_char) if i == 0 or w != per_char[i - 1]]


def build_vocab(token_lists: Iterable[Sequence[str]], min_count: int = 1, max_size: int | None = None) -> TokenIds:
    """Token ids with <PAD>=0, <UNK>=1, then by count; saved as its JSON token list next to the model.
    `max_size` 0 or None: no limit."""
    return build_token_ids(token_lists, min_count, max_size or None)


@dataclass
class Feature:
    """One model input: a window of one example's context plus its question."""

    qid: str
    offset: int              # window start in the context (characters)
    c_chars: list[str]
    c_words: list[str]
    q_chars: list[str]
    q_words: list[str]
    start: int = -1          # answer span relative to the window (training only)
    end: int = -1


def windows(n: int, max_len: int, stride: int) -> list[int]:
    """Window starts covering [0, n) with windows of max_len, `stride` apart (last one flush right)."""
    if n <= max_len:
        return [0]
    starts = list(range(0, n - max_len, stride)) + [n - max_len]
    return sorted(set(starts))


class _WordCache:
    """jieba segmentation of each distinct text is computed once (contexts repeat over their questions)."""

    def __init__(self) -> None:
        self.cache: dict[str, list[str]] = {}

    def __call__(self, text: str) -> list[str]:
        if text not in self.cache:
            self.cache[text] = char_words(text)
        return self.cache[text]


def make_features(examples: Sequence[QAExample], max_context_len: int, doc_stride: int, max_question_len: int,
                  train: bool, stats: dict[str, int] | None = None) -> list[Feature]:
    """Window every example; for training keep one window holding the answer, for eval keep all windows.

    Counted in `stats`: long_context (needed >1 window), answer_too_long (training answer longer than a
    window: dropped), no_span (training question without span: dropped), empty_question (dropped),
    question_truncated.
    """
    stats = stats if stats is not None else {}
    for k in ("long_context", "answer_too_long", "no_span", "empty_question", "question_truncated", "empty_context"):
        stats.setdefault(k, 0)
    words = _WordCache()
    feats: list[Feature] = []
    for ex in examples:
        if not ex.question:
            stats["empty_question"] += 1
            continue
        if not ex.norm_context:
            stats["empty_context"] += 1
            continue
        if train and ex.start < 0:
            stats["no_span"] += 1
            continue
        q = ex.question
        if len(q) > max_question_len:
            stats["question_truncated"] += 1
            q = q[:max_question_len]
        qc, qw = char_tokens(q), words(q)
        cc, cw = char_tokens(ex.norm_context), words(ex.norm_context)
        starts = windows(len(cc), max_context_len, doc_stride)
        if len(starts) > 1:
            stats["long_context"] += 1
        if train:
            ok = [s for s in starts if s <= ex.start and ex.end < s + max_context_len]
            if not ok:
                stats["answer_too_long"] += 1
                continue
            # most context on both sides of the answer
            s = max(ok, key=lambda s: min(ex.start - s, s + max_context_len - 1 - ex.end))
            starts = [s]
        for s in starts:
            e = s + max_context_len
            f = Feature(ex.qid, s, cc[s:e], cw[s:e], qc, qw)
            if train:
                f.start, f.end = ex.start - s, ex.end - s
            feats.append(f)
    return feats


def encode_batch(feats: Sequence[Feature], char_vocab: TokenIds, word_vocab: TokenIds) -> dict[str, np.ndarray]:
    """Pad a batch of features to numpy int64 arrays (0 = padding)."""
    B = len(feats)
    Tc = max(len(f.c_chars) for f in feats)
    Tq = max(len(f.q_chars) for f in feats)
    out = {k: np.zeros((B, T), dtype="int64") for k, T in
           (("c_char", Tc), ("c_word", Tc), ("q_char", Tq), ("q_word", Tq))}
    for i, f in enumerate(feats):
        out["c_char"][i, :len(f.c_chars)] = char_vocab.encode(f.c_chars)
        out["c_word"][i, :len(f.c_words)] = word_vocab.encode(f.c_words)
        out["q_char"][i, :len(f.q_chars)] = char_vocab.encode(f.q_chars)
        out["q_word"][i, :len(f.q_words)] = word_vocab.encode(f.q_words)
    out["c_len"] = np.array([len(f.c_chars) for f in feats], dtype="int64")
    out["q_len"] = np.array([len(f.q_chars) for f in feats], dtype="int64")
    out["start"] = np.array([f.start for f in feats], dtype="int64")
    out["end"] = np.array([f.end for f in feats], dtype="int64")
    return out

