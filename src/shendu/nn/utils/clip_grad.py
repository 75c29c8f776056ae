"""Gradient clipping (in place on ``p.grad``), with torch's rules."""

from __future__ import annotations

import numpy as np

from shendu.tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> Tensor:
    """Scale all gradients together so their joint norm is at most ``max_norm``.

    Returns the total norm before clipping. Scale factor ``max_norm / (norm + 1e-6)``,
    applied only when it is below 1 (as torch).
    """
    grads = _grads(parameters)
    if not grads:
        return Tensor(np.asarray(0.0, np.float32))
    dt = grads[0].data.dtype
    if norm_type == float("inf"):
        total = max(float(np.abs(g.data).max()) for g in grads)
    else:
        total = float(sum(float((np.abs(g.data.astype(np.float64)) ** norm_type).sum())
                          for g in grads)) ** (1.0 / norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the "
                           "gradients is non-finite, so it cannot be clipped")
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g.data *= g.data.dtype.type(coef)
    return Tensor(np.asarray(total, dt))


def clip_grad_value_(parameters, clip_value: float) -> None:
    """Clip every gradient element into ``[-clip_value, clip_value]``."""
    for g in _grads(parameters):
        np.clip(g.data, -clip_value, clip_value, out=g.data)
