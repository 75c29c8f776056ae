"""ONNX forms of shendu's losses (``shendu.functional.loss``), for forward passes that end
in one (a model that returns its loss, an evaluation graph).

Elementwise losses are written out (``d = x - y``, then ``Mul``/``Abs``/``Where``); the
binary cross-entropies with ``Log``, ``Exp`` and the clamp at -100 that shendu (and torch)
apply; cross-entropy as ``LogSoftmax`` and ``NegativeLogLikelihoodLoss`` (class indices,
``ignore_index``, class weights) plus the label-smoothing term, or as a weighted sum with
probability targets; ``mean`` divides as shendu does (by the summed weights of the targets
that are not ignored, or by the number of rows or elements).
"""

from __future__ import annotations

import importlib

import numpy as np

from shendu.onnx._graph import Ctx, dtype_code
from shendu.onnx._ops import maps

L = importlib.import_module("shendu.functional.loss")


def _reduce(c: Ctx, loss: str, reduction: str) -> str:
    if reduction == "none":
        return loss
    return c.node("ReduceSum" if reduction == "sum" else "ReduceMean", [loss], keepdims=0)


@maps(L.MSE, L.L1, L.Huber, L.SmoothL1)
def _elementwise(c: Ctx):
    dt = c.a(0).dtype
    d = c.node("Sub", [c.x(0), c.x(1)])
    cls = c.r1.cls
    if cls is L.MSE:
        loss = c.node("Mul", [d, d])
    else:
        ad = c.node("Abs", [d])
        half_sq = c.node("Mul", [c.node("Mul", [d, d]), c.scalar(0.5, dt)])
        if cls is L.L1 or (cls is L.SmoothL1 and float(c.static("beta")) == 0):
            loss = ad
        elif cls is L.Huber:
            delta = float(c.static("delta"))
            lin = c.node("Mul", [c.node("Sub", [ad, c.scalar(0.5 * delta, dt)]),
                                 c.scalar(delta, dt)])
            loss = c.node("Where", [c.node("Less", [ad, c.scalar(delta, dt)]), half_sq, lin])
        else:
            beta = float(c.static("beta"))
            quad = c.node("Div", [half_sq, c.scalar(beta, dt)])
            lin = c.node("Sub", [ad, c.scalar(0.5 * beta, dt)])
            loss = c.node("Where", [c.node("Less", [ad, c.scalar(beta, dt)]), quad, lin])
    return _reduce(c, loss, c.static("reduction"))


def _weighted(c: Ctx, loss: str, key: str = "weight") -> str:
    w = c.arr(key)
    return loss if w is None else c.node("Mul", [loss, c.g.name(w)])


@maps(L.BCE)
def _bce(c: Ctx):
    dt = c.a(0).dtype
    p, y = c.x(0), c.x(1)
    floor = c.scalar(-100.0, dt)
    logp = c.node("Max", [c.node("Log", [p]), floor])
    log1mp = c.node("Max", [c.node("Log", [c.node("Sub", [c.scalar(1.0, dt), p])]), floor])
    loss = c.node("Sub", [c.node("Mul", [c.node("Sub", [y, c.scalar(1.0, dt)]), log1mp]),
                          c.node("Mul", [y, logp])])
    return _reduce(c, _weighted(c, loss), c.static("reduction"))


@maps(L.BCEWithLogits)
def _bce_logits(c: Ctx):
    dt = c.a(0).dtype
    x, y = c.x(0), c.x(1)
    one = c.scalar(1.0, dt)
    soft = c.node("Log", [c.node("Add", [one, c.node("Exp", [c.node("Neg", [
        c.node("Abs", [x])])])])])
    ls = c.node("Neg", [c.node("Add", [c.node("Max", [c.node("Neg", [x]), c.scalar(0.0, dt)]),
                                       soft])])                          # log sigmoid(x)
    first = c.node("Mul", [c.node("Sub", [one, y]), x])
    q = c.arr("pos_weight")
    if q is None:
        loss = c.node("Sub", [first, ls])
    else:
        coef = c.node("Add", [one, c.node("Mul", [c.node("Sub", [c.g.name(q), one]), y])])
        loss = c.node("Sub", [first, c.node("Mul", [coef, ls])])
    return _reduce(c, _weighted(c, loss), c.static("reduction"))


def _class_axis_shape(ndim: int, n_classes: int) -> list[int]:
    """A (C,) weight reshaped to broadcast along axis 1 of an (N, C, d1, ...) input."""
    return [1, n_classes] + [1] * (ndim - 2)


def _rows_out(c: Ctx, per: str, reduction: str, denom: str | None) -> str:
    if reduction == "none":
        return per
    total = c.node("ReduceSum", [per], keepdims=0)
    return total if reduction == "sum" else c.node("Div", [total, denom])


def _index_losses(c: Ctx, logp: str, target: str, one_d: bool, smoothing: float) -> str:
    """Shared by cross-entropy (with ``logp`` = log-softmax) and NLL."""
    x = c.a(0)
    dt = x.dtype
    n_cls = x.shape[0] if one_d else x.shape[1]
    ignore = int(c.static("ignore_index"))
    w = c.arr("weight")
    wname = c.g.name(w) if w is not None else c.const(np.ones(n_cls, dt))
    target = c.node("Cast", [target], to=dtype_code(np.int64))
    if one_d:                                          # (C,) and a scalar target
        logp = c.node("Unsqueeze", [logp, c.i64([0])])
        target = c.node("Unsqueeze", [target, c.i64([0])])
    nll = c.node("NegativeLogLikelihoodLoss", [logp, target, wname], reduction="none",
                 ignore_index=ignore)                                   # (N, d1, ...)
    valid = c.node("Cast", [c.node("Not", [c.node("Equal", [target, c.i64(ignore)])])],
                   to=dtype_code(dt))
    safe = c.node("Where", [c.node("Equal", [target, c.i64(ignore)]), c.i64(0), target])
    wy = c.node("Mul", [c.node("Gather", [wname, safe], axis=0), valid])
    per = nll
    if smoothing:
        nd = x.ndim + (1 if one_d else 0)
        wb = c.node("Reshape", [wname, c.i64(_class_axis_shape(nd, n_cls))])
        smooth = c.node("ReduceSum", [c.node("Mul", [logp, wb]), c.i64([1])], keepdims=0)
        smooth = c.node("Mul", [c.node("Mul", [smooth, valid]), c.scalar(-smoothing / n_cls, dt)])
        per = c.node("Add", [c.node("Mul", [nll, c.scalar(1.0 - smoothing, dt)]), smooth])
    reduction = c.static("reduction")
    out = _rows_out(c, per, reduction, c.node("ReduceSum", [wy], keepdims=0))
    if one_d and reduction == "none":
        out = c.node("Squeeze", [out, c.i64([0])])
    return out


@maps(L.CrossEntropy)
def _cross_entropy(c: Ctx):
    x = c.a(0)
    dt = x.dtype
    one_d = x.ndim == 1
    logp = c.node("LogSoftmax", [c.x(0)], axis=0 if one_d else 1)
    smoothing = float(c.static("smoothing"))
    index = c.arr("index")
    if index is not None:
        return _index_losses(c, logp, c.g.name(index), one_d, smoothing)
    n_cls = x.shape[0] if one_d else x.shape[1]
    t = c.x(1)                                                          # probabilities
    if smoothing:
        t = c.node("Add", [c.node("Mul", [t, c.scalar(1.0 - smoothing, dt)]),
                           c.scalar(smoothing / n_cls, dt)])
    w = c.arr("weight")
    if w is not None:
        t = c.node("Mul", [t, c.node("Reshape", [c.g.name(w), c.i64(
            [n_cls] if one_d else _class_axis_shape(x.ndim, n_cls))])])
    per = c.node("Neg", [c.node("ReduceSum", [c.node("Mul", [t, logp]),
                                              c.i64([0 if one_d else 1])], keepdims=0)])
    reduction = c.static("reduction")
    rows = c.node("Cast", [c.node("ReduceProd", [c.node("Shape", [per])], keepdims=0)],
                  to=dtype_code(dt)) if not one_d else c.scalar(1.0, dt)
    return _rows_out(c, per, reduction, rows)


@maps(L.NLL)
def _nll(c: Ctx):
    one_d = c.a(0).ndim == 1
    return _index_losses(c, c.x(0), c.g.name(c.arr("target")), one_d, 0.0)
