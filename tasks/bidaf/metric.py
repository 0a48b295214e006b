"""The official CMRC 2018 metric (cmrc2018_evaluate.py v5), re-implemented for Python 3 without nltk.

Definition (followed line by line, quirks included, so numbers are comparable with published ones):
- text is lower-cased and stripped;
- every CJK character in U+4E00-U+9FA5 is its own segment; runs of other characters are split with a
  word tokenizer (nltk.word_tokenize in the original; see `_word_tokenize` for our nltk-free version);
- the fixed punctuation list `SP_CHAR` is dropped.  Quirk kept: a dropped character does *not* end the
  current non-CJK run ("a-b" -> "ab"), and the two-character '……' in the list never matches a single char;
- F1 = harmonic mean of precision/recall of the longest common *contiguous* run of segments; EM = strings
  equal after punctuation removal; both take the max over the reference answers;
- averages over all questions, 0-100; a question without a prediction scores 0 and counts in `skip`.
The summary's keys are lowercase (the official script prints AVERAGE/F1/EM/TOTAL/SKIP), like LAC's metrics.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

SP_CHAR = frozenset(['-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=',
                     '，', '。', '：', '？', '！', '“', '”', '；', '’', '《', '》', '……', '·', '、',
                     '「', '」', '（', '）', '－', '～', '『', '』'])

_CJK = re.compile(r"[\u4e00-\u9fa5]")
# Treebank rules (nltk's NLTKWordTokenizer) that can still fire after SP_CHAR removal.  Ones for quotes
# (`` '' rewriting) and punkt sentence splitting are left out: they change nothing on CMRC answers.
_TB_RULES = [
    (re.compile(r"([;@#$%&?!])"), r" \1 "),
    (re.compile(r"([\]\[(){}<>\"])"), r" \1 "),
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.\.\."), r" ... "),
    (re.compile(r"([^.])(\.)([\]\)}>\"']*)\s*$"), r"\1 \2 \3 "),
    (re.compile(r"(?i)([^' ])('[sSmMdD]|'ll|'re|'ve|n't) "), r"\1 \2 "),
]


def _word_tokenize(text: str) -> list[str]:
    """English word tokenisation close to nltk.word_tokenize for the text CMRC answers contain."""
    text = " " + text + " "
    for pat, rep in _TB_RULES:
        text = pat.sub(rep, text)
    return text.split()


def mixed_segmentation(in_str: str, rm_punc: bool = False) -> list[str]:
    """Segments as the official script makes them: CJK chars one by one, other runs word-tokenised."""
    in_str = str(in_str).lower().strip()
    segs: list[str] = []
    temp = ""
    for ch in in_str:
        if rm_punc and ch in SP_CHAR:
            continue  # official quirk: does not flush `temp`
        if _CJK.match(ch) or ch in SP_CHAR:
            if temp:
                segs.extend(_word_tokenize(temp))
                temp = ""
            segs.append(ch)
        else:
            temp += ch
    if temp:
        segs.extend(_word_tokenize(temp))
    return segs


def remove_punctuation(in_str: str) -> str:
    """Lower-case, strip, drop SP_CHAR characters (used by EM)."""
    return "".join(ch for ch in str(in_str).lower().strip() if ch not in SP_CHAR)


def find_lcs(s1: Sequence[str], s2: Sequence[str]) -> tuple[list[str], int]:
    """Longest common contiguous run of s1 and s2 (first one found in s1 order) and its length."""
    prev = [0] * (len(s2) + 1)
    best, end = 0, 0
    for i in range(len(s1)):
        cur = [0] * (len(s2) + 1)
        for j in range(len(s2)):
            if s1[i] == s2[j]:
                cur[j + 1] = prev[j] + 1
                if cur[j + 1] > best:
                    best, end = cur[j + 1], i + 1
        prev = cur
    return list(s1[end - best:end]), best


def f1_score(answers: Iterable[str], prediction: str) -> float:
    """Max over references of the LCS-based F1 in [0, 1]."""
    pred = mixed_segmentation(prediction, rm_punc=True)
    scores = [0.0]
    for ans in answers:
        ref = mixed_segmentation(ans, rm_punc=True)
        _, n = find_lcs(ref, pred)
        if n == 0:
            scores.append(0.0)
            continue
        p, r = n / len(pred), n / len(ref)
        scores.append(2 * p * r / (p + r))
    return max(scores)


def em_score(answers: Iterable[str], prediction: str) -> float:
    """1.0 if the prediction equals any reference once punctuation is removed, else 0.0."""
    pred = remove_punctuation(prediction)
    return float(any(remove_punctuation(a) == pred for a in answers))


def evaluate_predictions(references: Mapping[str, Sequence[str]], predictions: Mapping[str, Any]) -> dict[str, Any]:
    """Official summary as {'average','f1','em','total','skip'} (scores 0-100, rounded to 3 places)."""
    f1 = em = 0.0
    skip = 0
    for qid, answers in references.items():
        if qid not in predictions:
            skip += 1
            continue
        pred = str(predictions[qid])
        f1 += f1_score(answers, pred)
        em += em_score(answers, pred)
    total = len(references)
    f1 = 100.0 * f1 / total if total else 0.0
    em = 100.0 * em / total if total else 0.0
    return {"average": round((f1 + em) / 2, 3), "f1": round(f1, 3), "em": round(em, 3),
            "total": total, "skip": skip}
