"""Print what each +ELMo task model learnt to read from the biLM: its scalar mixes' layer weights and gamma.

    python -m tasks.mix_weights MODEL [MODEL ...]

MODEL: a task model folder (a LAC run's best/, a BiDAF run's model/) or a shipped model's name.  The weights
are softmax(w) over the biLM's layers, token layer first (ELMo paper, section 3.2); a mix that reads one layer
alone (`only_layer`) saves no w and prints as such.  Reads the safetensors file only: no model is built.
"""
from __future__ import annotations

import argparse
import re

import numpy as np

from elmo_paddle import checkpoint as ckpt
from elmo_paddle.errors import cli
from elmo_paddle.model_io import shipped_or_path

_MIX = re.compile(r"(?:^|\.)scalar_mixes\.(\d+)\.(scalar_parameters|gamma)$")


def mixes(model_dir: str) -> dict[int, dict[str, np.ndarray]]:
    """{mix index: {"weights": softmax(w) or absent, "gamma": ...}} of a task model folder."""
    d = shipped_or_path(model_dir)
    ckpt.verify_dir(d)
    out: dict[int, dict[str, np.ndarray]] = {}
    for k, v in ckpt.load_tensors(d / "model.safetensors").items():
        m = _MIX.search(k)
        if m:
            if m.group(2) == "gamma":
                out.setdefault(int(m.group(1)), {})["gamma"] = v
            else:
                e = np.exp(v - v.max())
                out.setdefault(int(m.group(1)), {})["weights"] = e / e.sum()
    return out


@cli
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.mix_weights", description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="task model folders or shipped names")
    args = ap.parse_args(argv)
    for name in args.models:
        found = mixes(name)
        if not found:
            print(f"{name}: no ELMo mix (a baseline model)")
        for i, mix in sorted(found.items()):
            w = mix.get("weights")
            shown = " ".join(f"{x:.3f}" for x in w) if w is not None else "one layer alone"
            print(f"{name}: mix {i}: layer weights (token, LSTM 1, ...) {shown}; gamma {float(mix['gamma'][0]):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
