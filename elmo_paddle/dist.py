"""Data-parallel ranks under `python -m paddle.distributed.launch`: which rank this process is, and the few
collectives the trainers (biLM pretraining, the task runs) share.

Outside the launcher (PADDLE_TRAINERS_NUM unset or 1) every function is the single-process identity and no
process group is made, so one-process runs pay nothing.  On CPU the launcher's backend is gloo, on GPUs NCCL;
the calls are the same.
"""
from __future__ import annotations

import os
from typing import Iterable

import paddle

_WORLD: tuple[int, int] | None = None


def setup() -> tuple[int, int]:
    """(rank, world size); joins the launcher's process group the first time (later calls reuse it)."""
    global _WORLD
    if _WORLD is None:
        world = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
        if world > 1:
            from paddle.distributed import fleet

            fleet.init(is_collective=True)
            _WORLD = paddle.distributed.get_rank(), paddle.distributed.get_world_size()
        else:
            _WORLD = 0, 1
    return _WORLD


def all_true(flag: bool, world: int) -> bool:
    """Whether `flag` holds on every rank.  Ranks decide together wherever one rank acting alone would leave
    the others waiting in a collective forever (a skipped step, the end of an epoch)."""
    if world == 1:
        return flag
    t = paddle.to_tensor([1 if flag else 0], dtype="int32")
    paddle.distributed.all_reduce(t, op=paddle.distributed.ReduceOp.MIN)
    return bool(int(t) == 1)


def from_rank0(key: str, value: str | None, world: int) -> str:
    """Rank 0 posts `value` under `key`; every other rank waits until it is there and returns it.

    For the points where the other ranks wait on rank 0's own work (its dev evaluation, its checkpoint
    checks): that wait goes through the launcher's TCP store, not a collective, because a gloo collective
    gives up after 30 s (measured, paddle 3.3.1: a rank that reached an all-reduce 40 s before the other
    failed with `TIMEOUT` at 30.0 s), while a +ELMo BiDAF evaluation on a CPU takes minutes.  `key` must be
    new in each launch (e.g. the step)."""
    if world == 1:
        return value or ""
    from paddle.base import core

    store = core.create_or_get_global_tcp_store()
    if paddle.distributed.get_rank() == 0:
        store.set(key, (value or "").encode("utf-8"))
        return value or ""
    return bytes(store.get(key)).decode("utf-8")


def average_gradients(params: Iterable[paddle.Tensor], world: int) -> None:
    """Replace each parameter's gradient by its mean over the ranks: with every rank's loss the mean over its
    share of a batch, the step is the one a single process takes on the whole batch (when the shares are of
    equal size).  One all-reduce of all gradients flattened together, not one per parameter."""
    if world == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = paddle.concat([g.reshape([-1]) for g in grads])
    paddle.distributed.all_reduce(flat)
    flat = flat / world
    offset = 0
    for g in grads:
        n = int(g.size)
        g.set_value(flat[offset:offset + n].reshape(g.shape))
        offset += n


def broadcast_parameters(params: Iterable[paddle.Tensor], world: int) -> None:
    """Every rank takes rank 0's values: ranks start (or resume) from one set of weights even if their
    initialisations drew differently."""
    if world == 1:
        return
    for p in params:
        paddle.distributed.broadcast(p, src=0)
