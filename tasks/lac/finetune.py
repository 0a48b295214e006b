"""Train the LAC tagger (baseline or +ELMo) and evaluate the best-by-dev-F1 checkpoint on test.

    python -m tasks.lac.finetune --config configs/lac.yaml [--elmo-model DIR] [--dataset pd1998|msra|lac]
        [--train-fraction F] [--seed S] [--run-name NAME] [--overfit N] [--data-dir D] [--epochs E]
        [--max-steps N] [key=value ...]

Writes runs/lac/<run-name>/: VisualDL logs (train loss/lr/speed, dev P/R/F1 per eval, hparams),
best/ (model.safetensors, config.json, vocab.json, tags.json), history.json and metrics.json.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from elmo_paddle import validate
from elmo_paddle.config import to_dict
from elmo_paddle.errors import UserError, cli
from elmo_paddle.runtime import set_threads
from elmo_paddle.vocab import TokenIds
from tasks.common.checks import check_task_config
from tasks.common.run import (COMMON_FLAGS, build_optimizer, fit_fingerprint, load_run_config,
                              run_parser, seed_everything, write_metrics)

from .data import DATASETS, Example, Rejects, load_dataset, split_long, subsample


@dataclass
class LacConfig:
    """Every setting of a LAC run (configs/lac.yaml; command-line flags and key=value override it)."""

    dataset: str = "pd1998"
    data_dir: Optional[str] = None
    train_fraction: float = 1.0
    seed: int = 1
    max_len: int = 150            # longer sentences are cut at punctuation/word boundaries
    min_char_freq: int = 1
    lac_names: bool = True        # PD: nr/ns/nt/t -> PER/LOC/ORG/TIME
    merge_names: bool = True      # PD: 江/nr 泽民/nr -> one PER word
    pd_compound: str = "inner"    # PD: [..]nt compounds -> inner words | one 'outer' word
    emb_dim: int = 128
    hidden_dim: int = 128
    num_layers: int = 2
    dropout: float = 0.1
    lr: float = 1e-3
    crf_lr: float = 0.2           # LAC's crf_learning_rate multiplier
    clip_norm: float = 5.0
    batch_size: int = 32
    epochs: int = 5
    max_steps: Optional[int] = None
    eval_every: int = 0           # steps; 0 = once per epoch
    checkpoint_every: int = 1000  # steps between resumable checkpoints besides those at evaluations; 0: none
    patience: Optional[int] = None
    max_dev_sentences: int = 0    # 0 = whole dev set
    elmo_model: Optional[str] = None
    elmo_gamma: float = 1.0
    elmo_dropout: float = 0.5
    elmo_at_output: bool = False
    elmo_l2: float = 0.0
    elmo_cache_mb: float = 2048.0  # frozen biLM layers kept in memory (float16) so later epochs only mix them
    elmo_cache_dir: Optional[str] = ".cache/elmo_layers"  # shared across runs of the same ELMo model; null: memory only
    overfit: int = 0              # >0: train and evaluate on the first N train sentences
    overfit_dropout: float = 0.5
    overfit_epochs: int = 300
    run_name: Optional[str] = None
    runs_dir: str = "runs/lac"
    resume: bool = False          # --resume: continue run_name's newest checkpoint
    threads: int = 2              # CPU threads of paddle's kernels (0: library default)


def default_run_name(cfg: LacConfig) -> str:
    """dataset-variant-fraction-seed, so runs of one setting overlay in `visualdl --logdir runs/lac`."""
    variant = "elmo" if cfg.elmo_model else "base"
    if cfg.elmo_model and cfg.elmo_at_output:
        variant += "out"
    name = f"{cfg.dataset}-{variant}-f{cfg.train_fraction:g}-s{cfg.seed}"
    return name + (f"-overfit{cfg.overfit}" if cfg.overfit else "")


# config keys the command line sets with a flag of the same name (--dataset, --overfit, ...)
FLAGS = (*COMMON_FLAGS, "dataset", "overfit", "data_dir")


def configure(argv: list[str] | None) -> LacConfig:
    """The run's config: file, key=value overrides, flags, then the --overfit adjustments and the run name."""
    ap = run_parser("python -m tasks.lac.finetune", __doc__.split("\n\n")[0], None,
                    "YAML config (e.g. configs/lac.yaml); defaults are LacConfig's")
    ap.add_argument("--dataset", choices=DATASETS, help="pd1998 (default), msra or lac (Baidu samples)")
    ap.add_argument("--overfit", type=int, metavar="N", help="train on N sentences with high dropout until "
                    "they are fitted; reports train F1")
    ns = ap.parse_intermixed_args(argv)
    cfg = load_run_config(LacConfig, ns, FLAGS)
    if cfg.dataset not in DATASETS:
        raise UserError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(DATASETS)}")
    check_lac_config(cfg)
    if cfg.overfit:
        cfg.dropout = cfg.overfit_dropout
        cfg.epochs = max(cfg.epochs, cfg.overfit_epochs) if ns.epochs is None else cfg.epochs
    cfg.run_name = cfg.run_name or default_run_name(cfg)
    return cfg


def check_lac_config(cfg: LacConfig) -> None:
    """LAC's own sizes and rates on top of the keys both tasks share (`tasks.common.checks`)."""
    check_task_config(cfg, sizes=("max_len", "min_char_freq", "emb_dim", "hidden_dim", "num_layers",
                                  "overfit_epochs"))
    validate.positive_float("crf_lr", cfg.crf_lr)
    validate.non_negative_float("clip_norm", cfg.clip_norm)
    for key in ("max_dev_sentences", "overfit", "threads"):
        validate.non_negative_int(key, getattr(cfg, key))
    validate.fraction("overfit_dropout", cfg.overfit_dropout, low_open=False, high_open=True)


def prepare(cfg: LacConfig, rejects: Rejects) -> tuple[list[Example], list[Example], list[Example], list[str], bool]:
    """Read, subsample, split long sentences; overfit mode uses its N train sentences as dev too."""
    splits = load_dataset(cfg.dataset, cfg.data_dir, rejects, lac_names=cfg.lac_names,
                          merge_names=cfg.merge_names, pd_compound=cfg.pd_compound)
    cut = lambda exs: [p for e in exs for p in split_long(e, cfg.max_len)]  # noqa: E731
    train = cut(subsample(splits.train, cfg.train_fraction, cfg.seed))
    dev, test = cut(splits.dev), cut(splits.test)
    if cfg.max_dev_sentences:
        dev = dev[:cfg.max_dev_sentences]
    if cfg.overfit:
        train = train[:cfg.overfit]
        dev = train
    if not train:
        raise UserError(f"no usable training sentences in {cfg.dataset} (see the warnings above)")
    return train, dev, test, splits.tags, splits.has_segmentation


def elmo_input(model, tokens, cache=None):
    """What the tagger's ELMo part reads for a batch: cached biLM layers when a cache is given, else ids."""
    if model.elmo is None:
        return None
    return cache(tokens) if cache is not None else model.elmo.batch_to_ids(tokens)


@dataclass
class Scorer:
    """Chunk metrics of Viterbi decoding over a list of examples (dev during training, then test or train)."""

    vocab: TokenIds
    tags: list[str]
    batch_size: int
    segmentation: bool
    cache: Any = None

    def __post_init__(self) -> None:
        self.tag_index = {t: i for i, t in enumerate(self.tags)}

    def __call__(self, model, examples: list[Example]) -> dict[str, float]:
        from .batching import example_batches
        from .metrics import ChunkMetrics
        from .model import FrozenEmissions, batch_tensors

        metrics = ChunkMetrics(segmentation=self.segmentation)
        # the predict path's kernel, built from this evaluation's weights (`model` is in eval mode here)
        frozen = FrozenEmissions(model) if FrozenEmissions.available() and not model.training else None
        for b in example_batches(examples, self.vocab, self.tag_index, self.batch_size * 2):
            ids, lengths = batch_tensors(b.char_ids, b.lengths)
            elmo_ids = elmo_input(model, b.tokens, self.cache)
            for row, path in zip(b.index, model.decode(ids, lengths, elmo_ids, frozen)):
                metrics.update(examples[row].tags, [self.tags[i] for i in path])
        return metrics.result()


def build(cfg: LacConfig, train: list[Example], tags: list[str]):
    """Paddle's threads and the seeds first, then the character vocabulary, tagger (+ frozen-ELMo layer cache)
    and optimizer."""
    import paddle

    from .batching import char_vocab
    from .checkpoint import build_tagger

    if cfg.threads > 0:
        set_threads(cfg.threads)
    paddle.set_device("cpu") if not paddle.is_compiled_with_cuda() else None
    seed_everything(cfg.seed)
    vocab = char_vocab((e.chars for e in train), cfg.min_char_freq)
    model = build_tagger(to_dict(cfg), len(vocab), len(tags))
    cache = None
    if model.elmo is not None and cfg.elmo_cache_mb > 0:
        from elmo_paddle.layer_cache import ElmoLayerCache

        cache = ElmoLayerCache(model.elmo, cfg.elmo_cache_mb, batch_size=cfg.batch_size * 2,
                               cache_dir=cfg.elmo_cache_dir)
    return vocab, model, cache, build_optimizer(model, cfg.lr, cfg.clip_norm)


def hparams(cfg: LacConfig) -> dict[str, Any]:
    """What VisualDL's hparams view compares LAC runs by."""
    return {"dataset": cfg.dataset, "elmo_model": cfg.elmo_model or "none", "elmo_gamma": cfg.elmo_gamma,
            "elmo_dropout": cfg.elmo_dropout, "elmo_at_output": int(cfg.elmo_at_output),
            "train_fraction": cfg.train_fraction, "seed": cfg.seed, "dropout": cfg.dropout, "lr": cfg.lr,
            "overfit": cfg.overfit}


def summary(out: dict[str, Any], steps: int) -> str:
    """One line of the final scores: train F1 of an --overfit run, else test P/R/F1 and its breakdown."""
    if "train" in out:
        return f"train F1 {out['train']['f1']:.2f} after {steps} steps"
    t = out["test"]
    return (f"test P/R/F1 {t['precision']:.2f}/{t['recall']:.2f}/{t['f1']:.2f}"
            + (f", seg F1 {t['seg_f1']:.2f}" if "seg_f1" in t else "")
            + "".join(f", {k[:-3]} F1 {v:.2f}" for k, v in t.items() if k.endswith("_f1") and k != "seg_f1"))


@cli
def main(argv: list[str] | None = None) -> int:
    from tasks.common.fit_checkpoint import claim

    cfg = configure(argv)
    with claim(Path(cfg.runs_dir) / cfg.run_name, cfg.resume):  # before the setup: a second process is refused
        return run(cfg)


def run(cfg: LacConfig) -> int:
    """Load the data, train (or resume), score the best model on test and write metrics.json."""
    from tasks.common.trainer import FitConfig, TaskHooks, fit

    from .batching import example_batches
    from .checkpoint import load_model, save_model
    from .model import batch_tensors

    rejects = Rejects()
    train, dev, test, tags, has_seg = prepare(cfg, rejects)
    rejects.warn()
    vocab, model, cache, optimizer = build(cfg, train, tags)
    score = Scorer(vocab, tags, cfg.batch_size, has_seg, cache)
    run_dir = Path(cfg.runs_dir) / cfg.run_name
    best_dir = run_dir / "best"
    print(f"{cfg.run_name}: {len(train)} train / {len(dev)} dev / {len(test)} test sentences, "
          f"{len(vocab)} chars, {len(tags)} tags -> {run_dir}", file=sys.stderr)

    def batches(epoch: int):
        return example_batches(train, vocab, score.tag_index, cfg.batch_size, seed=cfg.seed * 1000 + epoch)

    def loss_fn(m, b):
        ids, lengths, tag_ids = batch_tensors(b.char_ids, b.lengths, b.tag_ids)
        return m.loss(ids, lengths, tag_ids, elmo_input(m, b.tokens, cache))

    cfg_dict = to_dict(cfg)
    t0 = time.time()
    hooks = TaskHooks(batches, loss_fn, lambda m: score(m, dev), batch_size_of=len,
                      save_best=lambda m, _: save_model(best_dir, m, cfg_dict, vocab, tags))
    result = fit(model, optimizer, hooks, FitConfig(
        run_dir, metric="f1", epochs=cfg.epochs, max_steps=cfg.max_steps, eval_every=cfg.eval_every,
        checkpoint_every=cfg.checkpoint_every,
        patience=cfg.patience, stop_at=100.0 if cfg.overfit else None, desc=cfg.run_name, hparams=hparams(cfg),
        seed=cfg.seed, resume=cfg.resume, fingerprint=fit_fingerprint(cfg_dict)))
    wall = time.time() - t0

    out = {"run_name": cfg.run_name, "best_dev": result.best, "best_step": result.best_step,
           "steps": result.steps, "train_seconds": round(result.train_seconds, 1), "wall_seconds": round(wall, 1),
           "train_sentences": len(train), "dev_sentences": len(dev), "test_sentences": len(test),
           "rejected_input": dict(rejects.counts), "config": cfg_dict}
    best_model = load_model(best_dir, elmo=model.elmo)[0]
    if cfg.overfit:
        out["train"] = score(best_model, train)
    else:
        out["test"] = score(best_model, test)
    if cache is not None:
        out["elmo_cache"] = cache.report()  # after test: includes the test set's biLM cost
    write_metrics(run_dir, out)
    print(f"{cfg.run_name}: best dev F1 {result.best.get('f1', 0):.2f} at step {result.best_step}; "
          f"{summary(out, result.steps)}; model {best_dir}", file=sys.stderr)
    print(json.dumps({"run_name": cfg.run_name, **{k: v for k, v in out.items() if k in ("test", "train")}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
