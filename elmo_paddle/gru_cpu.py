"""Inference of a bidirectional GRU stack on CPU in numpy + MKL: the LAC taggers' fast decode path.

Why: tagging is the one place the task models run in inference on the user's CPU, and there paddle's fused
GRU (`recurrent.bidirectional_rnn("gru")`) was 3.1-3.4 s of the baseline tagger's 5.2 s over the 1,949 PD1998
test paragraphs (one core, sixth/seventh sessions).  This kernel computes the same function with less work:
- the first layer's input gates of a character are one row of a table (`embedding @ W_ih^T + b`, made once
  per model), so that layer multiplies by `W_hh` only;
- rows are sorted by length and each step runs only the rows still inside their text (paddle computes the
  padding too), and a row's backward direction starts at its own last character with a zero state, as
  `sequence_length` does in paddle;
- sigmoid is `(tanh(x / 2) + 1) / 2` with MKL's vectorised tanh (numpy's float32 exp is scalar), the r and z
  weights pre-halved; per step one sgemm (`h @ W_h^T`) and no allocation;
- the second layer's input gates are one GEMM over all steps, and every GEMM outside the recurrence (input
  gates, the tagger's output layer) runs on the real characters only: the states are kept *packed*, time-major
  without padding (as a PackedSequence), because batches of real paragraphs are 1.69x their characters when
  padded (PD1998 test, batches of 128 sorted by length within blocks of 1,024; fourteenth session).
In float32 the GEMMs bound the kernel.  On one thread they go to numpy's BLAS (OpenBLAS in the numpy wheel), held
to one thread with threadpoolctl: on this machine's CPU it runs `[10000, 256] @ [256, 768]` at 137 GFLOP/s and
the step GEMM `[100, 128] @ [128, 384]` at 114, where paddle's bundled MKL-ML gives 104 and 96
(`bench/blas_gemm.py`, fourteenth session; the tagger 1.10-1.13x faster for it, the same tags); with more threads MKL stays, whose per-thread setting
lets the two directions run side by side; with `ELMO_PADDLE_BF16=1` (and AMX)
the GEMMs run in bfloat16 on AMX through `bf16_gemm` (24 us for that step GEMM, float32 sums), as the biLM's.
The reference is paddle's GRU itself: `tests/test_gru_cpu.py` checks outputs against it on ragged,
unsorted batches (1 and 2 layers, 1 and 2 threads; float32 to ~1e-5, bf16 to a few 1e-2), and the taggers'
decode against their paddle path.  Gate order and equations are paddle's (and cuDNN's):
`r, z = sigmoid(W_i x + b_i + W_h h + b_h)`, `c = tanh(W_ic x + b_ic + r * (W_hc h + b_hc))`,
`h' = z * h + (1 - z) * c`.
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import bf16_gemm
from .lstm_cpu import _both_directions, _mkl, gemm, packed_gemm_available, tanh_


def available() -> bool:
    """True where the kernel can run: a CPU paddle build with its bundled MKL (as `lstm_cpu`)."""
    return packed_gemm_available()


def numpy_blas_wins() -> bool:
    """True when paddle's MKL runs one thread (the taggers' default) and threadpoolctl can hold numpy's BLAS to
    one thread too; then the float32 GEMMs go to numpy (see the module docstring)."""
    if _mkl().MKL_Get_Max_Threads() >= 2:
        return False
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def float32_gemm():
    """Yields `mm(a, b, out)` (`out = a @ b`, float32, C-contiguous): numpy's BLAS held to one thread while the
    block runs when `numpy_blas_wins()`, else MKL's `gemm`."""
    if not numpy_blas_wins():
        yield gemm
        return
    global _blas
    if _blas is None:
        import threadpoolctl

        _blas = threadpoolctl.ThreadpoolController().select(user_api="blas")
    with _blas.limit(limits=1):
        yield lambda a, b, out: np.matmul(a, b, out=out)


_blas = None  # threadpoolctl's handle on numpy's BLAS, made on first use (it scans the loaded libraries)


class _Direction:
    """One direction of one layer: `[W_hr,z (pre-halved) | W_hc]^T`, `b_hc`; the other biases go into the input gates."""

    def __init__(self, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray, bf16: bool):
        H = w_hh.shape[1]
        half = np.concatenate([np.full(2 * H, 0.5), np.ones(H)]).astype(np.float32)
        self.H = H
        self.w_in = np.ascontiguousarray((w_ih * half[:, None]).T, dtype=np.float32)  # [D, 3H]
        self.b_in = ((b_ih + np.concatenate([b_hh[:2 * H], np.zeros(H)])) * half).astype(np.float32)  # [3H]
        self.w_h = np.ascontiguousarray((w_hh * half[:, None]).T, dtype=np.float32)  # [H, 3H]
        self.b_c = b_hh[2 * H:].astype(np.float32)
        self.w_h16 = bf16_gemm.to_bf16(self.w_h) if bf16 else None

    def scan(self, gi: np.ndarray, pack: "Packing", reverse: bool, out: np.ndarray, mm=gemm) -> None:
        """Outputs `out [N, H]` (a view) from the input gates `gi [N, 3H]` (a view), both packed: step t's rows
        are `pack.offsets[t]:` `+ pack.active[t]`, the first `active[t]` rows in length order."""
        T, B, H = len(pack.active), pack.batch, self.H
        h = np.zeros((B, H), dtype=np.float32)
        gh_buf = np.empty((B, 3 * H), dtype=np.float32)
        rz_buf, c_buf = np.empty((B, 2 * H), dtype=np.float32), np.empty((B, H), dtype=np.float32)
        h16 = np.empty((B, H), dtype=np.uint16) if self.w_h16 is not None else None
        for t in range(T - 1, -1, -1) if reverse else range(T):
            n, o = int(pack.active[t]), int(pack.offsets[t])
            if n == 0:
                continue
            hp, gh, rz, c, g = h[:n], gh_buf[:n], rz_buf[:n], c_buf[:n], gi[o:o + n]
            if h16 is None:
                mm(hp, self.w_h, gh)
            else:  # bf16 on AMX, rows rounded up to a multiple of 8 (few shapes: oneDNN primitives are cached)
                m = min(B, -(-n // 8) * 8)
                bf16_gemm.matmul(bf16_gemm.round_into(h[:m], h16[:m]), self.w_h16, gh_buf[:m])
            np.add(gh[:, :2 * H], g[:, :2 * H], out=rz)
            tanh_(rz)
            rz *= 0.5
            rz += 0.5  # r, z = sigmoid(...)
            np.add(gh[:, 2 * H:], self.b_c, out=c)
            c *= rz[:, :H]
            c += g[:, 2 * H:]
            tanh_(c)
            hp -= c
            hp *= rz[:, H:]
            hp += c  # h' = c + z * (h - c)
            out[o:o + n] = hp


class Packing:
    """Where the real characters of a padded `[B, T]` batch go in the packed, time-major layout.

    `order`: the rows by decreasing length (stable); `active[t]`: how many rows reach step t; `offsets[t]`: where
    step t's rows start; packed row j is character `steps[j]` of batch row `rows[j]`, so `x[rows, steps]`
    gathers a padded `[B, T, ...]` array into `[N, ...]` and `y[rows, steps] = packed` scatters it back.
    """

    def __init__(self, lengths: np.ndarray, steps: int):
        lengths = np.asarray(lengths, dtype=np.int64)
        self.batch = len(lengths)
        self.order = np.argsort(-lengths, kind="stable")
        self.active = (lengths[None, :] > np.arange(steps)[:, None]).sum(1)
        self.offsets = np.concatenate([[0], np.cumsum(self.active)])
        self.steps = np.repeat(np.arange(steps), self.active)
        self.rows = self.order[np.arange(len(self.steps)) - np.repeat(self.offsets[:-1], self.active)]


class BiGru:
    """Frozen weights of a `num_layers` bidirectional paddle `nn.GRU`, run on numpy batches.

    Parameters
    ----------
    gru : paddle.nn.GRU
        With `direction="bidirect"` (as `recurrent.bidirectional_rnn("gru", ...)` makes it); its weights are
        copied now, so build a new `BiGru` after training changes them.
    embedding : np.ndarray, optional
        `[V, D]`: the table of the first layer's inputs, which `__call__(ids=...)` looks up.
    bf16 : bool, optional
        GEMMs in bfloat16 on AMX (float32 sums); default: when `ELMO_PADDLE_BF16=1` and the CPU has AMX.

    Call with `lengths [B]`, `ids [B, T]` (int, into `embedding`, when given) and/or `x [B, T, D']` (the rest
    of the first layer's input, e.g. an ELMo mix, or all of it); returns float32 `[B, T, 2H]` (forward and
    backward states concatenated), zeros past each row's length.
    """

    def __init__(self, gru, embedding: np.ndarray | None = None, bf16: bool | None = None):
        params = {k: v.numpy() for k, v in gru.named_parameters()}
        self.bf16 = bf16_gemm.available() if bf16 is None else bool(bf16 and bf16_gemm.available())
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        self.layers = [[_Direction(*(params[f"{w}_l{i}{sfx}"] for w in names), bf16=self.bf16)
                        for sfx in ("", "_reverse")] for i in range(gru.num_layers)]
        self.H = self.layers[0][0].H
        # both directions' input weights and biases side by side, per layer (and in bf16), made once
        self.w_in = [np.concatenate([d.w_in for d in dirs], axis=1) for dirs in self.layers]  # [D, 6H]
        self.b_in = [np.concatenate([d.b_in for d in dirs]) for dirs in self.layers]
        self.w_in16 = [bf16_gemm.to_bf16(w) for w in self.w_in] if self.bf16 else None
        self.table, self.n_emb = None, 0
        if embedding is not None:  # the embedding's share of the first layer's input gates, per vocabulary entry
            self.n_emb = embedding.shape[1]
            self.table = self._input_gates(0, np.asarray(embedding, dtype=np.float32), rows=slice(0, self.n_emb),
                                           bf16=False)  # once, so exact

    def _input_gates(self, layer: int, x: np.ndarray, rows: slice = slice(None), bias: bool = True,
                     bf16: bool = True, mm=gemm) -> np.ndarray:
        """`[N, 6H]`: `x [N, D] @ W_in[rows] (+ b_in)` for both directions (bf16 on AMX when enabled and `bf16`)."""
        w = self.w_in[layer][rows]  # a block of rows: still C-contiguous
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty((x.shape[0], w.shape[1]), dtype=np.float32)
        if bf16 and self.bf16 and x.shape[0] > 0:
            bf16_gemm.matmul(bf16_gemm.round_into(x, np.empty(x.shape, dtype=np.uint16)), self.w_in16[layer][rows], out)
        else:
            mm(x, w, out)
        if bias:
            out += self.b_in[layer]
        return out

    def __call__(self, lengths: np.ndarray, *, ids: np.ndarray | None = None, x: np.ndarray | None = None
                 ) -> np.ndarray:
        """`ids [B, T]` look up the embedding's part of the first layer's input (when built with one); `x [B, T, D']`
        is the rest of it (or all of it without an embedding)."""
        self._check(ids, x)
        T = (ids if ids is not None else x).shape[1]
        pack = Packing(lengths, T)
        out = self.packed(pack, ids=ids, x=x)
        result = np.zeros((pack.batch, T, 2 * self.H), dtype=np.float32)
        result[pack.rows, pack.steps] = out
        return result

    def _check(self, ids: np.ndarray | None, x: np.ndarray | None) -> None:
        if (ids is not None) != (self.table is not None) or (ids is None and x is None):
            raise ValueError("pass ids exactly when BiGru has an embedding, and x for the rest of the input")

    def packed(self, pack: Packing, *, ids: np.ndarray | None = None, x: np.ndarray | None = None) -> np.ndarray:
        """`[N, 2H]`: the outputs at the real characters only, in `pack`'s order (as `__call__`'s arguments)."""
        self._check(ids, x)
        with float32_gemm() as mm:
            gi = self.table[np.asarray(ids)[pack.rows, pack.steps]] if ids is not None else None  # [N, 6H]
            if x is not None:
                xs = np.asarray(x, dtype=np.float32)[pack.rows, pack.steps]
                part = self._input_gates(0, xs, rows=slice(self.n_emb, None), bias=gi is None, mm=mm)
                gi = part if gi is None else gi + part
            H3, H = 3 * self.H, self.H
            for i, dirs in enumerate(self.layers):
                if i > 0:
                    gi = self._input_gates(i, out, mm=mm)
                out = np.empty((len(pack.steps), 2 * H), dtype=np.float32)
                _both_directions(lambda d: dirs[d].scan(gi[:, d * H3:(d + 1) * H3], pack, d == 1,
                                                        out[:, d * H:(d + 1) * H], mm))
        return out


__all__ = ["BiGru", "Packing", "available"]
