"""Benchmark: sentences/s of `ElmoEmbedder` vs ELMoForManyLangs' `Embedder.sents2elmo`, same sizes and inputs.

Both sides get a randomly initialised model of the same size: 2 LSTM-with-projection layers per direction,
cell `--hidden` (1024), projection `--proj` (256), cell/projection clip 3; both return all 3 layers per
sentence (`sents2elmo(..., output_layer=-2)`, ours `[3, T, D]`).  Token layer: ours is a character
embedding (width = proj; this toolkit's char-unit models embed each character directly), ELMoForManyLangs'
is its char-CNN ([[1,32],[2,32],[3,64]] filters, char_dim 50, 1 highway, no word embedding) over each
one-character token -- cheap next to the LSTMs.  Input: the same `--sentences` random `--length`-character
sentences, batch `--batch-size`, `--threads` threads.  Each side runs in its own worker process (two
OpenMP runtimes in one process fight over the cores); the parent alternates them run by run (the machine
is shared, so read the ratio) and reports the median.

    PYTHONPATH=. .venv/bin/python bench/embed.py            # needs requirements-bench.txt

The last line is `ratio ours/elmoformanylangs: X.XX`.

A third row times a reference, not a competitor: the same computation as bare `torch.nn.LSTM(proj_size)`
layers (PyTorch's C++ recurrence, no Python per step); `--no-reference` skips it.

Measured here (third session), 2 threads, idle machine, five runs: ratio ours/elmoformanylangs 3.40, 4.08,
3.52, 3.77, 3.67 (median 3.67; ours 174-204 sentences/s, elmoformanylangs 49-55, torch.nn.LSTM 88-105);
`--threads 1`: 2.39.  Ours runs the frozen layers with MKL's packed GEMM, one LSTM direction per thread, and
numpy from the token layer on (`elmo_paddle/lstm_cpu.py`; `bench/embed_packed.py`: 2.33x paddle's op-by-op
loop).  Earlier: 1.29-1.79 (paddle loop), 2.66-3.08 (packed GEMM alone).  At batch 32 the per-step GEMMs
are the time; PyTorch's own C++ LSTM is only 1.8-2.1x elmoformanylangs here.
elmoformanylangs' own speed varies +-10-20% from run to run.  The torch workers run with
OMP_WAIT_POLICY=PASSIVE (without it, GNU OpenMP's spin-waiting made elmoformanylangs collapse on loaded cores,
an artefact).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sentences", type=int, default=256)
    ap.add_argument("--length", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--proj", type=int, default=256)
    ap.add_argument("--charset", type=int, default=3000, help="distinct characters (vocab size)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the third row (bare torch.nn.LSTM(proj_size) layers, a speed reference)")
    ap.add_argument("--worker", choices=["ours", "efml", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def charset(a) -> list[str]:
    return [chr(0x4E00 + k) for k in range(a.charset)]


def sentences(a) -> list[list[str]]:
    import random

    rng = random.Random(a.seed)
    chars = charset(a)
    return [[rng.choice(chars) for _ in range(a.length)] for _ in range(a.sentences)]


# ------------------------------------------------------------------------------------------- model builders
def build_ours(a, d: Path) -> Path:
    import paddle

    from elmo_paddle import checkpoint as ckpt
    from elmo_paddle.bilm import BiLM, BiLMConfig
    from elmo_paddle.pretrain_config import PretrainConfig
    from elmo_paddle.model_io import model_dir_files
    from elmo_paddle.vocab import SPECIALS, Vocab

    paddle.seed(a.seed)
    vocab = Vocab(list(SPECIALS) + charset(a), "char")
    cfg = BiLMConfig(vocab_size=len(vocab), token_dim=a.proj, proj_dim=a.proj, hidden_dim=a.hidden, num_layers=2)
    bilm = BiLM(cfg)
    out = d / "ours"
    ckpt.write_dir(out, model_dir_files(PretrainConfig(), cfg, vocab), {"weights.safetensors": ckpt.model_tensors(bilm)})
    return out


def build_efml(a, d: Path) -> Path:
    import torch
    from elmoformanylangs.frontend import Model
    from elmoformanylangs.modules.embedding_layer import EmbeddingLayer

    torch.manual_seed(a.seed)
    out = d / "efml"
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "encoder": {"name": "elmo", "projection_dim": a.proj, "cell_clip": 3, "proj_clip": 3, "dim": a.hidden,
                    "n_layers": 2},
        "token_embedder": {"name": "cnn", "activation": "relu", "filters": [[1, 32], [2, 32], [3, 64]],
                           "n_highway": 1, "word_dim": 0, "char_dim": 50, "max_characters_per_token": 8},
        "classifier": {"name": "sampled_softmax", "n_samples": 8192},
        "dropout": 0.1,
    }
    (out / "model.json").write_text(json.dumps(config))
    (out / "config.json").write_text(json.dumps({"config_path": "model.json"}))
    lex = {t: i for i, t in enumerate(["<oov>", "<pad>", "<eow>", "<bow>", "<bos>", "<eos>"] + charset(a))}
    (out / "char.dic").write_text("".join(f"{t}\t{i}\n" for t, i in lex.items()), encoding="utf-8")
    char_emb = EmbeddingLayer(config["token_embedder"]["char_dim"], lex, fix_emb=False, embs=None)
    model = Model(config, None, char_emb, use_cuda=False)
    torch.save(model.token_embedder.state_dict(), out / "token_embedder.pkl")
    torch.save(model.encoder.state_dict(), out / "encoder.pkl")
    return out


def torch_native_run(a, sents):
    """A reference, not a competitor: the same biLM as bare `torch.nn.LSTM(proj_size=...)` layers.

    PyTorch's C++ recurrence (input projection of all steps at once, no Python per step) on the same
    batches: how fast this computation runs here without any framework overhead in the loop.  It has no
    cell clip (the kernel has none), so it does a little less work than the other two.
    """
    import numpy as np
    import torch

    torch.manual_seed(a.seed)
    vocab = {c: i + 1 for i, c in enumerate(charset(a))}
    emb = torch.nn.Embedding(len(vocab) + 3, a.proj)
    lstms = [[torch.nn.LSTM(a.proj, a.hidden, proj_size=a.proj, batch_first=True) for _ in range(2)]
             for _ in range(2)]
    order = sorted(range(len(sents)), key=lambda k: len(sents[k]))

    def run():
        out = [None] * len(sents)
        with torch.no_grad():
            for b in range(0, len(order), a.batch_size):
                idx = order[b:b + a.batch_size]
                T = max(len(sents[k]) for k in idx) + 2
                ids = torch.zeros(len(idx), T, dtype=torch.long)
                for j, k in enumerate(idx):  # <S> = len+1, </S> = len+2, same lengths in this bench
                    ids[j, :len(sents[k]) + 2] = torch.tensor([len(vocab) + 1] + [vocab[c] for c in sents[k]]
                                                               + [len(vocab) + 2])
                x = emb(ids)
                layers, h = [torch.cat([x, x], -1)], [x, x.flip(1)]
                for layer in lstms:
                    y = [layer[d](h[d])[0] for d in range(2)]
                    h = [y[d] + h[d] if layers[1:] else y[d] for d in range(2)]  # residual from layer 2
                    layers.append(torch.cat([h[0], h[1].flip(1)], -1))
                arr = torch.stack(layers, 1)[:, :, 1:-1].numpy()
                for j, k in enumerate(idx):
                    out[k] = np.ascontiguousarray(arr[j, :, :len(sents[k])])
        return out
    return run


# ------------------------------------------------------------------------------------------------ workers
def worker(a):
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    d = Path(a.workdir)
    sents = sentences(a)
    if a.worker == "ours":
        import elmo_paddle  # noqa: F401  (MKL env vars before paddle loads)
        import paddle

        from elmo_paddle.embedder import ElmoEmbedder

        paddle.set_device("cpu")
        emb = ElmoEmbedder(build_ours(a, d), threads=a.threads)
        run = lambda: emb.embed_sentences(sents, batch_size=a.batch_size)  # noqa: E731
        version = f"paddle {paddle.__version__}"
    elif a.worker == "torch":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch

        torch.set_num_threads(a.threads)
        run = torch_native_run(a, sents)
        version = f"torch {torch.__version__}"
    else:
        import logging

        # libgomp threads spin while waiting by default; on shared cores that starves the other thread.
        # PASSIVE is the counterpart of the KMP_BLOCKTIME=0 that elmo_paddle sets for paddle's OpenMP.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch

        logging.getLogger("elmoformanylangs").setLevel(logging.WARNING)
        torch.set_num_threads(a.threads)
        from elmoformanylangs import Embedder

        emb = Embedder(str(build_efml(a, d)), batch_size=a.batch_size)
        run = lambda: emb.sents2elmo(sents, output_layer=-2)  # noqa: E731
        version = f"torch {torch.__version__}"
    out = sys.stdout
    sys.stdout = sys.stderr  # keep library chatter off the protocol channel
    out.write(f"ready {version.replace(' ', '_')}\n")
    out.flush()
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        t = time.perf_counter()
        res = run()
        dt = time.perf_counter() - t
        shapes = {tuple(r.shape) for r in res}
        out.write(f"{dt} {len(res)} {json.dumps(sorted(shapes)).replace(' ', '')}\n")
        out.flush()


class Worker:
    def __init__(self, argv, side, workdir):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO)] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", side, "--workdir", workdir]
                                  + argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        line = self.p.stdout.readline().split()
        if not line or line[0] != "ready":
            raise SystemExit(f"{side} worker failed to start")
        self.version = line[1].replace("_", " ")

    def run(self):
        self.p.stdin.write("go\n")
        self.p.stdin.flush()
        dt, n, shapes = self.p.stdout.readline().split()
        return float(dt), int(n), shapes

    def close(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.flush()
        self.p.wait()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    if a.worker:
        return worker(a)
    with tempfile.TemporaryDirectory(prefix="bench_embed_") as wd:
        sides = {"ours": Worker(argv, "ours", wd), "elmoformanylangs": Worker(argv, "efml", wd)}
        if not a.no_reference:
            sides["torch.nn.LSTM"] = Worker(argv, "torch", wd)
        names = list(sides)
        for _ in range(a.warmup):
            for n in names:
                sides[n].run()
        times = {n: [] for n in names}
        shapes = {}
        for r in range(a.repeats):
            for n in (names if r % 2 == 0 else names[::-1]):
                dt, cnt, sh = sides[n].run()
                assert cnt == a.sentences, (n, cnt)
                times[n].append(dt)
                shapes[n] = sh
        for w in sides.values():
            w.close()
    print(f"{a.sentences} random {a.length}-char sentences, batch {a.batch_size}, {a.threads} threads; "
          f"biLM 2 layers x 2 directions, cell {a.hidden}, projection {a.proj}; median of {a.repeats} runs")
    rate = {}
    for n in names:
        med = statistics.median(times[n])
        rate[n] = a.sentences / med
        print(f"{n:>17} ({sides[n].version}): {rate[n]:7.1f} sentences/s  "
              f"({rate[n] * a.length:,.0f} tokens/s; runs {', '.join(f'{t:.2f}s' for t in times[n])}; "
              f"output shapes {shapes[n]})")
    if "torch.nn.LSTM" in rate:
        print(f"(reference) ratio torch.nn.LSTM/elmoformanylangs: "
              f"{rate['torch.nn.LSTM'] / rate['elmoformanylangs']:.2f}; ours/torch.nn.LSTM: "
              f"{rate['ours'] / rate['torch.nn.LSTM']:.2f}")
    print(f"ratio ours/elmoformanylangs: {rate['ours'] / rate['elmoformanylangs']:.2f}")


if __name__ == "__main__":
    main()
