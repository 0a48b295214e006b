"""Train BiDAF (optionally +ELMo) on CMRC 2018: train -> train, trial -> dev (model selection), dev -> test.

  python -m tasks.bidaf.finetune --config configs/bidaf.yaml [--elmo-model DIR] [--train-fraction F]
      [--seed S] [--run-name N] [--data-dir D] [--epochs E] [--max-steps N] [key=value ...]

Writes runs/bidaf/<run-name>/: VisualDL logs (train loss, dev EM/F1, examples/s, hparams), model/ (best
checkpoint by dev F1: model.safetensors, config.json, vocab.json), test_predictions.json ({qid: answer})
and metrics.json (test + best dev scores, train time, data counts, config).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import paddle

from elmo_paddle.config import load_config, to_dict
from elmo_paddle.data_dir import data_path
from elmo_paddle.errors import UserError, cli

from .data import (LoadStats, QAExample, Vocab, encode_batch, load_squad, make_features, references,
                   word_sequence)
from .metric import evaluate_predictions
from .model import BiDAF, ModelSizes


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
    patience: int | None = None
    seed: int = 1
    # output
    runs_dir: str = "runs/bidaf"
    run_name: str | None = None


def build_elmo(cfg: dict[str, Any]) -> Any:
    """The ELMo layer for a run config (1 mix, or 2 with elmo_at_modeling)."""
    try:
        from elmo_paddle.elmo import Elmo
    except ImportError as e:
        raise UserError(f"ELMo requested (elmo_model={cfg.get('elmo_model')!r}) but elmo_paddle.elmo "
                        f"cannot be imported: {e}") from None
    d = Path(str(cfg["elmo_model"]))
    if not d.is_dir():
        raise UserError(f"ELMo model folder {d} does not exist")
    elmo = Elmo(str(d), num_output_representations=2 if cfg.get("elmo_at_modeling") else 1,
                dropout=float(cfg.get("elmo_dropout", 0.5)), gamma_init=float(cfg.get("elmo_gamma", 1.0)),
                layer_norm=False, l2_coef=float(cfg.get("elmo_l2", 0.0)))
    if getattr(elmo, "unit", "char") != "char":
        # BiDAF's tokens are characters; a word-unit biLM would need word->char broadcasting (not built)
        raise UserError(f"{d}: BiDAF needs a character-unit ELMo model, this one uses {elmo.unit!r} tokens")
    return elmo


def _resolve(rel: str, data_dir: str | None) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else data_path(rel, data_dir)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tasks.bidaf.finetune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/bidaf.yaml", help="YAML config (default configs/bidaf.yaml)")
    p.add_argument("--elmo-model", help="pretrained ELMo folder: train BiDAF+ELMo (sets elmo_model)")
    p.add_argument("--train-fraction", type=float, help="use this random fraction (0-1] of training questions")
    p.add_argument("--seed", type=int, help="random seed (subsample, init, shuffling)")
    p.add_argument("--run-name", help="name of the run folder under runs_dir (default: base|elmo-s<seed>-<time>)")
    p.add_argument("--data-dir", help="data folder holding cmrc2018/ (default $ELMO_PADDLE_DATA or ../shared/data)")
    p.add_argument("--epochs", type=int, help="number of passes over the training questions")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (for smoke runs)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. hidden=100 lr=0.002")
    return p.parse_intermixed_args(argv)  # overrides may come before or after the flags


def load_run_config(args: argparse.Namespace) -> BidafConfig:
    extra = list(args.overrides)
    for flag, key in (("elmo_model", "elmo_model"), ("train_fraction", "train_fraction"), ("seed", "seed"),
                      ("run_name", "run_name"), ("epochs", "epochs"), ("max_steps", "max_steps")):
        v = getattr(args, flag)
        if v is not None:
            extra.append(f"{key}={v}")
    cfg = load_config(BidafConfig, args.config, extra)
    if cfg.dataset not in ("cmrc2018", "dureader"):
        raise UserError(f"dataset must be cmrc2018 or dureader, got {cfg.dataset!r}")
    if not 0 < cfg.train_fraction <= 1:
        raise UserError(f"train_fraction must be in (0, 1], got {cfg.train_fraction}")
    for k in ("max_context_len", "doc_stride", "max_question_len", "max_answer_len", "batch_size",
              "eval_batch_size", "hidden", "char_dim", "word_dim", "epochs"):
        if getattr(cfg, k) < 1:
            raise UserError(f"{k} must be at least 1, got {getattr(cfg, k)}")
    if cfg.doc_stride > cfg.max_context_len:
        raise UserError("doc_stride must not exceed max_context_len (windows would skip text)")
    return cfg


def _load(path: Path, name: str, dataset: str = "cmrc2018") -> tuple[list[QAExample], LoadStats]:
    stats = LoadStats()
    if dataset == "dureader":
        from .dureader import load_dureader
        ex = load_dureader(path, train=(name == "train"), stats=stats)
    else:
        ex = load_squad(path, stats)
    print(f"{name}: {path}: {stats.summary()}", file=sys.stderr)
    return ex, stats


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    cfg = load_run_config(args)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    paddle.seed(cfg.seed)
    run_name = cfg.run_name or f"{'elmo' if cfg.elmo_model else 'base'}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.runs_dir) / run_name
    model_dir = run_dir / "model"

    train_ex, train_stats = _load(_resolve(cfg.train_file, args.data_dir), "train", cfg.dataset)
    dev_ex, dev_stats = _load(_resolve(cfg.dev_file, args.data_dir), "dev", cfg.dataset)
    test_path = _resolve(cfg.test_file, args.data_dir)
    test_ex, test_stats = _load(test_path, "test", cfg.dataset)
    rng = random.Random(cfg.seed)
    if cfg.train_fraction < 1:
        train_ex = rng.sample(train_ex, max(1, round(len(train_ex) * cfg.train_fraction)))
    if cfg.dev_max_questions and cfg.dev_max_questions < len(dev_ex):
        dev_ex = random.Random(0).sample(dev_ex, cfg.dev_max_questions)  # same dev subset for every seed
    if cfg.test_max_questions and cfg.test_max_questions < len(test_ex):
        test_ex = random.Random(0).sample(test_ex, cfg.test_max_questions)  # smoke runs only

    fstats: dict[str, dict[str, int]] = {"train": {}, "dev": {}, "test": {}}
    train_f = make_features(train_ex, cfg.max_context_len, cfg.doc_stride, cfg.max_question_len, True, fstats["train"])
    dev_f = make_features(dev_ex, cfg.max_context_len, cfg.doc_stride, cfg.max_question_len, False, fstats["dev"])
    test_f = make_features(test_ex, cfg.max_context_len, cfg.doc_stride, cfg.max_question_len, False, fstats["test"])
    if not train_f:
        raise UserError("no usable training questions (none has an answer span inside a window)")
    print(f"features (windows): train {len(train_f)} from {len(train_ex)} questions {fstats['train']}; "
          f"dev {len(dev_f)} {fstats['dev']}; test {len(test_f)} {fstats['test']}", file=sys.stderr)

    # vocabularies from the training questions only (test text never shapes the model)
    chars = Vocab.build([f.c_chars + f.q_chars for f in train_f])
    # a word broadcast to its n characters counts once, not n times
    words = Vocab.build([word_sequence(f.c_words) + word_sequence(f.q_words) for f in train_f],
                        cfg.word_min_count, cfg.word_max_size)

    elmo, cache = None, None
    if cfg.elmo_model:
        from .elmo_cache import ElmoLayerCache
        elmo = build_elmo(to_dict(cfg))
        cache = ElmoLayerCache(elmo, cfg.elmo_cache_mb, cache_dir=cfg.elmo_cache_dir)
    sizes = ModelSizes(len(chars), len(words), cfg.char_dim, cfg.word_dim, cfg.hidden, cfg.dropout,
                       int(elmo.output_dim) if elmo is not None else 0, bool(cfg.elmo_at_modeling and elmo))
    model = BiDAF(sizes, elmo)
    params = [p for p in model.parameters() if not p.stop_gradient]
    opt = paddle.optimizer.Adam(cfg.lr, parameters=params,
                                grad_clip=paddle.nn.ClipGradByGlobalNorm(cfg.grad_clip) if cfg.grad_clip else None)
    print(f"model: {sum(int(np.prod(p.shape)) for p in params):,} trainable parameters; "
          f"vocab {len(chars)} chars, {len(words)} words", file=sys.stderr)

    from elmo_paddle.runtime import to_tensors

    from .predict import elmo_inputs, predict_features

    def train_batches(epoch: int):
        order = list(range(len(train_f)))
        random.Random(cfg.seed * 1000 + epoch).shuffle(order)
        for b in range(0, len(order), cfg.batch_size):
            fb = [train_f[i] for i in order[b:b + cfg.batch_size]]
            yield fb, to_tensors(encode_batch(fb, chars, words))

    def loss_fn(m: BiDAF, batch) -> paddle.Tensor:
        fb, tensors = batch
        return m.loss(tensors, *elmo_inputs(fb, cache))

    dev_refs = references(dev_ex)

    def evaluate(m: BiDAF) -> dict[str, float]:
        preds = predict_features(m, dev_ex, dev_f, chars, words, cfg.eval_batch_size, cfg.max_answer_len, cache)
        r = evaluate_predictions(dev_refs, preds)
        return {"f1": r["F1"], "em": r["EM"]}

    cfg_dict = to_dict(cfg)
    cfg_dict["run_name"] = run_name

    def save_best(m: BiDAF, metrics: dict[str, float]) -> None:
        from .checkpoint import save_model
        save_model(m, model_dir, chars, words, cfg_dict)

    from tasks.common.trainer import fit

    hparams = {k: v for k, v in cfg_dict.items() if k in (
        "train_fraction", "seed", "hidden", "char_dim", "word_dim", "dropout", "lr", "batch_size", "epochs",
        "max_context_len", "elmo_model", "elmo_gamma", "elmo_dropout", "elmo_at_modeling", "elmo_l2")}
    res = fit(model, opt, train_batches, loss_fn, evaluate, run_dir=run_dir, metric="f1", epochs=cfg.epochs,
              max_steps=cfg.max_steps, eval_every=cfg.eval_every, patience=cfg.patience, save_best=save_best,
              hparams=hparams, batch_size_of=lambda b: len(b[0]), desc=f"bidaf {run_name}")

    # test with the best checkpoint (reloaded from disk: also checks the saved folder is complete)
    from .checkpoint import load_model
    best_model, _, _, _ = load_model(model_dir) if elmo is None else (model, None, None, None)
    if elmo is not None:  # same Elmo instance: reload only the trainable weights
        from safetensors.paddle import load_file
        model.set_state_dict(load_file(str(model_dir / "model.safetensors")))
    t0 = time.time()
    preds = predict_features(best_model, test_ex, test_f, chars, words, cfg.eval_batch_size, cfg.max_answer_len, cache)
    test_seconds = time.time() - t0
    (run_dir / "test_predictions.json").write_text(json.dumps(preds, ensure_ascii=False, indent=1), encoding="utf-8")
    test = evaluate_predictions(references(test_ex), preds)
    metrics = {
        "test": test, "test_file": str(test_path), "dev_best": res.best, "best_step": res.best_step,
        "steps": res.steps, "train_seconds": round(res.train_seconds, 1), "test_seconds": round(test_seconds, 1),
        "train_questions": len(train_ex), "train_windows": len(train_f),
        "data": {"train": train_stats.as_dict(), "dev": dev_stats.as_dict(), "test": test_stats.as_dict(),
                 "windows": fstats},
        "elmo_cache": cache.report() if cache is not None else None,
        "config": cfg_dict, "dev_history": res.history,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=1), encoding="utf-8")
    print(json.dumps({"run": str(run_dir), "test": test, "dev_best": res.best,
                      "train_seconds": metrics["train_seconds"]}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
