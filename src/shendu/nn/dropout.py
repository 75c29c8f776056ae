"""Dropout as a module: active in ``train()`` mode, the identity in ``eval()`` mode."""

from __future__ import annotations

from shendu import functional as F
from shendu.nn.module import Module
from shendu.tensor import Tensor

__all__ = ["Dropout"]


class Dropout(Module):
    """Zero each element with probability ``p`` while training and scale the survivors by
    ``1 / (1 - p)``, so every unit's expected output is the same in ``train()`` and
    ``eval()`` mode ("inverted" dropout; Hinton et al. 2012, Srivastava et al. 2014).

    The mask comes from shendu's seeded generator: the same seed drops the same units.
    ``inplace=True`` is accepted for compatibility; the result is computed out of place.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: probability has to be between 0 and 1, got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
