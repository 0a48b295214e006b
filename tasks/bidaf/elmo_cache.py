"""BiDAF's use of the shared frozen-biLM layer cache: context windows carry a whitespace placeholder."""
from __future__ import annotations

from typing import Sequence

from elmo_paddle.layer_cache import ElmoLayerCache as _Base


class ElmoLayerCache(_Base):
    """`cache(token_lists)` -> float32 Tensor [B, L, T, D]; `<SP>` tokens are read as a space character."""

    def prepare(self, tokens: Sequence[str]) -> list[str]:
        # our whitespace placeholder back to the character: a char-unit biLM takes one char per token
        return [" " if t == "<SP>" else t for t in tokens]
