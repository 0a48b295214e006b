"""Inference: raw sentences -> [(word, TAG)], batched, with long-line chunking and a forced-segmentation dict.

Whitespace is not fed to the model (the corpora have none) but always separates words; full-width digits and
letters are normalised for the model while the output keeps the input's characters.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Sequence

from elmo_paddle.errors import UserError
from elmo_paddle.text import normalize_width

from .tags import OUTSIDE

_BREAK_AFTER = set("。！？；!?;，,、：:")


def chunk_spans(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Cut `text` into [start, end) pieces of at most max_chars, preferring to cut after punctuation."""
    spans, start, n = [], 0, len(text)
    while n - start > max_chars:
        cut = next((i for i in range(start + max_chars, start + max_chars // 2, -1) if text[i - 1] in _BREAK_AFTER),
                   start + max_chars)
        spans.append((start, cut))
        start = cut
    spans.append((start, n))
    return spans


class UserDict:
    """Forced segmentations: one `word` or `word/TAG` per line; longest match wins, left to right."""

    def __init__(self, entries: dict[str, str | None]) -> None:
        self.entries = {normalize_width(w): t for w, t in entries.items() if w}
        self.max_len = max((len(w) for w in self.entries), default=0)

    @classmethod
    def load(cls, path: str | Path, warn: Callable[[str], None]) -> "UserDict":
        p = Path(path)
        if not p.is_file():
            raise UserError(f"dictionary {p} does not exist")
        entries: dict[str, str | None] = {}
        for lineno, raw in enumerate(p.read_bytes().splitlines(), 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                warn(f"{p}:{lineno}: invalid UTF-8, entry skipped")
                continue
            if not line or line.startswith("#"):
                continue
            word, slash, tag = line.rpartition("/")
            if not slash or not word.strip() or not tag.strip():
                word, tag = line, ""
            word = "".join(word.split())
            if not word:
                warn(f"{p}:{lineno}: empty entry skipped")
                continue
            entries[word] = tag.strip() or None
        return cls(entries)

    def matches(self, text: str) -> list[tuple[int, int, str | None]]:
        out, i = [], 0
        while i < len(text):
            for L in range(min(self.max_len, len(text) - i), 1, -1):
                w = text[i:i + L]
                if w in self.entries:
                    out.append((i, i + L, self.entries[w]))
                    i += L
                    break
            else:
                i += 1
        return out


def words_from_tags(text: str, pos: list[int], model_text: str, tags: list[str],
                    user_dict: UserDict | None = None) -> list[tuple[str, str]]:
    """Group the characters of `text` at `pos` (its non-space characters, `model_text` once normalised) into
    (word, label) pieces by their tags ('n-B', 'n-I', ... or 'O').  Consecutive 'O' characters form one piece:
    an NER-only model (MSRA) segments nothing, and one piece per character made its output unreadable."""
    n = len(pos)
    starts, labels = [False] * n, [OUTSIDE] * n
    for i, t in enumerate(tags):
        lab, _, bi = t.rpartition("-")
        labels[i] = lab if t != OUTSIDE else OUTSIDE
        starts[i] = i == 0 or bi == "B" or labels[i] != labels[i - 1] \
            or pos[i] != pos[i - 1] + 1  # whitespace in the input always separates words
    if user_dict is not None:
        for s, e, tag in user_dict.matches(model_text):
            lab = tag or labels[s]
            for i in range(s, e):
                starts[i], labels[i] = i == s, lab
            if e < n:
                starts[e] = True
    words: list[tuple[str, str]] = []
    for i in range(n):
        if starts[i] or not words:
            words.append((text[pos[i]], labels[i]))
        else:
            words[-1] = (words[-1][0] + text[pos[i]], words[-1][1])
    return words


class Tagger:
    """A loaded LAC model that tags lists of raw strings."""

    def __init__(self, model_dir: str | Path, batch_size: int = 128, max_chars: int = 256,
                 user_dict: UserDict | None = None, warn: Callable[[str], None] | None = None) -> None:
        from .checkpoint import load_model

        if batch_size < 1 or max_chars < 1:
            raise UserError("batch size and max chars must be positive")
        self.model, self.cfg, self.vocab, self.tags = load_model(model_dir)
        from .model import FrozenEmissions

        self.frozen = FrozenEmissions(self.model) if FrozenEmissions.available() else None  # the fast CPU path
        # An NER-only model (MSRA) tags O outside entities and has no word segmentation of its own
        self.segments = OUTSIDE not in self.tags
        self.batch_size, self.max_chars, self.user_dict = batch_size, max_chars, user_dict
        self.warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))

    def _decode(self, pieces: list[str]) -> list[list[str]]:
        from .batching import make_batches
        from .model import batch_tensors

        out: list[list[str]] = [[] for _ in pieces]
        for b in make_batches(pieces, self.vocab, self.batch_size):
            ids, lengths = batch_tensors(b.char_ids, b.lengths)
            elmo_ids = self.model.elmo.batch_to_ids(b.tokens) if self.model.elmo is not None else None
            for row, path in zip(b.index, self.model.decode(ids, lengths, elmo_ids, self.frozen)):
                out[row] = [self.tags[i] for i in path]
        return out

    def tag(self, texts: Sequence[str], names: Sequence[str] | None = None) -> list[list[tuple[str, str]]]:
        """[(word, TAG)] for each text; `names` (e.g. 'line 7') label the long-line warnings."""
        pieces: list[str] = []
        plan = []  # per text: (positions of non-space chars, [(piece index, start)])
        for k, text in enumerate(texts):
            pos = [i for i, c in enumerate(text) if not c.isspace()]
            model_text = normalize_width("".join(text[i] for i in pos))
            spans = chunk_spans(model_text, self.max_chars) if model_text else []
            if len(spans) > 1:
                where = names[k] if names else f"text {k + 1}"
                self.warn(f"{where}: {len(model_text)} characters, tagged in {len(spans)} chunks of at most "
                          f"{self.max_chars} (context does not cross chunk edges; see --max-chars)")
            plan.append((pos, model_text, [(len(pieces) + j, s) for j, (s, _) in enumerate(spans)]))
            pieces.extend(model_text[s:e] for s, e in spans)
        decoded = self._decode(pieces)
        return [words_from_tags(texts[k], pos, mt, [t for p, _ in chunks for t in decoded[p]], self.user_dict)
                for k, (pos, mt, chunks) in enumerate(plan)]
