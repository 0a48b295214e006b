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


def _weights_sha256(model_dir) -> str | None:
    """The weights' checksum from the manifest (identifies the biLM in task runs and caches), or None."""
    try:
        return ckpt.read_json(model_dir, ckpt.MANIFEST)["files"]["weights.safetensors"]["sha256"]
    except (UserError, KeyError, TypeError):
        return None


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


def strip_boundaries(layers, mask):
    """Layers of `<S> tokens </S>`, `[B, L, T + 2, D]` -> the tokens' `[B, L, T, D]`, padding zeroed.

    `mask [B, T]` marks real tokens.  numpy arrays and paddle tensors alike, and without reading T, so the
    eager path, the numpy inference path and the exported graph (dynamic T under `to_static`) share it.
    """
    return layers[:, :, 1:-1] * mask.astype(layers.dtype)[:, None, :, None]


class Elmo(nn.Layer):
    """ELMo representations from a frozen pretrained biLM and trainable scalar mixes.

    Parameters
    ----------
    model_dir : str or os.PathLike
        A biLM model directory, or a pretraining output directory (then its ``best/``, else ``final/``).
    num_output_representations : int, default 1
        How many separately mixed representations `forward` returns (e.g. 2: one at the input and one at
        the output of a task RNN, as in the ELMo paper's SQuAD model).
    dropout : float, default 0.5
        Dropout on each mixed representation; active in ``train()`` mode only.
    gamma_init : float, default 1.0
        Initial value of each mix's scale ``gamma``.
    layer_norm : bool, default False
        Normalise each biLM layer (per sentence, over its real tokens) before mixing.
    l2_coef : float, default 0.0
        ``l2_penalty()`` is ``l2_coef * sum ||w||^2`` over the mixes' layer weights (bilm-tf's convention).
    requires_grad_top_layers : int, default 0
        Unfreeze this many of the top LSTM layers (0: a fully frozen biLM).  Their weights become parameters
        of this layer and train with the task; `forward` then runs the biLM with autograd (the same
        LSTMP code as pretraining), so its outputs change as training goes on: do not cache them.
    top_layer_only : bool, default False
        Every mix returns ``gamma * (top LSTM layer)`` instead of a weighted sum of all layers.
    only_layer : int or None, default None
        Every mix returns ``gamma * (layer only_layer)`` (negative counts from the top; `ScalarMix`).  ``0``,
        the token layer, gives context-free vectors from the biLM's token encoder: the control that tells how
        much of an ELMo gain comes from context.
    verify : bool, default True
        Check the model files against their manifest's sha256 checksums before loading.

    Attributes
    ----------
    num_layers : int
        Layers the biLM offers, ``1 + bilm.num_layers`` (token layer, then each LSTM layer).
    output_dim : int
        Width of every layer and every representation, ``2 * proj_dim`` (forward and backward states).
    vocab, unit
        The biLM's vocabulary and its token unit (``"char"`` or ``"word"``), for `batch_to_ids`.

    Which path runs is decided once, here: a fully frozen biLM on a CPU build with MKL is snapshotted for the
    packed numpy path (`BiLM.freeze_for_inference`), and `forward` calls `encode` (no gradient); with
    ``requires_grad_top_layers > 0`` `forward` runs the biLM with autograd.  The biLM is not a sublayer:
    ``parameters()`` and ``state_dict()`` hold only the mixes (and the unfrozen layers), so task
    checkpoints stay small and the biLM is reloaded from ``model_dir``.
    """

    def __init__(self, model_dir: str | os.PathLike, num_output_representations: int = 1, dropout: float = 0.5,
                 gamma_init: float = 1.0, layer_norm: bool = False, l2_coef: float = 0.0,
                 requires_grad_top_layers: int = 0, top_layer_only: bool = False, verify: bool = True,
                 only_layer: int | None = None):
        super().__init__()
        if num_output_representations < 1:
            raise UserError(f"num_output_representations must be >= 1, got {num_output_representations}")
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {dropout}")
        self.model_dir = resolve_model_dir(model_dir)
        bilm, vocab, conf = load_bilm(self.model_dir, verify=verify)
        self.weights_sha256 = _weights_sha256(self.model_dir)
        cfg = bilm.cfg
        if not 0 <= requires_grad_top_layers <= cfg.num_layers:
            raise UserError(f"requires_grad_top_layers must be in 0..{cfg.num_layers}, got {requires_grad_top_layers}")
        for p in bilm.parameters():
            p.stop_gradient = True
        bilm.eval()
        self.__dict__["_bilm"] = bilm  # deliberately not a sublayer: see the class docstring
        self.vocab, self.unit, self.config = vocab, vocab.unit, conf
        self.uses_chars = cfg.token_encoder == "char_cnn"
        self.num_layers = cfg.num_layers + 1
        self.output_dim = 2 * cfg.proj_dim
        self.requires_grad_top_layers = requires_grad_top_layers
        self.scalar_mixes = nn.LayerList([
            ScalarMix(self.num_layers, do_layer_norm=layer_norm, gamma_init=gamma_init, l2_coef=l2_coef,
                      top_layer_only=top_layer_only, only_layer=only_layer)
            for _ in range(num_output_representations)])
        self.dropout = nn.Dropout(dropout)
        if requires_grad_top_layers:
            tuned = list(bilm.lstm.layers)[-requires_grad_top_layers:]
            for p in (p for layer in tuned for p in layer.parameters()):
                p.stop_gradient = False
            self.tuned_lstm_layers = nn.LayerList(tuned)
        else:  # frozen for good: inference may run a packed snapshot of the weights
            bilm.freeze_for_inference()

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
        """Sentences -> the biLM's input ids.

        Parameters
        ----------
        sentences : list of str or list of list of str
            Raw strings (tokenised with the model's unit) or token lists (for a char-unit model: single
            characters).  Tokens are width-normalised; unknown ones become ``<UNK>``.

        Returns
        -------
        paddle.Tensor
            int64 ``[B, T]`` token ids, 0 = padding, ``T = max(1, longest)``; for a biLM with a char-CNN token
            layer ``[B, T, max_chars_per_token]`` character ids instead (all-0 rows are padding), so a word
            outside the vocab still gets a vector from its spelling.
        """
        if len(sentences) == 0:
            raise UserError("no sentences given (empty list)")
        return paddle.to_tensor(self.inputs_array(sentences_to_token_lists(sentences, self.unit)))

    def inputs_array(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """What `batch_to_ids` returns, as numpy, for already tokenised sentences."""
        if self.uses_chars:
            return self.vocab.chars_array(token_lists, self._bilm.cfg.max_chars_per_token)
        return ids_array(token_lists, self.vocab)

    @staticmethod
    def token_mask(ids: paddle.Tensor) -> paddle.Tensor:
        """`[B, T]` bool: True at real tokens of `batch_to_ids` output (token ids or character ids)."""
        return ids[:, :, 0] != 0 if ids.ndim == 3 else ids != 0

    def _as_ids(self, ids) -> paddle.Tensor:
        shape = list(np.shape(ids))
        if len(shape) != (3 if self.uses_chars else 2):
            want = "[batch, time, max_chars_per_token] character ids" if self.uses_chars else "[batch, time] ids"
            raise UserError(f"this model takes {want} (see batch_to_ids), got shape {shape}")
        return ids if isinstance(ids, paddle.Tensor) else paddle.to_tensor(np.asarray(ids, dtype="int64"))

    # ---------------------------------------------------------------- the biLM
    def _wrap(self, ids: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor | None, paddle.Tensor]:
        """`<S> tokens </S>` for the biLM: (token ids, character ids or None, lengths)."""
        if self.uses_chars:
            C = self._bilm.cfg.max_chars_per_token
            chars, lengths = wrap_chars_with_boundaries(ids, self.vocab.char_ids(BOS, C), self.vocab.char_ids(EOS, C))
            return (chars[:, :, 0] != 0).astype("int64"), chars, lengths  # token ids: only where tokens are
        wrapped, lengths = wrap_with_boundaries(ids)
        return wrapped, None, lengths

    def _layers(self, ids: paddle.Tensor) -> paddle.Tensor:
        """The biLM's layers through paddle ops (with autograd where layers are unfrozen): `[B, L, T, D]`."""
        wrapped, chars, lengths = self._wrap(ids)
        layers = paddle.stack(self._bilm(wrapped, chars, lengths=lengths), axis=1)
        return strip_boundaries(layers, self.token_mask(ids))

    def encode_array(self, ids) -> np.ndarray:
        """`encode` for numpy ids (`inputs_array`), as a numpy array `[B, num_layers, T, output_dim]`.

        The embedder's entry point: on a CPU build with MKL and a fully frozen biLM it never builds a paddle
        tensor after the token layer (`BiLM.packed_layers`).
        """
        ids = self._as_ids(ids)
        with paddle.no_grad():
            if not self._bilm.inference_packed:
                return self._layers(ids).numpy()
            wrapped, chars, lengths = self._wrap(ids)
            return strip_boundaries(self._bilm.packed_layers(wrapped, lengths, chars), self.token_mask(ids).numpy())

    def encode(self, ids: paddle.Tensor) -> paddle.Tensor:
        """Frozen biLM activations, no gradient.

        Parameters
        ----------
        ids : paddle.Tensor
            `batch_to_ids` output, ``[B, T]`` (or ``[B, T, C]`` character ids).

        Returns
        -------
        paddle.Tensor
            float32 ``[B, num_layers, T, output_dim]``: the token layer (duplicated to ``[x; x]``) and each
            LSTM layer (forward and backward states concatenated, both aligned to token t); padding is 0.
            A sentence gets the same vectors alone or in any batch (up to float rounding).
        """
        ids = self._as_ids(ids)
        if self._bilm.inference_packed:
            out = paddle.to_tensor(self.encode_array(ids))
        else:
            with paddle.no_grad():
                out = self._layers(ids)
        out.stop_gradient = True
        return out

    # ---------------------------------------------------------------- the mixes
    def mix_layers(self, layers: paddle.Tensor, mask: paddle.Tensor) -> dict:
        """The output of `forward` from (possibly cached) `encode` output.

        Parameters
        ----------
        layers : paddle.Tensor or numpy.ndarray
            ``[B, num_layers, T', output_dim]`` biLM layers (`encode`, or a cache of it).  If T' > T the extra
            steps are cut, if T' < T they are zero-padded.
        mask : paddle.Tensor
            ``[B, T]`` bool (or 0/1): the real tokens.

        Returns
        -------
        dict
            As `forward`: ``'elmo_representations'`` (list of ``[B, T, output_dim]``) and ``'mask'`` (bool ``[B, T]``).
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
        """Mixed ELMo representations.

        Parameters
        ----------
        ids : paddle.Tensor
            `batch_to_ids` output: int64 ``[B, T]`` token ids (or ``[B, T, C]`` character ids), 0 = padding.

        Returns
        -------
        dict
            ``'elmo_representations'``: a list of `num_output_representations` float32 tensors
            ``[B, T, output_dim]`` (dropout applied in train mode; padding is 0);
            ``'mask'``: bool ``[B, T]``, True at real tokens.
        """
        ids = self._as_ids(ids)
        layers = self._layers(ids) if self.requires_grad_top_layers else self.encode(ids)
        return self.mix_layers(layers, self.token_mask(ids))

    def l2_penalty(self) -> paddle.Tensor:
        """Sum of the mixes' penalties, ``l2_coef * ||w||^2`` each (a 0-d tensor): add it to the task loss."""
        total = self.scalar_mixes[0].l2_penalty()
        for mix in list(self.scalar_mixes)[1:]:
            total = total + mix.l2_penalty()
        return total
