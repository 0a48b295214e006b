import numpy as np

from elmo_paddle.lm_data import LMBatcher, dev_batches, iter_split_lines, scan_corpus
from elmo_paddle.vocab import Vocab

from corpus_fixture import make_corpus


def _setup(tmp_path, n=200):
    p = make_corpus(tmp_path / "c.txt", n)
    return scan_corpus([str(p)], "char", 0.05, 1, show_progress=False)


def test_scan_splits_last_fraction_as_dev(tmp_path):
    info, vocab, _ = _setup(tmp_path)
    assert info.total_lines == [200] and info.train_lines == [190]
    dev = list(iter_split_lines(info, "dev"))
    lines = (tmp_path / "c.txt").read_text().split("\n")
    assert dev == lines[190:200]
    # vocab comes from training lines only
    train_chars = set("".join(lines[:190]))
    assert set(vocab.itos[4:]) == train_chars


def test_batches_targets_are_neighbours(tmp_path):
    info, vocab, _ = _setup(tmp_path)
    b = next(LMBatcher(info, vocab, 4, 10, seed=0).epoch_batches())
    inp, fwd, bwd = b["inputs"], b["fwd_targets"], b["bwd_targets"]
    assert inp.shape == fwd.shape == bwd.shape == (4, 10)
    # forward target is the next input, backward target the previous one (inside the window)
    ok_f = fwd[:, :-1] != 0
    assert (fwd[:, :-1][ok_f] == inp[:, 1:][ok_f]).all()
    ok_b = bwd[:, 1:] != 0
    assert (bwd[:, 1:][ok_b] == inp[:, :-1][ok_b]).all()
    # no training on the trivial "</S> then <S>" boundary
    assert not ((inp == Vocab.eos_id) & (fwd != 0)).any()


def test_batcher_shards_and_resumes_exactly(tmp_path):
    info, vocab, _ = _setup(tmp_path, 400)
    full = [b["inputs"] for b in LMBatcher(info, vocab, 4, 8, seed=3).epoch_batches()]
    bt = LMBatcher(info, vocab, 4, 8, seed=3)
    it = bt.epoch_batches()
    first = [next(it)["inputs"] for _ in range(5)]
    state = bt.state()
    bt2 = LMBatcher(info, vocab, 4, 8, seed=3)
    bt2.load_state(state)
    rest = [b["inputs"] for b in bt2.epoch_batches()]
    assert len(first) + len(rest) == len(full)
    for a, b in zip(first + rest, full):
        np.testing.assert_array_equal(a, b)


def test_dev_batches_count_every_token_once(tmp_path):
    info, vocab, _ = _setup(tmp_path)
    dev_lines = list(iter_split_lines(info, "dev"))
    expected = sum(len(line) + 1 for line in dev_lines)  # chars + </S>
    for max_len in (256, 7):  # whole lines, and lines cut into pieces
        n_f = sum(int((b["fwd_targets"] != 0).sum()) for b in dev_batches(info, vocab, 3, max_len))
        n_b = sum(int((b["bwd_targets"] != 0).sum()) for b in dev_batches(info, vocab, 3, max_len))
        assert n_f == expected and n_b == expected


def test_two_ranks_read_disjoint_halves_of_the_training_lines(tmp_path):
    """Sharding: the line indices rank 0 and rank 1 read are disjoint, together cover every training line of
    every file (and no dev line), and differ in count by at most one per file."""
    files = []
    for f, n in (("a.txt", 101), ("b.txt", 60)):  # odd and even counts; every line unique: its file and index
        lines = [f"{f[0]}{i:04d}我们喜欢经济。" for i in range(n)]
        (tmp_path / f).write_text("\n".join(lines) + "\n", encoding="utf-8")
        files.append(str(tmp_path / f))
    info, _, _ = scan_corpus(files, "char", 0.1, 1, show_progress=False)
    train = {f"{f[-5]}{i:04d}" for f, n in zip(files, info.train_lines) for i in range(n)}
    assert len(train) == sum(info.train_lines) and sum(info.train_lines) < 161  # some lines are dev lines
    shards = [[line[:5] for line in iter_split_lines(info, "train", r, 2)] for r in (0, 1)]
    assert all(len(s) == len(set(s)) for s in shards)  # no rank reads a line twice
    assert not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) == train
    for fname in "ab":
        n0, n1 = (sum(x[0] == fname for x in s) for s in shards)
        assert abs(n0 - n1) <= 1, (fname, n0, n1)
