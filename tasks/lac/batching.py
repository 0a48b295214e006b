"""Character vocabulary and length-bucketed padded batches (numpy; tensors are made at the model call)."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .data import Example

PAD, UNK = "<pad>", "<unk>"


class Vocab:
    """Characters -> ids; 0 is padding, 1 unknown."""

    def __init__(self, items: Sequence[str]) -> None:
        if list(items[:2]) != [PAD, UNK]:
            raise ValueError("a vocabulary starts with <pad>, <unk>")
        self.items = list(items)
        self.index = {c: i for i, c in enumerate(self.items)}

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1) -> "Vocab":
        counts = Counter(c for t in texts for c in t)
        chars = sorted((c for c, n in counts.items() if n >= min_freq), key=lambda c: (-counts[c], c))
        return cls([PAD, UNK] + chars)

    def __len__(self) -> int:
        return len(self.items)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(c, 1) for c in text]


@dataclass
class Batch:
    char_ids: np.ndarray          # [B,T] int64, 0-padded
    lengths: np.ndarray           # [B] int64
    tag_ids: np.ndarray | None    # [B,T] int64 (padding 0, masked out) or None at prediction
    tokens: list[list[str]]       # the characters, for elmo.batch_to_ids
    index: list[int]              # position of each row in the input list (batches are length-sorted)

    def __len__(self) -> int:
        return len(self.index)


def make_batches(texts: Sequence[str], vocab: Vocab, batch_size: int, tags: Sequence[Sequence[str]] | None = None,
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


def example_batches(examples: Sequence[Example], vocab: Vocab, tag_index: dict[str, int], batch_size: int,
                    seed: int | None = None) -> list[Batch]:
    return make_batches([e.chars for e in examples], vocab, batch_size, [e.tags for e in examples],
                        tag_index, seed)
