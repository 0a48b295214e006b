"""Token vocabularies: `TokenIds` (token <-> id with padding and unknown ids) and the biLM's `Vocab` built on it.

The task vocabularies (LAC's characters, BiDAF's characters and words) are plain `TokenIds`; they are ranked the
same way as the biLM's (count, then token) by `ranked_tokens`.

A biLM vocab can also carry a character vocabulary, for biLMs whose token layer is a char-CNN over the characters
of each token (`token_encoder: char_cnn`, mostly with `word` units): then a token of any spelling, also one
outside the token vocab, gets an input vector from its characters.
"""
from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import UserError

BOS, EOS, UNK, PAD = "<S>", "</S>", "<UNK>", "<PAD>"
SPECIALS = (PAD, BOS, EOS, UNK)  # fixed ids 0..3: PAD=0 so zero-padding is padding
# character ids 0..5; a token is spelled <bow> c1 .. ck <eow>, <S>/</S> as <bow> <bos>/<eos> <eow>, padding all 0
CHAR_SPECIALS = ("<pad>", "<bow>", "<eow>", "<bos>", "<eos>", "<unk>")


def count_tokens(token_lists: Iterable[Iterable[str] | Mapping[str, int]]) -> Counter[str]:
    """Token counts over token sequences (a string counts its characters) or token -> count mappings."""
    counter: Counter[str] = Counter()
    for toks in token_lists:
        counter.update(toks)
    return counter


def ranked_tokens(counts: Mapping[str, int], specials: Sequence[str], min_count: int = 1,
                  max_size: int | None = None) -> list[str]:
    """`specials`, then the tokens counted at least `min_count` times, most frequent first (ties: by token);
    with `max_size`, at most that many entries in all."""
    kept = sorted((t for t, c in counts.items() if c >= min_count and t not in specials),
                  key=lambda t: (-counts[t], t))
    if max_size is not None:
        kept = kept[: max(0, max_size - len(specials))]
    return list(specials) + kept


class TokenIds:
    """Token <-> id table: the special tokens first (padding at id 0), unknown tokens map to `unk`'s id."""

    pad_id = 0

    def __init__(self, tokens: Sequence[str], specials: Sequence[str] = (PAD, UNK), unk: str = UNK):
        if list(tokens[:len(specials)]) != list(specials):
            raise UserError(f"vocab must start with {tuple(specials)}, got {list(tokens[:len(specials)])}")
        if len(set(tokens)) != len(tokens):
            raise UserError("vocab has duplicate tokens")
        self.itos = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.unk_id = self.stoi[unk]

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, tok: str) -> bool:
        return tok in self.stoi

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Token ids (a string encodes its characters); unknown tokens map to the unknown id."""
        get, unk = self.stoi.get, self.unk_id
        return [get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]


def build_token_ids(token_lists: Iterable[Iterable[str]], min_count: int = 1, max_size: int | None = None,
                    specials: Sequence[str] = (PAD, UNK), unk: str = UNK) -> TokenIds:
    """A task vocabulary: `specials`, then the tokens of `token_lists` seen `min_count`+ times, most frequent
    first, at most `max_size` entries in all."""
    return TokenIds(ranked_tokens(count_tokens(token_lists), specials, min_count, max_size), specials, unk)


def token_ids_from_json(tokens: Any, where: str, specials: Sequence[str] = (PAD, UNK), unk: str = UNK) -> TokenIds:
    """A task vocabulary saved as its JSON token list; anything else is a UserError naming `where`."""
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise UserError(f"{where}: not a valid vocab (must be a list of tokens starting with {', '.join(specials)})")
    try:
        return TokenIds(tokens, specials, unk)
    except UserError as e:
        raise UserError(f"{where}: not a valid vocab ({e})") from None


class Vocab(TokenIds):
    """The biLM's vocab.  Ids 0-3 are `<PAD> <S> </S> <UNK>`; the rest are sorted by count, then token."""

    def __init__(self, tokens: Sequence[str], unit: str = "char", chars: Sequence[str] | None = None):
        super().__init__(tokens, SPECIALS, UNK)
        self.unit = unit
        self.chars: list[str] | None = None
        self.char_stoi: dict[str, int] = {}
        if chars is not None:
            if list(chars[:len(CHAR_SPECIALS)]) != list(CHAR_SPECIALS):
                raise UserError(f"char vocab must start with {CHAR_SPECIALS}, got {list(chars[:len(CHAR_SPECIALS)])}")
            self.chars = list(chars)
            self.char_stoi = {c: i for i, c in enumerate(self.chars)}

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    # ------------------------------------------------------------------ characters (char-CNN token layer)
    def char_ids(self, token: str, max_chars: int) -> list[int]:
        """`max_chars` character ids spelling `token`: `<bow> c1 .. <eow>`, 0-padded.

        A token too long to fit keeps its first `max_chars - 2` characters and still ends in `<eow>`.
        `<S>`/`</S>` get their own markers, `<PAD>` is all padding.  Unknown characters map to `<unk>`.
        """
        if self.chars is None:
            raise UserError("this vocab has no character vocabulary (the model's token layer is not a char-CNN)")
        if max_chars < 3:
            raise UserError(f"max_chars_per_token must be >= 3 (<bow>, a character, <eow>), got {max_chars}")
        if token == PAD:
            return [0] * max_chars
        if token in (BOS, EOS):
            body = [3 if token == BOS else 4]
        else:
            get = self.char_stoi.get
            body = [get(c, 5) for c in token[:max_chars - 2]]
        out = [1, *body, 2]
        return out + [0] * (max_chars - len(out))

    def char_table(self, max_chars: int) -> np.ndarray:
        """`[len(vocab), max_chars]` int64: row i spells token i (what the biLM uses for token ids)."""
        return np.array([self.char_ids(t, max_chars) for t in self.itos], dtype="int64")

    def chars_array(self, token_lists: Sequence[Sequence[str]], max_chars: int, min_len: int = 1) -> np.ndarray:
        """Token lists -> int64 `[B, T, max_chars]` character ids of each token, 0-padded."""
        T = max([min_len] + [len(t) for t in token_lists])
        out = np.zeros((len(token_lists), T, max_chars), dtype="int64")
        for b, toks in enumerate(token_lists):
            for t, tok in enumerate(toks):
                out[b, t] = self.char_ids(tok, max_chars)
        return out

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], unit: str = "char", min_count: int = 1,
              max_size: int | None = None, with_chars: bool = False) -> "Vocab":
        """Count tokens and keep those seen at least `min_count` times, at most `max_size` in all.

        `with_chars`: also keep the characters seen at least `min_count` times in all training tokens
        (counted over every token, not only the kept ones) as the character vocabulary.
        """
        counter = count_tokens(token_lists)
        for s in SPECIALS:
            counter.pop(s, None)
        tokens = ranked_tokens(counter, SPECIALS, min_count, max_size)
        if len(tokens) == len(SPECIALS):
            raise UserError(f"vocab is empty: no token occurs {min_count}+ times in the training text")
        chars = None
        if with_chars:
            char_counts: Counter[str] = Counter()
            for t, c in counter.items():
                for ch in t:
                    char_counts[ch] += c
            chars = ranked_tokens(char_counts, CHAR_SPECIALS, min_count)
        return cls(tokens, unit, chars)

    def to_json(self) -> dict:
        data = {"unit": self.unit, "tokens": self.itos}
        if self.chars is not None:
            data["chars"] = self.chars
        return data

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocab":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(data["tokens"], data.get("unit", "char"), chars=data.get("chars"))
        except FileNotFoundError:
            raise UserError(f"vocab file {path} is missing") from None
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"vocab file {path} is not a valid vocab ({e})") from None
