import json

import numpy as np
import pytest

import elmo_paddle  # noqa: F401
from elmo_paddle.embed import main as embed_main
from elmo_paddle.embedder import ElmoEmbedder
from elmo_paddle.errors import UserError

SENTS = ["中国人民经济发展", "", "我们", "今天在北京工作了一个新的社会国家建设改革", "龘😀人"]


@pytest.fixture(scope="module")
def emb(tiny_model_dir):
    return ElmoEmbedder(tiny_model_dir, max_length=8)


def test_embed_sentences_order_shapes_and_batch_independence(emb):
    out = emb.embed_sentences(SENTS, batch_size=2)
    D = emb.output_dim
    assert [a.shape for a in out] == [(3, 8, D), (3, 0, D), (3, 2, D), (3, 20, D), (3, 3, D)]
    assert all(a.dtype == np.float32 for a in out)
    single = [emb.embed_sentence(s) for s in SENTS]
    for a, b in zip(out, single):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert emb.last_stats["oov_rate"] > 0  # 龘 and 😀 are unknown
    assert emb.embed_sentences([]) == []
    with pytest.raises(UserError):
        emb.embed_sentences(SENTS, batch_size=0)


def test_long_sentences_are_chunked(emb, caplog):
    long = "今天在北京工作了一个新的社会国家建设改革"  # 20 tokens, max_length 8 -> 8 + 8 + 4
    with caplog.at_level("WARNING"):
        whole = emb.embed_sentences([long])[0]
    assert "split into chunks" in caplog.text
    parts = [emb.elmo.encode(emb.elmo.batch_to_ids([long[s:s + 8]])).numpy()[0] for s in (0, 8, 16)]
    np.testing.assert_allclose(whole, np.concatenate(parts, axis=1), rtol=1e-5, atol=1e-6)


def test_token_cache(tiny_model_dir, tmp_path, emb):
    cache = tmp_path / "tok.npz"
    a = ElmoEmbedder(tiny_model_dir, max_length=8, token_cache=cache)
    assert cache.is_file()
    b = ElmoEmbedder(tiny_model_dir, max_length=8, token_cache=cache)  # reused
    ref = emb.embed_sentences(SENTS)
    for x, y, z in zip(a.embed_sentences(SENTS), b.embed_sentences(SENTS), ref):
        np.testing.assert_allclose(x, z, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(x, y)
    with np.load(cache) as zf:
        meta = json.loads(str(zf["meta"]))
        vecs, toks = zf["vectors"], zf["tokens"]
    bad = tmp_path / "bad.npz"
    meta["weights_sha256"] = "0" * 64
    np.savez(bad, vectors=vecs, tokens=toks, meta=np.array(json.dumps(meta)))
    with pytest.raises(UserError, match="another model"):
        ElmoEmbedder(tiny_model_dir, token_cache=bad)


def test_embed_cli_writes_npz(tiny_model_dir, tmp_path, emb):
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(SENTS) + "\n", encoding="utf-8")
    out = tmp_path / "vecs.npz"
    assert embed_main(["--model", str(tiny_model_dir), "--input", str(inp), "--output", str(out),
                       "--layers", "average", "--batch-size", "2", "--max-length", "8", "--no-progress"]) == 0
    ref = emb.embed_sentences(SENTS)
    with np.load(out) as z:
        assert sorted(k for k in z.files if k != "sentence_to_index") == [str(i) for i in range(len(SENTS))]
        for i, r in enumerate(ref):
            np.testing.assert_allclose(z[str(i)], r.mean(0), rtol=1e-5, atol=1e-6)
        assert json.loads(str(z["sentence_to_index"]))["我们"] == "2"
    out_all = tmp_path / "all.npz"
    assert embed_main(["--model", str(tiny_model_dir), "--input", str(inp), "--output", str(out_all),
                       "--no-progress"]) == 0
    with np.load(out_all) as z:
        assert z["0"].shape == (3, 8, emb.output_dim)


def test_embed_cli_user_errors(tiny_model_dir, tmp_path, capsys):
    inp = tmp_path / "in.txt"
    inp.write_text("中国\n", encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    bad_utf8 = tmp_path / "bad.txt"
    bad_utf8.write_bytes(b"ok\n\xff\xfe\n")
    m = str(tiny_model_dir)
    cases = [["--model", str(tmp_path / "nope"), "--input", str(inp), "--output", str(tmp_path / "o.npz")],
             ["--model", m, "--input", str(inp), "--output", str(tmp_path / "o.txt")],
             ["--model", m, "--input", str(empty), "--output", str(tmp_path / "o.npz")],
             ["--model", m, "--input", str(bad_utf8), "--output", str(tmp_path / "o.npz")],
             ["--model", m, "--input", str(tmp_path / "missing.txt"), "--output", str(tmp_path / "o.npz")]]
    for argv in cases:
        assert embed_main(argv + ["--no-progress"]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "o.npz").exists()
