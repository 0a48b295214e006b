"""The LM training loop behind `elmo_paddle.pretrain` and `elmo_paddle.finetune_lm`."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import paddle
from tqdm import tqdm

from . import checkpoint as ckpt
from .bilm import BiLM, BiLMConfig
from .config import from_dict, to_dict
from .errors import UserError
from .lm_data import CorpusInfo, LMBatcher, dev_batches, scan_corpus
from .model_io import attach_char_table, load_bilm, model_dir_files
from .pretrain_config import PretrainConfig, lr_at, resolve_text_paths
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


def _dist_setup() -> tuple[int, int]:
    world = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
    if world > 1:
        from paddle.distributed import fleet

        fleet.init(is_collective=True)
        return paddle.distributed.get_rank(), paddle.distributed.get_world_size()
    return 0, 1


def _all_have_batch(have: bool, world: int) -> bool:
    if world == 1:
        return have
    flag = paddle.to_tensor([1 if have else 0], dtype="int32")
    paddle.distributed.all_reduce(flag, op=paddle.distributed.ReduceOp.MIN)
    return bool(int(flag) == 1)


def _params_finite(model: paddle.nn.Layer) -> bool:
    return all(bool(paddle.isfinite(p).all()) for p in model.parameters())


def run_pretraining(cfg: PretrainConfig, resume: bool = False, progress: bool = True,
                    init_from: str | os.PathLike | None = None) -> Path:
    """Train (or continue training) a biLM as configured; returns the best model directory.

    `init_from`: start from this model directory's weights and vocab (domain fine-tuning) instead of
    building a vocab from the text.
    """
    from visualdl import LogWriter

    tc = cfg.train
    if tc.threads:
        set_threads(tc.threads)
    rank, world = _dist_setup()
    out = Path(cfg.output_dir)
    if rank == 0:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create output dir {out}: {e.strerror or e}") from None
        for note in ckpt.recover_output_dir(out):  # a crash mid-save: restore best/, drop .tmp-* dirs
            print(f"note: {note}")
    paths = resolve_text_paths(list(cfg.data.train), cfg.data_dir)

    # --- corpus and vocab: reuse what a previous run recorded, so a resumed run sees identical data
    ckpts = ckpt.list_checkpoints(out)
    last = None
    if resume and ckpts:
        last, bad_ckpts = ckpt.latest_valid_checkpoint(out)
        if last is None:
            raise UserError(f"no checkpoint in {out}/checkpoints verifies against its manifest "
                            f"({', '.join(p.name for p in bad_ckpts)}): cannot resume")
        if bad_ckpts and rank == 0:
            print(f"warning: skipping corrupt checkpoint(s) {', '.join(p.name for p in bad_ckpts)}; "
                  f"resuming from {last.name}")
    if resume and not ckpts:
        if rank == 0:
            print(f"note: --resume given but no checkpoint in {out}/checkpoints; starting from scratch")
        resume = False
    if not resume and ckpts and rank == 0:
        raise UserError(f"{out} already holds checkpoints: pass --resume to continue, or choose a new --output-dir")
    init_bilm = None
    if resume:
        info = CorpusInfo(**ckpt.read_json(last, "corpus.json"))
        vocab = Vocab.load(last / "vocab.json")
    else:
        info, vocab, stats = scan_corpus(paths, cfg.data.unit, cfg.data.dev_fraction, cfg.data.min_count,
                                         cfg.data.max_vocab, show_progress=progress and rank == 0,
                                         max_train_lines=cfg.data.max_train_lines_per_file,
                                         with_chars=cfg.bilm.get("token_encoder") == "char_cnn")
        if rank == 0:
            print(f"corpus: {stats.summary()}")
        if init_from is not None:
            init_bilm, vocab, _ = load_bilm(init_from)
            if vocab.unit != cfg.data.unit:
                raise UserError(f"the model in {init_from} uses {vocab.unit!r} tokens, the config {cfg.data.unit!r}")
    bilm_cfg = from_dict(BiLMConfig, {**cfg.bilm, "vocab_size": len(vocab),
                                      "char_vocab_size": len(vocab.chars or ())}, "bilm")

    # --- model and optimizer
    paddle.seed(tc.seed)
    np.random.seed(tc.seed)
    if init_bilm is None:
        bilm = BiLM(bilm_cfg)
        attach_char_table(bilm, vocab)
    else:  # load_bilm already attached its char table
        bilm, bilm_cfg = init_bilm, init_bilm.cfg
        bilm.train()
    opt = build_optimizer(tc, bilm)
    batcher = LMBatcher(info, vocab, tc.batch_size, tc.seq_len, tc.seed, rank, world, cfg.data.shuffle_buffer)
    per_epoch = batcher.batches_per_epoch()
    total = tc.max_steps if tc.max_steps is not None else max(1, int(math.ceil(tc.epochs * per_epoch)))
    step, best_ppl, history = 0, math.inf, []
    if resume:
        st = ckpt.read_json(last, "state.json")
        ckpt.load_model_tensors(bilm, last)
        ckpt.load_optimizer(opt, bilm, last, st.get("optimizer_extra", {}))
        step, best_ppl, history = st["step"], st["best_ppl"], st.get("history", [])
        # the saved schedule length stands unless this command changes it: train.max_steps=N, or a
        # train.epochs other than the saved run's (so a finished run can be extended with --resume train.epochs=N)
        saved_epochs = (ckpt.read_json(last, "config.json").get("pretrain", {}).get("train", {}).get("epochs"))
        if tc.max_steps is None and (saved_epochs is None or tc.epochs == saved_epochs):
            total = st["total_steps"]  # else `total` is this command's, computed above
        data_states = st["data_states"]
        if len(data_states) == world:
            batcher.load_state(data_states[rank])
        else:  # a different number of ranks: restart the saved epoch with the new sharding
            batcher.epoch = data_states[0]["epoch"]
            print(f"note: resumed with {world} ranks instead of {len(data_states)}; epoch {batcher.epoch} restarts")
        if rank == 0:
            print(f"resumed from {last} at step {step}/{total}")
    model = _LossModule(bilm)
    if world > 1:
        from paddle.distributed import fleet

        model = fleet.distributed_model(model)
        opt = fleet.distributed_optimizer(opt)

    run_dir = Path(cfg.runs_dir) / (cfg.run_name or out.name)
    writer = LogWriter(logdir=str(run_dir)) if rank == 0 else None
    dev_iter = lambda: dev_batches(info, vocab, 32, 256, cfg.data.eval_max_lines)  # noqa: E731

    def save(kind: str) -> None:
        # step checkpoints: every rank takes part (gathers data positions); rank 0 writes.
        # best/final are written by rank 0 alone and need no data position.
        states = [batcher.state()]
        if world > 1 and kind == "step":
            states = []
            paddle.distributed.all_gather_object(states, batcher.state())
        if rank != 0:
            return
        if not _params_finite(bilm):
            raise UserError(f"weights became non-finite at step {step}; not saving. The last good checkpoint is kept")
        files = model_dir_files(cfg, bilm_cfg, vocab)
        files["corpus.json"] = info.to_json()
        opt_arrays, opt_extra = ckpt.optimizer_tensors(getattr(opt, "_inner_opt", opt), bilm)
        files["state.json"] = {"step": step, "total_steps": total, "best_ppl": best_ppl, "history": history,
                               "data_states": states, "optimizer_extra": opt_extra, "world_size": world}
        tensors = {"weights.safetensors": ckpt.model_tensors(bilm)}
        if kind == "step":
            tensors["optimizer.safetensors"] = opt_arrays
            ckpt.write_dir(out / "checkpoints" / f"step-{step:08d}", files, tensors)
            ckpt.prune_checkpoints(out, tc.keep_checkpoints)
        else:
            ckpt.write_dir(out / kind, files, tensors)

    def run_eval() -> None:
        nonlocal best_ppl
        if rank != 0:
            return
        t0 = time.time()
        res = evaluate_perplexity(bilm, dev_iter())
        res["step"] = step
        res["eval_seconds"] = round(time.time() - t0, 1)
        history.append(res)
        for k in ("ppl_fwd", "ppl_bwd", "ppl"):
            writer.add_scalar(f"dev/{k}", res[k], step)
        tqdm.write(f"step {step}: dev ppl fwd {res['ppl_fwd']:.2f} bwd {res['ppl_bwd']:.2f} avg {res['ppl']:.2f}")
        if res["ppl"] < best_ppl:
            best_ppl = res["ppl"]
            save("best")

    if rank == 0:
        n_params = sum(int(np.prod(p.shape)) for p in bilm.parameters())
        print(f"biLM: {n_params / 1e6:.2f}M parameters, vocab {len(vocab)}; {info.train_tokens:,} training tokens, "
              f"{per_epoch} steps/epoch (B={tc.batch_size}, L={tc.seq_len}, ranks={world}); training {total} steps")
        if step == 0:
            run_eval()
    bar = tqdm(total=total, initial=step, desc="pretrain", unit="step", dynamic_ncols=True,
               disable=not progress or rank != 0)
    batches = batcher.epoch_batches()
    bad, tokens, t0 = 0, 0, time.time()
    model.train()
    while step < total:
        batch = next(batches, None)
        if not _all_have_batch(batch is not None, world):
            batches = batcher.epoch_batches()  # epoch done (on some rank): all ranks start the next one
            continue
        lr = lr_at(tc, step, total)
        opt.set_lr(lr)
        paddle.seed(tc.seed * 1_000_003 + step * world + rank)  # per-step seed: resume-exact dropout/sampling
        b = to_tensors(batch)
        o = model(b["inputs"], b["fwd_targets"], b["bwd_targets"])
        loss = 0.5 * (o["fwd_nll"] / o["fwd_count"] + o["bwd_nll"] / o["bwd_count"])
        if _fault_at("nan", step):
            loss = loss * float("nan")
        value = float(loss)
        # every rank skips together (one rank skipping backward would leave the others waiting in its
        # gradient all-reduce forever)
        if not _all_have_batch(math.isfinite(value), world):
            bad += 1
            opt.clear_grad()
            tqdm.write(f"warning: non-finite loss at step {step} (skipped; {bad} in a row)")
            if bad >= tc.max_bad_steps:
                raise UserError(f"{bad} consecutive non-finite losses at step {step}: stopping. Lower train.lr "
                                f"or train.grad_clip; the last good checkpoint in {out} is intact")
        else:
            bad = 0
            loss.backward()
            if _fault_at("nangrad", step):
                for p in bilm.parameters():
                    if p.grad is not None:
                        p.grad.set_value(paddle.full_like(p.grad, float("nan")))
            opt.step()
            opt.clear_grad()
            tokens += int(o["fwd_count"])
        step += 1  # a skipped step still counts (its batch is consumed), so evals and saves stay on schedule
        bar.update(1)
        if rank == 0 and (step % tc.log_every == 0 or step == total):
            el = max(time.time() - t0, 1e-9)
            tps = tokens * world / el
            writer.add_scalar("train/loss", value, step)
            writer.add_scalar("train/ppl", math.exp(min(value, 50)), step)
            writer.add_scalar("train/lr", lr, step)
            writer.add_scalar("train/tokens_per_s", tps, step)
            bar.set_postfix(loss=f"{value:.3f}", ppl=f"{math.exp(min(value, 50)):.1f}", tok_s=f"{tps:.0f}")
            if not progress:  # log files get a plain line instead of the bar
                print(f"step {step}/{total} loss {value:.3f} lr {lr:.2e} tokens/s {tps:.0f}", flush=True)
            tokens, t0 = 0, time.time()
        if step % tc.eval_every == 0 or step == total:
            run_eval()
        if step % tc.save_every == 0 or step == total:
            save("step")
        if _fault_at("exit", step):  # simulate a crash right after this step (reliability tests)
            os._exit(17)
        if _fault_at("kill", step):
            ckpt.kill_self()
    bar.close()
    if world > 1:
        # data parallelism must keep every rank's weights identical: check it rather than assume it
        sums: list = []
        paddle.distributed.all_gather_object(sums, [float(p.astype("float64").abs().sum()) for p in bilm.parameters()])
        if rank == 0:
            if any(s != sums[0] for s in sums[1:]):
                raise UserError("parameters differ across ranks after training: the data-parallel run went out of sync")
            print(f"parameters identical across {world} ranks (checksum {sum(sums[0]):.6f})")
    if rank == 0:
        save("final")
        writer.close()
        tmp = out / ".history.json.tmp"
        tmp.write_text(json.dumps(history, indent=1))
        os.replace(tmp, out / "history.json")  # atomic: a kill never leaves a truncated history.json
        print(f"done: best dev perplexity {best_ppl:.2f}; model directory {out / 'best'}")
    return out / "best"
