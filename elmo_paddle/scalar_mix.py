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

    ``mix = gamma * sum_j softmax(w)_j * tensor_j``, with one trainable scalar `w_j` per input tensor and
    one trainable scale `gamma`.  An ELMo task model holds one `ScalarMix` per place it uses ELMo (e.g. at
    the input and at the output of its RNN), each learning its own weighting of the frozen biLM layers.

    Parameters
    ----------
    mixture_size : int
        Number of tensors mixed, one per biLM layer: ``1 + num_layers`` (the token layer, then each LSTM
        layer), so 3 for a 2-layer biLM.  Must be >= 1.
    do_layer_norm : bool, optional (default = False)
        Normalise each tensor to zero mean and unit variance before weighting it.  The statistics are taken
        over the real tokens (`mask` in `forward`, which is then required) and all features of *each
        sentence separately*, not over the batch (module docstring: why).
    initial_scalar_parameters : sequence of float, optional (default = None)
        The starting `w`, one value per tensor, before the softmax.  None starts at all zeros, i.e. an
        equal-weight average of the layers.
    trainable : bool, optional (default = True)
        If False, `w` and `gamma` keep their initial values (their `stop_gradient` is set).
    gamma_init : float, optional (default = 1.0)
        The starting `gamma`.
    l2_coef : float, optional (default = 0.0)
        Weight `lambda` of `l2_penalty()` = ``lambda * sum_j w_j ** 2``: bilm-tf's convention, which equals
        Paddle's ``L2Decay(2 * lambda)``.  Only `w` is penalised, never `gamma`; a large value pulls the
        weighting towards the plain average.  Must be >= 0.
    top_layer_only : bool, optional (default = False)
        Ignore `w` and return ``gamma * tensors[-1]``, the top layer alone (bilm-tf's `use_top_only`);
        `w` is then frozen and `l2_penalty()` is 0.  The same as ``only_layer=-1``.
    only_layer : int, optional (default = None)
        Ignore `w` and return ``gamma * tensors[only_layer]``, one layer alone (negative counts from the top).
        ``0`` is the biLM's token layer: context-free vectors, the "pretrained word vectors" control that
        tells how much of an ELMo gain is context.  `w` is frozen and `l2_penalty()` is 0.

    Raises
    ------
    UserError
        For `mixture_size` < 1, an `initial_scalar_parameters` of another length, a negative `l2_coef`, or an
        `only_layer` outside ``-mixture_size .. mixture_size - 1``.
    """

    def __init__(self, mixture_size: int, do_layer_norm: bool = False,
                 initial_scalar_parameters: Sequence[float] | None = None, trainable: bool = True,
                 gamma_init: float = 1.0, l2_coef: float = 0.0, top_layer_only: bool = False,
                 only_layer: int | None = None):
        super().__init__()
        if mixture_size < 1:
            raise UserError(f"ScalarMix needs at least one layer, got mixture_size={mixture_size}")
        init = [0.0] * mixture_size if initial_scalar_parameters is None else list(initial_scalar_parameters)
        if len(init) != mixture_size:
            raise UserError(f"initial_scalar_parameters has {len(init)} values for {mixture_size} layers")
        if l2_coef < 0:
            raise UserError(f"l2_coef must be >= 0, got {l2_coef}")
        if top_layer_only and only_layer not in (None, -1, mixture_size - 1):
            raise UserError(f"top_layer_only contradicts only_layer={only_layer}")
        only_layer = -1 if top_layer_only and only_layer is None else only_layer
        if only_layer is not None and not -mixture_size <= only_layer < mixture_size:
            raise UserError(f"only_layer must be in {-mixture_size}..{mixture_size - 1} for {mixture_size} layers, "
                            f"got {only_layer}")
        self.mixture_size = mixture_size
        self.do_layer_norm = do_layer_norm
        self.only_layer = None if only_layer is None else only_layer % mixture_size  # 0 .. mixture_size - 1
        self.l2_coef = float(l2_coef)
        self.scalar_parameters = self.create_parameter(
            [mixture_size], dtype="float32", default_initializer=nn.initializer.Assign(init))
        self.gamma = self.create_parameter(
            [1], dtype="float32", default_initializer=nn.initializer.Constant(float(gamma_init)))
        if not trainable:
            self.scalar_parameters.stop_gradient = True
            self.gamma.stop_gradient = True
        if self.only_layer is not None:  # w is unused: keep it out of the optimiser's way
            self.scalar_parameters.stop_gradient = True

    def weights(self) -> paddle.Tensor:
        """The normalised layer weights s = softmax(w), shape [mixture_size]."""
        if self.only_layer is not None:
            return F.one_hot(paddle.to_tensor(self.only_layer), self.mixture_size).astype("float32")
        return F.softmax(self.scalar_parameters, axis=0)

    def l2_penalty(self) -> paddle.Tensor:
        """l2_coef * sum_j w_j^2 (bilm-tf's lambda * ||w||^2; 0 with one layer alone)."""
        if self.only_layer is not None or self.l2_coef == 0.0:
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
        """Mix the layers of a batch.

        Parameters
        ----------
        tensors : paddle.Tensor or sequence of paddle.Tensor
            The layers to mix, lowest first, float32: one tensor of shape
            (batch_size, mixture_size, timesteps, dim), as `Elmo.encode` returns them, or a list of
            `mixture_size` tensors of shape (batch_size, timesteps, dim).
        mask : paddle.Tensor of shape (batch_size, timesteps), bool or 0/1, optional (default = None)
            True (1) at real tokens, False (0) at padding.  Required with `do_layer_norm`, which takes its
            statistics over the real tokens only; unused otherwise.

        Returns
        -------
        paddle.Tensor of shape (batch_size, timesteps, dim)
            ``gamma * sum_j s_j * tensors[j]`` with ``s = softmax(w)``.  Padding positions are not zeroed
            here: without layer norm they mix whatever the inputs hold there (zeros, from `Elmo.encode`);
            with layer norm they are normalised with their sentence's statistics like the real tokens.
            `Elmo` multiplies its output by the mask.

        Raises
        ------
        UserError
            If the number of layers is not `mixture_size`, or `do_layer_norm` is on and `mask` is None.
        """
        layers = list(paddle.unbind(tensors, axis=1)) if isinstance(tensors, paddle.Tensor) else list(tensors)
        if len(layers) != self.mixture_size:
            raise UserError(f"ScalarMix was built for {self.mixture_size} layers, got {len(layers)}")
        if self.only_layer is not None:
            return self.gamma * layers[self.only_layer]
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
