"""Streaming LM batches for biLM pretraining.

The corpus is scanned once (`scan_corpus`) to count lines per file, hold out the last `dev_fraction` of
each file's lines, build the vocab from the training lines and size an epoch in tokens.  Training then
streams: lines are shuffled inside a bounded buffer, wrapped as `<S> ... </S>` and packed into B row
streams cut into windows, so memory stays flat whatever the corpus size.  Each fleet rank reads every
`world_size`-th line.  The stream's position is a small JSON-able dict, so `--resume` continues exactly.

A batch holds `inputs [B, L]`, `fwd_targets [B, L]` (token after each input) and `bwd_targets [B, L]`
(token before each input); id 0 (`<PAD>`) in a target means "no prediction here".
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from .errors import UserError
from .text import ReadStats, iter_file_lines, list_text_files, tokenize
from .vocab import Vocab


@dataclass
class CorpusInfo:
    """Result of the corpus scan: files, how many lines of each are training text, and token counts."""

    files: list[str]
    train_lines: list[int]  # the first train_lines[i] lines of file i are training text
    total_lines: list[int]  # held-out text: the last round(total * dev_fraction) lines of each file
    train_tokens: int
    dev_tokens: int
    dev_fraction: float = 0.01

    def dev_start(self, i: int) -> int:
        n = self.total_lines[i]
        return n - int(round(n * self.dev_fraction)) if self.dev_fraction > 0 else n

    def to_json(self) -> dict:
        return self.__dict__.copy()


def scan_corpus(paths: str | Sequence[str], unit: str = "char", dev_fraction: float = 0.01,
                min_count: int = 3, max_vocab: int | None = None, max_chars: int = 100_000,
                show_progress: bool = True, max_train_lines: int | None = None,
                with_chars: bool = False) -> tuple[CorpusInfo, Vocab, ReadStats]:
    """Count lines, split train/dev (last `dev_fraction` of each file), build the vocab on train lines.

    `with_chars`: the vocab also gets a character vocabulary (for a char-CNN token layer).
    """
    files = list_text_files(paths)
    stats = ReadStats()
    counts: dict[str, int] = {}
    total_lines, train_lines = [], []
    train_tokens = dev_tokens = 0
    for f in files:
        # pass 1: count the file's lines (the same reader, so the numbering matches training)
        fstats = ReadStats()
        n = sum(1 for _ in iter_file_lines(f, fstats, max_chars))
        if fstats.bad_utf8 > 0 and fstats.bad_utf8 * 2 >= fstats.lines:
            where = fstats.examples[0].rsplit(":", 1)[0] if fstats.examples else str(f)
            where = next((e.rsplit(":", 1)[0] for e in fstats.examples if e.endswith("bad_utf8")), where)
            raise UserError(f"{where}: {fstats.bad_utf8} of {fstats.lines} lines of {f} are not valid UTF-8 text; "
                            f"is it GBK or UTF-16? Convert it (e.g. iconv -f GBK -t UTF-8)")
        n_train = n - int(round(n * dev_fraction)) if dev_fraction > 0 else n
        total_lines.append(n)
        dev_start = n_train
        if max_train_lines is not None:
            n_train = min(n_train, max_train_lines)
        train_lines.append(n_train)
        bar = tqdm(iter_file_lines(f, stats, max_chars), total=n, desc=f"scan {f.name}", unit="line",
                   disable=not show_progress, leave=False)
        for i, (_, text) in enumerate(bar):
            toks = tokenize(text, unit)
            if i < n_train:
                train_tokens += len(toks) + 1  # +1: </S> (and <S> for the backward LM) is predicted too
                for t in toks:
                    counts[t] = counts.get(t, 0) + 1
            elif i >= dev_start:
                dev_tokens += len(toks) + 1
    if train_tokens == 0:
        raise UserError(f"no training text in {', '.join(map(str, files))} (all lines empty or invalid)")
    try:
        # Counter.update adds a mapping's counts: the vocab is built without expanding tokens into lists
        vocab = Vocab.build([counts], unit, min_count, max_vocab, with_chars=with_chars)
    except UserError as e:
        raise UserError(f"{', '.join(map(str, files))}: {e}") from None
    info = CorpusInfo([str(f) for f in files], train_lines, total_lines, train_tokens, dev_tokens, dev_fraction)
    return info, vocab, stats


def iter_split_lines(info: CorpusInfo, split: str, rank: int = 0, world_size: int = 1,
                     stats: ReadStats | None = None) -> Iterator[str]:
    """Lines of the 'train' or 'dev' part of every file; train lines are sharded across ranks."""
    for fi, (f, n_train) in enumerate(zip(info.files, info.train_lines)):
        k, dev_start = 0, info.dev_start(fi)
        for i, (_, text) in enumerate(iter_file_lines(Path(f), stats)):
            if split == "train":
                if i >= n_train:
                    break
                if k % world_size == rank:
                    yield text
                k += 1
            elif i >= dev_start:
                yield text


class LMBatcher:
    """Packs shuffled training lines into [B, L] windows; `state()`/`load_state()` make it resumable."""

    def __init__(self, info: CorpusInfo, vocab: Vocab, batch_size: int, seq_len: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle_buffer: int = 10_000,
                 shuffle_buffer_chars: int = 8_000_000):
        self.info, self.vocab = info, vocab
        self.B, self.L = batch_size, seq_len
        self.seed, self.rank, self.world = seed, rank, world_size
        self.shuffle_buffer = shuffle_buffer
        # the buffer is also bounded in characters: lines can be up to 100k chars (a file with no newlines
        # is read as such pieces), and 10k of those would be a gigabyte
        self.shuffle_buffer_chars = shuffle_buffer_chars
        self.epoch = 0
        self.consumed = 0  # lines taken from this epoch's shuffled stream
        self.rows: list[list[int]] = [[] for _ in range(batch_size)]
        self.off = [0] * batch_size  # row r's pending tokens are rows[r][off[r]:] (no O(len) copy per window)
        self.stats = ReadStats()

    def state(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed,
                "rows": [r[o:] for r, o in zip(self.rows, self.off)]}

    def load_state(self, st: dict) -> None:
        self.epoch, self.consumed = int(st["epoch"]), int(st["consumed"])
        self.rows = [list(map(int, r)) for r in st["rows"]]
        self.off = [0] * len(self.rows)

    def _shuffled_lines(self) -> Iterator[str]:
        rng = random.Random(f"{self.seed}-{self.epoch}-{self.rank}")
        buf: list[str] = []
        chars = 0
        for line in iter_split_lines(self.info, "train", self.rank, self.world, self.stats):
            buf.append(line)
            chars += len(line)
            while len(buf) >= self.shuffle_buffer or (chars > self.shuffle_buffer_chars and buf):
                j = rng.randrange(len(buf))
                buf[j], buf[-1] = buf[-1], buf[j]
                out = buf.pop()
                chars -= len(out)
                yield out
        rng.shuffle(buf)
        yield from buf

    def epoch_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """Batches of the current epoch from the saved position; advances `epoch` at its end."""
        need = self.L + 2  # a window of L inputs plus one token of context on each side
        lines = self._shuffled_lines()
        for _ in range(self.consumed):  # fast-forward a resumed epoch: reading only, no tokenising
            next(lines, None)
        exhausted = False
        while True:
            rows, off = self.rows, self.off
            for r in range(self.B):
                while len(rows[r]) - off[r] < need and not exhausted:
                    line = next(lines, None)
                    if line is None:
                        exhausted = True
                        break
                    self.consumed += 1
                    rows[r].extend([Vocab.bos_id, *self.vocab.encode(tokenize(line, self.vocab.unit)),
                                    Vocab.eos_id])
            if any(len(row) - o < need for row, o in zip(rows, off)):
                break
            win = np.array([row[o:o + need] for row, o in zip(rows, off)], dtype="int64")
            # keep the window's last 2 tokens: the next window starts where this one's inputs ended
            for r in range(self.B):
                off[r] += self.L
                if off[r] * 2 > len(rows[r]):  # drop the consumed head now and then (amortised O(1))
                    rows[r] = rows[r][off[r]:]
                    off[r] = 0
            inp, fwd, bwd = win[:, 1:-1], win[:, 2:].copy(), win[:, :-2].copy()
            # across a line boundary "</S> is followed by <S>" is free to predict: don't train on it
            fwd[inp == Vocab.eos_id] = 0
            bwd[inp == Vocab.bos_id] = 0
            yield {"inputs": inp, "fwd_targets": fwd, "bwd_targets": bwd}
        self.epoch += 1
        self.consumed = 0
        self.rows = [[] for _ in range(self.B)]
        self.off = [0] * self.B

    def batches_per_epoch(self) -> int:
        """Approximate number of batches in one epoch on this rank (from the scan's token count)."""
        return max(1, self.info.train_tokens // (self.world * self.B * self.L))


def dev_batches(info: CorpusInfo, vocab: Vocab, batch_size: int = 32, max_len: int = 256,
                max_lines: int | None = None, stats: ReadStats | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Held-out lines, one per row, each `<S> tokens </S>` with targets at every real position.

    Per line, the forward LM predicts every token and the final `</S>`; the backward LM predicts every
    token and the initial `<S>`.  Lines longer than `max_len` are cut into pieces that are scored
    independently (state is not carried), which can only make the reported perplexity worse.  `stats`
    counts the lines the reader skipped (invalid UTF-8), so the caller can say so.
    """
    if max_len < 1:
        raise UserError(f"max_len must be >= 1, got {max_len}")
    seqs: list[list[int]] = []
    for k, line in enumerate(iter_split_lines(info, "dev", stats=stats)):
        if max_lines is not None and k >= max_lines:
            break
        ids = [Vocab.bos_id, *vocab.encode(tokenize(line, vocab.unit)), Vocab.eos_id]
        step = max_len
        for s in range(0, len(ids) - 1, step):
            seqs.append(ids[s:s + step + 1] if s + step + 1 < len(ids) else ids[s:])
    seqs.sort(key=len)  # batch by length: less padding
    for i in range(0, len(seqs), batch_size):
        yield pad_lm_batch(seqs[i:i + batch_size])


def pad_lm_batch(seqs: list[list[int]]) -> dict[str, np.ndarray]:
    """Rows of `<S>?...</S>?` ids -> inputs and both targets, where a target exists only inside the row."""
    T = max(len(s) for s in seqs)
    inp = np.zeros((len(seqs), T), "int64")
    fwd = np.zeros_like(inp)
    bwd = np.zeros_like(inp)
    for b, s in enumerate(seqs):
        n = len(s)
        inp[b, :n] = s
        fwd[b, :n - 1] = s[1:]
        bwd[b, 1:n] = s[:-1]
    # a piece cut from the middle of a line: its first token's backward target and last token's
    # forward target lie outside the piece, so they stay 0 (ignored); a token is never its own target
    return {"inputs": inp, "fwd_targets": fwd, "bwd_targets": bwd}
