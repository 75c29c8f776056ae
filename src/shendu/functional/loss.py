"""Loss functions. Cross-entropy is one fused, stable op (log-softmax + NLL)."""

from __future__ import annotations

import numpy as np

from shendu.autograd import Function
from shendu.tensor import Tensor

__all__ = ["cross_entropy", "nll_loss"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _to_rows(x: np.ndarray) -> np.ndarray:
    """(N, C, d1, ...) -> (N*d1*..., C); (C,) -> (1, C)."""
    if x.ndim == 1:
        return x[None, :]
    if x.ndim == 2:
        return x
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def _from_rows(r: np.ndarray, shape: tuple) -> np.ndarray:
    if len(shape) == 1:
        return r[0]
    if len(shape) == 2:
        return r
    moved = (shape[0],) + shape[2:] + (shape[1],)
    return np.moveaxis(r.reshape(moved), -1, 1)


def _log_softmax_rows(x: np.ndarray) -> np.ndarray:
    s = x - x.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


class CrossEntropy(Function):
    r"""Cross-entropy of logits ``x`` against class indices or class probabilities.

    With class indices ``y``, smoothing ``eps`` over ``C`` classes and weights ``w``:
    ``l_n = (1 - eps) * (-w[y_n] log p[n, y_n]) + (eps / C) * (-sum_c w_c log p[n, c])``,
    ``p = softmax(x)``; ``mean`` divides by ``sum_n w[y_n]`` over targets that are not
    ``ignore_index`` (as torch). With probabilities ``t``: ``l_n = -sum_c w_c t'_{nc} log p_{nc}``,
    ``t' = (1 - eps) t + eps / C``, and ``mean`` divides by the number of rows.

    Backward: ``dx = a - p * sum_c a_c`` with ``a = dl/dlog p``.
    """

    def forward(self, x, target=None, weight=None, ignore_index=-100, smoothing=0.0,
                reduction="mean", probs=False):
        self.shape = x.shape
        rows = _to_rows(x)
        m, c = rows.shape
        logp = _log_softmax_rows(rows)
        dt = x.dtype
        wv = np.ones(c, dt) if weight is None else weight.astype(dt, copy=False)
        if probs:
            t = _to_rows(target).astype(dt, copy=False)
            if smoothing:
                t = t * (1 - smoothing) + smoothing / c
            coef = -(t * wv)  # dl/dlogp per row, before reduction scaling
            per = (coef * logp).sum(axis=1)
            denom = dt.type(m)
        else:
            y = target.reshape(-1)
            valid = y != ignore_index
            ys = np.where(valid, y, 0)
            if valid.any() and (ys.min() < 0 or ys.max() >= c):
                bad = ys[(ys < 0) | (ys >= c)][0]
                raise IndexError(f"cross_entropy: target {bad} is out of bounds for {c} classes")
            wy = np.where(valid, wv[ys], 0).astype(dt)
            coef = np.zeros((m, c), dt)
            if smoothing:
                coef -= (smoothing / c) * wv * valid[:, None]
            coef[np.arange(m), ys] -= (1 - smoothing) * wy
            per = (coef * logp).sum(axis=1)
            denom = wy.sum()
        self.logp, self.coef, self.reduction = logp, coef, reduction
        if reduction == "none":
            out_shape = (self.shape[0],) + self.shape[2:] if len(self.shape) > 1 else ()
            return per.reshape(out_shape)
        if reduction == "sum":
            return np.asarray(per.sum(), dt)
        self.denom = denom
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(per.sum() / denom, dt)

    def backward(self, g):
        coef, logp = self.coef, self.logp
        if self.reduction == "none":
            scale = g.reshape(-1, 1)
        elif self.reduction == "sum":
            scale = g
        else:
            scale = g / self.denom
        a = coef * scale
        gx = a - np.exp(logp) * a.sum(axis=1, keepdims=True)
        return _from_rows(gx, self.shape)


def cross_entropy(input: Tensor, target, weight=None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy between logits ``input`` (N, C, ...) and ``target``.

    ``target`` holds class indices (N, ...) or class probabilities (same shape as input).
    """
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got "
                         f"{label_smoothing}")
    x = input.data
    t = np.asarray(target.data if isinstance(target, Tensor) else target)
    if x.ndim == 0:
        raise ValueError("cross_entropy: expected input of shape (N, C) or (C,), got a scalar")
    c = x.shape[1] if x.ndim > 1 else x.shape[0]
    w = None
    if weight is not None:
        w = np.asarray(weight.data if isinstance(weight, Tensor) else weight)
        if w.shape != (c,):
            raise ValueError(f"cross_entropy: weight must have shape ({c},), got {w.shape}")
    probs = t.dtype.kind == "f"
    if probs:
        if t.shape != x.shape:
            raise ValueError(f"cross_entropy: probability target must have the input's shape "
                             f"{x.shape}, got {t.shape}")
    else:
        if t.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy: target must hold class indices (integers) or "
                            f"probabilities (floats), got {t.dtype}")
        expect = (x.shape[0],) + x.shape[2:] if x.ndim > 1 else ()
        if t.shape != expect:
            raise ValueError(f"cross_entropy: expected target of shape {expect} for input "
                             f"{x.shape}, got {t.shape}")
    return CrossEntropy.apply(input, target=t, weight=w, ignore_index=ignore_index,
                              smoothing=label_smoothing, reduction=reduction, probs=probs)


class NLL(Function):
    """Negative log-likelihood of log-probabilities ``x`` at the target classes."""

    def forward(self, x, target=None, weight=None, ignore_index=-100, reduction="mean"):
        self.shape = x.shape
        rows = _to_rows(x)
        m, c = rows.shape
        dt = x.dtype
        y = target.reshape(-1)
        valid = y != ignore_index
        ys = np.where(valid, y, 0)
        if valid.any() and (ys.min() < 0 or ys.max() >= c):
            bad = ys[(ys < 0) | (ys >= c)][0]
            raise IndexError(f"nll_loss: target {bad} is out of bounds for {c} classes")
        wv = np.ones(c, dt) if weight is None else weight.astype(dt, copy=False)
        wy = np.where(valid, wv[ys], 0).astype(dt)
        per = -wy * rows[np.arange(m), ys]
        self.m, self.c, self.ys, self.wy, self.reduction, self.dt = m, c, ys, wy, reduction, dt
        if reduction == "none":
            return per.reshape((self.shape[0],) + self.shape[2:] if len(self.shape) > 1 else ())
        if reduction == "sum":
            return np.asarray(per.sum(), dt)
        self.denom = wy.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(per.sum() / self.denom, dt)

    def backward(self, g):
        if self.reduction == "none":
            scale = g.reshape(-1)
        elif self.reduction == "sum":
            scale = g
        else:
            scale = g / self.denom
        gr = np.zeros((self.m, self.c), self.dt)
        gr[np.arange(self.m), self.ys] = -self.wy * scale
        return _from_rows(gr, self.shape)


def nll_loss(input: Tensor, target, weight=None, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood; ``input`` holds log-probabilities (N, C, ...)."""
    _check_reduction("nll_loss", reduction)
    x = input.data
    t = np.asarray(target.data if isinstance(target, Tensor) else target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"nll_loss: target must hold class indices (integers), got {t.dtype}")
    if x.ndim == 0:
        raise ValueError("nll_loss: expected input of shape (N, C) or (C,), got a scalar")
    expect = (x.shape[0],) + x.shape[2:] if x.ndim > 1 else ()
    if t.shape != expect:
        raise ValueError(f"nll_loss: expected target of shape {expect} for input {x.shape}, "
                         f"got {t.shape}")
    c = x.shape[1] if x.ndim > 1 else x.shape[0]
    w = None
    if weight is not None:
        w = np.asarray(weight.data if isinstance(weight, Tensor) else weight)
        if w.shape != (c,):
            raise ValueError(f"nll_loss: weight must have shape ({c},), got {w.shape}")
    return NLL.apply(input, target=t, weight=w, ignore_index=ignore_index, reduction=reduction)
