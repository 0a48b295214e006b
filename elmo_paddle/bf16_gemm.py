"""bfloat16 GEMMs on Intel AMX through the oneDNN that paddle ships: the opt-in fast path of the frozen biLM.

Why: the frozen biLM's recurrence is GEMM-bound (`lstm_cpu.PackedLstmp`), paddle 3.3.1 has no bfloat16
matmul on CPU, and CPUs with AMX (`amx_bf16` in /proc/cpuinfo: Sapphire Rapids and later Xeons) multiply
bf16 matrices several times faster than float32.  paddle's wheel carries `libdnnl.so.3` (oneDNN 3.x); this
calls its matmul primitive through ctypes: bf16 inputs, float32 accumulation and output.  Measured with
`bench/dnnl_bf16_matmul.py` on one core: 74-251 GFLOP/s against 27-54 for float32 over the kernel's shapes.

Numerics: each input is rounded to bf16 (8 significant bits), products are summed in float32; ELMo layers
then differ from the float32 path by ~0.4% (max, relative; tests/test_bf16_gemm.py).  So it is opt-in:
`ELMO_PADDLE_BF16=1` runs the biLM's recurrent GEMMs in bf16, at inference (embedding, ELMo layers for task
models, perplexity) and in pretraining (the forward, the input/state gradients and the weight gradients'
GEMMs; the gradients are summed and the master weights kept in float32, as in mixed-precision training).  Without AMX or without oneDNN the
setting is ignored (`available()` is False).
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

_VP, _I64 = ctypes.c_void_p, ctypes.c_int64
_BF16, _F32, _TAG_AB = 2, 3, 3  # dnnl_bf16, dnnl_f32, dnnl_ab (row-major 2-D)
_ARG_SRC, _ARG_WEIGHTS, _ARG_DST = 1, 33, 17  # (a reorder's "from" and "to" are SRC and DST)
_state: dict = {}


class _ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", _VP)]


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"oneDNN {what} failed with status {status}")


def _has_amx() -> bool:
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _dnnl():
    """(library, engine, stream), loaded once; None when unavailable or not asked for."""
    if "lib" not in _state:
        _state["lib"] = None
        if os.environ.get("ELMO_PADDLE_BF16", "0") == "1" and _has_amx():
            try:
                import paddle

                lib = ctypes.CDLL(str(Path(paddle.__file__).parent / "libs" / "libdnnl.so.3"))
                eng, stream = _VP(), _VP()
                _check(lib.dnnl_engine_create(ctypes.byref(eng), 1, 0), "engine_create")  # CPU engine 0
                _check(lib.dnnl_stream_create(ctypes.byref(stream), eng, 1), "stream_create")  # in order
                lib.dnnl_memory_set_data_handle.argtypes = [_VP, _VP]
                _state["lib"] = (lib, eng, stream)
            except (OSError, AttributeError, RuntimeError):
                _state["lib"] = None
    return _state["lib"]


def available() -> bool:
    """True when ELMO_PADDLE_BF16=1 is set, the CPU has AMX and paddle's oneDNN loads."""
    return _dnnl() is not None


def add_flag(parser) -> None:
    """The `--bf16` flag of the inference CLIs (embed, tasks.lac.predict, tasks.bidaf.predict)."""
    parser.add_argument("--bf16", action="store_true",
                        help="bfloat16 matrix products on CPUs with AMX: faster, float32 sums (ELMo layers within "
                             "~0.4%%; RESULTS.md has the scores measured with it); as ELMO_PADDLE_BF16=1")


def apply_flag(on: bool, warn) -> None:
    """Act on `--bf16` before any model loads (the biLM snapshots its kernels at load): turn the path on for
    this process, or `warn` that it stays float32 where the CPU has no AMX or oneDNN does not load."""
    if not on:
        return
    os.environ["ELMO_PADDLE_BF16"] = "1"
    _state.clear()  # decided again, now with the setting on
    if not available():
        warn("--bf16 ignored: this CPU has no AMX (or paddle's oneDNN did not load); computing in float32")


def to_bf16(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounded to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    r = (u + (0x7FFF + ((u >> 16) & 1))) >> 16
    if out is None:
        return r.astype(np.uint16)
    np.copyto(out, r, casting="unsafe")
    return out


class _Primitive:
    """One oneDNN matmul `dst[M, N] f32 = src[M, K] bf16 @ wei[K, N] bf16` with its three memory objects."""

    def __init__(self, m: int, k: int, n: int):
        lib, eng, _ = _dnnl()
        mds = []
        for dims, dtype in (((m, k), _BF16), ((k, n), _BF16), ((m, n), _F32)):
            md = _VP()
            _check(lib.dnnl_memory_desc_create_with_tag(ctypes.byref(md), 2, (_I64 * 2)(*dims), dtype, _TAG_AB),
                   "memory_desc_create_with_tag")
            mds.append(md)
        pd, self.prim = _VP(), _VP()
        _check(lib.dnnl_matmul_primitive_desc_create(ctypes.byref(pd), eng, mds[0], mds[1], None, mds[2], None),
               "matmul_primitive_desc_create")  # no bias, default attributes
        _check(lib.dnnl_primitive_create(ctypes.byref(self.prim), pd), "primitive_create")
        self._memories(mds, (_ARG_SRC, _ARG_WEIGHTS, _ARG_DST))

    def _memories(self, mds: list, kinds: tuple[int, ...]) -> None:
        lib, eng, _ = _dnnl()
        self.mems = []
        for md in mds:
            mem = _VP()
            _check(lib.dnnl_memory_create(ctypes.byref(mem), md, eng, None), "memory_create")
            self.mems.append(mem)
        self.args = (_ExecArg * len(kinds))(*(_ExecArg(k, m) for k, m in zip(kinds, self.mems)))

    def __call__(self, *arrays: np.ndarray) -> None:
        lib, _, stream = _dnnl()
        for mem, arr in zip(self.mems, arrays):
            lib.dnnl_memory_set_data_handle(mem, arr.ctypes.data)
        _check(lib.dnnl_primitive_execute(self.prim, stream, len(self.mems), self.args), "primitive_execute")
        _check(lib.dnnl_stream_wait(stream), "stream_wait")


class _Reorder(_Primitive):
    """One oneDNN reorder `dst bf16 = src f32`, both `[m, n]` with any element strides (views, transposes)."""

    def __init__(self, shape: tuple[int, int], src_strides: tuple[int, int], dst_strides: tuple[int, int]):
        lib, eng, _ = _dnnl()
        mds = []
        for strides, dtype in ((src_strides, _F32), (dst_strides, _BF16)):
            md = _VP()
            _check(lib.dnnl_memory_desc_create_with_strides(ctypes.byref(md), 2, (_I64 * 2)(*shape), dtype,
                                                            (_I64 * 2)(*strides)), "memory_desc_create_with_strides")
            mds.append(md)
        pd, self.prim = _VP(), _VP()
        _check(lib.dnnl_reorder_primitive_desc_create(ctypes.byref(pd), mds[0], eng, mds[1], eng, None),
               "reorder_primitive_desc_create")
        _check(lib.dnnl_primitive_create(ctypes.byref(self.prim), pd), "primitive_create")
        self._memories(mds, (_ARG_SRC, _ARG_DST))


_MAX_PRIMITIVES = 64


def _cached(kind: type, *shape) -> _Primitive:
    """A cached primitive of this kind and shape for this thread (its memory objects are not shared across
    threads); training builds new matrices every step, so primitives outlive them."""
    import threading

    cache = _state.setdefault("primitives", {})  # belongs to the engine in _state: a new engine, a new cache
    key = (kind, shape, threading.get_ident())
    prim = cache.pop(key, None)
    if prim is None:
        while len(cache) >= _MAX_PRIMITIVES:
            cache.pop(next(iter(cache)))
        prim = kind(*shape)
    cache[key] = prim  # most recently used last
    return prim


def round_into(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`out[...] = to_bf16(a)` for 2-D float32 `a` and uint16 `out`, either of them a strided view, in one
    vectorised pass (oneDNN's reorder rounds to nearest even, as `to_bf16`; numpy's version makes five
    passes and took ~25% of a bf16 training step at elmo_medium's sizes)."""
    if a.ndim != 2 or a.dtype != np.float32 or out.dtype != np.uint16 or a.shape != out.shape or 0 in a.shape:
        return to_bf16(a, out=out)
    s_a, s_o = tuple(v // 4 for v in a.strides), tuple(v // 2 for v in out.strides)
    if min(s_a + s_o) <= 0:  # reversed or broadcast views: numpy's rounding
        return to_bf16(a, out=out)
    _cached(_Reorder, a.shape, s_a, s_o)(a, out)
    return out


def matmul(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    """`c[M, N] = a[M, K] @ b[K, N]`, with `a` and `b` bfloat16 bits (`to_bf16`) and `c` float32, all C-contiguous."""
    (m, k), n = a.shape, b.shape[1]
    assert a.dtype == b.dtype == np.uint16 and c.dtype == np.float32 and b.shape[0] == k and c.shape == (m, n)
    assert a.flags.c_contiguous and b.flags.c_contiguous and c.flags.c_contiguous
    _cached(_Primitive, m, k, n)(a, b, c)


class Bf16Matrix:
    """`A [M, K]` rounded to bf16 once; `c[M, N] = A @ b[K, N]` per call (b rounded to bf16, float32 sums).

    The same contract as `lstm_cpu._PackedMatrix.matmul_into` with beta = 0, so `PackedLstmp` can use either.
    """

    def __init__(self, a: np.ndarray):
        self.a = round_into(np.asarray(a, dtype=np.float32), np.empty(np.shape(a), dtype=np.uint16))
        self.M, self.K = self.a.shape
        self.b16: dict[int, np.ndarray] = {}  # the rounded right operand, one buffer per column count

    def matmul_into(self, b: np.ndarray, c: np.ndarray, beta: float = 0.0) -> None:
        if beta != 0.0:
            raise ValueError("Bf16Matrix accumulates nothing: beta must be 0")
        n = b.shape[1]
        assert b.shape[0] == self.K and c.shape == (self.M, n) and c.dtype == np.float32 and c.flags.c_contiguous
        buf = self.b16.get(n)
        if buf is None:
            buf = self.b16[n] = np.empty((self.K, n), dtype=np.uint16)
        _cached(_Primitive, self.M, self.K, n)(self.a, round_into(b, buf), c)
