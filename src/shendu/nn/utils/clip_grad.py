"""Gradient clipping (in place on ``p.grad``), with torch's rules.

Clipping by the global norm keeps one exploding step from undoing training, the remedy
for exploding gradients in recurrent networks proposed by Pascanu, Mikolov & Bengio
(2013, *On the difficulty of training recurrent neural networks*).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from shendu.tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm", "clip_grads_with_norm_"]

TensorOrTensors = Tensor | Iterable[Tensor]


def _grads(parameters: TensorOrTensors) -> list[np.ndarray]:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad.data for p in parameters if p.grad is not None]


def _vector_norm(a: np.ndarray, p: float) -> float:
    """``‖a‖_p`` of the flattened array, accumulated in float64 (``p`` may be 0 or ±inf)."""
    x = np.abs(a.ravel()).astype(np.float64, copy=False)
    if x.size == 0:
        return 0.0 if p != -math.inf else math.inf
    if p == math.inf:
        return float(x.max())
    if p == -math.inf:
        return float(x.min())
    if p == 0:
        return float(np.count_nonzero(x))
    if p == 1:
        return float(x.sum())
    if p == 2:
        return math.sqrt(float(np.dot(x, x)))
    return float(np.sum(x ** p) ** (1.0 / p))


def get_total_norm(tensors: TensorOrTensors, norm_type: float = 2.0,
                   error_if_nonfinite: bool = False) -> Tensor:
    r"""The ``norm_type``-norm of all ``tensors`` together, as if concatenated into one
    vector: :math:`\|(\|t_1\|_p, \dots, \|t_n\|_p)\|_p`. ``inf`` gives the largest
    absolute entry; ``0``, as in torch, the number of tensors that are not all zero.
    Returned as a 0-d tensor of the tensors' dtype (float32 when there are none)."""
    if isinstance(tensors, Tensor):
        tensors = [tensors]
    arrays = [t.data if isinstance(t, Tensor) else np.asarray(t) for t in tensors]
    p = float(norm_type)
    if not arrays:
        return Tensor(np.asarray(0.0, np.float32))
    dtype = np.result_type(*arrays)
    norms = np.array([_vector_norm(a, p) for a in arrays], np.float64)
    total = _vector_norm(norms, p)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"clip_grad_norm_: the total norm of order {p} of the gradients is non-finite "
            f"({total}), so it cannot be clipped; pass error_if_nonfinite=False to scale the "
            "gradients by it anyway"
        )
    return Tensor(np.asarray(total, dtype))


def clip_grads_with_norm_(parameters: TensorOrTensors, max_norm: float,
                          total_norm: Tensor | float) -> None:
    r"""Scale every gradient in place by :math:`\min(1, \text{max\_norm} /
    (\text{total\_norm} + 10^{-6}))` (computed in the gradients' dtype, as torch does).
    A NaN total norm makes the gradients NaN, as in torch."""
    grads = _grads(parameters)
    if not grads:
        return
    total = total_norm.data if isinstance(total_norm, Tensor) else np.asarray(total_norm)
    t = total.dtype.type if total.dtype.kind == "f" else np.float64
    coef = t(max_norm) / (t(total) + t(1e-6))
    if coef < 1 or np.isnan(coef):
        with np.errstate(invalid="ignore"):       # inf·0 → NaN, as in torch
            for g in grads:
                g *= g.dtype.type(coef)


def clip_grad_norm_(parameters: TensorOrTensors, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> Tensor:
    r"""Rescale all gradients together so that their joint ``norm_type``-norm is at most
    ``max_norm``; return that norm as it was before clipping.

    With :math:`N` the total norm (see :func:`get_total_norm`), every gradient is
    multiplied by :math:`\min(1,\ \text{max\_norm} / (N + 10^{-6}))`, so the direction of
    the whole update is kept. ``norm_type`` may be any positive real, ``inf`` or 0.
    ``error_if_nonfinite=True`` raises when :math:`N` is NaN or infinite.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    parameters = list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite)
    clip_grads_with_norm_(parameters, max_norm, total)
    return total


def clip_grad_value_(parameters: TensorOrTensors, clip_value: float) -> None:
    """Clip every gradient element into ``[-clip_value, clip_value]``, in place."""
    c = float(clip_value)
    for g in _grads(parameters):
        t = g.dtype.type
        np.clip(g, t(-c), t(c), out=g)
