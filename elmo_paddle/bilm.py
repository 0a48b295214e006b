"""The biLM: token layer -> forward and backward LSTMP stacks -> softmax heads.

As in the ELMo paper and bilm-tf: the token layer is an id embedding or a char-CNN + highway over the
characters of each token; two independent LSTM-with-projection stacks read the sentence left-to-right and
right-to-left; the forward LM predicts the next token, the backward LM the previous one.  `forward` returns
the three ELMo layers with backward states aligned to sentence order, which is what `Elmo` mixes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .errors import UserError
from .lstm import LSTM_IMPLS, BiLstmpStack, bidirectional_layers, numpy_kernel_applies, reverse_index
from .lstm_cpu import bilm_layers
from .softmax import SoftmaxHead


@dataclass
class BiLMConfig:
    """Architecture of the biLM (saved as JSON in the model directory)."""

    vocab_size: int = 0  # filled in from the vocab
    token_encoder: str = "embedding"  # "embedding" (token ids) or "char_cnn" (characters of each token)
    token_dim: int = 128  # width of the token layer; must equal proj_dim (the layers are stacked for ELMo)
    char_vocab_size: int = 0  # char_cnn only: filled in from the char vocab
    char_dim: int = 16
    max_chars_per_token: int = 10
    cnn_filters: list = field(default_factory=lambda: [[1, 32], [2, 32], [3, 64], [4, 128]])
    highway_layers: int = 1
    hidden_dim: int = 512  # LSTM cell size
    proj_dim: int = 128  # LSTM projection size
    num_layers: int = 2
    cell_clip: float = 3.0  # 0 disables
    proj_clip: float = 3.0  # 0 disables
    dropout: float = 0.1
    residual: bool = True
    lstm_impl: str = "lstmp"  # "lstmp" (exact LSTM-with-projection) or "fused" (approximation, see lstm.py)
    softmax_samples: int = 0  # >0: sampled softmax with that many samples during training
    tie_embeddings: bool = False  # share token embedding and softmax weights (embedding encoder only)

    def validate(self) -> None:
        if self.token_dim != self.proj_dim:
            raise UserError(f"token_dim ({self.token_dim}) must equal proj_dim ({self.proj_dim}): the token "
                            "layer and the LSTM layers are mixed by ELMo and must have the same width")
        if self.token_encoder not in ("embedding", "char_cnn"):
            raise UserError(f"token_encoder must be 'embedding' or 'char_cnn', not {self.token_encoder!r}")
        if self.token_encoder == "char_cnn":
            widest = max((w for w, _ in self.cnn_filters), default=0)
            if self.max_chars_per_token < max(3, widest):
                raise UserError(f"max_chars_per_token ({self.max_chars_per_token}) must be at least 3 and at least "
                                f"the widest char-CNN filter ({widest})")
        if self.tie_embeddings and self.token_encoder != "embedding":
            raise UserError("tie_embeddings needs token_encoder: embedding")
        if self.lstm_impl not in LSTM_IMPLS:
            raise UserError(f"lstm_impl must be one of {', '.join(LSTM_IMPLS)}, not {self.lstm_impl!r}")
        if self.num_layers < 1 or self.hidden_dim < 1 or self.proj_dim < 1:
            raise UserError("num_layers, hidden_dim and proj_dim must be positive")


class Highway(nn.Layer):
    """y = g * relu(W x) + (1 - g) * x, with g = sigmoid(W_g x); carry gate biased open at init."""

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.layers = nn.LayerList([nn.Linear(dim, 2 * dim) for _ in range(num_layers)])
        for layer in self.layers:
            b = paddle.zeros([2 * dim])
            b[dim:] = 1.0  # bias the gate towards carrying x through at the start
            layer.bias.set_value(b)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        for layer in self.layers:
            h, g = paddle.chunk(layer(x), 2, axis=-1)
            g = F.sigmoid(g)
            x = g * F.relu(h) + (1 - g) * x
        return x


class CharCNNEncoder(nn.Layer):
    """Characters of each token -> max-pooled convolutions -> highway -> projection to token_dim."""

    def __init__(self, cfg: BiLMConfig):
        super().__init__()
        self.emb = nn.Embedding(cfg.char_vocab_size, cfg.char_dim, padding_idx=0)
        self.convs = nn.LayerList([nn.Conv1D(cfg.char_dim, n, w) for w, n in cfg.cnn_filters])
        total = sum(n for _, n in cfg.cnn_filters)
        self.highway = Highway(total, cfg.highway_layers)
        self.proj = nn.Linear(total, cfg.token_dim)

    def forward(self, chars: paddle.Tensor) -> paddle.Tensor:
        B, T, C = chars.shape
        x = self.emb(chars.reshape([B * T, C])).transpose([0, 2, 1])  # [BT, char_dim, C]
        feats = [paddle.max(F.relu(conv(x)), axis=-1) for conv in self.convs]
        return self.proj(self.highway(paddle.concat(feats, -1))).reshape([B, T, -1])


class BiLM(nn.Layer):
    """Bidirectional LM.  Input ids `[B, T]` (0 = padding), optionally chars `[B, T, C]`."""

    def __init__(self, cfg: BiLMConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        if cfg.token_encoder == "embedding":
            self.token_emb = nn.Embedding(cfg.vocab_size, cfg.token_dim, padding_idx=0)
        else:
            self.char_cnn = CharCNNEncoder(cfg)
        self.lstm = BiLstmpStack(cfg.token_dim, cfg.hidden_dim, cfg.proj_dim, cfg.num_layers,
                                 cfg.cell_clip or None, cfg.proj_clip or None, cfg.dropout, cfg.residual,
                                 cfg.lstm_impl)
        self.dropout = nn.Dropout(cfg.dropout)
        tied = self.token_emb.weight if cfg.tie_embeddings else None
        self.fwd_softmax = SoftmaxHead(cfg.vocab_size, cfg.proj_dim, cfg.softmax_samples, tied)
        self.bwd_softmax = SoftmaxHead(cfg.vocab_size, cfg.proj_dim, cfg.softmax_samples, tied)

    # LSTMP weights were stored [.., in, out] before the feature-major rewrite of lstm.py and [.., out, in]
    # since; gate order (i, f, o, g) did not change, so older model directories load by a transpose.
    _LEGACY_TRANSPOSED = re.compile(r"^lstm\.layers\.\d+\.(w_ih|w_hh|bias|w_proj)$")

    def adapt_loaded_array(self, name: str, array: np.ndarray, shape: list[int]) -> np.ndarray:
        """Read weights saved in an older layout (called by checkpoint loading)."""
        if (list(array.shape) != shape and array.ndim >= 2 and self._LEGACY_TRANSPOSED.match(name)
                and list(array.shape[:-2]) + [array.shape[-1], array.shape[-2]] == shape
                and self.cfg.lstm_impl == "lstmp"):
            return np.ascontiguousarray(np.swapaxes(array, -1, -2))
        return array

    def set_char_table(self, table: np.ndarray) -> None:
        """Char-CNN only: the character ids spelling each vocab token, `[vocab_size, max_chars_per_token]`.

        Lets the biLM read token ids (LM batches, perplexity); it is derived from the vocab, so it is not
        saved with the weights.  Callers with the real spelling of each token (ELMo on task text, where
        words outside the vocab keep their characters) pass `chars` instead.
        """
        shape = [self.cfg.vocab_size, self.cfg.max_chars_per_token]
        if list(table.shape) != shape:
            raise UserError(f"char table must be {shape}, got {list(table.shape)}")
        self.register_buffer("char_table", paddle.to_tensor(table, dtype="int64"), persistable=False)

    def token_layer(self, ids: paddle.Tensor, chars: paddle.Tensor | None = None) -> paddle.Tensor:
        if self.cfg.token_encoder == "embedding":
            return self.token_emb(ids)
        if chars is None:
            table = getattr(self, "char_table", None)
            if table is None:
                raise UserError("this biLM encodes characters: pass chars [B, T, C] or call set_char_table")
            chars = paddle.gather(table, ids.reshape([-1])).reshape(list(ids.shape) + [table.shape[1]])
        return self.char_cnn(chars)

    def forward(self, ids: paddle.Tensor, chars: paddle.Tensor | None = None,
                lengths: paddle.Tensor | None = None) -> list[paddle.Tensor]:
        """ELMo layers for ids `[B, T]`: `[token, lstm_1, ..., lstm_L]`, each `[B, T, 2 * proj_dim]`.

        The token layer is duplicated to the width of [forward; backward] (as bilm-tf does); the backward
        outputs are re-aligned so position t holds the backward state after reading tokens t..end.
        `lengths` defaults to the count of non-padding ids in each row.
        """
        if lengths is None:
            lengths = (ids != 0).astype("int64").sum(-1)
        tok = self.token_layer(ids, chars)  # [B, T, P]
        return [paddle.concat([tok, tok], axis=-1)] + bidirectional_layers(self.lstm, tok, lengths)

    def freeze_for_inference(self, frozen: bool = True) -> bool:
        """Promise the LSTM weights no longer change, so inference may run a packed snapshot of them.

        On a CPU build of paddle with its bundled MKL, float32 `lstmp` layers: `packed_layers` then runs the
        whole stack in numpy with MKL's packed GEMM (`lstm_cpu`; 1.4-1.7x faster per layer than the paddle
        loop, measured).  `Elmo` calls this for a fully frozen biLM; `frozen=False` drops the snapshot.
        With `ELMO_PADDLE_BF16=1` on a CPU with AMX, the snapshot multiplies in bfloat16 (`bf16_gemm`: faster,
        ~1e-2 relative difference in the layers).  Returns whether the packed path is available now.
        """
        from .bf16_gemm import available as bf16_available

        self._packed = None
        layers = list(self.lstm.layers)
        if frozen and self.cfg.lstm_impl == "lstmp" and numpy_kernel_applies(layers[0].w_ih):
            self._packed = [layer.numpy_kernel(bf16=bf16_available()) for layer in layers]
        return self._packed is not None

    @property
    def inference_packed(self) -> bool:
        """True when `freeze_for_inference` holds a packed snapshot (CPU + MKL), so `packed_layers` can run."""
        return getattr(self, "_packed", None) is not None

    def packed_layers(self, ids: paddle.Tensor, lengths: paddle.Tensor,
                      chars: paddle.Tensor | None = None) -> np.ndarray:
        """`forward` (no gradient) as one numpy array `[B, 1 + num_layers, T, 2 * proj_dim]`.

        Needs `inference_packed`: the token layer is a paddle op, everything after it numpy
        (`lstm_cpu.bilm_layers`, with the reversal index of `lstm.reverse_index`).
        """
        if not self.inference_packed:
            raise RuntimeError("packed_layers needs freeze_for_inference() first (and a CPU paddle with MKL)")
        with paddle.no_grad():
            tok = self.token_layer(ids, chars).numpy()
            rev = reverse_index(lengths, ids.shape[1]).numpy()
        return bilm_layers(tok, rev, self._packed, self.cfg.residual)

    def lm_loss(self, batch: dict[str, paddle.Tensor], sampled: bool = True) -> dict[str, paddle.Tensor]:
        """Summed NLL and prediction counts of both directions for a batch of inputs and targets."""
        ids = batch["inputs"]
        layers = self.forward(ids, batch.get("chars"))
        top = self.dropout(layers[-1])
        P = self.cfg.proj_dim
        out = {}
        for name, h, targets, head in (("fwd", top[..., :P], batch["fwd_targets"], self.fwd_softmax),
                                       ("bwd", top[..., P:], batch["bwd_targets"], self.bwd_softmax)):
            flat_t = targets.reshape([-1])
            keep = paddle.nonzero(flat_t != 0).squeeze(-1)  # predict only where a target exists
            h_k = paddle.gather(h.reshape([-1, P]), keep)
            nll = head.nll(h_k, paddle.gather(flat_t, keep), sampled and self.training)
            out[f"{name}_nll"] = nll.sum()
            out[f"{name}_count"] = paddle.to_tensor(keep.shape[0], dtype="float32")
        return out
