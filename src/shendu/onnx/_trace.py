"""Record one forward pass: every :class:`~shendu.autograd.Function` that runs, with its
input tensors, its parameters, its outputs and the module it ran in."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from shendu import autograd
from shendu.nn.module import Module
from shendu.tensor import Tensor


@dataclass
class Record:
    """One op of the trace."""

    cls: type
    inputs: tuple
    params: dict
    outputs: tuple
    path: str  # the module it ran in: "encoder.layers.0.self_attn (MultiheadAttention)"


def _flatten(obj, out: list) -> list:
    """The tensors of a (nested) output, in order; ``None`` entries are left out (torch)."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, Tensor):
            out.append(o)
        elif isinstance(o, (tuple, list)):
            stack.extend(reversed(o))
        elif isinstance(o, dict):
            stack.extend(reversed(list(o.values())))
        elif o is not None:
            raise TypeError(f"onnx.export: the model returned a {type(o).__name__}; expected "
                            "tensors (or tuples, lists, dicts of them)")
    return out


class Compare:
    """Pseudo-op of the trace: a comparison or logical op on tensors (``x > 0``, ``~m``),
    which shendu computes outside :class:`~shendu.autograd.Function` (no gradient)."""


class InPlace:
    """Pseudo-op of the trace: an in-place change of a tensor (``t[i] = v``, ``add_``...),
    which shendu runs outside :class:`~shendu.autograd.Function` when no graph is recorded.
    Exported only when it changes a constant (then it folds); see ``_ops``."""


_COMPARE = {"__gt__": "Greater", "__ge__": "GreaterOrEqual", "__lt__": "Less",
            "__le__": "LessOrEqual", "__eq__": "Equal", "__ne__": "NotEqual",
            "__and__": "And", "__or__": "Or", "__invert__": "Not"}


def _compare_wrapper(orig, op: str, record):
    def method(self, *other):
        res = orig(self, *other)
        if isinstance(res, Tensor):
            ins = [self]
            for o in other:
                if not isinstance(o, Tensor):
                    o = Tensor(np.asarray(o, dtype=self.data.dtype if np.ndim(o) == 0 and
                                          self.data.dtype != np.bool_ else None))
                ins.append(o)
            record(Compare, ins, {"op": op}, res)
        return res
    return method


#: module class -> ``(when(module), fn(module, args, kwargs))``: a traceable form of that
#: module's forward, used where ``when`` is true — the cases where the module computes part
#: of its result with NumPy (a mask from the input's values). Filled by
#: :mod:`shendu.onnx._overrides`.
OVERRIDES: dict = {}


def _check_override(label: str, ref, got) -> None:
    """The override must give the module's own outputs."""
    a, b = _flatten(ref, []), _flatten(got, [])
    ok = len(a) == len(b) and all(
        x.shape == y.shape and np.allclose(y.data, x.data, rtol=1e-6, atol=1e-6 * max(
            1.0, float(np.abs(x.data).max()) if x.data.size else 1.0), equal_nan=True)
        for x, y in zip(a, b))
    if not ok:
        from shendu.onnx._graph import UnsupportedOperatorError

        raise UnsupportedOperatorError(
            f"onnx.export: in module {label}: shendu.onnx's traceable form of this module no "
            "longer gives its outputs (the module changed); it can't be exported until "
            "shendu/onnx/_overrides.py follows it")


def trace(model: Module, args: tuple, kwargs: dict) -> tuple[list[Record], list[Tensor]]:
    """Run ``model(*args, **kwargs)`` once without recording a graph for backward; return
    the ops it ran and its output tensors (flattened)."""
    records: list[Record] = []
    names = {id(m): n for n, m in model.named_modules()}
    stack: list[str] = []
    me = threading.get_ident()
    orig_call = Module.__call__
    paused = [False]

    def call(self, *a, **k):
        name = names.get(id(self))
        label = f"{name or '<model>'} ({type(self).__name__})" if name is not None \
            else f"{type(self).__name__}"
        stack.append(label)
        try:
            when, fn = OVERRIDES.get(type(self), (None, None))
            if fn is not None and not paused[0] and when(self):
                paused[0] = True              # the module's own result, not recorded
                try:
                    ref = orig_call(self, *a, **k)
                finally:
                    paused[0] = False
                got = fn(self, a, k)
                _check_override(label, ref, got)
                return got
            return orig_call(self, *a, **k)
        finally:
            stack.pop()

    def tracer(cls, inputs, params, res):
        if threading.get_ident() != me or paused[0]:
            return
        outs = res if isinstance(res, tuple) else (res,)
        records.append(Record(cls, tuple(inputs), dict(params), outs,
                              stack[-1] if stack else f"<model> ({type(model).__name__})"))

    orig_inplace = Tensor._inplace

    def inplace(self, op, compute, write, operands=(), saves_self=True):
        res = orig_inplace(self, op, compute, write, operands, saves_self)
        if not paused[0] and threading.get_ident() == me:
            records.append(Record(InPlace, (self,) + tuple(
                o for o in operands if isinstance(o, Tensor)), {"op": op},
                (self,), stack[-1] if stack else f"<model> ({type(model).__name__})"))
        return res

    if autograd._tracer is not None:
        raise RuntimeError("onnx.export: another export is tracing a model right now")
    saved = {k: Tensor.__dict__[k] for k in _COMPARE}
    Module.__call__ = call
    Tensor._inplace = inplace
    autograd._tracer = tracer
    for k, op in _COMPARE.items():
        setattr(Tensor, k, _compare_wrapper(saved[k], op, tracer))
    try:
        with autograd.no_grad():
            out = model(*args, **kwargs)
    finally:
        autograd._tracer = None
        Module.__call__ = orig_call
        Tensor._inplace = orig_inplace
        for k, f in saved.items():
            setattr(Tensor, k, f)
    return records, _flatten(out, [])
