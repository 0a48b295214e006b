"""Inference of a frozen LSTMP layer on CPU with MKL's packed GEMM (the embedder's fast path).

Why: at embedding time each recurrent step multiplies the same weights (`[4H, D + P]`, 8 MB per direction
at the paper's sizes) by a thin `[D + P, batch]` matrix.  A normal GEMM call re-packs the weights for its
kernel every time, which at 32 columns costs about as much as the arithmetic; MKL's packed API
(`cblas_sgemm_pack` once, `cblas_sgemm_compute` per step) skips that: measured here 1.23 vs 2.2 ms per step
GEMM, and the whole layer 1.4-1.7x faster than the paddle op-by-op loop.  The element-wise part runs
in-place on small preallocated numpy buffers (no allocation per step).  With 2+ MKL threads the two
directions run on two threads, single-threaded MKL each (a thin GEMM scales poorly over threads), and
`bilm_layers` does the whole biLM after its token layer in numpy (no paddle op dispatch per reversal/concat).

Only used where it can be: a CPU build of paddle that ships `libmklml_intel.so` with the packed API,
float32 weights, and a biLM whose weights are frozen (`BiLM.freeze_for_inference`).  Anything
else, or `ELMO_PADDLE_PACKED_GEMM=0`, uses lstm.py's paddle loop; the results agree to float rounding.
"""
from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import numpy as np

from .bf16_gemm import Bf16Matrix, available as bf16_available, matmul as bf16_matmul, round_into

_ROW_MAJOR, _NO_TRANS, _TRANS, _A_MATRIX, _PACKED = 101, 111, 112, 161, 151
_VML_LA = 0x1  # VML's "low accuracy" mode: still within a few ulp of float32, faster than the default
_lib = None  # loaded on first use; False when unavailable
_clip = np.core.umath.clip  # the ufunc itself: np.clip's Python wrapper costs more than the work at these sizes


def _mkl():
    global _lib
    if _lib is None:
        _lib = False
        if os.environ.get("ELMO_PADDLE_PACKED_GEMM", "1") != "0":
            try:
                import paddle

                if not paddle.is_compiled_with_cuda() and not paddle.is_compiled_with_xpu():
                    path = Path(paddle.__file__).parent / "libs" / "libmklml_intel.so"
                    lib = ctypes.CDLL(str(path))  # the copy paddle itself loaded: same threads setting
                    i, p, f = ctypes.c_int, ctypes.c_void_p, ctypes.c_float
                    lib.cblas_sgemm_pack_get_size.restype = ctypes.c_size_t
                    lib.cblas_sgemm_pack_get_size.argtypes = [i, i, i, i]
                    lib.cblas_sgemm_pack.argtypes = [i, i, i, i, i, i, f, p, i, p]
                    lib.cblas_sgemm_compute.argtypes = [i, i, i, i, i, i, p, i, p, i, f, p, i]
                    lib.cblas_sgemm.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
                    lib.vmsTanh.argtypes = [i, p, p, ctypes.c_int64]  # MKL's vectorised tanh (numpy's float32 exp is scalar)
                    lib.MKL_Get_Max_Threads.restype = i
                    lib.MKL_Set_Num_Threads_Local.argtypes = [i]  # (the lower-case name takes a pointer)
                    lib.MKL_Set_Num_Threads_Local.restype = i
                    _lib = lib
            except (OSError, AttributeError):
                _lib = False
    return _lib or None


def packed_gemm_available() -> bool:
    """True when this process can run `PackedLstmp` (CPU paddle with its bundled MKL)."""
    return _mkl() is not None


class _PackedMatrix:
    """`A [M, K]` packed once; `C[M, N] = A @ B[K, N]` per call.  One packing per column count N."""

    def __init__(self, a: np.ndarray):
        self.a = np.ascontiguousarray(a, dtype="float32")
        self.M, self.K = self.a.shape
        self.packs: dict[int, np.ndarray] = {}

    MAX_PACKS = 4  # packings kept (one per batch width seen; bounded: a task's ragged batches can vary)

    def _pack(self, n: int) -> np.ndarray:
        buf = self.packs.pop(n, None)
        if buf is None:
            while len(self.packs) >= self.MAX_PACKS:
                self.packs.pop(next(iter(self.packs)))  # the least recently used
            lib = _mkl()
            size = lib.cblas_sgemm_pack_get_size(_A_MATRIX, self.M, n, self.K)
            buf = np.empty(size // 4 + 1, dtype="float32")
            lib.cblas_sgemm_pack(_ROW_MAJOR, _A_MATRIX, _NO_TRANS, self.M, n, self.K, 1.0,
                                 self.a.ctypes.data, self.K, buf.ctypes.data)
        self.packs[n] = buf  # (re)inserted last: dict order is recency order
        return buf

    def matmul_into(self, b: np.ndarray, c: np.ndarray, beta: float = 0.0) -> None:
        """`c = A @ b + beta * c`; `b [K, N]`, `c [M, N]` C-contiguous float32 (c may be a row block of a bigger array)."""
        n = b.shape[1]
        assert b.shape[0] == self.K and c.shape == (self.M, n) and b.dtype == c.dtype == np.float32
        assert b.flags.c_contiguous and c.flags.c_contiguous
        _mkl().cblas_sgemm_compute(_ROW_MAJOR, _PACKED, _NO_TRANS, self.M, n, self.K, self._pack(n).ctypes.data,
                                   self.K, b.ctypes.data, n, beta, c.ctypes.data, n)


_executor = None
_executor_pid = None


def _pool():
    """One worker thread for the backward direction (created on first use, lives with the process).

    A forked child (e.g. a DataLoader worker) inherits the executor but not its thread: it makes its own.
    """
    global _executor, _executor_pid
    if _executor is None or _executor_pid != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="elmo-lstm")
        _executor_pid = os.getpid()
    return _executor


def tanh_(a: np.ndarray) -> None:
    """In-place tanh of a C-contiguous float32 array."""
    assert a.flags.c_contiguous and a.dtype == np.float32
    _mkl().vmsTanh(a.size, a.ctypes.data, a.ctypes.data, _VML_LA)


class _Cache:
    """One direction's per-step values, `[T, ...]` when kept for the backward pass, else one reused step."""

    def __init__(self, T: int, D: int, H: int, P: int, B: int, keep: bool):
        n = T if keep else 1
        self.keep = keep
        self.xh = np.zeros((n, D + 1 + P, B), dtype="float32")  # [x_t; 1; h_{t-1}]
        self.xh[:, D] = 1.0
        self.z = np.empty((n, 4 * H, B), dtype="float32")  # sigmoid(i, f, o), tanh(g)
        self.c = np.zeros((n, H, B), dtype="float32")  # clipped cell
        self.tc = np.empty((n, H, B), dtype="float32")  # tanh(c)
        self.m = np.empty((n, H, B), dtype="float32") if keep else self.tc  # o * tanh(c) (inference: in place)
        self.zero_c = np.zeros((H, B), dtype="float32")

    def at(self, t: int) -> int:
        return t if self.keep else 0

    def c_prev(self, t: int) -> np.ndarray:
        if not self.keep:
            return self.c[0]  # updated in place
        return self.c[t - 1] if t > 0 else self.zero_c


class PackedLstmp:
    """An LSTMP layer (both directions) on CPU in numpy + MKL: `[T, 2, D, B]` -> `[T, 2, P, B]`, and its BPTT.

    The second kernel of `lstm.lstmp_step`'s cell (same gates, clips and layout), kept because it is faster
    than paddle's op-by-op loop: frozen inference 1.4-1.7x per layer, and the training step of
    `lstm._LstmpRecurrence` (see `bench/bilm_train.py`); tests/test_lstm.py checks it against the same float64
    reference and autograd gradients as the paddle path.  Built from one training step's weights, or once
    for a frozen biLM (`BiLM.freeze_for_inference`).

    Per direction and step: one packed GEMM `[W_ih | b | W_hh] @ [x_t; 1; h]` gives all gates (measured
    faster here than one big GEMM for the input part of all steps plus a per-step `W_hh @ h`); one MKL tanh
    covers all four gates (the i, f, o rows are pre-halved: sigmoid(z) = (tanh(z / 2) + 1) / 2); the
    projection's packed GEMM writes h straight into the next step's input buffer.  The backward pass multiplies
    by packed `W_proj^T` and `[W_ih | b | W_hh]^T` per step (one GEMM gives dx_t and dh; packed the first time
    a backward runs) and accumulates the weight gradients as rank-B updates per step.
    """

    def __init__(self, w_ih: np.ndarray, w_hh: np.ndarray, bias: np.ndarray, w_proj: np.ndarray,
                 cell_clip: float | None, proj_clip: float | None, bf16: bool = False):
        H = w_ih.shape[1] // 4
        self.D, self.P, self.H = w_ih.shape[2], w_proj.shape[1], H
        self.cell_clip, self.proj_clip = cell_clip, proj_clip
        self.w_ih, self.w_hh, self.bias, self.w_proj = w_ih, w_hh, bias.reshape(2, -1, 1), w_proj
        scale = np.concatenate([np.full(3 * H, 0.5), np.ones(H)]).astype("float32")[:, None]
        # bf16: the GEMMs with a weight matrix on AMX (`bf16_gemm`, opt-in); the weight gradients' GEMMs too
        # (`_StepOuterSum`), summed into float32
        self.bf16 = bf16
        matrix = self.matrix = Bf16Matrix if bf16 else _PackedMatrix
        self.gates = [matrix(np.concatenate([w_ih[d], bias[d].reshape(-1, 1), w_hh[d]], axis=1) * scale)
                      for d in range(2)]
        self.proj = [matrix(w_proj[d]) for d in range(2)]
        self.back = None  # (W_proj^T, [W_ih | b | W_hh]^T) packed per direction, on the first backward
        self.caches: list[_Cache] | None = None
        self.out = None

    def __call__(self, x: np.ndarray, keep: bool = False) -> np.ndarray:
        """Outputs `[T, 2, P, B]`; with `keep`, the per-step values stay for one `backward` call."""
        T, _, D, B = x.shape
        out = np.empty((T, 2, self.P, B), dtype="float32")
        caches = [_Cache(T, D, self.H, self.P, B, keep) for _ in range(2)]
        _both_directions(lambda d: self._direction(d, np.ascontiguousarray(x[:, d], dtype="float32"),
                                                   out[:, d], caches[d]))
        if keep:
            self.caches, self.out = caches, out
        return out

    def _direction(self, d: int, x: np.ndarray, out: np.ndarray, cache: _Cache) -> None:
        T, D, B = x.shape
        H = self.H
        gates, proj = self.gates[d], self.proj[d]
        tmp = np.empty((H, B), dtype="float32")
        for t in range(T):
            if cache.keep or t == 0:  # this step's buffers (inference reuses one set: no views made per step)
                k = cache.at(t)
                xh, z, c, tc, m = cache.xh[k], cache.z[k], cache.c[k], cache.tc[k], cache.m[k]
                ifo, i, f, o, g = z[:3 * H], z[:H], z[H:2 * H], z[2 * H:3 * H], z[3 * H:]
                c_prev = cache.c_prev(t)
                h = cache.xh[cache.at(t + 1), D + 1:] if (t + 1 < T or not cache.keep) else out[t]
            xh[:D] = x[t]
            gates.matmul_into(xh, z)  # i, f, o rows: z / 2
            tanh_(z)
            ifo *= 0.5
            ifo += 0.5  # sigmoid
            np.multiply(f, c_prev, out=c)
            np.multiply(i, g, out=tmp if cache.keep else i)  # (inference: i is not needed again)
            c += tmp if cache.keep else i
            if self.cell_clip:
                _clip(c, -self.cell_clip, self.cell_clip, out=c)
            np.copyto(tc, c)
            tanh_(tc)
            np.multiply(o, tc, out=m)
            proj.matmul_into(m, h)
            if self.proj_clip:
                _clip(h, -self.proj_clip, self.proj_clip, out=h)
            out[t] = h

    def backward(self, dout: np.ndarray) -> tuple[np.ndarray, ...]:
        """Gradients `(dx [T, 2, D, B], dw_ih, dw_hh, dbias, dw_proj)` (weight layouts as `lstm.BiLstmpLayer`) of
        the last `__call__(x, keep=True)`, given `dout [T, 2, P, B]`; the kept values are released."""
        if self.caches is None:
            raise RuntimeError("PackedLstmp.backward needs a forward call with keep=True first")
        if self.back is None:  # W_proj^T and [W_ih | b | W_hh]^T (its product with dg gives dx and dh at once)
            self.back = [(self.matrix(self.w_proj[d].T),
                          self.matrix(np.concatenate([self.w_ih[d], self.bias[d], self.w_hh[d]], axis=1).T))
                         for d in range(2)]
        T, _, P, B = dout.shape
        D, H = self.D, self.H
        dx = np.empty((T, 2, D, B), dtype="float32")
        dw_full = np.zeros((2, 4 * H, D + 1 + P), dtype="float32")
        dw_proj = np.zeros((2, P, H), dtype="float32")
        _both_directions(lambda d: self._bptt(d, np.ascontiguousarray(dout[:, d], dtype="float32"),
                                              dx[:, d], dw_full[d], dw_proj[d]))
        self.caches = self.out = None
        return (dx, np.ascontiguousarray(dw_full[:, :, :D]), np.ascontiguousarray(dw_full[:, :, D + 1:]),
                np.ascontiguousarray(dw_full[:, :, D:D + 1]), dw_proj)

    def _bptt(self, d: int, dout: np.ndarray, dx: np.ndarray, dw_full: np.ndarray, dw_proj: np.ndarray) -> None:
        """Backward through time, one direction.  Per step: `dm = W_proj^T dp`, the gate gradients `dg [4H, B]`,
        `[dx_t; .; dh] = [W_ih | b | W_hh]^T dg`, and the weight gradients accumulated as rank-B updates
        (`dW += dg [x; 1; h]^T`, `dW_proj += dp m^T`; measured faster here than copying all steps into one
        `[F, T * B]` layout for one big GEMM in float32; in bf16 `_StepOuterSum` gathers steps)."""
        T, P, B = dout.shape
        cache, H, D, out = self.caches[d], self.H, self.D, self.out[:, d]
        proj_t, full_t = self.back[d]
        dxh = np.zeros((D + 1 + P, B), dtype="float32")  # [dx_t; (bias row); dh]: dh reaches h_{t-1}
        dh = dxh[D + 1:]
        dc_next = np.zeros((H, B), dtype="float32")  # gradient reaching c_t (after its clip) from step t+1
        dm, dc, tmp = (np.empty((H, B), dtype="float32") for _ in range(3))
        dp = np.empty((P, B), dtype="float32")
        dg = np.empty((4 * H, B), dtype="float32")
        sig_grad = np.empty((3 * H, B), dtype="float32")
        sum_full, sum_proj = _StepOuterSum(dw_full, B, self.bf16), _StepOuterSum(dw_proj, B, self.bf16)
        for t in range(T - 1, -1, -1):
            z, c, tc = cache.z[t], cache.c[t], cache.tc[t]
            i, f, o, g = z[:H], z[H:2 * H], z[2 * H:3 * H], z[3 * H:]
            np.add(dout[t], dh, out=dp)
            if self.proj_clip:  # gradient of the projection before its clip
                dp *= np.abs(out[t]) < self.proj_clip
            proj_t.matmul_into(dp, dm)  # dm = W_proj^T dp
            np.multiply(tc, tc, out=dc)
            np.subtract(1.0, dc, out=dc)
            dc *= o
            dc *= dm
            dc += dc_next
            if self.cell_clip:  # gradient of the cell before its clip
                dc *= np.abs(c) < self.cell_clip
            np.multiply(dc, g, out=dg[:H])
            np.multiply(dc, cache.c_prev(t), out=dg[H:2 * H])
            np.multiply(dm, tc, out=dg[2 * H:3 * H])
            np.multiply(z[:3 * H], z[:3 * H], out=sig_grad)
            np.subtract(z[:3 * H], sig_grad, out=sig_grad)  # sigmoid' = s - s^2
            dg[:3 * H] *= sig_grad
            np.multiply(g, g, out=tmp)
            np.subtract(1.0, tmp, out=tmp)
            tmp *= i
            np.multiply(dc, tmp, out=dg[3 * H:])
            np.multiply(dc, f, out=dc_next)
            full_t.matmul_into(dg, dxh)  # [dx_t; .; dh]
            dx[t] = dxh[:D]
            sum_full.add(dg, cache.xh[t])
            sum_proj.add(dp, cache.m[t])
        sum_full.flush()
        sum_proj.flush()


class _StepOuterSum:
    """`dw += sum_t a_t @ b_t^T` over the steps of BPTT (`a_t [M, B]`, `b_t [N, B]`), the weight gradients.

    float32: a rank-B update per step (MKL's sgemm).  bf16: the steps are gathered side by side, rounded
    (`round_into`), into `[M, K]` and `[K, N]` with K ~ 512, and each full chunk is one AMX GEMM
    (`bf16_gemm.matmul`) added to the float32 `dw`.  Why the two: one layer's backward at hidden 1024,
    projection 256, B=64, T=32 on one core took 373 -> 255 ms in bf16 with gathering (101 vs 118 ms at
    elmo_small's sizes), while gathering in float32 gained nothing (504-567 vs 511 ms: the copies cost
    what the bigger GEMM saves).  The bf16 weight gradients differ from float32 by ~0.2% (max, relative).
    """

    K_TARGET = 512

    def __init__(self, dw: np.ndarray, B: int, bf16: bool):
        self.dw, self.B, self.bf16, self.j = dw, B, bf16, 0
        if bf16:
            M, N = dw.shape
            self.chunk = max(1, self.K_TARGET // B)
            self.a = np.zeros((M, self.chunk * B), dtype=np.uint16)  # step j's a_t in columns [jB, (j + 1)B)
            self.bt = np.zeros((self.chunk * B, N), dtype=np.uint16)  # step j's b_t^T in rows [jB, (j + 1)B)
            self.tmp = np.empty((M, N), dtype=np.float32)

    def add(self, a_t: np.ndarray, b_t: np.ndarray) -> None:
        if not self.bf16:
            gemm(a_t, b_t, self.dw, trans_b=True, beta=1.0)
            return
        cols = slice(self.j * self.B, (self.j + 1) * self.B)
        round_into(a_t, self.a[:, cols])
        round_into(b_t.T, self.bt[cols])
        self.j += 1
        if self.j == self.chunk:
            self.flush()

    def flush(self) -> None:
        """Adds the gathered steps to `dw` (a partial chunk's unused columns are zeroed first)."""
        if self.j == 0:
            return
        self.a[:, self.j * self.B:] = 0
        bf16_matmul(self.a, self.bt, self.tmp)
        self.dw += self.tmp
        self.j = 0


def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray, trans_b: bool = False, beta: float = 0.0,
         trans_a: bool = False) -> None:
    """`c = op(a) @ op(b) + beta * c` with MKL's sgemm on C-contiguous float32 arrays (MKL, not numpy's BLAS: it
    obeys the per-thread MKL setting that keeps the two direction threads from oversubscribing the cores)."""
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    assert a.flags.c_contiguous and b.flags.c_contiguous and c.flags.c_contiguous
    assert a.dtype == b.dtype == c.dtype == np.float32
    _mkl().cblas_sgemm(_ROW_MAJOR, _TRANS if trans_a else _NO_TRANS, _TRANS if trans_b else _NO_TRANS, M, N, K,
                       1.0, a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1], beta, c.ctypes.data, N)


def _both_directions(run) -> None:
    """`run(0)` and `run(1)`: on two threads, single-threaded MKL each, when MKL may use 2+ threads.

    A thin GEMM split over 2 threads scales poorly (measured 114 vs 70 GFLOP/s for 1 thread), and the
    element-wise numpy work runs in parallel too (ctypes and numpy release the GIL).  Measured: a frozen
    layer 96 -> 73 ms at B=32, H=1024.
    """
    if _mkl().MKL_Get_Max_Threads() < 2:
        run(0)
        run(1)
        return
    other = _pool().submit(_single_mkl_thread, run, 1)
    try:
        _single_mkl_thread(run, 0)
    finally:
        other.result()


def _single_mkl_thread(run, d: int) -> None:
    lib = _mkl()
    lib.MKL_Set_Num_Threads_Local(1)
    omp = _omp_if_bf16()  # oneDNN (the opt-in bf16 GEMMs) threads through OpenMP, not through MKL's setting
    omp_before = omp.omp_get_max_threads() if omp else 0
    if omp:
        omp.omp_set_num_threads(1)
    try:
        run(d)
    finally:
        lib.MKL_Set_Num_Threads_Local(0)  # back to the global setting
        if omp:
            omp.omp_set_num_threads(omp_before)


def _omp_if_bf16():
    """paddle's libiomp5 when the bf16 path is on (its per-thread OpenMP setting), else None."""
    return _libiomp5() if bf16_available() else None


@functools.lru_cache(maxsize=1)
def _libiomp5():
    import paddle

    return ctypes.CDLL(str(Path(paddle.__file__).parent / "libs" / "libiomp5.so"))


def bilm_layers(tok: np.ndarray, rev: np.ndarray, layers: list[PackedLstmp], residual: bool) -> np.ndarray:
    """The biLM's ELMo layers from its token layer, all in numpy: `[B, T, P]` -> `[B, 1 + len(layers), T, 2P]`.

    What `BiLM.forward` computes when every LSTM layer is packed (inference): layer 0 is `[tok; tok]`, layer
    k the forward and the re-aligned backward outputs of LSTM k (residual from the second layer on).  Doing
    the reversals, layout changes and concatenations here instead of as paddle ops saves ~10% of an
    embedding call (measured: the ops are small and each paddle op costs more to dispatch than to run).
    `rev [B, T]` is `lstm.reverse_index` of the rows' lengths (the one definition of the reversal).
    """
    B, T, P = tok.shape
    rows = np.arange(B)[:, None]
    out = np.empty((B, 1 + len(layers), T, 2 * P), dtype=np.float32)
    out[:, 0, :, :P] = tok
    out[:, 0, :, P:] = tok
    x = np.empty((T, 2, P, B), dtype=np.float32)
    x[:, 0] = tok.transpose(1, 2, 0)
    x[:, 1] = tok[rows, rev].transpose(1, 2, 0)
    for k, layer in enumerate(layers):
        y = layer(x)
        if residual and k > 0:
            y += x
        out[:, k + 1, :, :P] = y[:, 0].transpose(2, 0, 1)
        out[:, k + 1, :, P:] = y[:, 1].transpose(2, 0, 1)[rows, rev]
        x = y
    return out
