"""Tag sets of the three LAC-task corpora and the character-level scheme they are converted to.

Scheme (the one Baidu LAC uses): every character gets ``<label>-B`` (it begins a word/chunk) or
``<label>-I`` (it continues one).  Note the *suffix* order, ``n-B`` not ``B-n``.  MSRA NER, which has no
segmentation, also uses ``O`` for characters outside any entity; LAC and People's Daily never use ``O``.

Label sets
----------
* **LAC** (Baidu, ``lac_sample/tag.dic``): POS ``n f s t nr ns nt nw nz v vd vn a ad an d m q r p c u xc w``
  and NER ``PER LOC ORG TIME``.  In tag.dic the NER labels reuse the ids of ``nr ns nt t``.
* **People's Daily 1998** (PKU): the 44 tags of ``PD_LABELS``.  With ``lac_names`` (default) ``nr ns nt t``
  are renamed ``PER LOC ORG TIME`` as LAC does; the other PKU labels are kept as they are (LAC's POS
  labels descend from them, but PKU has finer ones such as ``Ng`` morphemes, ``i`` idioms, ``j`` abbreviations
  that LAC has no place for, and mapping them would invent annotations).  Three one-off annotation
  errors are repaired (``PD_FIXES``).
* **MSRA NER**: ``PER LOC ORG`` (IOB2 ``B-PER`` in the file, ``PER-B`` here) plus ``O``.
"""
from __future__ import annotations

import re

OUTSIDE = "O"

LAC_POS = ("n", "f", "s", "t", "nr", "ns", "nt", "nw", "nz", "v", "vd", "vn", "a", "ad", "an", "d", "m", "q",
           "r", "p", "c", "u", "xc", "w")
LAC_NER = ("PER", "LOC", "ORG", "TIME")
LAC_LABELS = LAC_POS + LAC_NER

# PKU tags seen in 199801.txt (SOURCE.md), most frequent first.
PD_LABELS = ("n", "v", "w", "u", "d", "vn", "m", "p", "nr", "a", "r", "ns", "c", "q", "t", "f", "j", "b", "l",
             "ad", "i", "Ng", "s", "nz", "nt", "an", "y", "Vg", "z", "k", "vd", "Tg", "nx", "Ag", "Dg", "o", "h",
             "e", "Rg", "Bg", "Mg")
# One-token annotation errors in the corpus -> the tag obviously meant.
PD_FIXES = {"vvn": "vn", "na": "n", "Yg": "y"}
# LAC's renaming of the PKU proper-noun / time tags.
PD_TO_LAC_NER = {"nr": "PER", "ns": "LOC", "nt": "ORG", "t": "TIME"}

MSRA_LABELS = ("PER", "LOC", "ORG")

# Entity labels reported separately by the metrics (whatever the dataset provides of them).
ENTITY_LABELS = LAC_NER

_TAG_RE = re.compile(r"^(.+)-([BI])$")


def split_tag(tag: str) -> tuple[str, str]:
    """'n-B' -> ('n', 'B'); 'O' -> ('O', 'O').  Raises ValueError on anything else."""
    if tag == OUTSIDE:
        return OUTSIDE, OUTSIDE
    m = _TAG_RE.match(tag)
    if not m:
        raise ValueError(f"not a LAC-style tag: {tag!r}")
    return m.group(1), m.group(2)


def word_tags(label: str, n_chars: int) -> list[str]:
    """Character tags for one word of `n_chars` characters: ['X-B', 'X-I', ...]."""
    return [f"{label}-B"] + [f"{label}-I"] * (n_chars - 1)


def pd_label(raw: str, lac_names: bool = True) -> str | None:
    """Map a PKU tag to the label we train on; None if it is not a PKU tag."""
    raw = PD_FIXES.get(raw, raw)
    if raw not in PD_LABELS:
        return None
    return PD_TO_LAC_NER.get(raw, raw) if lac_names else raw


def all_tags(labels: tuple[str, ...] | list[str], with_outside: bool = False) -> list[str]:
    """The full tag list for a label set, in a fixed order (the model's output ids)."""
    tags = [f"{lab}-{s}" for lab in labels for s in ("B", "I")]
    return tags + [OUTSIDE] if with_outside else tags


def pd_tag_list(lac_names: bool = True) -> list[str]:
    """Every tag the People's Daily converter can emit."""
    labels = sorted({pd_label(t, lac_names) for t in PD_LABELS} - {None})  # type: ignore[arg-type]
    return all_tags(labels)


def dataset_tags(dataset: str, lac_names: bool = True) -> list[str]:
    """The fixed tag list of a dataset name (pd1998, msra, lac)."""
    if dataset == "pd1998":
        return pd_tag_list(lac_names)
    if dataset == "msra":
        return all_tags(list(MSRA_LABELS), with_outside=True)
    if dataset == "lac":
        return all_tags(list(LAC_LABELS))
    raise ValueError(dataset)
