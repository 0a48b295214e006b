"""Benchmark: one BiDAF train step of elmo-paddle (`tasks.bidaf.model.BiDAF`, configs/bidaf.yaml sizes) vs the
same layers and sizes in PyTorch, on real CMRC 2018 training windows.

    PYTHONPATH=. .venv/bin/python bench/bidaf_train.py [--threads 1] [--batch-size 32] [--repeats 10]

Both: character embedding 64 + word embedding 64 -> 2 highway layers -> contextual BiLSTM (hidden 64, shared
by context and question) -> trilinear attention flow -> 2-layer modeling BiLSTM -> end BiLSTM -> start/end
logits, dropout 0.2, cross-entropy on the gold start and end, Adam, gradient clip 5.  PyTorch's LSTMs read
packed sequences, the correct way to give them ragged windows (as paddle's `sequence_length`); on CPU
that path is slow (measured: a 2-layer BiLSTM, 32 x 400 x 512, forward + backward, 11.4 s packed vs 1.5 s
padded).  `--torch-lstm padded` times the padded form instead: faster, but its backward direction starts
on the padding, so it is another model (a reference row, not a peer).  Batches: the first --batches of
the shuffled CMRC 2018 train windows (max 400 characters), cycled, the same on both sides.  Each side runs
in its own process, alternated step by step (bench/workers.py).  Prints windows/s of both and, last,
`ratio paddle/torch train: X.XX` (> 1 means ours trains faster).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from workers import paired_train, run_worker, torch_train_step  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=8, help="distinct batches, cycled")
    ap.add_argument("--threads", type=int, default=1, help="threads per side (task runs use 1 each)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--data-dir", help="data folder (default: $ELMO_PADDLE_DATA or ../shared/data)")
    ap.add_argument("--torch-lstm", choices=("packed", "padded"), default="packed",
                    help="packed (correct on ragged windows, default) or padded (faster, reads padding)")
    return ap.parse_args(argv)


def load_batches(a):
    """(numpy batches as tasks.bidaf.finetune encodes them, char vocab size, word vocab size)."""
    from elmo_paddle.config import load_config
    from tasks.bidaf.data import build_vocab, encode_batch, word_sequence
    from tasks.bidaf.finetune import BidafConfig, _load, _resolve

    cfg = load_config(BidafConfig, "configs/bidaf.yaml", {})
    split = _load(_resolve(cfg.train_file, a.data_dir), "train")
    split.featurize(cfg, train=True)
    feats = split.features
    chars = build_vocab([f.c_chars + f.q_chars for f in feats])
    words = build_vocab([word_sequence(f.c_words) + word_sequence(f.q_words) for f in feats],
                        cfg.word_min_count, cfg.word_max_size)
    random.Random(1).shuffle(feats)
    batches = [encode_batch(feats[i:i + a.batch_size], chars, words)
               for i in range(0, a.batches * a.batch_size, a.batch_size)]
    return batches, len(chars), len(words)


def build_paddle(char_vocab, word_vocab):
    import paddle

    from elmo_paddle.runtime import to_tensors
    from tasks.bidaf.model import BiDAF, ModelSizes
    from tasks.common.run import build_optimizer

    paddle.seed(0)
    model = BiDAF(ModelSizes(char_vocab, word_vocab, 64, 64, 64, 0.2))
    opt = build_optimizer(model, 1e-3, 5.0)

    def train_step(batch):
        model.train()
        loss = model.loss(to_tensors(batch))
        loss.backward()
        opt.step()
        opt.clear_grad()
        return float(loss)

    return train_step


def torch_bidaf(char_vocab, word_vocab, packed=True, d=64, drop=0.2):
    """The same network in PyTorch (see the module docstring)."""
    import torch
    import torch.nn as tnn

    class BiLSTM(tnn.Module):
        def __init__(self, din, layers):
            super().__init__()
            self.drop = tnn.Dropout(drop)
            self.rnn = tnn.LSTM(din, d, num_layers=layers, bidirectional=True, batch_first=True,
                                dropout=drop if layers > 1 else 0.0)

        def forward(self, x, lens):
            if not packed:
                return self.rnn(self.drop(x))[0]
            seqs = tnn.utils.rnn.pack_padded_sequence(self.drop(x), lens, batch_first=True, enforce_sorted=False)
            out, _ = self.rnn(seqs)
            return tnn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.char, self.word = tnn.Embedding(char_vocab, 64, padding_idx=0), tnn.Embedding(word_vocab, 64, padding_idx=0)
            self.hw = tnn.ModuleList([tnn.Linear(128, 128) for _ in range(2)])
            self.gate = tnn.ModuleList([tnn.Linear(128, 128) for _ in range(2)])
            self.ctx, self.mod, self.endl = BiLSTM(128, 1), BiLSTM(8 * d, 2), BiLSTM(2 * d, 1)
            self.w_h, self.w_u = tnn.Linear(2 * d, 1, bias=False), tnn.Linear(2 * d, 1, bias=False)
            self.w_hu = tnn.Parameter(torch.empty(2 * d).uniform_(-0.1, 0.1))
            self.start, self.end = tnn.Linear(10 * d, 1), tnn.Linear(10 * d, 1)
            self.drop = tnn.Dropout(drop)

        def embed(self, c, w):
            x = self.drop(torch.cat([self.char(c), self.word(w)], -1))
            for lin, gate in zip(self.hw, self.gate):
                g = torch.sigmoid(gate(x))
                x = g * torch.relu(lin(x)) + (1 - g) * x
            return x

        def forward(self, b):
            cm, qm = b["c_char"] != 0, b["q_char"] != 0
            h = self.ctx(self.embed(b["c_char"], b["c_word"]), b["c_len"])
            u = self.ctx(self.embed(b["q_char"], b["q_word"]), b["q_len"])
            s = self.w_h(h) + self.w_u(u).transpose(1, 2) + (h * self.w_hu) @ u.transpose(1, 2)
            a = torch.softmax(s.masked_fill(~qm.unsqueeze(1), -1e30), 2)
            bq = torch.softmax(s.masked_fill(~qm.unsqueeze(1), -1e30).max(2).values.masked_fill(~cm, -1e30), 1)
            ut, ht = a @ u, (bq.unsqueeze(1) @ h).expand_as(h)
            g = torch.cat([h, ut, h * ut, h * ht], -1)
            m = self.mod(g, b["c_len"])
            st = self.start(self.drop(torch.cat([g, m], -1))).squeeze(-1).masked_fill(~cm, -1e30)
            en = self.end(self.drop(torch.cat([g, self.endl(m, b["c_len"])], -1))).squeeze(-1).masked_fill(~cm, -1e30)
            ce = tnn.functional.cross_entropy
            return ce(st, b["start"]) + ce(en, b["end"])

    return Net()


def build_torch(char_vocab, word_vocab, packed=True):
    import torch

    torch.manual_seed(0)
    model = torch_bidaf(char_vocab, word_vocab, packed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    return torch_train_step(model, opt, lambda batch: model({k: torch.from_numpy(v) for k, v in batch.items()}))


def worker(a, side):
    run_worker(side, a.threads, lambda: load_batches(a), build_paddle,
               lambda chars, words: build_torch(chars, words, a.torch_lstm == "packed"))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        return worker(parse_args(argv[2:]), argv[1])
    a = parse_args(argv)
    header = (f"BiDAF train step: CMRC 2018 train windows, {a.batches} batches of {a.batch_size} cycled, "
              f"configs/bidaf.yaml sizes, threads={a.threads}, torch LSTMs {a.torch_lstm}; paddle {{paddle}}, "
              f"torch {{torch}}; median of {a.repeats} interleaved steps")
    (pt, pl), (tt, tl) = paired_train(__file__, argv, a.warmup, a.repeats, header)
    med = statistics.median
    for name, ts, ls in (("paddle", pt, pl), ("torch ", tt, tl)):
        print(f"{name} train: {a.batch_size / med(ts):6.1f} windows/s (median {med(ts):.2f} s/step; "
              f"loss {ls[0]:.2f} -> {ls[-1]:.2f})")
    print(f"ratio paddle/torch train: {med(tt) / med(pt):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
