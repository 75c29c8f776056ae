"""Reductions: sum, mean, var/std, max/min (with indices), amax/amin, logsumexp, argmax."""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from shendu.autograd import Function
from shendu.functional._util import norm_axes, resolve_dim_kw
from shendu.tensor import Tensor

__all__ = ["sum", "mean", "var", "std", "max", "min", "amax", "amin", "logsumexp", "argmax",
           "argmin", "prod", "norm"]

_sum = sum
MaxResult = namedtuple("MaxResult", ["values", "indices"])


def _expand_back(g: np.ndarray, shape: tuple, axes, keepdim: bool) -> np.ndarray:
    """Broadcast a reduced gradient back over the input's shape."""
    if axes is None:
        return np.broadcast_to(g.reshape((1,) * len(shape)), shape)
    if not keepdim:
        g = np.expand_dims(g, axes)
    return np.broadcast_to(g, shape)


class Sum(Function):
    def forward(self, a, axes=None, keepdim=False):
        self.shape, self.axes, self.keepdim = a.shape, axes, keepdim
        return np.asarray(a.sum(axis=axes, keepdims=keepdim))

    def backward(self, g):
        return _expand_back(g, self.shape, self.axes, self.keepdim)


class Mean(Function):
    def forward(self, a, axes=None, keepdim=False):
        self.shape, self.axes, self.keepdim = a.shape, axes, keepdim
        self.n = a.size if axes is None else int(np.prod([a.shape[i] for i in axes]))
        return np.asarray(a.mean(axis=axes, keepdims=keepdim))

    def backward(self, g):
        return _expand_back(g / self.n, self.shape, self.axes, self.keepdim)


class Var(Function):
    def forward(self, a, axes=None, keepdim=False, correction=1):
        n = a.size if axes is None else int(np.prod([a.shape[i] for i in axes]))
        self.axes, self.keepdim = axes, keepdim
        self.centered = a - a.mean(axis=axes, keepdims=True)
        self.denom = n - correction
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (self.centered * self.centered).sum(axis=axes, keepdims=keepdim) / self.denom
        return np.asarray(out, dtype=a.dtype)

    def backward(self, g):
        c = self.centered
        g = _expand_back(g, c.shape, self.axes, self.keepdim)
        return g * c * (2.0 / self.denom)


class AMax(Function):
    """Max over axes; ties share the gradient evenly (torch's amax/max() rule)."""

    def forward(self, a, axes=None, keepdim=False, is_min=False):
        self.a, self.axes, self.keepdim = a, axes, keepdim
        if a.size == 0:
            raise RuntimeError(f"{'min' if is_min else 'max'}: cannot reduce an empty tensor")
        f = np.min if is_min else np.max
        self.out_k = f(a, axis=axes, keepdims=True)
        return np.asarray(self.out_k if keepdim else f(a, axis=axes, keepdims=False))

    def backward(self, g):
        mask = self.a == self.out_k
        count = mask.sum(axis=self.axes, keepdims=True)
        g = _expand_back(g, self.a.shape, self.axes, self.keepdim)
        return g * mask / count.astype(self.a.dtype)


class MaxDim(Function):
    """Max over one dim with indices; the gradient goes to the chosen index."""

    def forward(self, a, dim=0, keepdim=False, is_min=False):
        self.shape, self.dim, self.keepdim = a.shape, dim, keepdim
        idx = (np.argmin if is_min else np.argmax)(a, axis=dim, keepdims=True)
        self.idx = idx
        vals = np.take_along_axis(a, idx, axis=dim)
        if not keepdim:
            vals = vals.squeeze(dim)
        return vals

    def backward(self, g):
        out = np.zeros(self.shape, g.dtype)
        if not self.keepdim:
            g = np.expand_dims(g, self.dim)
        np.put_along_axis(out, self.idx, g, axis=self.dim)
        return out


class LogSumExp(Function):
    def forward(self, a, axes=None, keepdim=False):
        self.a, self.axes, self.keepdim = a, axes, keepdim
        m = np.max(a, axis=axes, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        self.out_k = np.log(np.exp(a - m).sum(axis=axes, keepdims=True)) + m
        out = self.out_k
        if not keepdim:
            out = out.reshape([s for i, s in enumerate(a.shape)
                               if not (axes is None or i in axes)])
        return np.asarray(out)

    def backward(self, g):
        g = _expand_back(g, self.a.shape, self.axes, self.keepdim)
        return g * np.exp(self.a - self.out_k)


class Prod(Function):
    def forward(self, a, axes=None, keepdim=False):
        self.a, self.axes, self.keepdim = a, axes, keepdim
        self.out_k = np.prod(a, axis=axes, keepdims=True)
        return np.asarray(np.prod(a, axis=axes, keepdims=keepdim))

    def backward(self, g):
        a = self.a
        g = _expand_back(g, a.shape, self.axes, self.keepdim)
        if np.all(a != 0):
            return g * self.out_k / a
        # zeros present: product of all the others, computed directly
        axes = tuple(range(a.ndim)) if self.axes is None else self.axes
        moved = np.moveaxis(a, axes, tuple(range(-len(axes), 0)))
        flat = moved.reshape(moved.shape[: a.ndim - len(axes)] + (-1,))
        n = flat.shape[-1]
        left = np.concatenate([np.ones_like(flat[..., :1]), np.cumprod(flat, -1)[..., :-1]], -1)
        right = np.concatenate([np.cumprod(flat[..., ::-1], -1)[..., :-1][..., ::-1],
                                np.ones_like(flat[..., :1])], -1)
        others = (left * right).reshape(moved.shape)
        others = np.moveaxis(others, tuple(range(-len(axes), 0)), axes)
        del n
        return g * others


def _reduce_args(x: Tensor, dim, keepdim, kw, op):
    dim, keepdim = resolve_dim_kw(dim, keepdim, kw, op)
    return norm_axes(dim, x.data.ndim, op), bool(keepdim)


def sum(x: Tensor, dim=None, keepdim: bool = False, **kw) -> Tensor:
    """Sum over ``dim`` (int, tuple or None for all)."""
    axes, keepdim = _reduce_args(x, dim, keepdim, kw, "sum")
    return Sum.apply(x, axes=axes, keepdim=keepdim)


def mean(x: Tensor, dim=None, keepdim: bool = False, **kw) -> Tensor:
    axes, keepdim = _reduce_args(x, dim, keepdim, kw, "mean")
    if x.data.dtype.kind not in "fc":
        raise TypeError(f"mean: expected a floating point tensor, got {x.data.dtype}")
    return Mean.apply(x, axes=axes, keepdim=keepdim)


def var(x: Tensor, dim=None, keepdim: bool = False, correction: int = 1, unbiased=None,
        **kw) -> Tensor:
    """Variance; ``correction=1`` (Bessel's, torch's default) or ``unbiased=False``."""
    axes, keepdim = _reduce_args(x, dim, keepdim, kw, "var")
    if unbiased is not None:
        correction = 1 if unbiased else 0
    return Var.apply(x, axes=axes, keepdim=keepdim, correction=correction)


def std(x: Tensor, dim=None, keepdim: bool = False, correction: int = 1, unbiased=None,
        **kw) -> Tensor:
    from shendu.functional.math import sqrt

    return sqrt(var(x, dim, keepdim, correction, unbiased, **kw))


def _max_like(x: Tensor, dim, keepdim, kw, is_min: bool):
    op = "min" if is_min else "max"
    dim, keepdim = resolve_dim_kw(dim, keepdim, kw, op)
    if dim is None:
        return AMax.apply(x, axes=None, keepdim=False, is_min=is_min)
    if not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{op}: dim must be an int (use amax/amin for several dims), got {dim!r}")
    (d,) = norm_axes(dim, x.data.ndim, op)
    if x.data.shape and x.data.shape[d] == 0:
        raise RuntimeError(f"{op}: cannot reduce over an empty dimension {d} of {x.data.shape}")
    vals = MaxDim.apply(x, dim=d, keepdim=bool(keepdim), is_min=is_min)
    idx = (np.argmin if is_min else np.argmax)(x.data, axis=d, keepdims=bool(keepdim))
    return MaxResult(vals, Tensor(idx.astype(np.int64)))


def max(x: Tensor, dim=None, keepdim: bool = False, **kw):
    """``max(x)`` is the largest element; ``max(x, dim)`` returns ``(values, indices)``."""
    return _max_like(x, dim, keepdim, kw, False)


def min(x: Tensor, dim=None, keepdim: bool = False, **kw):
    return _max_like(x, dim, keepdim, kw, True)


def amax(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    return AMax.apply(x, axes=norm_axes(dim, x.data.ndim, "amax"), keepdim=keepdim)


def amin(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    return AMax.apply(x, axes=norm_axes(dim, x.data.ndim, "amin"), keepdim=keepdim, is_min=True)


def logsumexp(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """``log(sum(exp(x)))`` computed stably (the max is subtracted first)."""
    return LogSumExp.apply(x, axes=norm_axes(dim, x.data.ndim, "logsumexp"), keepdim=keepdim)


def prod(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    return Prod.apply(x, axes=norm_axes(dim, x.data.ndim, "prod"), keepdim=keepdim)


def norm(x: Tensor, p=2, dim=None, keepdim: bool = False) -> Tensor:
    from shendu.functional.math import abs as _abs
    from shendu.functional.math import sqrt

    if p == 2:
        return sqrt(sum(x * x, dim, keepdim))
    if p == 1:
        return sum(_abs(x), dim, keepdim)
    return sum(_abs(x) ** p, dim, keepdim) ** (1.0 / p)


def argmax(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    if dim is None:
        return Tensor(np.asarray(np.argmax(x.data), dtype=np.int64))
    return Tensor(np.argmax(x.data, axis=dim, keepdims=keepdim).astype(np.int64))


def argmin(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    if dim is None:
        return Tensor(np.asarray(np.argmin(x.data), dtype=np.int64))
    return Tensor(np.argmin(x.data, axis=dim, keepdims=keepdim).astype(np.int64))
