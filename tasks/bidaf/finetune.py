"""Train BiDAF (optionally +ELMo) on CMRC 2018: train -> train, trial -> dev (model selection), dev -> test.

  python -m tasks.bidaf.finetune --config configs/bidaf.yaml [--elmo-model DIR] [--train-fraction F]
      [--seed S] [--run-name N] [--data-dir D] [--epochs E] [--max-steps N] [key=value ...]

Writes runs/bidaf/<run-name>/: VisualDL logs (train loss, dev EM/F1, examples/s, hparams), model/ (best
checkpoint by dev F1: model.safetensors, config.json, vocab.json), test_predictions.json ({qid: answer})
and metrics.json (test + best dev scores, train time, data counts, config).

Data parallel, one rank per core or GPU (each rank trains on its share of every batch of batch_size; rank 0
evaluates, writes and scores the test set):
  python -m paddle.distributed.launch --nproc_per_node 2 tasks/bidaf/finetune.py [the same arguments]
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:
    # run as a script path (paddle.distributed.launch takes a file, not -m): make relative imports work
    import sys as _sys
    from pathlib import Path as _Path

    _sys.path.insert(0, str(_Path(__file__).resolve().parents[2]))
    import elmo_paddle  # noqa: F401  (sets the MKL environment before paddle loads)

    __package__ = "tasks.bidaf"

import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import paddle

from elmo_paddle import checkpoint as ckpt
from elmo_paddle import dist, validate
from elmo_paddle.config import to_dict
from elmo_paddle.data_dir import data_path
from elmo_paddle.errors import UserError, cli
from elmo_paddle.runtime import to_tensors
from elmo_paddle.vocab import TokenIds
from tasks.common.checks import check_task_config
from tasks.common.fit_checkpoint import claim
from tasks.common.run import (build_optimizer, fit_fingerprint, load_run_config, run_parser,
                              seed_everything, write_metrics)

from . import checkpoint
from .data import (Feature, LoadStats, QAExample, build_vocab, encode_batch, load_squad, make_features, references,
                   word_sequence)
from .metric import evaluate_predictions
from .model import BiDAF
from .inference import elmo_inputs, predict_features


@dataclass
class BidafConfig:
    """Every knob of a run (configs/bidaf.yaml); unknown keys are rejected."""

    # data (relative to the data dir, or absolute)
    dataset: str = "cmrc2018"        # cmrc2018 (SQuAD-style JSON) or dureader (JSON Lines, see dureader.py)
    train_file: str = "cmrc2018/cmrc2018_train.json.gz"
    dev_file: str = "cmrc2018/cmrc2018_trial.json.gz"
    test_file: str = "cmrc2018/cmrc2018_dev.json.gz"
    train_fraction: float = 1.0      # random subsample of training questions (seeded)
    dev_max_questions: int = 0       # 0: all; else a fixed subsample of dev questions, for faster selection
    test_max_questions: int = 0      # 0: the whole test set (all reported numbers); else a fixed subsample (smoke runs)
    max_context_len: int = 400       # window length in characters; longer contexts are read in windows
    doc_stride: int = 300            # distance between window starts
    max_question_len: int = 64       # longer questions are truncated (counted)
    max_answer_len: int = 64         # decoding limit, characters
    word_min_count: int = 2
    word_max_size: int = 50000
    # model
    char_dim: int = 64
    word_dim: int = 64
    hidden: int = 64
    dropout: float = 0.2
    # ELMo (null: plain BiDAF)
    elmo_model: str | None = None
    elmo_gamma: float = 1.0
    elmo_dropout: float = 0.5
    elmo_at_modeling: bool = False
    elmo_l2: float = 0.0
    elmo_only_layer: int | None = None  # null: a learnt mix of all layers; 0: the token layer alone (no context)
    elmo_cache_mb: float = 2048.0
    elmo_cache_dir: str | None = ".cache/elmo_layers"  # disk cache shared across runs; null: memory only
    # optimisation
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 0.001
    grad_clip: float = 5.0
    epochs: int = 1
    max_steps: int | None = None
    eval_every: int = 0              # steps; 0: once per epoch
    checkpoint_every: int = 100      # steps between resumable checkpoints besides those at evaluations; 0: none
    ema_decay: float | None = None   # e.g. 0.999 (the BiDAF paper): score and save a moving average of the weights
    patience: int | None = None
    seed: int = 1
    resume: bool = False             # --resume: continue run_name's newest checkpoint
    # output
    runs_dir: str = "runs/bidaf"
    run_name: str | None = None


def _resolve(rel: str, data_dir: str | None) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else data_path(rel, data_dir)


def configure(argv: Sequence[str] | None) -> tuple[BidafConfig, str | None]:
    """The run's config (file, key=value overrides, flags), checked; and the --data-dir flag."""
    args = run_parser("python -m tasks.bidaf.finetune", __doc__, "configs/bidaf.yaml",
                      "YAML config (default configs/bidaf.yaml)").parse_intermixed_args(argv)
    cfg = load_run_config(BidafConfig, args)
    if cfg.dataset not in ("cmrc2018", "dureader"):
        raise UserError(f"dataset must be cmrc2018 or dureader, got {cfg.dataset!r}")
    check_task_config(cfg, sizes=("max_context_len", "doc_stride", "max_question_len", "max_answer_len",
                                  "eval_batch_size", "hidden", "char_dim", "word_dim", "word_min_count",
                                  "word_max_size"))
    validate.non_negative_float("grad_clip", cfg.grad_clip)
    for k in ("dev_max_questions", "test_max_questions"):
        validate.non_negative_int(k, getattr(cfg, k))
    if cfg.ema_decay is not None:
        validate.fraction("ema_decay", cfg.ema_decay, high_open=True)
    if cfg.doc_stride > cfg.max_context_len:
        raise UserError("doc_stride must not exceed max_context_len (windows would skip text)")
    return cfg, args.data_dir


@dataclass
class Split:
    """One data split: its questions, what the reader fixed or dropped, and the model's windows of them."""

    examples: list[QAExample]
    stats: LoadStats
    features: list[Feature] = field(default_factory=list)
    windows: dict[str, int] = field(default_factory=dict)

    def featurize(self, cfg: BidafConfig, train: bool) -> None:
        self.features = make_features(self.examples, cfg.max_context_len, cfg.doc_stride, cfg.max_question_len,
                                      train, self.windows)


def _load(path: Path, name: str, dataset: str = "cmrc2018") -> Split:
    stats = LoadStats()
    if dataset == "dureader":
        from .dureader import load_dureader
        ex = load_dureader(path, train=(name == "train"), stats=stats)
    else:
        ex = load_squad(path, stats)
    print(f"{name}: {path}: {stats.summary()}", file=sys.stderr)
    return Split(ex, stats)


def load_splits(cfg: BidafConfig, data_dir: str | None) -> dict[str, Split]:
    """train / dev / test, subsampled as configured and cut into windows."""
    splits = {name: _load(_resolve(getattr(cfg, f"{name}_file"), data_dir), name, cfg.dataset)
              for name in ("train", "dev", "test")}
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    if cfg.train_fraction < 1:
        rng = random.Random(cfg.seed)
        train.examples = rng.sample(train.examples, max(1, round(len(train.examples) * cfg.train_fraction)))
    if cfg.dev_max_questions and cfg.dev_max_questions < len(dev.examples):
        dev.examples = random.Random(0).sample(dev.examples, cfg.dev_max_questions)  # same dev subset for every seed
    if cfg.test_max_questions and cfg.test_max_questions < len(test.examples):
        test.examples = random.Random(0).sample(test.examples, cfg.test_max_questions)  # smoke runs only
    for name, split in splits.items():
        split.featurize(cfg, train=(name == "train"))
    if not train.features:
        raise UserError("no usable training questions (none has an answer span inside a window)")
    print(f"features (windows): train {len(train.features)} from {len(train.examples)} questions {train.windows}; "
          f"dev {len(dev.features)} {dev.windows}; test {len(test.features)} {test.windows}", file=sys.stderr)
    return splits


@dataclass
class Reader:
    """What a run trains and scores with: the vocabularies, the network and its frozen-ELMo layer cache."""

    chars: TokenIds
    words: TokenIds
    model: BiDAF
    cache: Any = None

    def answers(self, model: BiDAF, split: Split, cfg: BidafConfig) -> dict[str, str]:
        return predict_features(model, split.examples, split.features, self.chars, self.words, cfg.eval_batch_size,
                                cfg.max_answer_len, self.cache)


def build(cfg: BidafConfig, train: list[Feature]) -> Reader:
    """Vocabularies from the training windows only (test text never shapes the model), network, ELMo cache."""
    chars = build_vocab([f.c_chars + f.q_chars for f in train])
    # a word broadcast to its n characters counts once, not n times
    words = build_vocab([word_sequence(f.c_words) + word_sequence(f.q_words) for f in train],
                        cfg.word_min_count, cfg.word_max_size)
    model = checkpoint.build_reader(to_dict(cfg), len(chars), len(words))
    cache = None
    if model.elmo is not None:
        from .elmo_cache import ElmoLayerCache
        cache = ElmoLayerCache(model.elmo, cfg.elmo_cache_mb, cache_dir=cfg.elmo_cache_dir)
    return Reader(chars, words, model, cache)


HPARAMS = ("train_fraction", "seed", "hidden", "char_dim", "word_dim", "dropout", "lr", "batch_size", "epochs",
           "max_context_len", "elmo_model", "elmo_gamma", "elmo_dropout", "elmo_at_modeling", "elmo_l2",
           "elmo_only_layer")


def train(cfg: BidafConfig, cfg_dict: dict[str, Any], splits: dict[str, Split], run_dir: Path, reader: Reader):
    """`fit` with BiDAF's batches, loss and dev score (CMRC F1); the best model is saved to run_dir/model."""
    from tasks.common.trainer import FitConfig, TaskHooks, fit, shard

    opt = build_optimizer(reader.model, cfg.lr, cfg.grad_clip)
    params = [p for p in reader.model.parameters() if not p.stop_gradient]
    print(f"model: {sum(int(np.prod(p.shape)) for p in params):,} trainable parameters; "
          f"vocab {len(reader.chars)} chars, {len(reader.words)} words", file=sys.stderr)
    train_f, dev = splits["train"].features, splits["dev"]

    def train_batches(epoch: int):
        order = list(range(len(train_f)))
        random.Random(cfg.seed * 1000 + epoch).shuffle(order)
        for b in range(0, len(order), cfg.batch_size):
            mine = shard(order[b:b + cfg.batch_size])  # this rank's share (all of it in one process)
            if mine is None:
                continue
            fb = [train_f[i] for i in mine]
            yield fb, to_tensors(encode_batch(fb, reader.chars, reader.words))

    def loss_fn(m: BiDAF, batch) -> paddle.Tensor:
        fb, tensors = batch
        return m.loss(tensors, *elmo_inputs(fb, reader.cache))

    dev_refs = references(dev.examples)

    def evaluate(m: BiDAF) -> dict[str, float]:
        r = evaluate_predictions(dev_refs, reader.answers(m, dev, cfg))
        return {"f1": r["f1"], "em": r["em"]}

    def save_best(m: BiDAF, metrics: dict[str, float]) -> None:
        checkpoint.save_model(m, run_dir / "model", reader.chars, reader.words, cfg_dict)

    hooks = TaskHooks(train_batches, loss_fn, evaluate, save_best=save_best, batch_size_of=lambda b: len(b[0]))
    return fit(reader.model, opt, hooks, FitConfig(
        run_dir, metric="f1", epochs=cfg.epochs, max_steps=cfg.max_steps, eval_every=cfg.eval_every,
        checkpoint_every=cfg.checkpoint_every, ema_decay=cfg.ema_decay,
        patience=cfg.patience, desc=f"bidaf {cfg_dict['run_name']}",
        hparams={k: v for k, v in cfg_dict.items() if k in HPARAMS}, seed=cfg.seed, resume=cfg.resume,
        fingerprint=fit_fingerprint(cfg_dict)))


def score_test(cfg: BidafConfig, run_dir: Path, test: Split, reader: Reader) -> tuple[dict[str, Any], float]:
    """Test scores of the best checkpoint (reloaded from disk: also checks the saved folder is complete);
    the answers go to run_dir/test_predictions.json."""
    model_dir, model = run_dir / "model", reader.model
    if model.elmo is None:
        best_model = checkpoint.load_model(model_dir)[0]
    else:  # same Elmo instance: reload only the trainable weights
        ckpt.verify_dir(model_dir)
        checkpoint.load_weights(model, model_dir)
        best_model = model
    t0 = time.time()
    preds = reader.answers(best_model, test, cfg)
    seconds = time.time() - t0
    (run_dir / "test_predictions.json").write_text(json.dumps(preds, ensure_ascii=False, indent=1), encoding="utf-8")
    return evaluate_predictions(references(test.examples), preds), seconds


@cli
def main(argv: Sequence[str] | None = None) -> int:
    cfg, data_dir = configure(argv)
    seed_everything(cfg.seed)
    # a stable default name (variant, fraction, seed), so that --resume finds the run again
    run_name = cfg.run_name or f"{'elmo' if cfg.elmo_model else 'base'}-f{cfg.train_fraction:g}-s{cfg.seed}"
    run_dir = Path(cfg.runs_dir) / run_name
    if dist.setup()[0] != 0:  # a data-parallel rank besides 0: it trains its shares and writes nothing
        splits = load_splits(cfg, data_dir)
        train(cfg, {**to_dict(cfg), "run_name": run_name}, splits, run_dir, build(cfg, splits["train"].features))
        return 0
    with claim(run_dir, cfg.resume):  # before the setup: a second process on this run is refused at once
        splits = load_splits(cfg, data_dir)
        reader = build(cfg, splits["train"].features)
        cfg_dict = to_dict(cfg)
        cfg_dict["run_name"] = run_name
        res = train(cfg, cfg_dict, splits, run_dir, reader)
        scores, test_seconds = score_test(cfg, run_dir, splits["test"], reader)
        metrics = {
            "test": scores, "test_file": str(_resolve(cfg.test_file, data_dir)), "dev_best": res.best,
            "best_step": res.best_step, "steps": res.steps, "train_seconds": round(res.train_seconds, 1),
            "test_seconds": round(test_seconds, 1), "ranks": dist.setup()[1],
            "train_questions": len(splits["train"].examples),
            "train_windows": len(splits["train"].features),
            "data": {**{name: s.stats.as_dict() for name, s in splits.items()},
                     "windows": {name: s.windows for name, s in splits.items()}},
            "elmo_cache": reader.cache.report() if reader.cache is not None else None,
            "config": cfg_dict, "dev_history": res.history,
        }
        write_metrics(run_dir, metrics)
    print(json.dumps({"run": str(run_dir), "test": scores, "dev_best": res.best,
                      "train_seconds": metrics["train_seconds"]}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
