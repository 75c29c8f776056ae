"""Loss functions, each one fused :class:`~shendu.autograd.Function` with a hand-derived,
numerically stable backward.

Names, arguments and numbers follow ``torch.nn.functional``: the same reductions
(``"mean"``, ``"sum"``, ``"none"``), the same normalisation of weighted means, the same
clamping of logarithms in binary cross-entropy. One deliberate difference: where torch warns
and broadcasts a target whose shape differs from the input's (a classic silent bug, e.g.
``(N, 1)`` against ``(N,)`` makes an ``(N, N)`` loss), shendu raises an error naming both
shapes.

Regression losses, with ``d = x - y`` elementwise::

    loss              value                                        dl/dx
    mse_loss          d^2                                          2 d
    l1_loss           |d|                                          sign(d)
    huber_loss        d^2 / 2          if |d| < delta,             clip(d, -delta, delta)
                      delta (|d| - delta / 2)   otherwise
    smooth_l1_loss    d^2 / (2 beta)   if |d| < beta,              clip(d / beta, -1, 1)
                      |d| - beta / 2            otherwise

and ``dl/dy = -dl/dx``. Huber's loss is from Huber (1964), "Robust Estimation of a Location
Parameter"; smooth L1 is its rescaling ``huber(d; beta) / beta`` used by Fast R-CNN
(Girshick 2015).
"""

from __future__ import annotations

import numpy as np

from shendu.autograd import Function
from shendu.functional import _numba
from shendu.functional.activation import _sigmoid
from shendu.functional.math import sign0
from shendu.tensor import Tensor

__all__ = ["cross_entropy", "nll_loss", "mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss",
           "binary_cross_entropy", "binary_cross_entropy_with_logits"]

_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------- helpers
def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_input(op: str, input) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a shendu Tensor, got {type(input).__name__}")
    if input.data.dtype.kind != "f":
        raise TypeError(f"{op}: input must be a floating tensor, got {input.data.dtype}")


def _float_target(op: str, input: Tensor, target) -> Tensor:
    """``target`` as a tensor of the input's shape and dtype (no broadcasting).

    A target that requires a gradient keeps its identity (it is differentiated too) and must
    therefore already have the input's dtype; anything else is converted.
    """
    x = input.data
    if isinstance(target, Tensor):
        if target.data.dtype != x.dtype:
            if target.requires_grad:
                raise TypeError(f"{op}: target of dtype {target.data.dtype} requires grad and "
                                f"must have the input's dtype {x.dtype}")
            target = Tensor._wrap(target.data.astype(x.dtype), None, 0)
    else:
        target = Tensor._wrap(np.asarray(target, dtype=x.dtype), None, 0)
    if target.data.shape != x.shape:
        raise ValueError(f"{op}: target shape {target.data.shape} differs from input shape "
                         f"{x.shape} (shendu does not broadcast loss targets; reshape one of "
                         "them)")
    return target


def _const(op: str, name: str, value, x: np.ndarray) -> np.ndarray | None:
    """A non-differentiable weight as an array of ``x``'s dtype that broadcasts to ``x``."""
    if value is None:
        return None
    arr = np.asarray(value.data if isinstance(value, Tensor) else value, dtype=x.dtype)
    try:
        ok = np.broadcast_shapes(arr.shape, x.shape) == x.shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{op}: {name} of shape {arr.shape} does not broadcast to the input "
                         f"shape {x.shape}")
    return arr


def _reduce(loss: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return np.asarray(loss.sum(), loss.dtype)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty input: nan, like torch
        return np.asarray(loss.mean(), loss.dtype)


def _unreduce(g: np.ndarray, reduction: str, n: int) -> np.ndarray:
    """The upstream gradient as a factor per element (broadcastable to the input)."""
    if reduction == "mean":
        return g / g.dtype.type(max(n, 1))
    return g


class _Elementwise(Function):
    """Shared backward of the losses whose value is a function of ``d = x - y`` only."""

    def backward(self, g):
        gx = self.slope * _unreduce(g, self.reduction, self.slope.size)
        return (gx if self.needs_input_grad[0] else None,
                -gx if self.needs_input_grad[1] else None)


class MSE(_Elementwise):
    saved_inputs = (0, 1)

    def forward(self, x, y, reduction="mean"):
        d = x - y
        self.slope, self.reduction = 2 * d, reduction
        return _reduce(d * d, reduction)


class L1(_Elementwise):
    def forward(self, x, y, reduction="mean"):
        d = x - y
        self.slope, self.reduction = sign0(d), reduction
        return _reduce(np.abs(d), reduction)


class Huber(_Elementwise):
    def forward(self, x, y, delta=1.0, reduction="mean"):
        d = x - y
        ad = np.abs(d)
        dl = x.dtype.type(delta)
        loss = np.where(ad < dl, 0.5 * d * d, dl * (ad - 0.5 * dl))
        self.slope, self.reduction = np.clip(d, -dl, dl), reduction
        return _reduce(loss.astype(x.dtype, copy=False), reduction)


class SmoothL1(_Elementwise):
    def forward(self, x, y, beta=1.0, reduction="mean"):
        d = x - y
        ad = np.abs(d)
        if beta == 0:  # the limit is the L1 loss (torch dispatches to l1_loss)
            self.slope, self.reduction = sign0(d), reduction
            return _reduce(ad, reduction)
        b = x.dtype.type(beta)
        loss = np.where(ad < b, 0.5 * d * d / b, ad - 0.5 * b)
        self.slope, self.reduction = np.clip(d / b, -1, 1), reduction
        return _reduce(loss.astype(x.dtype, copy=False), reduction)


def _regression(op: str, fn: type[Function], input, target, reduction: str, **params
                ) -> Tensor:
    _check_reduction(op, reduction)
    _check_input(op, input)
    target = _float_target(op, input, target)
    return fn.apply(input, target, reduction=reduction, **params)


def mse_loss(input: Tensor, target, *, reduction: str = "mean") -> Tensor:
    """Mean squared error ``(x - y)^2`` (the least-squares loss of Legendre 1805 and Gauss)."""
    return _regression("mse_loss", MSE, input, target, reduction)


def l1_loss(input: Tensor, target, *, reduction: str = "mean") -> Tensor:
    """Mean absolute error ``|x - y|``; its gradient at ``x = y`` is 0 (as torch)."""
    return _regression("l1_loss", L1, input, target, reduction)


def huber_loss(input: Tensor, target, *, reduction: str = "mean", delta: float = 1.0
               ) -> Tensor:
    """Huber (1964): quadratic for ``|x - y| < delta``, linear with slope ``delta`` beyond."""
    if not delta > 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    return _regression("huber_loss", Huber, input, target, reduction, delta=float(delta))


def smooth_l1_loss(input: Tensor, target, *, reduction: str = "mean", beta: float = 1.0
                   ) -> Tensor:
    """Smooth L1 (Girshick 2015, Fast R-CNN): ``huber_loss(x, y, delta=beta) / beta``;
    ``beta = 0`` is the L1 loss."""
    if not beta >= 0:
        raise ValueError(f"smooth_l1_loss: beta must be non-negative, got {beta}")
    return _regression("smooth_l1_loss", SmoothL1, input, target, reduction, beta=float(beta))


# -------------------------------------------------------------- binary cross-entropy
# torch's floor on p (1 - p) in the backward: 1e-12 rounded to float32 (also in float64),
# so that gradients at p = 0 or 1 (about 1e12) agree with torch to the last digit
_BCE_EPS = float(np.float32(1e-12))


class BCE(Function):
    r"""``l = -w [y max(log p, -100) + (1 - y) max(log(1 - p), -100)]``.

    The clamp at -100 keeps ``p = 0`` or ``1`` finite (as torch). Backward:
    ``dl/dp = w (p - y) / max(p (1 - p), 1e-12)`` and ``dl/dy = -w logit(p)``.
    """

    saved_inputs = None

    def forward(self, p, y, weight=None, reduction="mean"):
        with np.errstate(divide="ignore"):
            logp = np.maximum(np.log(p), -100)
            log1mp = np.maximum(np.log1p(-p), -100)
        loss = (y - 1) * log1mp - y * logp
        if weight is not None:
            loss = loss * weight
        self.p, self.y, self.w, self.reduction = p, y, weight, reduction
        return _reduce(loss, reduction)

    def backward(self, g):
        p, y, w = self.p, self.y, self.w
        gp = gy = None
        if self.needs_input_grad[0]:  # torch's order of operations, so p = 0, 1 match bitwise
            gp = g * (p - y) / np.maximum((1 - p) * p, p.dtype.type(_BCE_EPS))
            gp = _unreduce(gp if w is None else gp * w, self.reduction, p.size)
        if self.needs_input_grad[1]:
            with np.errstate(divide="ignore"):
                gy = g * (np.log1p(-p) - np.log(p))
            gy = _unreduce(gy if w is None else gy * w, self.reduction, p.size)
        return gp, gy


def binary_cross_entropy(input: Tensor, target, weight=None, *, reduction: str = "mean"
                         ) -> Tensor:
    """Binary cross-entropy of probabilities ``input`` in [0, 1] against ``target`` in [0, 1].

    ``weight`` (broadcastable to the input) rescales each element. For raw scores prefer
    :func:`binary_cross_entropy_with_logits`, which is exact where this one must clamp.
    """
    op = "binary_cross_entropy"
    _check_reduction(op, reduction)
    _check_input(op, input)
    target = _float_target(op, input, target)
    p, y = input.data, target.data
    if p.size and not ((p >= 0) & (p <= 1)).all():
        raise ValueError(f"{op}: all elements of input should be between 0 and 1, got values "
                         f"in [{np.nanmin(p)}, {np.nanmax(p)}]" +
                         (" and NaN" if np.isnan(p).any() else ""))
    if y.size and not ((y >= 0) & (y <= 1)).all():
        raise ValueError(f"{op}: all elements of target should be between 0 and 1, got "
                         f"values in [{np.nanmin(y)}, {np.nanmax(y)}]")
    w = _const(op, "weight", weight, p)
    return BCE.apply(input, target, weight=w, reduction=reduction)


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    """``log(1 / (1 + e^{-x})) = -(max(-x, 0) + log(1 + e^{-|x|}))``, finite for any x."""
    return -(np.maximum(-x, 0) + np.log1p(np.exp(-np.abs(x))))


class BCEWithLogits(Function):
    r"""``l = w [(1 - y) x - (1 + (q - 1) y) log sigma(x)]`` with positive-class weight ``q``.

    This is ``-w [q y log sigma(x) + (1 - y) log(1 - sigma(x))]`` rewritten with
    ``log(1 - sigma(x)) = log sigma(x) - x`` and a log-sigmoid that never overflows, so
    ``|x| = 1000`` gives exact, finite values and gradients. Backward:
    ``dl/dx = w [(q y + 1 - y) sigma(x) - q y]`` (``w (sigma(x) - y)`` when ``q = 1``) and
    ``dl/dy = w [log sigma(-x) - q log sigma(x)]`` (``-w x`` when ``q = 1``).
    """

    saved_inputs = None

    def forward(self, x, y, weight=None, pos_weight=None, reduction="mean"):
        ls = _log_sigmoid(x)
        if pos_weight is None:
            loss = (1 - y) * x - ls
        else:
            loss = (1 - y) * x - (1 + (pos_weight - 1) * y) * ls
        if weight is not None:
            loss = loss * weight
        self.x, self.y, self.ls = x, y, ls
        self.w, self.q, self.reduction = weight, pos_weight, reduction
        return _reduce(loss, reduction)

    def backward(self, g):
        x, y, q, w, n = self.x, self.y, self.q, self.w, self.x.size
        gx = gy = None
        if self.needs_input_grad[0]:
            sig = _sigmoid(x)
            gx = g * (sig - y if q is None else (q * y + 1 - y) * sig - q * y)
            gx = _unreduce(gx if w is None else gx * w, self.reduction, n)
        if self.needs_input_grad[1]:
            gy = g * (-x if q is None else _log_sigmoid(-x) - q * self.ls)
            gy = _unreduce(gy if w is None else gy * w, self.reduction, n)
        return gx, gy


def binary_cross_entropy_with_logits(input: Tensor, target, weight=None, *,
                                     reduction: str = "mean", pos_weight=None) -> Tensor:
    """Binary cross-entropy of ``sigmoid(input)``, computed from the logits in one stable op.

    ``weight`` rescales each element; ``pos_weight`` (broadcast along the last dim, one per
    class in multi-label problems) weights the positive term, trading recall for precision.
    """
    op = "binary_cross_entropy_with_logits"
    _check_reduction(op, reduction)
    _check_input(op, input)
    target = _float_target(op, input, target)
    x = input.data
    w = _const(op, "weight", weight, x)
    q = _const(op, "pos_weight", pos_weight, x)
    return BCEWithLogits.apply(input, target, weight=w, pos_weight=q, reduction=reduction)


# ------------------------------------------------------------------ cross-entropy, NLL
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
    kern = _numba.kernels_for(x)
    if kern is not None and x.flags.c_contiguous and x.shape[1] > 0:
        top = np.empty((x.shape[0], 1), x.dtype)
        kern.row_max(x, top[:, 0])  # the maximum is exact: NumPy's value, without its slow
        s = x - top                 # reduction over short rows
    else:
        s = x - x.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def _plain_targets(y: np.ndarray, c: int, ignore_index: int) -> np.ndarray | None:
    """The flat targets when every one is a class in ``[0, c)`` other than ``ignore_index``
    (no target ignored): cross-entropy's common case; None otherwise."""
    y = y.reshape(-1)
    if y.size == 0 or y.min() < 0 or y.max() >= c:
        return None
    if 0 <= ignore_index < c and (y == ignore_index).any():
        return None
    return y


def _row_scale(g: np.ndarray, reduction: str, denom) -> np.ndarray:
    """Upstream gradient per row. A weighted mean over zero total weight (every target
    ignored) has the value nan but, as in torch, a zero gradient rather than nan."""
    if reduction == "none":
        return g.reshape(-1, 1)
    if reduction == "sum":
        return g
    if denom == 0:
        return np.zeros_like(g)
    return g / denom


def _class_targets(op: str, y: np.ndarray, c: int, ignore_index: int, wv: np.ndarray):
    """Flat targets with ignored entries mapped to class 0, and their weights (0 if ignored)."""
    y = y.reshape(-1)
    valid = y != ignore_index
    ys = np.where(valid, y, 0)
    bad = (ys < 0) | (ys >= c)
    if bad.any():
        raise IndexError(f"{op}: target {ys[bad][0]} is out of bounds for {c} classes "
                         f"(and is not ignore_index={ignore_index})")
    wy = np.where(valid, wv[ys], 0).astype(wv.dtype)
    return ys, valid, wy


class CrossEntropy(Function):
    r"""Cross-entropy of logits ``x`` against class indices or class probabilities.

    ``log p = log_softmax(x)`` over the class dimension (Bridle 1990: the softmax output read
    as probabilities, trained by maximum likelihood). With class indices ``y``, label
    smoothing ``eps`` over ``C`` classes (Szegedy et al. 2016, "Rethinking the Inception
    Architecture") and class weights ``w``:

    ``l_n = (1 - eps) (-w[y_n] log p[n, y_n]) + (eps / C) (-sum_c w_c log p[n, c])``,

    zero where ``y_n == ignore_index``; ``mean`` divides by ``sum_n w[y_n]`` over the targets
    that are not ignored (as torch). With probabilities ``t`` (same shape as ``x``):
    ``l_n = -sum_c w_c t'_{nc} log p_{nc}``, ``t' = (1 - eps) t + eps / C``, and ``mean``
    divides by the number of rows ``N d1 d2 ...``.

    Writing ``a_{nc} = dl/d log p_{nc}`` (the saved ``coef`` times the upstream gradient),
    backward is ``dx = a - p sum_c a_c``; for probability targets ``dt = -(1 - eps) w log p``
    times the same scale.
    """

    saved_inputs = ((1, 0),)  # probability targets

    def forward(self, x, t=None, index=None, weight=None, ignore_index=-100, smoothing=0.0,
                reduction="mean"):
        self.shape = x.shape
        rows = _to_rows(x)
        m, c = rows.shape
        logp = _log_softmax_rows(rows)
        dt = x.dtype
        wv = np.ones(c, dt) if weight is None else weight
        self.wv, self.smoothing = wv, smoothing
        if t is not None:  # class probabilities
            tr = _to_rows(t)
            if smoothing:
                tr = tr * (1 - smoothing) + smoothing / c
            coef = -(tr * wv)  # dl/dlogp per row, before reduction scaling
            denom = dt.type(m)
        elif weight is None and not smoothing and m < 1 << 24 and (
                ys := _plain_targets(index, c, ignore_index)) is not None:
            # every target a class, unweighted, unsmoothed: the general path's values without
            # its (m, c) coefficients (-1 at the target, 0 elsewhere)
            self.logp, self.ys, self.reduction = logp, ys, reduction
            self.denom = dt.type(m)  # the sum of m unit weights
            per = 0 - logp[np.arange(m), ys]  # a NumPy sum starts at +0
            return self._reduce(per, dt)
        else:
            ys, valid, wy = _class_targets("cross_entropy", index, c, ignore_index, wv)
            coef = np.zeros((m, c), dt)
            if smoothing:
                coef -= (smoothing / c) * wv * valid[:, None]
            coef[np.arange(m), ys] -= (1 - smoothing) * wy
            denom = wy.sum()
        # 0 where the coefficient is 0: a -inf logit (a masked class) that no target
        # weighs adds nothing, rather than 0 * -inf = nan
        per = coef * logp
        if not np.isfinite(logp).all():
            per = np.where(coef != 0, per, 0)
        per = per.sum(axis=1)
        self.logp, self.coef, self.ys = logp, coef, None
        self.reduction, self.denom = reduction, denom
        return self._reduce(per, dt)

    def _reduce(self, per, dt):
        if self.reduction == "none":
            out_shape = (self.shape[0],) + self.shape[2:] if len(self.shape) > 1 else ()
            return per.reshape(out_shape)
        if self.reduction == "sum":
            return np.asarray(per.sum(), dt)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(per.sum() / self.denom, dt)

    def backward(self, g):
        scale = _row_scale(g, self.reduction, self.denom)
        gx = gt = None
        if self.ys is not None:  # plain targets: a = -scale at the target, 0 elsewhere, so
            # dx = a - p sum(a) is p scale, less scale at the target (the same roundings)
            if not self.needs_input_grad[0]:
                return None, None
            gx = np.exp(self.logp) * scale
            gx[np.arange(len(self.ys)), self.ys] -= scale.reshape(-1)
            return _from_rows(gx, self.shape), None
        if self.needs_input_grad[0]:
            a = self.coef * scale
            gx = _from_rows(a - np.exp(self.logp) * a.sum(axis=1, keepdims=True), self.shape)
        if len(self.needs_input_grad) > 1 and self.needs_input_grad[1]:
            gt = _from_rows(-(1 - self.smoothing) * self.wv * self.logp * scale, self.shape)
        return gx, gt


def _class_weight(op: str, weight, c: int, dt) -> np.ndarray | None:
    if weight is None:
        return None
    w = np.asarray(weight.data if isinstance(weight, Tensor) else weight)
    if w.shape != (c,):
        raise ValueError(f"{op}: weight must have shape ({c},) (one per class), got {w.shape}")
    return w.astype(dt, copy=False)


def _index_target(op: str, x: np.ndarray, t: np.ndarray) -> None:
    if t.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold class indices (integers), got {t.dtype}")
    expect = (x.shape[0],) + x.shape[2:] if x.ndim > 1 else ()
    if t.shape != expect:
        raise ValueError(f"{op}: expected target of shape {expect} for input {x.shape}, "
                         f"got {t.shape}")


def cross_entropy(input: Tensor, target, weight=None, *, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy between logits ``input`` (N, C, d1, ...) or (C,) and ``target``.

    ``target`` holds class indices (N, d1, ...) — integers — or class probabilities of the
    input's shape — floats, which may require a gradient. ``weight`` (C,) weights classes,
    ``ignore_index`` skips targets, ``label_smoothing`` mixes each target with the uniform
    distribution. One fused op: log-softmax and NLL never materialise ``softmax(x)`` in the
    graph, so large logits neither overflow nor lose the gradient.
    """
    op = "cross_entropy"
    _check_reduction(op, reduction)
    _check_input(op, input)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    x = input.data
    if x.ndim == 0:
        raise ValueError(f"{op}: expected input of shape (N, C, ...) or (C,), got a scalar")
    c = x.shape[1] if x.ndim > 1 else x.shape[0]
    w = _class_weight(op, weight, c, x.dtype)
    params = dict(weight=w, ignore_index=ignore_index, smoothing=float(label_smoothing),
                  reduction=reduction)
    raw = target.data if isinstance(target, Tensor) else np.asarray(target)
    if raw.dtype.kind == "f":
        if raw.shape != x.shape:
            raise ValueError(f"{op}: a probability target must have the input's shape "
                             f"{x.shape}, got {raw.shape} (class-index targets must be "
                             "integers)")
        return CrossEntropy.apply(input, _float_target(op, input, target), **params)
    _index_target(op, x, raw)
    return CrossEntropy.apply(input, index=raw, **params)


class NLL(Function):
    """Negative log-likelihood ``l_n = -w[y_n] x[n, y_n]`` of log-probabilities ``x``.

    ``mean`` divides by ``sum_n w[y_n]`` over non-ignored targets; backward scatters
    ``-w[y_n]`` times the scale into the target entries.
    """

    saved_inputs = ()

    def forward(self, x, target=None, weight=None, ignore_index=-100, reduction="mean"):
        self.shape = x.shape
        rows = _to_rows(x)
        m, c = rows.shape
        dt = x.dtype
        wv = np.ones(c, dt) if weight is None else weight
        ys, _, wy = _class_targets("nll_loss", target, c, ignore_index, wv)
        per = -wy * rows[np.arange(m), ys]
        self.m, self.c, self.ys, self.wy, self.reduction, self.dt = m, c, ys, wy, reduction, dt
        self.denom = wy.sum()
        if reduction == "none":
            return per.reshape((self.shape[0],) + self.shape[2:] if len(self.shape) > 1 else ())
        if reduction == "sum":
            return np.asarray(per.sum(), dt)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(per.sum() / self.denom, dt)

    def backward(self, g):
        scale = _row_scale(g, self.reduction, self.denom).reshape(-1)
        gr = np.zeros((self.m, self.c), self.dt)
        gr[np.arange(self.m), self.ys] = -self.wy * scale
        return _from_rows(gr, self.shape)


def nll_loss(input: Tensor, target, weight=None, *, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood; ``input`` holds log-probabilities (N, C, d1, ...) or (C,)."""
    op = "nll_loss"
    _check_reduction(op, reduction)
    _check_input(op, input)
    x = input.data
    if x.ndim == 0:
        raise ValueError(f"{op}: expected input of shape (N, C, ...) or (C,), got a scalar")
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    _index_target(op, x, t)
    c = x.shape[1] if x.ndim > 1 else x.shape[0]
    w = _class_weight(op, weight, c, x.dtype)
    return NLL.apply(input, target=t, weight=w, ignore_index=ignore_index, reduction=reduction)
