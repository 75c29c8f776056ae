"""Embedding lookup as one fused op."""

from __future__ import annotations

import numpy as np

from shendu.autograd import Function
from shendu.tensor import Tensor

__all__ = ["embedding"]


class Embedding(Function):
    r"""``y[..., :] = W[idx[...], :]`` for an integer index array ``idx`` and ``W`` (V, D).

    Backward: row ``v`` of ``dW`` is the sum of ``dy`` over every position that looked ``v``
    up (``np.add.at``: repeated indices add up). The row ``padding_idx`` gets no gradient;
    ``scale_grad_by_freq`` divides each row's gradient by how often the batch used it.
    """

    saved_inputs = ()

    def forward(self, w, idx=None, padding_idx=None, scale_grad_by_freq=False):
        # a copy when kept for backward: the caller may change the index tensor in place
        self.idx, self.wshape = (idx.copy() if self.needs_input_grad[0] else idx), w.shape
        self.padding_idx, self.scale = padding_idx, scale_grad_by_freq
        return w[idx]                                         # (..., D)

    def backward(self, g):
        v, d = self.wshape
        flat = self.idx.reshape(-1)
        g2 = g.reshape(-1, d)
        if self.scale:
            counts = np.bincount(flat, minlength=v)
            g2 = g2 / counts[flat, None].astype(g.dtype)
        gw = np.zeros(self.wshape, g.dtype)
        np.add.at(gw, flat, g2)
        if self.padding_idx is not None:
            gw[self.padding_idx] = 0
        return gw


def embedding(input, weight: Tensor, padding_idx: int | None = None,
              scale_grad_by_freq: bool = False) -> Tensor:
    """Rows of ``weight`` (V, D) picked by the integer tensor ``input`` (...,) -> (..., D)."""
    idx = np.asarray(input.data if isinstance(input, Tensor) else input)
    w = weight.data
    if w.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got "
                         f"{w.shape}")
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: expected integer indices, got {idx.dtype}")
    v = w.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= v):
        bad = idx[(idx < 0) | (idx >= v)].reshape(-1)[0]
        raise IndexError(f"embedding: index {bad} is out of range for {v} embeddings")
    if padding_idx is not None:
        if not -v <= padding_idx < v:
            raise ValueError(f"embedding: padding_idx must be within [-{v}, {v - 1}], got "
                             f"{padding_idx}")
        padding_idx = int(padding_idx) % v
    return Embedding.apply(weight, idx=idx, padding_idx=padding_idx,
                           scale_grad_by_freq=scale_grad_by_freq)

