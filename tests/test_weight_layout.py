"""Model directories written before lstm.py's feature-major rewrite must keep loading (by a transpose)."""
import numpy as np
import paddle

import elmo_paddle  # noqa: F401
from elmo_paddle import checkpoint as ckpt
from elmo_paddle.bilm import BiLM, BiLMConfig


def test_legacy_transposed_lstmp_weights_load_to_the_same_model(tmp_path):
    cfg = BiLMConfig(vocab_size=30, token_dim=8, proj_dim=8, hidden_dim=12, num_layers=2)
    paddle.seed(0)
    m = BiLM(cfg)
    m.eval()
    arrays = ckpt.model_tensors(m)
    legacy = {k: (np.swapaxes(v, -1, -2).copy() if BiLM._LEGACY_TRANSPOSED.match(k) else v)
              for k, v in arrays.items()}
    assert any(legacy[k].shape != arrays[k].shape for k in arrays)
    ckpt._save_tensors(legacy, tmp_path / "weights.safetensors")
    paddle.seed(1)
    m2 = BiLM(cfg)
    m2.eval()
    ckpt.load_model_tensors(m2, tmp_path)
    ids = paddle.to_tensor([[5, 6, 7, 8, 0], [9, 10, 11, 0, 0]])
    for a, b in zip(m(ids), m2(ids)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)
