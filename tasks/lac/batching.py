"""Character vocabulary and length-bucketed padded batches (numpy; tensors are made at the model call)."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from elmo_paddle.vocab import TokenIds, build_token_ids, token_ids_from_json

from .data import Example

# LAC's spelling of padding (id 0) and unknown (id 1): every saved LAC vocab.json starts with these
SPECIALS = ("<pad>", "<unk>")


def char_vocab(texts: Iterable[str], min_freq: int = 1) -> TokenIds:
    """Characters of the training sentences seen `min_freq`+ times, most frequent first, after the specials."""
    return build_token_ids(texts, min_freq, specials=SPECIALS, unk=SPECIALS[1])


def char_vocab_from_json(items: Any, where: str) -> TokenIds:
    """A saved LAC vocab.json (its list of characters)."""
    return token_ids_from_json(items, where, specials=SPECIALS, unk=SPECIALS[1])


@dataclass
class Batch:
    char_ids: np.ndarray          # [B,T] int64, 0-padded
    lengths: np.ndarray           # [B] int64
    tag_ids: np.ndarray | None    # [B,T] int64 (padding 0, masked out) or None at prediction
    tokens: list[list[str]]       # the characters, for elmo.batch_to_ids
    index: list[int]              # position of each row in the input list (batches are length-sorted)

    def __len__(self) -> int:
        return len(self.index)


def make_batches(texts: Sequence[str], vocab: TokenIds, batch_size: int, tags: Sequence[Sequence[str]] | None = None,
                 tag_index: dict[str, int] | None = None, seed: int | None = None) -> list[Batch]:
    """Group texts of similar length (less padding); with `seed`, shuffle pools and batch order.

    Empty texts are not batched (the caller gives them an empty result).
    """
    order = [i for i in range(len(texts)) if texts[i]]
    if seed is not None:
        random.Random(seed).shuffle(order)
    pool = batch_size * 50
    batches: list[list[int]] = []
    for p in range(0, len(order), pool):
        chunk = sorted(order[p:p + pool], key=lambda i: len(texts[i]))
        batches.extend(chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size))
    if seed is not None:
        random.Random(seed + 1).shuffle(batches)
    out = []
    for idx in batches:
        t_max = max(len(texts[i]) for i in idx)
        ids = np.zeros((len(idx), t_max), dtype="int64")
        tag_ids = np.zeros((len(idx), t_max), dtype="int64") if tags is not None else None
        for r, i in enumerate(idx):
            ids[r, :len(texts[i])] = vocab.encode(texts[i])
            if tag_ids is not None:
                tag_ids[r, :len(texts[i])] = [tag_index[t] for t in tags[i]]  # type: ignore[index]
        out.append(Batch(ids, np.array([len(texts[i]) for i in idx], dtype="int64"), tag_ids,
                         [list(texts[i]) for i in idx], idx))
    return out


def example_batches(examples: Sequence[Example], vocab: TokenIds, tag_index: dict[str, int], batch_size: int,
                    seed: int | None = None) -> list[Batch]:
    return make_batches([e.chars for e in examples], vocab, batch_size, [e.tags for e in examples],
                        tag_index, seed)
