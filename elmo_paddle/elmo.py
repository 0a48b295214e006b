"""The ELMo representation layer: a frozen pretrained biLM + trainable scalar mixes, for task models.

    elmo = Elmo(model_dir, num_output_representations=1, dropout=0.5)
    ids = elmo.batch_to_ids([["我", "爱", "北", "京"], ["你", "好"]])   # int64 [B, T], 0 = padding
                                                                    # (char-CNN models: [B, T, chars])
    out = elmo(ids)   # {'elmo_representations': [Tensor [B, T, elmo.output_dim]] * n, 'mask': bool [B, T]}
    loss = task_loss + elmo.l2_penalty()

How it works (as bilm-tf / AllenNLP):
  * each sentence is wrapped as `<S> tokens </S>` before the biLM and the two boundary positions are removed
    from the outputs, so output position t is input token t;
  * the biLM gives 3 layers `[B, T, 2P]` (token layer duplicated to [x; x], LSTM 1, LSTM 2; the backward
    states already in sentence order); `encode(ids)` stacks them as `[B, 3, T, 2P]`, padding zeroed;
  * each of the `num_output_representations` ScalarMix'es turns them into one `[B, T, 2P]` vector per token
    (separate mixes, e.g. one at the input and one at the output of a task RNN), then dropout.

Frozen biLM.  The biLM is *not* a sublayer of `Elmo`: `elmo.parameters()` / `state_dict()` hold only the
mixes (plus the top LSTM layers if `requires_grad_top_layers > 0`), every biLM weight has
`stop_gradient=True`, and the biLM stays in eval mode whatever `elmo.train()` does (its dropout never runs).
Task checkpoints therefore stay small; the biLM is reloaded from its model directory.

Determinism.  No state is carried between calls and padding cannot reach real positions (the forward LSTM
reads padding only after the sentence, the backward LSTM reads each sentence reversed in place and padding
after it), so a sentence gets the same vectors alone or in any batch (up to float rounding of batched
matmuls, ~1e-6).  Layer norm, if enabled, uses per-sentence statistics for the same reason.

Length.  The biLM has no hard length limit (its LSTM is unrolled over T); cost is linear in T.  It was
trained on windows of `train.seq_len` tokens, so very long sentences are outside its training
distribution -- `ElmoEmbedder` cuts them into chunks of `max_length` tokens.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import paddle
import paddle.nn as nn

from .bilm import BiLM
from .errors import UserError
from .scalar_mix import ScalarMix
from .text import normalize_width, tokenize
from . import checkpoint as ckpt
from .model_io import load_bilm, resolve_model_dir
from .vocab import BOS, EOS, Vocab


def sentences_to_token_lists(sentences: Sequence[str] | Sequence[Sequence[str]], unit: str) -> list[list[str]]:
    """Strings are tokenised with the model's unit; token lists are width-normalised and checked.

    For a char-unit model every token must be one character (whitespace characters are allowed and map to
    `<UNK>`, so character offsets stay aligned).  Raises UserError for bad input.
    """
    if isinstance(sentences, (str, bytes)):
        raise UserError("expected a list of sentences (strings or token lists), got a single string")
    out = []
    for i, s in enumerate(sentences):
        if isinstance(s, str):
            out.append(tokenize(s, unit))
            continue
        if isinstance(s, (bytes, int, float)) or s is None:
            raise UserError(f"sentence {i}: expected a string or a list of token strings, got {type(s).__name__}")
        toks = []
        for tok in s:
            if not isinstance(tok, str):
                raise UserError(f"sentence {i}: tokens must be strings, got {type(tok).__name__} {tok!r}")
            if not tok:
                raise UserError(f"sentence {i}: empty token")
            if unit == "char" and len(tok) != 1:
                raise UserError(f"sentence {i}: token {tok!r} has {len(tok)} characters, but this is a "
                                "character-level model: pass one character per token (or the raw string)")
            toks.append(normalize_width(tok))
        out.append(toks)
    return out


def ids_array(token_lists: Sequence[Sequence[str]], vocab: Vocab, min_len: int = 1) -> np.ndarray:
    """Token lists -> int64 `[B, max(min_len, longest)]`, 0-padded; unknown tokens -> `<UNK>` (id 3)."""
    T = max([min_len] + [len(t) for t in token_lists])
    ids = np.zeros((len(token_lists), T), dtype="int64")
    for b, toks in enumerate(token_lists):
        ids[b, :len(toks)] = vocab.encode(toks)
    return ids


def wrap_chars_with_boundaries(chars: paddle.Tensor, bos: Sequence[int], eos: Sequence[int]
                               ) -> tuple[paddle.Tensor, paddle.Tensor]:
    """`[B, T, C]` char ids (all-0 row = pad) -> (`[B, T + 2, C]` with the `<S>`/`</S>` spellings, lengths + 2)."""
    B, T, C = chars.shape
    chars = chars.astype("int64")
    lengths = (chars[:, :, 0] != 0).astype("int64").sum(-1)
    bos_row = paddle.to_tensor(np.asarray(bos, "int64")).reshape([1, 1, C]).expand([B, 1, C])
    wrapped = paddle.concat([bos_row, chars, paddle.zeros([B, 1, C], dtype="int64")], axis=1)
    pos = paddle.arange(T + 2, dtype="int64").reshape([1, T + 2, 1])
    eos_full = paddle.to_tensor(np.asarray(eos, "int64")).reshape([1, 1, C]).expand([B, T + 2, C])
    wrapped = paddle.where(pos == (lengths + 1).reshape([B, 1, 1]), eos_full, wrapped)
    return wrapped, lengths + 2


def wrap_with_boundaries(ids: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
    """`[B, T]` ids (0 = pad) -> (`[B, T + 2]` `<S> ids </S>` then padding, lengths + 2)."""
    B = ids.shape[0]
    lengths = (ids != 0).astype("int64").sum(-1)
    bos = paddle.full([B, 1], Vocab.bos_id, dtype="int64")
    pad = paddle.zeros([B, 1], dtype="int64")
    wrapped = paddle.concat([bos, ids.astype("int64"), pad], axis=1)
    pos = paddle.arange(wrapped.shape[1], dtype="int64").unsqueeze(0)
    wrapped = paddle.where(pos == (lengths + 1).unsqueeze(1), paddle.full_like(wrapped, Vocab.eos_id), wrapped)
    return wrapped, lengths + 2


class Elmo(nn.Layer):
    """ELMo layer over a frozen pretrained biLM.

    Args:
        model_dir: a model directory (or a pretraining output dir: its best/, else final/).
        num_output_representations: number of separate scalar mixes (outputs).
        dropout: dropout on each mixed output (active in `train()` mode only).
        gamma_init: initial gamma of every mix.
        layer_norm: normalise each biLM layer (per sentence, masked) before mixing.
        l2_coef: `l2_penalty()` = l2_coef * sum over mixes of ||w||^2 (bilm-tf convention; see scalar_mix).
        requires_grad_top_layers: unfreeze this many of the top LSTM layers (0 = fully frozen biLM).  The
            unfrozen layers become sublayers of Elmo (in `parameters()` and `state_dict()`); their dropout
            stays off.  With k > 0 `encode()` outputs change as training goes on: don't cache them.
        top_layer_only: every mix returns gamma * (top LSTM layer) instead of a weighted sum.
        verify: check the model files against their manifest checksums when loading.
    """

    def __init__(self, model_dir: str | os.PathLike, num_output_representations: int = 1, dropout: float = 0.5,
                 gamma_init: float = 1.0, layer_norm: bool = False, l2_coef: float = 0.0,
                 requires_grad_top_layers: int = 0, top_layer_only: bool = False, verify: bool = True):
        super().__init__()
        if num_output_representations < 1:
            raise UserError(f"num_output_representations must be >= 1, got {num_output_representations}")
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {dropout}")
        self.model_dir = resolve_model_dir(model_dir)
        bilm, vocab, conf = load_bilm(self.model_dir, verify=verify)
        try:
            manifest = ckpt.read_json(self.model_dir, ckpt.MANIFEST)
            self.weights_sha256 = manifest["files"]["weights.safetensors"]["sha256"]
        except (UserError, KeyError, TypeError):
            self.weights_sha256 = None
        cfg = bilm.cfg
        self.uses_chars = cfg.token_encoder == "char_cnn"
        if not 0 <= requires_grad_top_layers <= cfg.num_layers:
            raise UserError(f"requires_grad_top_layers must be in 0..{cfg.num_layers}, got {requires_grad_top_layers}")
        for p in bilm.parameters():
            p.stop_gradient = True
        bilm.eval()
        self.__dict__["_bilm"] = bilm  # deliberately not a sublayer: see the module docstring
        self.vocab = vocab
        self.unit = vocab.unit
        self.config = conf
        self.num_layers = cfg.num_layers + 1
        self.output_dim = 2 * cfg.proj_dim
        self.requires_grad_top_layers = requires_grad_top_layers
        self.scalar_mixes = nn.LayerList([
            ScalarMix(self.num_layers, do_layer_norm=layer_norm, gamma_init=gamma_init, l2_coef=l2_coef,
                      top_layer_only=top_layer_only)
            for _ in range(num_output_representations)])
        self.dropout = nn.Dropout(dropout)
        if requires_grad_top_layers:
            tuned = list(bilm.lstm.layers)[-requires_grad_top_layers:]
            for layer in tuned:
                for p in layer.parameters():
                    p.stop_gradient = False
            self.tuned_lstm_layers = nn.LayerList(tuned)
            if len(self.vocab) > 7:
                self._check_tuned_path()
        for layer in list(bilm.lstm.layers)[:cfg.num_layers - requires_grad_top_layers]:
            if hasattr(layer, "freeze_inference_weights"):  # frozen for good: inference may pack the weights
                layer.freeze_inference_weights()

    @property
    def bilm(self) -> BiLM:
        """The underlying biLM (frozen, eval mode; not a sublayer)."""
        return self._bilm

    def train(self):  # noqa: D102 - keep the biLM's dropout off whatever the task does
        super().train()
        self._bilm.eval()
        return self

    def eval(self):  # noqa: D102
        super().eval()
        self._bilm.eval()
        return self

    # ---------------------------------------------------------------- inputs
    def batch_to_ids(self, sentences: Sequence[str] | Sequence[Sequence[str]]) -> paddle.Tensor:
        """Sentences -> int64 Tensor `[B, T]` of token ids (0 = padding, T = max(1, longest)).

        For a biLM with a char-CNN token layer: `[B, T, max_chars_per_token]` character ids instead, so a
        word outside the vocab still gets a vector from its spelling (all-0 rows are padding).
        A sentence is a list of tokens (for a char-unit model: single characters) or a raw string, which is
        tokenised with the model's unit.  Tokens are width-normalised; unknown ones become `<UNK>`.
        """
        if len(sentences) == 0:
            raise UserError("no sentences given (empty list)")
        return paddle.to_tensor(self.inputs_array(sentences_to_token_lists(sentences, self.unit)))

    # ---------------------------------------------------------------- the biLM
    def inputs_array(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """What `batch_to_ids` returns, as numpy, for already tokenised sentences."""
        if self.uses_chars:
            return self.vocab.chars_array(token_lists, self._bilm.cfg.max_chars_per_token)
        return ids_array(token_lists, self.vocab)

    @staticmethod
    def token_mask(ids: paddle.Tensor) -> paddle.Tensor:
        """`[B, T]` bool: True at real tokens of `batch_to_ids` output (token ids or character ids)."""
        return ids[:, :, 0] != 0 if ids.ndim == 3 else ids != 0

    def _check_ids_shape(self, shape: Sequence[int]) -> None:
        if len(shape) != (3 if self.uses_chars else 2):
            want = "[batch, time, max_chars_per_token] character ids" if self.uses_chars else "[batch, time] ids"
            raise UserError(f"this model takes {want} (see batch_to_ids), got shape {list(shape)}")

    def _wrap(self, ids: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor | None, paddle.Tensor]:
        """`<S> tokens </S>` for the biLM: (token ids, character ids or None, lengths)."""
        if self.uses_chars:
            C = self._bilm.cfg.max_chars_per_token
            chars, lengths = wrap_chars_with_boundaries(ids, self.vocab.char_ids(BOS, C), self.vocab.char_ids(EOS, C))
            return (chars[:, :, 0] != 0).astype("int64"), chars, lengths  # token ids: only where tokens are
        wrapped, lengths = wrap_with_boundaries(ids)
        return wrapped, None, lengths

    def _packed_layers(self, ids: paddle.Tensor) -> np.ndarray | None:
        """`_layers` through the biLM's all-numpy inference path (`BiLM.packed_layers`), or None where it can't run."""
        if paddle.is_grad_enabled() or not self._bilm.inference_packed:
            return None  # (checked before wrapping: the fallback would wrap the ids again)
        wrapped, chars, lengths = self._wrap(ids)
        full = self._bilm.packed_layers(wrapped, lengths, chars)
        if full is None:
            return None
        T = ids.shape[1]
        return full[:, :, 1:T + 1] * self.token_mask(ids).numpy()[:, None, :, None]

    def _layers(self, ids: paddle.Tensor) -> paddle.Tensor:
        if not isinstance(ids, paddle.Tensor):
            ids = paddle.to_tensor(np.asarray(ids, dtype="int64"))
        self._check_ids_shape(ids.shape)
        if not paddle.is_grad_enabled():
            out = self._packed_layers(ids)
            if out is not None:
                return paddle.to_tensor(out)
        T = ids.shape[1]
        wrapped, chars, lengths = self._wrap(ids)
        if self.requires_grad_top_layers and paddle.is_grad_enabled():
            with paddle.no_grad():
                layers = self._bilm(wrapped, chars, lengths=lengths)
            layers = self._recompute_top_layers(layers, lengths)
        else:
            layers = self._bilm(wrapped, chars, lengths=lengths)
        stacked = paddle.stack([h[:, 1:T + 1] for h in layers], axis=1)  # [B, L, T, D]
        mask = self.token_mask(ids).astype(stacked.dtype).reshape([ids.shape[0], 1, T, 1])
        return stacked * mask

    def _recompute_top_layers(self, layers: list, lengths: paddle.Tensor) -> list:
        """Recompute the unfrozen top LSTM layers with plain autograd ops (export.lstmp_layer_forward).

        Not the biLM's own layer forward: lstm.py's hand-written-backward PyLayer cannot take an input that
        needs no gradient (the frozen layer below), so the tuned layers run the same cell written with
        ordinary ops.  `__init__` checks both paths agree.
        """
        from .export import lstmp_layer_forward
        from .lstm import reverse_padded

        cfg = self._bilm.cfg
        P, first = cfg.proj_dim, cfg.num_layers - self.requires_grad_top_layers
        layers = list(layers)
        prev = layers[first]  # aligned output of the layer below ([tok; tok] for the token layer)
        x = paddle.stack([prev[..., :P], reverse_padded(prev[..., P:], lengths)], axis=0)
        for j in range(first, cfg.num_layers):
            y = lstmp_layer_forward(self._bilm.lstm.layers[j], x)
            if cfg.residual and j > 0:
                y = y + x
            layers[j + 1] = paddle.concat([y[0], reverse_padded(y[1], lengths)], axis=-1)
            x = y
        return layers

    def _check_tuned_path(self) -> None:
        with paddle.no_grad():
            wrapped, lengths = wrap_with_boundaries(paddle.to_tensor([[4, 5, 6, 7], [5, 6, 0, 0]], dtype="int64"))
            ref = self._bilm(wrapped, lengths=lengths)
            got = self._recompute_top_layers(ref, lengths)
            err = max(float(paddle.abs(a - b).max()) for a, b in zip(ref, got))
        if not err < 1e-4:
            raise RuntimeError(f"requires_grad_top_layers: the re-implemented LSTMP cell differs from lstm.py "
                               f"by {err:.3g}; elmo_paddle/export.py must follow lstm.py's cell")

    def encode(self, ids: paddle.Tensor) -> paddle.Tensor:
        """Frozen biLM activations `[B, num_layers, T, output_dim]` (no gradient; padding is zero)."""
        with paddle.no_grad():
            out = self._layers(ids)
        out.stop_gradient = True
        return out

    def encode_array(self, ids: np.ndarray) -> np.ndarray:
        """`encode` for numpy ids (`inputs_array`), as a numpy array `[B, num_layers, T, output_dim]`.

        The embedder's entry point: on a CPU build with MKL and a fully frozen biLM it never builds a paddle
        tensor after the token layer.
        """
        self._check_ids_shape(np.shape(ids))
        ids = paddle.to_tensor(np.asarray(ids, dtype="int64"))
        with paddle.no_grad():
            out = self._packed_layers(ids)
            if out is None:
                out = self._layers(ids).numpy()
        return out

    # ---------------------------------------------------------------- the mixes
    def mix_layers(self, layers: paddle.Tensor, mask: paddle.Tensor) -> dict:
        """The output dict of `forward` from (possibly cached) `encode` output and the `[B, T]` token mask.

        If `layers` has more time steps than `mask` it is cut, if fewer it is zero-padded.
        """
        if not isinstance(layers, paddle.Tensor):
            layers = paddle.to_tensor(np.asarray(layers, dtype="float32"))
        if layers.ndim != 4 or layers.shape[1] != self.num_layers:
            raise UserError(f"layers must be [B, {self.num_layers}, T, D], got {list(layers.shape)}")
        mask = mask.astype("bool")
        T = mask.shape[1]
        if layers.shape[2] > T:
            layers = layers[:, :, :T]
        elif layers.shape[2] < T:
            B, L, t, D = layers.shape
            layers = paddle.concat([layers, paddle.zeros([B, L, T - t, D], dtype=layers.dtype)], axis=2)
        m = mask.astype(layers.dtype).unsqueeze(-1)
        reps = [self.dropout(mix(layers, mask)) * m for mix in self.scalar_mixes]
        return {"elmo_representations": reps, "mask": mask}

    def forward(self, ids: paddle.Tensor) -> dict:
        """`{'elmo_representations': [Tensor [B, T, output_dim]] * n, 'mask': bool Tensor [B, T]}`."""
        if not isinstance(ids, paddle.Tensor):
            ids = paddle.to_tensor(np.asarray(ids, dtype="int64"))
        layers = self._layers(ids) if self.requires_grad_top_layers else self.encode(ids)
        return self.mix_layers(layers, self.token_mask(ids))

    def l2_penalty(self) -> paddle.Tensor:
        """Sum of the mixes' penalties, l2_coef * ||w||^2 each: add it to the task loss."""
        total = self.scalar_mixes[0].l2_penalty()
        for mix in list(self.scalar_mixes)[1:]:
            total = total + mix.l2_penalty()
        return total
