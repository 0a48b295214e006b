"""Token vocabulary: built from a corpus with min-count / max-size, saved next to the model as JSON."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from .errors import UserError

BOS, EOS, UNK, PAD = "<S>", "</S>", "<UNK>", "<PAD>"
SPECIALS = (PAD, BOS, EOS, UNK)  # fixed ids 0..3: PAD=0 so zero-padding is padding


class Vocab:
    """Maps tokens to ids.  Ids 0-3 are `<PAD> <S> </S> <UNK>`; the rest are sorted by count, then token."""

    def __init__(self, tokens: Sequence[str], unit: str = "char", counts: dict[str, int] | None = None):
        if list(tokens[:4]) != list(SPECIALS):
            raise UserError(f"vocab must start with {SPECIALS}, got {list(tokens[:4])}")
        if len(set(tokens)) != len(tokens):
            raise UserError("vocab has duplicate tokens")
        self.itos = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.unit = unit
        self.counts = counts or {}

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, tok: str) -> bool:
        return tok in self.stoi

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Token ids; unknown tokens map to `<UNK>`."""
        get, unk = self.stoi.get, self.unk_id
        return [get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], unit: str = "char", min_count: int = 1,
              max_size: int | None = None) -> "Vocab":
        """Count tokens and keep those seen at least `min_count` times, at most `max_size` in all."""
        counter: Counter[str] = Counter()
        for toks in token_lists:
            counter.update(toks)
        for s in SPECIALS:
            counter.pop(s, None)
        kept = sorted((t for t, c in counter.items() if c >= min_count), key=lambda t: (-counter[t], t))
        if max_size is not None:
            kept = kept[: max(0, max_size - len(SPECIALS))]
        if not kept:
            raise UserError(f"vocab is empty: no token occurs {min_count}+ times in the training text")
        return cls(list(SPECIALS) + kept, unit, {t: counter[t] for t in kept})

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps({"unit": self.unit, "tokens": self.itos}, ensure_ascii=False),
                              encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocab":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(data["tokens"], data.get("unit", "char"))
        except FileNotFoundError:
            raise UserError(f"vocab file {path} is missing") from None
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"vocab file {path} is not a valid vocab ({e})") from None
