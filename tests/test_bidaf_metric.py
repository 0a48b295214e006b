"""Official CMRC 2018 metric: hand-checked cases, and the evaluate CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.bidaf.evaluate import main as evaluate_main
from tasks.bidaf.metric import em_score, evaluate_predictions, f1_score, find_lcs, mixed_segmentation

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("answers,pred,f1,em", [
    (["北京大学"], "北京大学", 1.0, 1.0),
    (["北京大学"], "北京", 2 / 3, 0.0),                 # p=2/2, r=2/4
    (["战国无双3"], "《战国无双3》", 1.0, 1.0),          # 《》 are in the punctuation list
    (["光荣和ω-force"], "光荣和ω", 0.75, 0.0),          # '-' dropped without ending the run: 'ωforce' one token
    (["New York City"], "york city", 0.8, 0.0),         # lower-cased words: p=1, r=2/3
    (["abc", "北京"], "北京", 1.0, 1.0),                # max over references
    (["一二三四五"], "一二零四五", 0.4, 0.0),            # contiguous LCS (2), not subsequence (4)
    (["北京"], "", 0.0, 0.0),
    (["好"], "好……", 2 / 3, 0.0),                     # official quirk: '……' in the list never matches a char
    (["3.5米"], "3.5", 2 / 3, 0.0),                     # '3.5' stays one token
    (["的"], "一的", 2 / 3, 0.0),
])
def test_hand_cases(answers, pred, f1, em):
    assert f1_score(answers, pred) == pytest.approx(f1)
    assert em_score(answers, pred) == em


def test_segmentation_and_lcs():
    assert mixed_segmentation("CMRC 2018比赛", rm_punc=True) == ["cmrc", "2018", "比", "赛"]
    assert mixed_segmentation("a，b") == ["a", "，", "b"]
    assert find_lcs(list("xabcy"), list("zabcq")) == (list("abc"), 3)


def test_missing_predictions_count_zero_and_skip():
    r = evaluate_predictions({"a": ["北京"], "b": ["上海"]}, {"a": "北京"})
    assert r == {"average": 50.0, "f1": 50.0, "em": 50.0, "total": 2, "skip": 1}


def _dataset(tmp_path: Path) -> Path:
    data = {"version": "v1.0", "data": [{"id": "D", "paragraphs": [{"id": "D", "context": "北京大学在北京。", "qas": [
        {"id": "Q1", "question": "哪", "answers": [{"text": "北京大学", "answer_start": 0}]},
        {"id": "Q2", "question": "哪", "answers": [{"text": "北京", "answer_start": 5},
                                                    {"text": "在北京", "answer_start": 4}]}]}]}]}
    p = tmp_path / "ds.json"
    p.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return p


def test_evaluate_cli(tmp_path, capsys):
    ds = _dataset(tmp_path)
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"Q1": "北京"}, ensure_ascii=False), encoding="utf-8")
    assert evaluate_main([str(ds), str(preds)]) == 0
    out = json.loads(capsys.readouterr().out.strip())
    assert out == {"average": pytest.approx((100 / 3 + 0) / 2, abs=1e-3), "f1": pytest.approx(100 / 3, abs=1e-3),
                   "em": 0.0, "total": 2, "skip": 1}


def test_evaluate_cli_bad_input_is_one_line(tmp_path):
    ds = _dataset(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"Q1": "北', encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "tasks.bidaf.evaluate", str(ds), str(bad)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and "bad.json" in r.stderr
