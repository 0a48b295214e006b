"""An exponential moving average of a model's trainable weights, evaluated and saved in place of the raw ones.

Why: BiDAF as published keeps "the moving averages of all weights of the model ... with the exponential decay
rate of 0.999" and uses them at test time (Seo et al. 2017, section 4); averaging smooths the last steps' noise,
which matters most with small data such as CMRC 2018's 10,142 questions.  Off by default (`ema_decay: null`),
so runs without it are unchanged.  Early on the decay is `min(decay, (1 + n) / (10 + n))` after n updates (as
TensorFlow's `ExponentialMovingAverage` does with `num_updates`), so the average does not linger on the
random initial weights.  The averages are part of every checkpoint: a resumed run continues them
exactly (tests/test_fit_resume.py).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import paddle

from elmo_paddle.errors import UserError


class WeightAverage:
    """Parameters: `model` (its trainable entries, by `state_dict` name, are averaged) and `decay` in (0, 1)."""

    def __init__(self, model: paddle.nn.Layer, decay: float) -> None:
        self.decay, self.updates = float(decay), 0
        self.params = {k: v for k, v in model.state_dict().items() if not v.stop_gradient}
        self.shadow = {k: v.numpy().copy() for k, v in self.params.items()}

    def update(self) -> None:
        """Fold the current weights in (call after each optimizer step)."""
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, p in self.params.items():
            s = self.shadow[k]
            s *= d
            s += (1 - d) * p.numpy()
        self.updates += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model for the `with` block, the raw ones back after it."""
        raw = {k: p.numpy().copy() for k, p in self.params.items()}
        try:
            for k, p in self.params.items():
                p.set_value(self.shadow[k])
            yield
        finally:
            for k, p in self.params.items():
                p.set_value(raw[k])

    def load(self, arrays: dict[str, np.ndarray], updates: int) -> None:
        """Continue the averages a checkpoint holds (`shadow` and `updates` are what it saved)."""
        if set(arrays) != set(self.shadow) or any(arrays[k].shape != self.shadow[k].shape for k in arrays):
            raise UserError("the checkpoint's weight averages do not fit this model")
        self.shadow = {k: np.array(a, dtype=self.shadow[k].dtype) for k, a in arrays.items()}
        self.updates = int(updates)
