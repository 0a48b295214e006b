"""Export the frozen biLM as a static graph for `paddle.inference`: ids `[B, T]` -> layers `[B, 3, T, D]`.

    python -m elmo_paddle.export --model models/elmo_small --output exported/elmo_small

writes `OUT/model.json` + `OUT/model.pdiparams` (the program and weights, `paddle.jit.save`), `OUT/vocab.json`
(to turn text into ids) and `OUT/export_info.json` (unit, output_dim, the input/output contract), then
loads the result with `paddle.inference` and checks it reproduces the eager `Elmo.encode` on sample
sentences.  Batch size and length are dynamic (`InputSpec([None, None])`).  The exported function is
exactly `Elmo.encode`: it wraps each row as `<S> ids </S>`, strips the boundaries and zeroes padding.

Why a separate forward path.  `lstm.py` unrolls the recurrence with a Python `for t in range(T)` over
`x.shape`, which `to_static` traces with the symbolic (-1) length: the saved program is wrong for any T.
Here the recurrence is an explicit `paddle.static.nn.while_loop` over a tensor-valued length (it runs as
a plain loop in eager mode), with `paddle.shape` instead of Python ints, using the biLM's own weights; the
LSTMP cell (gate order i, f, o, g; cell and projection clipping) must match `lstm.BiLstmpLayer` -- the
parity check at export time guarantees it does.

Run the exported model with oneDNN (MKL-DNN) off: with paddle 3.3.1 the oneDNN kernels raise `dnnl::error`
inside the while loop.  `create_predictor()` below configures that; it also sets the CPU thread count.
"""
from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

import numpy as np

from .errors import UserError, cli

PROGRAM = "model"  # OUT/model.json, OUT/model.pdiparams
SAMPLE = ["中华人民共和国成立了", "我们", "", "今天天气很好，我们去北京天安门广场看升旗。"]


def reverse_padded_symbolic(x, lengths):
    """`lstm.reverse_padded` with symbolic shapes (works under `to_static` with a dynamic T)."""
    import paddle

    t = paddle.arange(paddle.shape(x)[1], dtype="int64").unsqueeze(0)
    L = lengths.astype("int64").unsqueeze(1)
    idx = paddle.where(t < L, L - 1 - t, t + L * 0)
    return paddle.take_along_axis(x, paddle.expand_as(idx.unsqueeze(-1), x), axis=1)


def lstmp_weights(layer):
    """A `BiLstmpLayer`'s weights as (w_ih [2, D, 4H], w_hh [2, P, 4H], bias [2, 1, 4H], w_proj [2, H, P]).

    lstm.py has stored them both "x @ W" (`[2, in, out]`) and feature-major (`[2, out, in]`); the layout is
    read from the shapes.  Gate order i, f, o, g.  Differentiable (transposes of the parameters).
    """
    H, P = layer.hidden_dim, layer.proj_dim
    w_ih, w_hh, bias, w_proj = layer.w_ih, layer.w_hh, layer.bias, layer.w_proj
    feature_major = (w_hh.shape[1] == 4 * H) if P != 4 * H else (w_ih.shape[1] == 4 * H)
    if feature_major:
        w_ih, w_hh, w_proj = (w.transpose([0, 2, 1]) for w in (w_ih, w_hh, w_proj))
    return w_ih, w_hh, bias.reshape([2, 1, 4 * H]), w_proj


def lstmp_layer_forward(layer, x):
    """One LSTMP layer, both directions, plain autograd ops: x `[2, B, T, D]` -> `[2, B, T, P]`.

    Under `to_static` (export) the recurrence is a `paddle.static.nn.while_loop` over a tensor-valued T; in
    eager mode the same cell is a plain Python loop (differentiable: `Elmo(requires_grad_top_layers=k)`).
    """
    import paddle
    import paddle.nn.functional as F

    H, P = layer.hidden_dim, layer.proj_dim
    w_ih, w_hh, bias, w_proj = lstmp_weights(layer)
    shp = paddle.shape(x)
    xw = paddle.bmm(x.reshape([2, -1, x.shape[-1]]), w_ih) + bias
    xw = xw.reshape([2, shp[1], shp[2], 4 * H]).transpose([2, 0, 1, 3])  # [T, 2, B, 4H]
    h0 = paddle.zeros_like(xw[0, :, :, :P])
    c0 = paddle.zeros_like(xw[0, :, :, :H])
    outs0 = paddle.zeros_like(xw[:, :, :, :P])
    T = shp[2]
    cell_clip, proj_clip = layer.cell_clip, layer.proj_clip

    def step(xw_t, h, c):
        """One LSTMP step (gates i, f, o, g) with cell and projection clipping."""
        gates = xw_t + paddle.bmm(h, w_hh)
        i, f, o, g = paddle.split(gates, 4, axis=-1)
        c = F.sigmoid(f) * c + F.sigmoid(i) * paddle.tanh(g)
        if cell_clip:
            c = paddle.clip(c, -cell_clip, cell_clip)
        h = paddle.bmm(F.sigmoid(o) * paddle.tanh(c), w_proj)
        if proj_clip:
            h = paddle.clip(h, -proj_clip, proj_clip)
        return h, c

    def cond(t, h, c, outs):
        return t < T

    def body(t, h, c, outs):
        h, c = step(paddle.gather(xw, t).squeeze(0), h, c)
        return t + 1, h, c, paddle.scatter(outs, t, h.unsqueeze(0))

    if paddle.in_dynamic_mode():  # eager: a plain loop (the eager while_loop updates its loop vars in place,
        h, c, hs = h0, c0, []     # which breaks autograd)
        for t in range(xw.shape[0]):
            h, c = step(xw[t], h, c)
            hs.append(h)
        outs = paddle.stack(hs, axis=0) if hs else outs0
    else:
        t0 = paddle.zeros([1], dtype="int64")
        outs = paddle.static.nn.while_loop(cond, body, [t0, h0, c0, outs0])[3]
    return outs.transpose([1, 2, 0, 3])


def _build_layer(bilm):
    """An nn.Layer over `bilm`'s weights whose forward is export-friendly (see the module docstring)."""
    import paddle
    import paddle.nn as nn

    from .elmo import wrap_with_boundaries

    reverse, lstmp = reverse_padded_symbolic, lstmp_layer_forward

    class ExportableBiLM(nn.Layer):
        """ids `[B, T]` int64 (0 = padding) -> frozen biLM layers `[B, num_layers + 1, T, 2P]`."""

        def __init__(self):
            super().__init__()
            self.bilm = bilm

        def forward(self, ids):
            wrapped, lengths = wrap_with_boundaries(ids)
            tok = self.bilm.token_emb(wrapped)
            x = paddle.stack([tok, reverse(tok, lengths)], axis=0)
            layers = [paddle.concat([tok, tok], axis=-1)]
            for k, layer in enumerate(self.bilm.lstm.layers):
                y = lstmp(layer, x)
                if self.bilm.cfg.residual and k > 0:
                    y = y + x
                layers.append(paddle.concat([y[0], reverse(y[1], lengths)], axis=-1))
                x = y
            T = paddle.shape(ids)[1]
            out = paddle.stack(layers, axis=1)[:, :, 1:T + 1]
            mask = (ids != 0).astype(out.dtype).unsqueeze(1).unsqueeze(-1)
            return out * mask

    return ExportableBiLM()


def create_predictor(export_dir: str | os.PathLike, threads: int = 1):
    """A `paddle.inference` predictor for an exported model (CPU, oneDNN off; see the module docstring)."""
    from paddle import inference

    d = Path(export_dir)
    prog, params = d / f"{PROGRAM}.json", d / f"{PROGRAM}.pdiparams"
    if not prog.is_file() or not params.is_file():
        raise UserError(f"{d} is not an exported model: {prog.name} or {params.name} is missing")
    cfg = inference.Config(str(prog), str(params))
    cfg.disable_gpu()
    cfg.disable_mkldnn()
    cfg.set_cpu_math_library_num_threads(threads)
    cfg.disable_glog_info()
    return inference.create_predictor(cfg)


def run_predictor(predictor, ids: np.ndarray) -> np.ndarray:
    """ids `[B, T]` int64 -> layers `[B, L, T, D]` float32."""
    h = predictor.get_input_handle(predictor.get_input_names()[0])
    h.reshape(list(ids.shape))
    h.copy_from_cpu(np.ascontiguousarray(ids, dtype="int64"))
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def export_model(model_dir: str | os.PathLike, output: str | os.PathLike, check: bool = True,
                 atol: float = 1e-4) -> Path:
    """Export `model_dir`'s biLM to `output`; with `check`, verify paddle.inference == eager. Returns output."""
    import paddle

    from .elmo import Elmo, ids_array, sentences_to_token_lists

    elmo = Elmo(model_dir)
    cfg = elmo.bilm.cfg
    if cfg.token_encoder != "embedding":
        raise UserError(f"only biLMs with an 'embedding' token layer can be exported (this one: {cfg.token_encoder!r})")
    if getattr(cfg, "lstm_impl", "lstmp") != "lstmp":
        raise UserError(f"only lstm_impl 'lstmp' biLMs can be exported (this one: {cfg.lstm_impl!r})")
    out = Path(output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out}: {e.strerror or e}") from None
    layer = _build_layer(elmo.bilm)
    layer.eval()
    spec = [paddle.static.InputSpec([None, None], "int64", "ids")]
    static = paddle.jit.to_static(layer, full_graph=True)
    with warnings.catch_warnings():  # paddle's own "no 'place' interface in pir graph mode" noise
        warnings.filterwarnings("ignore", message=".*'place' interface.*")
        paddle.jit.save(static, str(out / PROGRAM), input_spec=spec)
    elmo.vocab.save(out / "vocab.json")
    info = {"format": 1, "unit": elmo.unit, "num_layers": elmo.num_layers, "output_dim": elmo.output_dim,
            "input": "ids int64 [B, T]: vocab ids of the tokens, 0 = padding (no <S>/</S>: added inside)",
            "output": "float32 [B, num_layers, T, output_dim]: token layer, LSTM layers; padding is 0",
            "predictor": "paddle.inference on CPU with oneDNN disabled (elmo_paddle.export.create_predictor)",
            "source_model": str(Path(model_dir).resolve())}
    (out / "export_info.json").write_text(json.dumps(info, ensure_ascii=False, indent=1), encoding="utf-8")
    if check:
        ids = ids_array(sentences_to_token_lists(SAMPLE, elmo.unit), elmo.vocab)
        eager = elmo.encode(paddle.to_tensor(ids)).numpy()
        got = run_predictor(create_predictor(out), ids)
        err = float(np.abs(got - eager).max()) if got.shape == eager.shape else float("inf")
        if not err <= atol:
            raise UserError(f"exported model does not reproduce the eager biLM (max abs diff {err:.3g}, "
                            f"shapes {got.shape} vs {eager.shape}): lstm.py and export.py disagree on the cell")
    return out


def _build_arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m elmo_paddle.export",
                                 description="Export a biLM model dir for paddle.inference (ids -> 3 layers).")
    ap.add_argument("--model", required=True, help="model directory (or a pretraining output dir)")
    ap.add_argument("--output", required=True, help="folder to write model.json/model.pdiparams/vocab.json into")
    ap.add_argument("--no-check", action="store_true", help="skip the exported-vs-eager parity check")
    return ap


@cli
def main(argv: list[str] | None = None) -> int:
    args = _build_arg_parser().parse_args(argv)
    import elmo_paddle  # noqa: F401  (env vars before paddle)

    out = export_model(args.model, args.output, check=not args.no_check)
    print(f"exported to {out} ({PROGRAM}.json, {PROGRAM}.pdiparams, vocab.json, export_info.json)"
          + ("" if args.no_check else "; paddle.inference output matches the eager biLM"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
