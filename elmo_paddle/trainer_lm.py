"""The LM training loop behind `elmo_paddle.pretrain` and `elmo_paddle.finetune_lm`."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import paddle
from tqdm import tqdm

from . import checkpoint as ckpt
from . import dist, validate, vdl_log
from .bilm import BiLM, BiLMConfig
from .config import from_dict
from .errors import UserError
from .lm_data import CorpusInfo, LMBatcher, dev_batches, scan_corpus
from .model_io import attach_char_table, load_bilm, model_dir_files
from .pretrain_config import PretrainConfig, check_config, lr_at, resolve_text_paths
from .runtime import set_threads, to_tensors
from .vocab import Vocab

# fault injection for the reliability tests: ELMO_PADDLE_FAULT=nan@STEP makes that step's loss NaN,
# exit@STEP ends the process right after that step; see checkpoint.fault_specs for the full list
_fault_at = ckpt.fault_at


class _LossModule(paddle.nn.Layer):
    """Wraps the biLM so the loss is computed in `forward` (what fleet's DataParallel hooks into)."""

    def __init__(self, bilm: BiLM):
        super().__init__()
        self.bilm = bilm

    def forward(self, inputs, fwd_targets, bwd_targets):
        return self.bilm.lm_loss({"inputs": inputs, "fwd_targets": fwd_targets, "bwd_targets": bwd_targets})


def evaluate_perplexity(bilm: BiLM, batches) -> dict[str, float]:
    """Held-out perplexity of each direction (full softmax) and of their average NLL."""
    was_training = bilm.training
    bilm.eval()
    tot = {"fwd_nll": 0.0, "fwd_count": 0.0, "bwd_nll": 0.0, "bwd_count": 0.0}
    with paddle.no_grad():
        for b in batches:
            out = bilm.lm_loss(to_tensors(b), sampled=False)
            for k in tot:
                tot[k] += float(out[k])
    if was_training:
        bilm.train()
    if tot["fwd_count"] == 0:
        raise UserError("no held-out text to evaluate: the dev split is empty (raise data.dev_fraction)")
    f = tot["fwd_nll"] / tot["fwd_count"]
    b = tot["bwd_nll"] / tot["bwd_count"]
    return {"ppl_fwd": math.exp(f), "ppl_bwd": math.exp(b), "ppl": math.exp((f + b) / 2),
            "tokens": tot["fwd_count"]}


def build_optimizer(cfg, model: paddle.nn.Layer) -> paddle.optimizer.Optimizer:
    clip = paddle.nn.ClipGradByGlobalNorm(cfg.grad_clip) if cfg.grad_clip > 0 else None
    params = [p for p in model.parameters() if not p.stop_gradient]
    if cfg.optimizer == "adam":
        return paddle.optimizer.Adam(cfg.lr, parameters=params, grad_clip=clip,
                                     weight_decay=cfg.weight_decay or None)
    if cfg.optimizer == "adagrad":
        return paddle.optimizer.Adagrad(cfg.lr, parameters=params, grad_clip=clip, initial_accumulator_value=1.0)
    raise UserError(f"train.optimizer must be adam or adagrad, not {cfg.optimizer!r}")


def _params_finite(model: paddle.nn.Layer) -> bool:
    return all(bool(paddle.isfinite(p).all()) for p in model.parameters())


def run_pretraining(cfg: PretrainConfig, resume: bool = False, progress: bool = True,
                    init_from: str | os.PathLike | None = None) -> Path:
    """Train (or continue training) a biLM as configured; returns the best model directory.

    `init_from`: start from this model directory's weights and vocab (domain fine-tuning) instead of
    building a vocab from the text.
    """
    import visualdl  # noqa: F401  (first: a missing visualdl fails before the corpus scan, not after it)

    check_config(cfg)
    run = _PretrainRun(cfg, progress)
    paths = resolve_text_paths(list(cfg.data.train), cfg.data_dir)
    last = run.checkpoint_to_resume(resume)
    init_bilm = run.load_corpus_and_vocab(paths, last, init_from)
    run.build(init_bilm)
    if last is not None:
        run.restore(last)
    run.distribute()
    run.open_log(resumed=last is not None)
    run.train()
    run.finish()
    return run.out / "best"


class _PretrainRun:
    """The state of one pretraining run (model, optimizer, data position, schedule) and its steps.

    Every rank builds one; rank 0 alone evaluates, logs and writes the model directories.  The order of
    the steps in `run_pretraining` is part of the resume contract: seeds are set right before the model is
    built, and every training step reseeds paddle from (seed, step, rank).
    """

    def __init__(self, cfg: PretrainConfig, progress: bool):
        self.cfg, self.tc, self.progress = cfg, cfg.train, progress
        if self.tc.threads:
            set_threads(self.tc.threads)
        self.rank, self.world = dist.setup()
        self.out = Path(cfg.output_dir)
        self.writer = None
        if self.rank == 0:
            self._prepare_output_dir()

    def _prepare_output_dir(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create output dir {self.out}: {e.strerror or e}") from None
        validate.output_dir("output dir", self.out)  # writable too (read-only mounts), before the corpus scan
        validate.output_dir("runs_dir", self.cfg.runs_dir)  # VisualDL opens it only after the corpus scan
        for note in ckpt.recover_output_dir(self.out):  # a crash mid-save: restore best/, drop .tmp-* dirs
            print(f"note: {note}")

    # ------------------------------------------------------------ setup
    def checkpoint_to_resume(self, resume: bool) -> Path | None:
        """The newest valid checkpoint when resuming, None for a fresh run (also: --resume with none yet)."""
        out, rank = self.out, self.rank
        ckpts = ckpt.list_checkpoints(out)
        if resume and ckpts:
            last, bad_ckpts = ckpt.latest_valid_checkpoint(out)
            if last is None:
                raise UserError(f"no checkpoint in {out}/checkpoints verifies against its manifest "
                                f"({', '.join(p.name for p in bad_ckpts)}): cannot resume")
            if bad_ckpts and rank == 0:
                print(f"warning: skipping corrupt checkpoint(s) {', '.join(p.name for p in bad_ckpts)}; "
                      f"resuming from {last.name}")
            return last
        if resume:
            if rank == 0:
                print(f"note: --resume given but no checkpoint in {out}/checkpoints; starting from scratch")
            return None
        if ckpts and rank == 0:
            raise UserError(f"{out} already holds checkpoints: pass --resume to continue, or choose a new --output-dir")
        return None

    def load_corpus_and_vocab(self, paths: list[str], last: Path | None,
                              init_from: str | os.PathLike | None) -> BiLM | None:
        """Reuse the corpus and vocab a checkpoint recorded (a resumed run sees identical data), else scan
        the text; with `init_from`, the vocab (and the returned biLM) are that model's."""
        cfg, init_bilm = self.cfg, None
        if last is not None:
            self.info = CorpusInfo(**ckpt.read_json(last, "corpus.json"))
            self.vocab = Vocab.load(last / "vocab.json")
        else:
            self.info, self.vocab, stats = scan_corpus(
                paths, cfg.data.unit, cfg.data.dev_fraction, cfg.data.min_count, cfg.data.max_vocab,
                show_progress=self.progress and self.rank == 0, max_train_lines=cfg.data.max_train_lines_per_file,
                with_chars=cfg.bilm.get("token_encoder") == "char_cnn")
            if self.rank == 0:
                print(f"corpus: {stats.summary()}")
            if init_from is not None:
                init_bilm, self.vocab, _ = load_bilm(init_from)
                if self.vocab.unit != cfg.data.unit:
                    raise UserError(f"the model in {init_from} uses {self.vocab.unit!r} tokens, "
                                    f"the config {cfg.data.unit!r}")
        self.bilm_cfg = from_dict(BiLMConfig, {**cfg.bilm, "vocab_size": len(self.vocab),
                                               "char_vocab_size": len(self.vocab.chars or ())}, "bilm")
        return init_bilm

    def build(self, init_bilm: BiLM | None) -> None:
        """Model, optimizer, batcher and schedule length of a fresh run (`restore` then moves them on)."""
        tc = self.tc
        paddle.seed(tc.seed)
        np.random.seed(tc.seed)
        if init_bilm is None:
            self.bilm = BiLM(self.bilm_cfg)
            attach_char_table(self.bilm, self.vocab)
        else:  # load_bilm already attached its char table
            self.bilm, self.bilm_cfg = init_bilm, init_bilm.cfg
            self.bilm.train()
        self.opt = build_optimizer(tc, self.bilm)
        self.batcher = LMBatcher(self.info, self.vocab, tc.batch_size, tc.seq_len, tc.seed, self.rank, self.world,
                                 self.cfg.data.shuffle_buffer)
        self.per_epoch = self.batcher.batches_per_epoch()
        self.total = tc.max_steps if tc.max_steps is not None else max(1, int(math.ceil(tc.epochs * self.per_epoch)))
        self.step, self.best_ppl, self.history = 0, math.inf, []

    def restore(self, last: Path) -> None:
        """Weights, optimizer, step, best perplexity, history, schedule length and data position of `last`."""
        st = ckpt.read_json(last, "state.json")
        ckpt.load_model_tensors(self.bilm, last)
        ckpt.load_optimizer(self.opt, self.bilm, last, st.get("optimizer_extra", {}))
        self.step, self.best_ppl, self.history = st["step"], st["best_ppl"], st.get("history", [])
        # the saved schedule length stands unless this command changes it: train.max_steps=N, or a
        # train.epochs other than the saved run's (so a finished run can be extended with --resume train.epochs=N)
        saved_epochs = (ckpt.read_json(last, "config.json").get("pretrain", {}).get("train", {}).get("epochs"))
        if self.tc.max_steps is None and (saved_epochs is None or self.tc.epochs == saved_epochs):
            self.total = st["total_steps"]  # else `total` is this command's, computed in `build`
        data_states = st["data_states"]
        if len(data_states) == self.world:
            self.batcher.load_state(data_states[self.rank])
        else:  # a different number of ranks: restart the saved epoch with the new sharding
            self.batcher.epoch = data_states[0]["epoch"]
            print(f"note: resumed with {self.world} ranks instead of {len(data_states)}; "
                  f"epoch {self.batcher.epoch} restarts")
        if self.rank == 0:
            print(f"resumed from {last} at step {self.step}/{self.total}")

    def distribute(self) -> None:
        """The loss module the steps call; under fleet, it and the optimizer become data-parallel."""
        self.model = _LossModule(self.bilm)
        if self.world > 1:
            from paddle.distributed import fleet

            self.model = fleet.distributed_model(self.model)
            self.opt = fleet.distributed_optimizer(self.opt)

    def open_log(self, resumed: bool) -> None:
        """Rank 0 logs to VisualDL in runs_dir/run_name (default run name: the output dir's name); a resumed
        run appends to that folder's one record file, cut back to its step (`vdl_log`)."""
        if self.rank == 0:
            logdir = Path(self.cfg.runs_dir) / (self.cfg.run_name or self.out.name)
            self.writer = vdl_log.open_writer(logdir, self.step if resumed else None)

    # ------------------------------------------------------------ training
    def train(self) -> None:
        """Steps until the schedule's end, evaluating, logging and saving on their schedules."""
        tc, rank, world = self.tc, self.rank, self.world
        if rank == 0:
            n_params = sum(int(np.prod(p.shape)) for p in self.bilm.parameters())
            print(f"biLM: {n_params / 1e6:.2f}M parameters, vocab {len(self.vocab)}; {self.info.train_tokens:,} "
                  f"training tokens, {self.per_epoch} steps/epoch (B={tc.batch_size}, L={tc.seq_len}, "
                  f"ranks={world}); training {self.total} steps")
            if self.step == 0:
                self.evaluate()
        dist.from_rank0("pretrain/eval/start", "done", world)
        self.bar = tqdm(total=self.total, initial=self.step, desc="pretrain", unit="step", dynamic_ncols=True,
                        disable=not self.progress or rank != 0)
        batches = self.batcher.epoch_batches()
        self.bad, self.tokens, self.t0 = 0, 0, time.time()
        self.model.train()
        while self.step < self.total:
            batch = next(batches, None)
            if not dist.all_true(batch is not None, world):
                batches = self.batcher.epoch_batches()  # epoch done (on some rank): all ranks start the next one
                continue
            value, lr = self.train_step(batch)
            self.step += 1  # a skipped step still counts (its batch is consumed), so evals and saves stay on schedule
            self.bar.update(1)
            self._after_step(value, lr)
        self.bar.close()

    def train_step(self, batch: dict[str, np.ndarray]) -> tuple[float, float]:
        """One optimisation step on `batch` (skipped on every rank when the loss is not finite) -> (loss, lr)."""
        tc, step, world = self.tc, self.step, self.world
        lr = lr_at(tc, step, self.total)
        self.opt.set_lr(lr)
        paddle.seed(tc.seed * 1_000_003 + step * world + self.rank)  # per-step seed: resume-exact dropout/sampling
        b = to_tensors(batch)
        o = self.model(b["inputs"], b["fwd_targets"], b["bwd_targets"])
        loss = 0.5 * (o["fwd_nll"] / o["fwd_count"] + o["bwd_nll"] / o["bwd_count"])
        if _fault_at("nan", step):
            loss = loss * float("nan")
        value = float(loss)
        # every rank skips together (one rank skipping backward would leave the others waiting in its
        # gradient all-reduce forever)
        if not dist.all_true(math.isfinite(value), world):
            self._skip_bad_step()
        else:
            self.bad = 0
            loss.backward()
            if _fault_at("nangrad", step):
                for p in self.bilm.parameters():
                    if p.grad is not None:
                        p.grad.set_value(paddle.full_like(p.grad, float("nan")))
            self.opt.step()
            self.opt.clear_grad()
            self.tokens += int(o["fwd_count"])
        return value, lr

    def _skip_bad_step(self) -> None:
        self.bad += 1
        self.opt.clear_grad()
        tqdm.write(f"warning: non-finite loss at step {self.step} (skipped; {self.bad} in a row)")
        if self.bad >= self.tc.max_bad_steps:
            raise UserError(f"{self.bad} consecutive non-finite losses at step {self.step}: stopping. Lower "
                            f"train.lr or train.grad_clip; the last good checkpoint in {self.out} is intact")

    def _after_step(self, value: float, lr: float) -> None:
        """Logging, evaluation, saving and the crash faults that fall after the step just taken."""
        tc, step = self.tc, self.step
        if self.rank == 0 and (step % tc.log_every == 0 or step == self.total):
            self._log_train(value, lr)
        # the other ranks wait out rank 0's evaluation and writes through the store (dist.from_rank0): in the
        # next step's gloo all-reduce they would give up after 30 s.  Two waits, not one after both: `save`
        # starts with a gloo all_gather of the data positions, which must not begin while rank 0 still evaluates
        if step % tc.eval_every == 0 or step == self.total:
            self.evaluate()
            dist.from_rank0(f"pretrain/eval/{step}", "done", self.world)
        if step % tc.save_every == 0 or step == self.total:
            self.save("step")
            dist.from_rank0(f"pretrain/save/{step}", "done", self.world)
        if _fault_at("exit", step):  # simulate a crash right after this step (reliability tests)
            os._exit(17)
        if _fault_at("kill", step):
            ckpt.kill_self()

    def _log_train(self, value: float, lr: float) -> None:
        step, writer = self.step, self.writer
        el = max(time.time() - self.t0, 1e-9)
        tps = self.tokens * self.world / el
        writer.add_scalar("train/loss", value, step)
        writer.add_scalar("train/ppl", math.exp(min(value, 50)), step)
        writer.add_scalar("train/lr", lr, step)
        writer.add_scalar("train/tokens_per_s", tps, step)
        self.bar.set_postfix(loss=f"{value:.3f}", ppl=f"{math.exp(min(value, 50)):.1f}", tok_s=f"{tps:.0f}")
        if not self.progress:  # log files get a plain line instead of the bar
            print(f"step {step}/{self.total} loss {value:.3f} lr {lr:.2e} tokens/s {tps:.0f}", flush=True)
        self.tokens, self.t0 = 0, time.time()

    # ------------------------------------------------------------ evaluation and saving
    def evaluate(self) -> None:
        """Rank 0: dev perplexity into the history and VisualDL; a new best is saved as best/."""
        if self.rank != 0:
            return
        time.sleep(ckpt.fault_seconds("slowdev"))  # fault injection: a slow evaluation (tests/test_pretrain.py)
        t0 = time.time()
        res = evaluate_perplexity(self.bilm, dev_batches(self.info, self.vocab, 32, 256, self.cfg.data.eval_max_lines))
        res["step"] = self.step
        res["eval_seconds"] = round(time.time() - t0, 1)
        self.history.append(res)
        for k in ("ppl_fwd", "ppl_bwd", "ppl"):
            self.writer.add_scalar(f"dev/{k}", res[k], self.step)
        tqdm.write(f"step {self.step}: dev ppl fwd {res['ppl_fwd']:.2f} bwd {res['ppl_bwd']:.2f} "
                   f"avg {res['ppl']:.2f}")
        if res["ppl"] < self.best_ppl:
            self.best_ppl = res["ppl"]
            self.save("best")

    def save(self, kind: str) -> None:
        """`kind` "step": a checkpoint under checkpoints/ (every rank takes part: it gathers the data
        positions; rank 0 writes); "best"/"final": that model directory, written by rank 0 alone."""
        states = [self.batcher.state()]
        if self.world > 1 and kind == "step":
            states = []
            paddle.distributed.all_gather_object(states, self.batcher.state())
        if self.rank != 0:
            return
        if not _params_finite(self.bilm):
            raise UserError(f"weights became non-finite at step {self.step}; not saving. "
                            "The last good checkpoint is kept")
        files = model_dir_files(self.cfg, self.bilm_cfg, self.vocab)
        files["corpus.json"] = self.info.to_json()
        opt_arrays, opt_extra = ckpt.optimizer_tensors(getattr(self.opt, "_inner_opt", self.opt), self.bilm)
        files["state.json"] = {"step": self.step, "total_steps": self.total, "best_ppl": self.best_ppl,
                               "history": self.history, "data_states": states, "optimizer_extra": opt_extra,
                               "world_size": self.world}
        tensors = {"weights.safetensors": ckpt.model_tensors(self.bilm)}
        if kind == "step":
            tensors["optimizer.safetensors"] = opt_arrays
            self.writer.flush()  # what VisualDL holds up to this step is on disk before the checkpoint is
            ckpt.write_dir(self.out / "checkpoints" / f"step-{self.step:08d}", files, tensors)
            ckpt.prune_checkpoints(self.out, self.tc.keep_checkpoints)
        else:
            ckpt.write_dir(self.out / kind, files, tensors)

    # ------------------------------------------------------------ the end
    def finish(self) -> None:
        """Check the ranks agree, then rank 0 writes final/ and history.json."""
        if self.world > 1:
            self._check_ranks_in_sync()
        if self.rank != 0:
            return
        self.save("final")
        self.writer.close()
        tmp = self.out / ".history.json.tmp"
        tmp.write_text(json.dumps(self.history, indent=1))
        os.replace(tmp, self.out / "history.json")  # atomic: a kill never leaves a truncated history.json
        print(f"done: best dev perplexity {self.best_ppl:.2f}; model directory {self.out / 'best'}")

    def _check_ranks_in_sync(self) -> None:
        """Data parallelism must keep every rank's weights identical: check it, bit for bit, rather than
        assume it.  Every rank logs its digest (the one `ckpt.tensors_sha256` gives for final/'s weights),
        so a multi-node run can be checked from the nodes' logs too."""
        digest = ckpt.tensors_sha256(ckpt.model_tensors(self.bilm))
        print(f"rank {self.rank}: parameters sha256 {digest}", flush=True)
        digests: list = []
        paddle.distributed.all_gather_object(digests, digest)
        if self.rank == 0:
            if any(d != digests[0] for d in digests[1:]):
                raise UserError("parameters differ across ranks after training: the data-parallel run went out of sync")
            print(f"parameters identical across {self.world} ranks (sha256 {digest})")

