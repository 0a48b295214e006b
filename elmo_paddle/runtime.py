"""Process-level runtime helpers shared by pretraining, LM fine-tuning and the task runs."""
from __future__ import annotations

import numpy as np
import paddle


def set_threads(n: int) -> None:
    """Threads of paddle's CPU kernels (its OpenMP and MKL pools).

    paddle 3.x has no `paddle.set_num_threads`; an earlier `hasattr` guard made `train.threads` a silent no-op.
    """
    paddle.base.core.set_num_threads(int(n))


def to_tensors(batch: dict[str, np.ndarray]) -> dict[str, paddle.Tensor]:
    """A batch of numpy arrays as paddle tensors under the same keys."""
    return {k: paddle.to_tensor(v) for k, v in batch.items()}
