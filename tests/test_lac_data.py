"""LAC readers/converters: real-line round trips, bad input reported with file:line, fuzzing, metrics."""
from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elmo_paddle.data_dir import resolve_data_dir
from tasks.lac.data import (Example, Rejects, parse_pd_line, read_lac, read_msra, read_pd1998, split_long,
                            subsample, words_to_example)
from tasks.lac.metrics import ChunkMetrics, chunks, seg_prf
from tasks.lac.tags import dataset_tags

DATA = resolve_data_dir()
needs_data = pytest.mark.skipif(DATA is None or not (DATA / "peoples_daily_1998").is_dir(),
                                reason="shared data dir not found (set ELMO_PADDLE_DATA); real-line tests skipped")


def _first_lines(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in itertools.islice(fh, n)]


# ------------------------------------------------------------------ real lines


@needs_data
def test_pd_real_lines_round_trip():
    lines = _first_lines(DATA / "peoples_daily_1998/199801.test.txt.gz", 200)
    tagset = set(dataset_tags("pd1998"))
    for line in lines:
        if not line.strip():
            continue
        words, err = parse_pd_line(line, merge_names=False, lac_names=False)
        assert err is None, err
        ex = words_to_example(words)
        assert set(ex.tags) <= set(dataset_tags("pd1998", lac_names=False))
        # chars -> words again: the chunks reproduce the original words and tags exactly
        back = [(ex.chars[s:e], lab) for s, e, lab in chunks(ex.tags)]
        expect = [(w, lab) for w, lab in words]
        assert back == expect
        # LAC naming: same words, nr/ns/nt/t renamed
        ex2 = words_to_example(parse_pd_line(line, merge_names=False)[0])
        assert ex2.chars == ex.chars and set(ex2.tags) <= tagset
    labels = {lab for line in lines for _, lab in parse_pd_line(line)[0]}
    assert {"PER", "LOC", "TIME"} <= labels and not labels & {"nr", "ns", "nt", "t"}


@needs_data
def test_pd_names_merged_and_width_normalised():
    words, err = parse_pd_line("中共中央/nt  总书记/n  、/w  国家/n  主席/n  江/nr  泽民/nr  １９９７年/t")
    assert err is None
    assert words[-2:] == [("江泽民", "PER"), ("1997年", "TIME")]
    assert words[0] == ("中共中央", "ORG")


def test_pd_compound_brackets():
    line = "[中央/n  人民/n  广播/vn  电台/n]nt  报道/v  [/w  ]/w"
    inner, err = parse_pd_line(line)
    assert err is None and [w for w, _ in inner] == ["中央", "人民", "广播", "电台", "报道", "[", "]"]
    outer, err = parse_pd_line(line, compound="outer")
    assert err is None and outer[0] == ("中央人民广播电台", "ORG") and outer[1] == ("报道", "v")
    assert parse_pd_line("[中央/n  人民/n")[1] is not None
    assert parse_pd_line("中央/n]nt")[1] is not None


@needs_data
def test_msra_real_sequences():
    path = DATA / "msra_ner/test_data.gz"
    rej = Rejects()
    exs = read_msra(path, rej)
    assert rej.total == 0 and len(exs) == 4631
    assert sum(len(e.chars) for e in exs) == 172601
    ents = [c for e in exs for c in chunks(e.tags)]
    # SOURCE.md: PER 1,973 / LOC 2,877 / ORG 1,331 B- tags; stray I- (11) start spans too
    counts = {lab: sum(1 for c in ents if c[2] == lab) for lab in ("PER", "LOC", "ORG")}
    assert counts["PER"] >= 1973 and counts["LOC"] >= 2877 and counts["ORG"] >= 1331
    assert sum(counts.values()) - (1973 + 2877 + 1331) <= 11


@needs_data
def test_lac_sample_real_lines():
    rej = Rejects()
    exs = read_lac(DATA / "lac_sample/test_data/test_part", rej)
    assert rej.total == 0 and len(exs) == 100
    assert all(len(e.chars) == len(e.tags) for e in exs)


# ------------------------------------------------------------------ bad input


def test_bad_lines_are_counted_with_file_and_line(tmp_path):
    lac = tmp_path / "lac.txt"
    lac.write_bytes("你好\tr-B r-I\n你好\tr-B\n你好\tr-B XX-I\nno tab\n\xff\n".encode("utf-8").replace(b"\xc3\xbf", b"\xff"))
    rej = Rejects()
    exs = read_lac(lac, rej)
    assert len(exs) == 1 and rej.total == 4
    assert rej.counts["tag/char count mismatch"] == 1 and rej.counts["unknown LAC tag"] == 1
    assert rej.counts["invalid UTF-8"] == 1
    assert f"{lac}:2" in rej.summary() and f"{lac}:5" in rej.summary()

    pd = tmp_path / "pd.txt"
    pd.write_text("中国/ns  人民/n\n中国  人民/n\n中国/zz\n\n", encoding="utf-8")
    rej = Rejects()
    assert len(read_pd1998(pd, rej)) == 1 and rej.total == 2 and f"{pd}:3" in rej.summary()

    ms = tmp_path / "msra.txt"
    ms.write_text("中\tB-LOC\n国\tI-LOC\n\n人\tX-PER\n民\tO\n\n北京\tO\n\n好\tO\n", encoding="utf-8")
    rej = Rejects()
    exs = read_msra(ms, rej)
    assert [e.chars for e in exs] == ["中国", "好"] and rej.total == 2 and f"{ms}:7" in rej.summary()


def test_truncated_gzip_is_reported_not_raised(tmp_path):
    data = gzip.compress(("中国/ns  人民/n\n" * 2000).encode("utf-8"))
    p = tmp_path / "cut.txt.gz"
    p.write_bytes(data[: len(data) // 2])
    rej = Rejects()
    exs = read_pd1998(p, rej)
    assert rej.counts["truncated or corrupt file"] == 1 and f"{p}:" in rej.summary()
    assert all(e.chars == "中国人民" for e in exs)


def test_missing_data_dir_is_a_clear_error(tmp_path):
    from elmo_paddle.errors import UserError
    from tasks.lac.data import load_dataset

    with pytest.raises(UserError, match="does not exist"):
        load_dataset("pd1998", str(tmp_path / "nowhere"), Rejects())


_fuzz = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_fuzz_text = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(["中国/ns", "人民/n", "[中央/n", "台/n]nt", "  ", "\n", "\t", "B-PER", "I-LOC", "O",
                              "中", "n-B", "n-I", "你好\t", "/", "]", "\xff", "é"]), max_size=40)
    .map(lambda xs: "".join(xs).encode("utf-8", "surrogatepass")))


@_fuzz
@given(payload=_fuzz_text, gz=st.booleans(), cut=st.floats(0, 1))
def test_readers_never_raise_on_garbage(tmp_path, payload, gz, cut):
    blob = gzip.compress(payload) if gz else payload
    blob = blob[: int(len(blob) * cut)] if gz else blob  # truncated gzip streams too
    p = tmp_path / ("f.gz" if gz else "f.txt")
    p.write_bytes(blob)
    for reader in (read_pd1998, read_msra, read_lac):
        rej = Rejects()
        exs = reader(p, rej)
        for e in exs:
            assert len(e.chars) == len(e.tags) and e.chars
        for msg in rej.examples:
            assert msg.startswith(f"{p}:") and msg[len(str(p)) + 1].isdigit()


# ------------------------------------------------------------------ splitting, sampling, metrics


@given(st.lists(st.tuples(st.text("甲乙丙。，", min_size=1, max_size=7), st.sampled_from(["n", "w", "PER"])),
                min_size=1, max_size=60), st.integers(3, 40))
def test_split_long_keeps_words_whole(words, max_len):
    ex = words_to_example(words)
    parts = split_long(ex, max_len)
    assert "".join(p.chars for p in parts) == ex.chars
    assert sum((p.tags for p in parts), []) == ex.tags
    starts = {s for s, _, _ in chunks(ex.tags)}
    long_words = [(s, e) for s, e, _ in chunks(ex.tags) if e - s > max_len]
    offset = 0
    for p in parts:
        assert len(p.chars) <= max_len
        # a piece starts at a word start, unless it cuts a word longer than max_len
        assert offset in starts or any(s < offset < e for s, e in long_words)
        offset += len(p.chars)


def test_subsample_is_deterministic_by_seed():
    items = list(range(1000))
    a, b, c = subsample(items, 0.05, 1), subsample(items, 0.05, 1), subsample(items, 0.05, 2)
    assert a == b and a != c and len(a) == 50 and a == sorted(a)
    assert subsample(items, 1.0, 3) == items


def test_chunk_metrics():
    gold = ["PER-B", "PER-I", "v-B", "LOC-B", "LOC-I", "w-B"]
    pred = ["PER-B", "PER-I", "v-B", "LOC-B", "ORG-B", "w-B"]
    m = ChunkMetrics()
    m.update(gold, pred)
    r = m.result()
    assert r["precision"] == pytest.approx(60) and r["recall"] == pytest.approx(75)
    assert r["seg_precision"] == pytest.approx(60) and r["PER_f1"] == 100.0 and r["LOC_f1"] == 0.0
    assert "TIME_f1" not in r
    # stray I- starts a chunk; O is outside
    assert chunks(["O", "PER-I", "PER-I", "O", "LOC-B"]) == [(1, 3, "PER"), (4, 5, "LOC")]
    assert seg_prf([["中国", "人民"]], [["中", "国", "人民"]])["seg_recall"] == 50.0


def test_example_requires_aligned_tags():
    with pytest.raises(AssertionError):
        Example("ab", ["n-B"])
