import gzip

import pytest

from elmo_paddle.errors import UserError
from elmo_paddle.text import ReadStats, iter_file_lines, iter_lines, normalize_width, tokenize
from elmo_paddle.vocab import SPECIALS, Vocab


def test_normalize_width_maps_only_alphanumerics_and_keeps_length():
    s = "１９９８年ＡＢｃ，（？％）…"
    out = normalize_width(s)
    assert out == "1998年ABc，（？％）…"
    assert len(out) == len(s)


def test_tokenize_char_and_word():
    assert tokenize("中国 人民１", "char") == ["中", "国", "人", "民", "1"]
    words = tokenize("我爱北京天安门", "word")
    assert "".join(words) == "我爱北京天安门" and len(words) >= 2
    with pytest.raises(UserError):
        tokenize("x", "bpe")


def test_reader_counts_bad_lines_and_splits_long_ones(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes("好的\n\n   \n".encode() + b"\xff\xfe bad\n" + ("长" * 250).encode() + b"\nend")
    st = ReadStats()
    lines = list(iter_file_lines(p, st, max_chars=100))
    texts = [t for _, t in lines]
    assert texts[0] == "好的" and texts[-1] == "end"
    assert st.empty == 2 and st.bad_utf8 == 1 and st.split_long == 1
    assert all(len(t) <= 100 for t in texts) and sum(len(t) for t in texts if t.startswith("长")) == 250
    assert "a.txt:4" in st.summary()  # the bad line is named by file:line


def test_reader_gz_folder_and_missing(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    with gzip.open(d / "x.txt.gz", "wt", encoding="utf-8") as f:
        f.write("一\n二\n")
    (d / "y.txt").write_text("三\n", encoding="utf-8")
    assert list(iter_lines(d)) == ["一", "二", "三"]
    with pytest.raises(UserError, match="does not exist"):
        list(iter_lines(tmp_path / "nope"))
    import random

    rnd = random.Random(0)
    body = "\n".join("".join(chr(rnd.randint(0x4E00, 0x9FA5)) for _ in range(30)) for _ in range(50))
    full = gzip.compress(body.encode())
    (tmp_path / "trunc.gz").write_bytes(full[: len(full) // 2])
    with pytest.raises(UserError, match="trunc.gz"):
        list(iter_lines(tmp_path / "trunc.gz"))


def test_vocab_build_min_count_max_size_roundtrip(tmp_path):
    v = Vocab.build([list("aaabbc"), list("ab")], min_count=2)
    assert v.itos[:4] == list(SPECIALS) and v.itos[4:] == ["a", "b"]
    assert v.encode(["a", "c", "z"]) == [4, v.unk_id, v.unk_id]
    v2 = Vocab.build([list("aaabbc")], min_count=1, max_size=5)
    assert len(v2) == 5
    v.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json").itos == v.itos
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError):
        Vocab.load(tmp_path / "bad.json")
    with pytest.raises(UserError, match="empty"):
        Vocab.build([list("abc")], min_count=5)


def test_token_ids_for_tasks_rank_like_the_bilm_vocab():
    from elmo_paddle.vocab import TokenIds, build_token_ids, token_ids_from_json

    v = build_token_ids(["aab", "ba", "c"], specials=("<pad>", "<unk>"), unk="<unk>")  # strings: characters
    assert v.itos == ["<pad>", "<unk>", "a", "b", "c"] and v.encode("abz") == [2, 3, 1] and v.unk_id == 1
    w = build_token_ids([["x", "y", "y", "<PAD>"]], max_size=3)
    assert w.itos == ["<PAD>", "<UNK>", "y"] and Vocab.build([["x", "y", "y"]]).itos[4:] == ["y", "x"]
    assert token_ids_from_json(w.itos, "vocab.json").itos == w.itos
    for bad in ({"tokens": []}, ["<UNK>", "<PAD>"], ["<PAD>", "<UNK>", "a", "a"]):
        with pytest.raises(UserError, match="vocab.json"):
            token_ids_from_json(bad, "vocab.json")
    assert isinstance(Vocab.build([list("ab")]), TokenIds)
