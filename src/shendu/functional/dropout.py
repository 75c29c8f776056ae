"""Dropout (Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov 2014): zero each
element with probability ``p`` and scale the rest by ``1/(1-p)`` ("inverted" dropout), so
``E[dropout(x)] = x`` and evaluation needs no rescaling.

The mask comes from shendu's one seeded generator: the same ``manual_seed`` gives the
same mask, bit for bit. Backward multiplies by the same mask: ``dx = g m / (1-p)``.
"""

from __future__ import annotations

import numpy as np

from shendu.autograd import Function
from shendu.backend import rng
from shendu.tensor import Tensor

__all__ = ["dropout"]


class Dropout(Function):
    saved_inputs = ()

    def forward(self, a, mask=None):
        self.mask = mask
        return a * mask

    def backward(self, g):
        return g * self.mask


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Inverted dropout; the identity when ``training`` is False or ``p == 0``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability has to be between 0 and 1, got {p}")
    if not training or p == 0.0:
        return x
    dt = x.data.dtype
    if p == 1.0:
        mask = np.zeros(x.data.shape, dt)
    else:
        keep = rng().random(x.data.shape, dtype=np.float32 if dt == np.float32 else np.float64)
        mask = (keep >= p).astype(dt) * dt.type(1.0 / (1.0 - p))
    return Dropout.apply(x, mask=mask)
