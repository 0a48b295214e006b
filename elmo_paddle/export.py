"""Export the frozen biLM as a static graph for `paddle.inference`: ids `[B, T]` -> layers `[B, 3, T, D]`.

    python -m elmo_paddle.export --model models/elmo_small --output exported/elmo_small

writes `OUT/model.json` + `OUT/model.pdiparams` (the program and weights, `paddle.jit.save`), `OUT/vocab.json`
(to turn text into ids) and `OUT/export_info.json` (unit, output_dim, the input/output contract), then
loads the result with `paddle.inference` and checks it reproduces the eager `Elmo.encode` on sample
sentences.  Batch size and length are dynamic (`InputSpec([None, None])`).  The exported function is
exactly `Elmo.encode`: it wraps each row as `<S> ids </S>`, strips the boundaries and zeroes padding.

The exported graph is the biLM's own forward: under `to_static` each LSTMP layer runs its cell
(`lstm.lstmp_step`) in a `paddle.static.nn.while_loop` over a tensor-valued length (a Python loop over
`x.shape` would be traced with the symbolic length -1 and save a program wrong for any T), and
`lstm.reverse_padded` reads shapes with `paddle.shape`.  The parity check at export time compares the
result with the eager `Elmo.encode`.

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

from . import validate
from .errors import UserError, cli

PROGRAM = "model"  # OUT/model.json, OUT/model.pdiparams
SAMPLE = ["中华人民共和国成立了", "我们", "", "今天天气很好，我们去北京天安门广场看升旗。"]


def _build_layer(bilm):
    """An nn.Layer whose forward is `Elmo.encode`'s paddle path over `bilm`'s own modules (see the module docstring)."""
    import paddle
    import paddle.nn as nn

    from .elmo import strip_boundaries, wrap_with_boundaries

    class ExportableBiLM(nn.Layer):
        """ids `[B, T]` int64 (0 = padding) -> frozen biLM layers `[B, num_layers + 1, T, 2P]`."""

        def __init__(self):
            super().__init__()
            self.bilm = bilm

        def forward(self, ids):
            wrapped, lengths = wrap_with_boundaries(ids)
            layers = paddle.stack(self.bilm(wrapped, lengths=lengths), axis=1)
            return strip_boundaries(layers, ids != 0)

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
    ap.add_argument("--model", required=True,
                    help="model directory, a pretraining output dir (its best/), or a shipped model's name")
    ap.add_argument("--output", required=True, help="folder to write model.json/model.pdiparams/vocab.json into")
    ap.add_argument("--no-check", action="store_true", help="skip the exported-vs-eager parity check")
    return ap


@cli
def main(argv: list[str] | None = None) -> int:
    args = _build_arg_parser().parse_args(argv)
    validate.output_dir("--output", args.output)  # before the model loads and the graph is traced
    import elmo_paddle  # noqa: F401  (env vars before paddle)

    out = export_model(args.model, args.output, check=not args.no_check)
    print(f"exported to {out} ({PROGRAM}.json, {PROGRAM}.pdiparams, vocab.json, export_info.json)"
          + ("" if args.no_check else "; paddle.inference output matches the eager biLM"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
