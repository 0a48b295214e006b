"""Benchmark: one LAC tagger train step (char embedding -> 2 x BiGRU -> linear -> CRF, Adam, clip 5) of
elmo-paddle (`tasks.lac.model.LacTagger`) vs the same network in PyTorch, on real People's Daily batches.

    PYTHONPATH=. .venv/bin/python bench/lac_train.py [--threads 1] [--batch-size 32] [--repeats 30]

Both sides read the same batches (PD1998 train, length-bucketed as tasks.lac.finetune batches them, the
first --batches of them, cycled) and have configs/lac.yaml's sizes (embedding 128, GRU hidden 128, 2
bidirectional layers, dropout 0.1).  PyTorch: `nn.GRU` over a packed sequence (so padding costs nothing, as
paddle's `sequence_length`), and the CRF negative log-likelihood written as pytorch-crf writes it (the
forward algorithm as a logsumexp over [B, N, N] per step, differentiated by autograd).  Ours: the tagger the
task trains, whose CRF gradient is the closed-form forward-backward kernel (tasks/lac/crf_kernel.py).
Each side runs in its own process and the parent alternates them step by step (bench/workers.py).
Last line: `ratio paddle/torch train: X.XX` (sentences/s; > 1 means ours trains faster).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from workers import paired_train, run_worker, torch_train_step  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=20, help="distinct batches, cycled")
    ap.add_argument("--threads", type=int, default=1, help="threads per side (task runs use 1 each)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--data-dir", help="data folder (default: $ELMO_PADDLE_DATA or ../shared/data)")
    return ap.parse_args(argv)


def load_batches(a):
    """(batches of (char_ids, lengths, tag_ids) numpy arrays, vocab size, tag count) from PD1998 train."""
    from tasks.lac.batching import char_vocab, example_batches
    from tasks.lac.data import Rejects, load_dataset, split_long

    splits = load_dataset("pd1998", a.data_dir, Rejects())
    train = [p for e in splits.train for p in split_long(e, 150)]
    vocab = char_vocab((e.chars for e in train), 1)
    tag_index = {t: i for i, t in enumerate(splits.tags)}
    batches = example_batches(train, vocab, tag_index, a.batch_size, seed=1)[:a.batches]
    return [(b.char_ids, b.lengths, b.tag_ids) for b in batches], len(vocab), len(splits.tags)


def build_paddle(vocab_size, num_tags):
    import paddle

    from tasks.common.run import build_optimizer
    from tasks.lac.model import LacTagger

    paddle.seed(0)
    model = LacTagger(vocab_size, num_tags, emb_dim=128, hidden_dim=128, num_layers=2, dropout=0.1, crf_lr=0.2)
    opt = build_optimizer(model, 1e-3, 5.0)

    def train_step(batch):
        ids, lengths, tags = (paddle.to_tensor(x, dtype="int64") for x in batch)
        model.train()
        loss = model.loss(ids, lengths, tags)
        loss.backward()
        opt.step()
        opt.clear_grad()
        return float(loss)

    return train_step


def build_torch(vocab_size, num_tags):
    import torch
    import torch.nn as tnn

    torch.manual_seed(0)

    class Tagger(tnn.Module):
        def __init__(self):
            super().__init__()
            self.emb = tnn.Embedding(vocab_size, 128, padding_idx=0)
            self.gru = tnn.GRU(128, 128, num_layers=2, bidirectional=True, batch_first=True, dropout=0.1)
            self.drop = tnn.Dropout(0.1)
            self.fc = tnn.Linear(256, num_tags)
            self.trans = tnn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))
            self.start = tnn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
            self.end = tnn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))

        def nll(self, em, tags, mask):  # pytorch-crf's _compute_normalizer and _compute_score
            b = torch.arange(em.shape[0])
            score = self.start[tags[:, 0]] + em[b, 0, tags[:, 0]]
            norm = self.start + em[:, 0]
            for t in range(1, em.shape[1]):
                m = mask[:, t]
                score = score + (self.trans[tags[:, t - 1], tags[:, t]] + em[b, t, tags[:, t]]) * m
                nxt = torch.logsumexp(norm.unsqueeze(2) + self.trans + em[:, t].unsqueeze(1), dim=1)
                norm = torch.where(m.unsqueeze(1).bool(), nxt, norm)
            last = tags[b, mask.long().sum(1) - 1]
            return torch.logsumexp(norm + self.end, dim=1) - (score + self.end[last])

        def forward(self, ids, lengths, tags):
            x = self.drop(self.emb(ids))
            packed = tnn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            h, _ = self.gru(packed)
            h, _ = tnn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=ids.shape[1])
            return self.nll(self.fc(self.drop(h)), tags, (ids != 0).float()).mean()

    model = Tagger()
    crf = {id(p) for p in (model.trans, model.start, model.end)}
    opt = torch.optim.Adam([{"params": [p for p in model.parameters() if id(p) not in crf]},
                            {"params": [model.trans, model.start, model.end], "lr": 2e-4}], lr=1e-3)

    return torch_train_step(model, opt, lambda batch: model(*(torch.from_numpy(x.astype("int64")) for x in batch)))


def worker(a, side):
    run_worker(side, a.threads, lambda: load_batches(a), build_paddle, build_torch)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        return worker(parse_args(argv[2:]), argv[1])
    a = parse_args(argv)
    batches, vocab_size, num_tags = load_batches(a)
    sents = sum(len(b[1]) for b in batches) / len(batches)
    chars = sum(int(b[1].sum()) for b in batches) / len(batches)
    header = (f"LAC train step: PD1998 train, {len(batches)} batches cycled ({sents:.0f} sentences, {chars:.0f} "
              f"characters per batch on average), vocab {vocab_size}, {num_tags} tags, threads={a.threads}; "
              f"paddle {{paddle}}, torch {{torch}}; median of {a.repeats} interleaved steps")
    (pt, pl), (tt, tl) = paired_train(__file__, argv, a.warmup, a.repeats, header)
    med = statistics.median
    for name, ts, ls in (("paddle", pt, pl), ("torch ", tt, tl)):
        print(f"{name} train: {sents / med(ts):7.1f} sentences/s, {chars / med(ts):7.0f} chars/s "
              f"(median {med(ts) * 1e3:.0f} ms/step; loss {ls[0]:.2f} -> {ls[-1]:.2f})")
    print(f"ratio paddle/torch train: {med(tt) / med(pt):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
