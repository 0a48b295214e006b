"""`python -m tasks.mix_weights`: the learnt layer weights of a task model's ELMo mixes, from its weights file."""
from __future__ import annotations

import numpy as np
import pytest

from elmo_paddle import checkpoint as ckpt
from elmo_paddle.errors import UserError
from tasks.mix_weights import main, mixes


def _model(d, tensors):
    ckpt.write_dir(d, {"config.json": {}}, {"model.safetensors": tensors})
    return str(d)


def test_prints_softmax_weights_and_gamma(tmp_path, capsys):
    elmo = _model(tmp_path / "elmo", {
        "elmo.scalar_mixes.0.scalar_parameters": np.log(np.array([1, 1, 2], "float32")),
        "elmo.scalar_mixes.0.gamma": np.array([0.5], "float32"),
        "elmo.scalar_mixes.1.gamma": np.array([2.0], "float32"),  # a one-layer mix saves no w
        "encoder.weight": np.zeros((2, 2), "float32")})
    base = _model(tmp_path / "base", {"encoder.weight": np.zeros((2, 2), "float32")})
    assert main([elmo, base]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{elmo}: mix 0: layer weights (token, LSTM 1, ...) 0.250 0.250 0.500; gamma 0.500",
                   f"{elmo}: mix 1: layer weights (token, LSTM 1, ...) one layer alone; gamma 2.000",
                   f"{base}: no ELMo mix (a baseline model)"]


def test_a_folder_that_is_not_a_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        mixes(str(tmp_path))
