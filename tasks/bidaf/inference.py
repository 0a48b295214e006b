"""A BiDAF's answers: the best span over all windows of each question, cut from the original context.

Used by training (dev and test scores) and by the `tasks.bidaf.predict` command.
"""
from __future__ import annotations

from typing import Any, Sequence

import paddle

from elmo_paddle.runtime import to_tensors
from elmo_paddle.vocab import TokenIds

from .data import Feature, QAExample, encode_batch
from .decode import best_spans


def elmo_inputs(feats: Sequence[Feature], cache: Any) -> tuple[Any, Any]:
    """Cached frozen biLM layers for the batch's contexts and questions (None, None without ELMo)."""
    if cache is None:
        return None, None
    return cache([f.c_chars for f in feats]), cache([f.q_chars for f in feats])


def predict_features(model: paddle.nn.Layer, examples: Sequence[QAExample], feats: Sequence[Feature],
                     chars: TokenIds, words: TokenIds, batch_size: int = 64, max_answer_len: int = 64,
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
