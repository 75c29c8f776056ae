"""Normalisation layers as fused ops with hand-derived backward."""

from __future__ import annotations

import numpy as np

from shendu.autograd import Function
from shendu.tensor import Tensor

__all__ = ["layer_norm"]


class LayerNorm(Function):
    r"""Layer normalisation (Ba, Kiros & Hinton 2016) over the last ``D`` elements of each row.

    With ``mu = mean(x)``, ``sigma^2 = mean((x - mu)^2)`` (biased) and
    ``r = 1 / sqrt(sigma^2 + eps)``: ``xhat = (x - mu) r``, ``y = xhat * w + b``.

    Backward, with ``dxhat = dy * w`` and means over the normalised elements:
    ``dx = r (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))``,
    ``dw = sum_rows(dy * xhat)``, ``db = sum_rows(dy)``.
    """

    def forward(self, x, w=None, b=None, d=1, eps=1e-5):
        shape = x.shape
        x2 = x.reshape(-1, d)                                  # (M, D)
        mu = x2.mean(axis=1, keepdims=True)
        xc = x2 - mu
        var = np.einsum("ij,ij->i", xc, xc)[:, None]
        var /= d
        var += eps
        rstd = 1.0 / np.sqrt(var)                              # (M, 1)
        xc *= rstd                                             # xhat
        self.xhat, self.rstd, self.shape = xc, rstd, shape
        self.w = w
        if w is None:
            y = xc.copy()
        else:
            y = xc * w.reshape(-1)
            if b is not None:
                y += b.reshape(-1)
        return y.reshape(shape)

    def backward(self, g):
        xhat, rstd, w = self.xhat, self.rstd, self.w
        d = xhat.shape[1]
        g2 = g.reshape(-1, d)                                  # (M, D)
        need = self.needs_input_grad
        gw = gb = None
        if len(need) > 1 and w is not None and need[1]:
            gw = np.einsum("ij,ij->j", g2, xhat).reshape(w.shape)
        if len(need) > 2 and need[2]:
            gb = g2.sum(axis=0).reshape(w.shape)
        gx = None
        if need[0]:
            dxh = g2 * w.reshape(-1) if w is not None else g2.copy()
            m1 = dxh.mean(axis=1, keepdims=True)
            m2 = np.einsum("ij,ij->i", dxh, xhat)[:, None]
            m2 /= d
            dxh -= m1
            dxh -= xhat * m2
            dxh *= rstd
            gx = dxh.reshape(self.shape)
        if w is None:
            return gx
        return (gx, gw) if len(need) == 2 else (gx, gw, gb)


def layer_norm(input: Tensor, normalized_shape, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise over the trailing dims ``normalized_shape``, then scale and shift."""
    ns = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) \
        else tuple(int(s) for s in normalized_shape)
    xs = input.data.shape
    if len(ns) == 0 or xs[len(xs) - len(ns):] != ns or len(xs) < len(ns):
        raise ValueError(f"layer_norm: expected input (..., {', '.join(map(str, ns))}) for "
                         f"normalized_shape {ns}, got {xs}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.data.shape != ns:
            raise ValueError(f"layer_norm: {name} must have shape {ns}, got {t.data.shape}")
    d = int(np.prod(ns))
    if weight is None and bias is not None:
        weight = Tensor(np.ones(ns, input.data.dtype))
    if weight is None:
        return LayerNorm.apply(input, d=d, eps=eps)
    if bias is None:
        return LayerNorm.apply(input, weight, d=d, eps=eps)
    return LayerNorm.apply(input, weight, bias, d=d, eps=eps)
