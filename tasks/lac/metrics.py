"""Chunk metrics for LAC-style tag sequences: joint P/R/F1, segmentation F1, per-entity F1, as percentages.

* joint: a predicted chunk counts if its character span AND label match a gold chunk (what paddlenlp's
  ChunkEvaluator measures on LAC);
* segmentation: character spans only, labels ignored (words; `O` characters are not words);
* per entity: joint P/R/F1 restricted to PER / LOC / ORG / TIME chunks.
A stray `X-I` that does not continue an `X` chunk starts a new chunk (conlleval's rule; MSRA has a few).
Scores are 0-100, like BiDAF's CMRC scores, so both tasks share one scale in logs, VisualDL and tables.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

from .tags import ENTITY_LABELS, OUTSIDE

Chunk = tuple[int, int, str]


def chunks(tags: Sequence[str]) -> list[Chunk]:
    """[(start, end_exclusive, label)] for a tag sequence in the X-B / X-I / O scheme."""
    out: list[Chunk] = []
    start, label = -1, None
    for i, tag in enumerate(tags):
        if tag == OUTSIDE:
            if label is not None:
                out.append((start, i, label))
            start, label = -1, None
            continue
        lab, _, pos = tag.rpartition("-")
        if pos == "B" or lab != label:
            if label is not None:
                out.append((start, i, label))
            start, label = i, lab
    if label is not None:
        out.append((start, len(tags), label))
    return out


def prf(correct: int, pred: int, gold: int) -> tuple[float, float, float]:
    """Precision, recall, F1 from counts, in percent (0 when undefined)."""
    p = correct / pred if pred else 0.0
    r = correct / gold if gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return 100 * p, 100 * r, 100 * f


class ChunkMetrics:
    """Accumulates gold/predicted tag sequences; `result()` gives the metric dict logged to VisualDL."""

    def __init__(self, entity_labels: Iterable[str] = ENTITY_LABELS, segmentation: bool = True) -> None:
        self.entity_labels = tuple(entity_labels)
        self.segmentation = segmentation
        self.counts: Counter = Counter()

    def update(self, gold: Sequence[str], pred: Sequence[str]) -> None:
        if len(gold) != len(pred):
            raise ValueError(f"gold has {len(gold)} tags, prediction {len(pred)}")
        g, p = set(chunks(gold)), set(chunks(pred))
        c = self.counts
        c["gold"] += len(g)
        c["pred"] += len(p)
        c["correct"] += len(g & p)
        gs, ps = {x[:2] for x in g}, {x[:2] for x in p}
        c["seg_gold"] += len(gs)
        c["seg_pred"] += len(ps)
        c["seg_correct"] += len(gs & ps)
        for lab in self.entity_labels:
            ge, pe = {x for x in g if x[2] == lab}, {x for x in p if x[2] == lab}
            c[f"gold_{lab}"] += len(ge)
            c[f"pred_{lab}"] += len(pe)
            c[f"correct_{lab}"] += len(ge & pe)

    def result(self) -> dict[str, float]:
        c = self.counts
        out = dict(zip(("precision", "recall", "f1"), prf(c["correct"], c["pred"], c["gold"])))
        if self.segmentation:
            out.update(zip(("seg_precision", "seg_recall", "seg_f1"),
                           prf(c["seg_correct"], c["seg_pred"], c["seg_gold"])))
        for lab in self.entity_labels:
            if c[f"gold_{lab}"] or c[f"pred_{lab}"]:
                p, r, f = prf(c[f"correct_{lab}"], c[f"pred_{lab}"], c[f"gold_{lab}"])
                out.update({f"{lab}_precision": p, f"{lab}_recall": r, f"{lab}_f1": f})
        return out


def seg_prf(gold_words: Sequence[Sequence[str]], pred_words: Sequence[Sequence[str]]) -> dict[str, float]:
    """Segmentation P/R/F1 of word lists against reference word lists (same characters, spaces ignored)."""
    correct = n_pred = n_gold = 0
    for g, p in zip(gold_words, pred_words):
        gs, ps = _spans(g), _spans(p)
        correct, n_pred, n_gold = correct + len(gs & ps), n_pred + len(ps), n_gold + len(gs)
    pr, rc, f = prf(correct, n_pred, n_gold)
    return {"seg_precision": pr, "seg_recall": rc, "seg_f1": f}


def _spans(words: Sequence[str]) -> set[tuple[int, int]]:
    out, i = set(), 0
    for w in words:
        w = "".join(w.split())
        if w:
            out.add((i, i + len(w)))
            i += len(w)
    return out
