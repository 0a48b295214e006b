"""ScalarMix: the task-specific weighting of the biLM layers (ELMo paper eq. 1).

    ELMo_k = gamma * sum_j s_j * h_{k,j},    s = softmax(w)

`w` (one scalar per layer) starts at 0, i.e. an equal-weight average; `gamma` scales the whole vector and
starts at `gamma_init`.  Both are trained with the task model; the biLM layers `h` are not.

Regularisation.  `l2_penalty()` returns ``l2_coef * sum_j w_j**2`` -- bilm-tf's convention
(``lambda * ||w||^2``), NOT Paddle's `L2Decay(coeff)`, whose loss term is ``0.5 * coeff * ||w||^2``:
`l2_coef = lam` here equals `L2Decay(2 * lam)`.  Only `w` is penalised (as in bilm-tf), never `gamma`; a large
`l2_coef` pulls the layer weights towards the plain average.  Add the penalty to the task loss yourself.

Layer norm (`do_layer_norm=True`): each layer is normalised to zero mean and unit variance before the mix,
with the statistics taken over the real (unmasked) tokens and all features *of each sentence separately*.
AllenNLP and bilm-tf pool the statistics over the whole batch, which makes a sentence's vector depend on
the sentences it is batched with; per-sentence statistics keep ELMo deterministic per sentence.
"""
from __future__ import annotations

from typing import Sequence

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .errors import UserError


class ScalarMix(nn.Layer):
    """Softmax-weighted, gamma-scaled sum of `mixture_size` equally shaped tensors.

    Args:
        mixture_size: number of layers mixed (3 for a 2-layer biLM: token layer, LSTM 1, LSTM 2).
        do_layer_norm: normalise each layer over the unmasked positions of each sentence first (needs `mask`).
        initial_scalar_parameters: initial `w` (default all 0: equal weights).
        trainable: if False, `w` and `gamma` are fixed (stop_gradient).
        gamma_init: initial value of `gamma`.
        l2_coef: scale of `l2_penalty()` = l2_coef * sum(w ** 2) (bilm-tf convention, see module doc).
        top_layer_only: ignore `w` and return gamma * (top layer) (bilm-tf's `use_top_only`).

    Input: a list of `mixture_size` tensors `[B, T, D]`, or one tensor `[B, mixture_size, T, D]`;
    `mask [B, T]` (bool or 0/1) marks real tokens.  Output `[B, T, D]`.
    """

    def __init__(self, mixture_size: int, do_layer_norm: bool = False,
                 initial_scalar_parameters: Sequence[float] | None = None, trainable: bool = True,
                 gamma_init: float = 1.0, l2_coef: float = 0.0, top_layer_only: bool = False):
        super().__init__()
        if mixture_size < 1:
            raise UserError(f"ScalarMix needs at least one layer, got mixture_size={mixture_size}")
        init = [0.0] * mixture_size if initial_scalar_parameters is None else list(initial_scalar_parameters)
        if len(init) != mixture_size:
            raise UserError(f"initial_scalar_parameters has {len(init)} values for {mixture_size} layers")
        if l2_coef < 0:
            raise UserError(f"l2_coef must be >= 0, got {l2_coef}")
        self.mixture_size = mixture_size
        self.do_layer_norm = do_layer_norm
        self.top_layer_only = top_layer_only
        self.l2_coef = float(l2_coef)
        self.scalar_parameters = self.create_parameter(
            [mixture_size], dtype="float32", default_initializer=nn.initializer.Assign(init))
        self.gamma = self.create_parameter(
            [1], dtype="float32", default_initializer=nn.initializer.Constant(float(gamma_init)))
        if not trainable:
            self.scalar_parameters.stop_gradient = True
            self.gamma.stop_gradient = True
        if top_layer_only:  # w is unused: keep it out of the optimiser's way
            self.scalar_parameters.stop_gradient = True

    def weights(self) -> paddle.Tensor:
        """The normalised layer weights s = softmax(w), shape [mixture_size]."""
        if self.top_layer_only:
            return F.one_hot(paddle.to_tensor(self.mixture_size - 1), self.mixture_size).astype("float32")
        return F.softmax(self.scalar_parameters, axis=0)

    def l2_penalty(self) -> paddle.Tensor:
        """l2_coef * sum_j w_j^2 (bilm-tf's lambda * ||w||^2; 0 with top_layer_only)."""
        if self.top_layer_only or self.l2_coef == 0.0:
            return paddle.zeros([], dtype="float32")
        return self.l2_coef * paddle.sum(paddle.square(self.scalar_parameters))

    @staticmethod
    def _layer_norm(x: paddle.Tensor, mask: paddle.Tensor) -> paddle.Tensor:
        # x [B, T, D], mask [B, T, 1] float: statistics over each sentence's real tokens and all features
        n = paddle.clip(mask.sum(axis=[1, 2], keepdim=True) * x.shape[-1], min=1.0)
        mean = (x * mask).sum(axis=[1, 2], keepdim=True) / n
        var = (((x - mean) * mask) ** 2).sum(axis=[1, 2], keepdim=True) / n
        return (x - mean) / paddle.sqrt(var + 1e-12)

    def forward(self, tensors: paddle.Tensor | Sequence[paddle.Tensor],
                mask: paddle.Tensor | None = None) -> paddle.Tensor:
        layers = list(paddle.unbind(tensors, axis=1)) if isinstance(tensors, paddle.Tensor) else list(tensors)
        if len(layers) != self.mixture_size:
            raise UserError(f"ScalarMix was built for {self.mixture_size} layers, got {len(layers)}")
        if self.top_layer_only:
            return self.gamma * layers[-1]
        s = self.weights()
        if self.do_layer_norm:
            if mask is None:
                raise UserError("ScalarMix(do_layer_norm=True) needs the mask of real tokens")
            m = mask.astype(layers[0].dtype).unsqueeze(-1)
            layers = [self._layer_norm(h, m) for h in layers]
        out = s[0] * layers[0]
        for j in range(1, self.mixture_size):
            out = out + s[j] * layers[j]
        return self.gamma * out
