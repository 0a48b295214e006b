"""Microbenchmark: bf16 matrix products on Intel AMX through the oneDNN that paddle ships, vs float32.

    .venv/bin/python bench/dnnl_bf16_matmul.py [--threads 1]

Why: the recurrences are GEMM-bound, paddle 3.3.1 has no bfloat16 matmul kernel on CPU ("kernel matmul
(CPU, bfloat16) is not registered"), and the CPUs of this project's machines have AMX (`amx_bf16` in
/proc/cpuinfo), where PyTorch's bf16 matmul ran at ~390-400 GFLOP/s against ~50 for float32 (one core).
paddle's wheel carries `libdnnl.so.3` (oneDNN 3.x); this calls its C API through ctypes (matmul primitive,
bf16 inputs, float32 output) for the per-step GEMM shapes of the LSTM kernel (`elmo_paddle/lstm_cpu.py`) and
prints GFLOP/s next to oneDNN float32 and numpy float32.  Not used by the library yet: the measured speed-up
is the case for a bf16 path in `PackedLstmp` (opt-in: it changes numerics at the 1e-2 level).
Last line: `ratio bf16/f32 (median over shapes): X.XX`.
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from pathlib import Path

import numpy as np
import paddle  # noqa: F401  (loads paddle's own libiomp5 before oneDNN)

lib = ctypes.CDLL(str(Path(paddle.__file__).parent / "libs" / "libdnnl.so.3"))  # paddle's own oneDNN
VP, I64 = ctypes.c_void_p, ctypes.c_int64
BF16, F32, TAG_AB = 2, 3, 3  # dnnl_bf16, dnnl_f32, dnnl_ab (row-major 2-D)
ARG_SRC, ARG_WEIGHTS, ARG_DST = 1, 33, 17


class ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", VP)]


def check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"oneDNN {what} failed with status {status}")


def _engine_and_stream() -> tuple[VP, VP]:
    eng, stream = VP(), VP()
    check(lib.dnnl_engine_create(ctypes.byref(eng), 1, 0), "engine_create")  # dnnl_cpu, index 0
    check(lib.dnnl_stream_create(ctypes.byref(stream), eng, 1), "stream_create")  # in-order
    return eng, stream


ENGINE, STREAM = _engine_and_stream()


def mem_desc(dims: list[int], dtype: int) -> VP:
    md = VP()
    check(lib.dnnl_memory_desc_create_with_tag(ctypes.byref(md), len(dims), (I64 * len(dims))(*dims), dtype,
                                               TAG_AB), "memory_desc_create_with_tag")
    return md


def to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounded to nearest even."""
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


class MatMul:
    """`out[M, N] (float32) = a[M, K] @ b[K, N]`, a and b in `dtype` (bf16 bits as uint16, or float32)."""

    def __init__(self, m: int, k: int, n: int, dtype: int = BF16):
        self.mds = mem_desc([m, k], dtype), mem_desc([k, n], dtype), mem_desc([m, n], F32)
        pd, self.prim = VP(), VP()
        src, wei, dst = self.mds
        check(lib.dnnl_matmul_primitive_desc_create(ctypes.byref(pd), ENGINE, src, wei, None, dst, None), "matmul_pd")  # no bias, no attr
        check(lib.dnnl_primitive_create(ctypes.byref(self.prim), pd), "primitive_create")

    def __call__(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
        mems = []
        for md, arr in zip(self.mds, (a, b, out)):
            mem = VP()
            check(lib.dnnl_memory_create(ctypes.byref(mem), md, ENGINE, VP(arr.ctypes.data)), "memory_create")
            mems.append(mem)
        args = (ExecArg * 3)(*(ExecArg(k, m) for k, m in zip((ARG_SRC, ARG_WEIGHTS, ARG_DST), mems)))
        check(lib.dnnl_primitive_execute(self.prim, STREAM, 3, args), "primitive_execute")
        check(lib.dnnl_stream_wait(STREAM), "stream_wait")
        for mem in mems:
            lib.dnnl_memory_destroy(mem)
        return out


def timed(fn, n: int = 50) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    paddle.base.core.set_num_threads(args.threads)
    ratios = []
    # (M, K, N): LSTM step gates of elmo_small (B=64) and of the embed bench (B=32), a big input projection
    for (m, k, n) in ((64, 257, 2048), (32, 1281, 4096), (2048, 128, 2048), (2048, 512, 128)):
        a, b = np.random.randn(m, k).astype(np.float32), np.random.randn(k, n).astype(np.float32)
        ab, bb = to_bf16(a), to_bf16(b)
        out, out32 = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
        mm, mm32 = MatMul(m, k, n), MatMul(m, k, n, F32)
        mm(ab, bb, out)
        err = np.abs(out - from_bf16(ab) @ from_bf16(bb)).max() / np.abs(out).max()
        t16, t32, tn = timed(lambda: mm(ab, bb, out)), timed(lambda: mm32(a, b, out32)), timed(lambda: a @ b)
        fl = 2 * m * k * n
        print(f"{m}x{k}x{n}: oneDNN bf16 {fl / t16 / 1e9:5.0f} GFLOP/s, oneDNN f32 {fl / t32 / 1e9:4.0f}, "
              f"numpy f32 {fl / tn / 1e9:4.0f}; bf16 result vs exact product of the rounded inputs: {err:.1e}")
        ratios.append(t32 / t16)
    print(f"ratio bf16/f32 (median over shapes): {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
