"""CMRC reading: exact offsets (off-by-one / -1 fixes), windows, and a JSON reader that never crashes."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elmo_paddle.data_dir import resolve_data_dir
from elmo_paddle.errors import UserError
from tasks.bidaf.data import LoadStats, QAExample, load_squad, locate_answer, make_features, windows

DATA = resolve_data_dir()
CMRC = DATA / "cmrc2018" if DATA else None
needs_cmrc = pytest.mark.skipif(CMRC is None or not (CMRC / "cmrc2018_trial.json.gz").exists(),
                                reason="CMRC2018 data not found (set ELMO_PADDLE_DATA or put it in ../shared/data)")


def test_locate_answer():
    ctx = "甲乙丙丁甲乙"
    assert locate_answer(ctx, "丙丁", 2) == (2, "exact")
    assert locate_answer(ctx, "丙丁", 3) == (2, "near")        # off by one
    assert locate_answer(ctx, "甲乙", 5) == (4, "near")        # nearest occurrence wins
    assert locate_answer(ctx, "甲乙", -1) == (0, "far")        # -1 start: first occurrence
    assert locate_answer(ctx, "戊", 0) == (-1, "missing")


def _squad(qas, context="北京大学在北京。"):
    return {"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}


def test_bad_entries_are_counted_not_fatal(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps(_squad([
        {"id": "ok", "question": "问", "answers": [{"text": "北京", "answer_start": 1}]},   # off by one
        {"id": "none", "question": "问", "answers": [{"text": "上海", "answer_start": 0}]},
        {"id": "empty", "question": " ", "answers": [{"text": "北京", "answer_start": 0}]},
        {"question": "no id"}, "not a dict",
        {"id": "ok", "question": "dup", "answers": []},
    ]), ensure_ascii=False), encoding="utf-8")
    stats = LoadStats()
    ex = load_squad(p, stats)
    assert [e.qid for e in ex] == ["ok", "none", "empty"]
    assert (ex[0].start, ex[0].end) == (0, 1)
    assert stats.fixed_near == 1 and stats.not_in_context == 1 and stats.no_span_questions == 1
    assert stats.empty_question == 1 and stats.malformed == 2 and stats.duplicate_id == 1
    f = make_features(ex, 400, 300, 64, train=True, stats=(fs := {}))
    assert [x.qid for x in f] == ["ok"] and fs["no_span"] == 1 and fs["empty_question"] == 1


def test_windows_cover_and_training_window_holds_answer():
    assert windows(10, 20, 5) == [0]
    w = windows(1000, 400, 300)
    assert w[0] == 0 and w[-1] == 600 and all(b - a <= 300 for a, b in zip(w, w[1:]))
    ctx = "字" * 950 + "答案" + "字" * 48
    ex = QAExample("q", ctx, ctx, "问", ["答案"], 950, 951)
    (f,) = make_features([ex], 400, 300, 64, train=True)
    assert "".join(f.c_chars[f.start:f.end + 1]) == "答案" and len(f.c_chars) == 400
    assert len(make_features([ex], 400, 300, 64, train=False)) == len(windows(1000, 400, 300))


@needs_cmrc
def test_real_cmrc_offsets():
    stats = LoadStats()
    ex = {e.qid: e for e in load_squad(CMRC / "cmrc2018_trial.json.gz", stats)}
    assert stats.questions == 1002 and stats.fixed_near == 5 and stats.empty_question == 2
    e = ex["TRIAL_210_QUERY_0"]   # given start 14, the text starts at 13 (SOURCE.md)
    assert e.start == 13 and e.context[e.start:e.end + 1] == e.answers[0].strip()
    for e in ex.values():
        assert e.context[e.start:e.end + 1] == e.answers[0].strip()
        assert len(e.norm_context) == len(e.context)
    dev_stats = LoadStats()
    load_squad(CMRC / "cmrc2018_dev.json.gz", dev_stats)
    assert dev_stats.not_in_context == 193 and dev_stats.fixed_near == 7 and dev_stats.answers == 9657


VALID = json.dumps(_squad([{"id": "a", "question": "问", "answers": [{"text": "北京", "answer_start": 0}]}]),
                   ensure_ascii=False).encode("utf-8")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=200),
    st.integers(0, len(VALID) - 1).map(lambda n: VALID[:n]),                      # truncated JSON
    st.integers(0, 60).map(lambda n: gzip.compress(VALID)[:n]),                    # truncated gzip
    st.tuples(st.integers(0, len(VALID) - 1), st.binary(min_size=1, max_size=4))   # corrupted bytes
      .map(lambda t: VALID[:t[0]] + t[1] + VALID[t[0] + 1:]),
))
def test_reader_fuzz_clear_error_naming_file(tmp_path, data):
    p = tmp_path / "fuzz.json.gz"
    p.write_bytes(data)
    try:
        load_squad(p)
    except UserError as e:
        assert str(p) in str(e)


def test_dureader_reader_spans_and_paragraph_selection(tmp_path):
    from tasks.bidaf.dureader import load_dureader

    doc0 = {"segmented_paragraphs": [["无关", "内容"], ["微信", "分享", "链接", "怎么", "打开"]], "most_related_para": 1}
    doc1 = {"segmented_paragraphs": [["打开", "微信"], ["别的"]], "most_related_para": 0}
    q = {"question_id": 7, "question": "微信分享链接怎么打开", "segmented_question": ["微信", "分享", "链接", "打开"],
         "answers": ["分享链接"], "answer_docs": [0], "answer_spans": [[1, 2]], "documents": [doc0, doc1]}
    p = tmp_path / "d.json"
    p.write_text(json.dumps(q, ensure_ascii=False) + "\n\n" + json.dumps({"question_id": 8}) + "\n", encoding="utf-8")
    stats = LoadStats()
    (tr,) = load_dureader(p, train=True, stats=stats)
    assert tr.context[tr.start:tr.end + 1] == "分享链接" and stats.malformed == 1
    (ev,) = load_dureader(p, train=False)
    assert ev.context == "微信分享链接怎么打开\n打开微信" and ev.start == -1


@pytest.mark.skipif(DATA is None or not (DATA / "dureader_demo").is_dir(), reason="DuReader demo data not found")
def test_real_dureader_demo():
    from tasks.bidaf.dureader import load_dureader

    stats = LoadStats()
    ex = load_dureader(DATA / "dureader_demo/trainset/search.train.json.gz", train=True, stats=stats)
    assert len(ex) == 95 and stats.no_span_questions == 5     # SOURCE.md: 95 answer_spans in train
    assert all(0 <= e.start <= e.end < len(e.context) for e in ex)
