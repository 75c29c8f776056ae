"""Elementwise arithmetic, matmul and friends — each op's forward and backward together.

Binary ops broadcast like NumPy; their backward sums the gradient back to each input's
shape with :func:`~shendu.functional._util.unbroadcast`.
"""

from __future__ import annotations

import numpy as np

from shendu.autograd import Function
from shendu.functional._util import as_tensor, pair, unbroadcast
from shendu.tensor import Tensor

__all__ = ["add", "sub", "mul", "div", "pow", "neg", "exp", "log", "sqrt", "abs", "clamp",
           "clip", "maximum", "minimum", "where", "matmul", "cast", "clone", "masked_fill",
           "sign", "square", "log1p", "sin", "cos"]


def _bshape(op: str, a: np.ndarray, b: np.ndarray) -> None:
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast together"
        ) from None


class Add(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        if a.shape != b.shape:
            _bshape("add", a, b)
        return a + b

    def backward(self, g):
        sa, sb = self.shapes
        return unbroadcast(g, sa), unbroadcast(g, sb)


class Sub(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        if a.shape != b.shape:
            _bshape("sub", a, b)
        return a - b

    def backward(self, g):
        sa, sb = self.shapes
        return unbroadcast(g, sa), (unbroadcast(-g, sb) if self.needs_input_grad[1] else None)


class Mul(Function):
    def forward(self, a, b):
        if a.shape != b.shape:
            _bshape("mul", a, b)
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        a, b = self.a, self.b
        ga = unbroadcast(g * b, a.shape) if self.needs_input_grad[0] else None
        gb = unbroadcast(g * a, b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        if a.shape != b.shape:
            _bshape("div", a, b)
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        a, b = self.a, self.b
        gb_ = g / b
        ga = unbroadcast(gb_, a.shape) if self.needs_input_grad[0] else None
        gb = unbroadcast(-gb_ * a / b, b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class PowScalar(Function):
    def forward(self, a, exponent):
        self.a, self.e = a, exponent
        return a ** exponent

    def backward(self, g):
        a, e = self.a, self.e
        if e == 0:
            return np.zeros_like(a)
        if e == 2:
            return g * (2 * a)
        return g * (e * a ** (e - 1))


class Pow(Function):
    def forward(self, a, b):
        if a.shape != b.shape:
            _bshape("pow", a, b)
        self.a, self.b = a, b
        self.out = a ** b
        return self.out

    def backward(self, g):
        a, b, out = self.a, self.b, self.out
        ga = gb = None
        if self.needs_input_grad[0]:
            with np.errstate(divide="ignore", invalid="ignore"):
                d = np.where(b == 0, 0, b * a ** (b - 1))
            ga = unbroadcast(g * d, a.shape)
        if self.needs_input_grad[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                d = np.where((a == 0) & (b >= 0), 0, out * np.log(a))
            gb = unbroadcast(g * d, b.shape)
        return ga, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class Exp(Function):
    def forward(self, a):
        self.out = np.exp(a)
        return self.out

    def backward(self, g):
        return g * self.out


class Log(Function):
    def forward(self, a):
        self.a = a
        return np.log(a)

    def backward(self, g):
        return g / self.a


class Log1p(Function):
    def forward(self, a):
        self.a = a
        return np.log1p(a)

    def backward(self, g):
        return g / (1 + self.a)


class Sqrt(Function):
    def forward(self, a):
        self.out = np.sqrt(a)
        return self.out

    def backward(self, g):
        return g / (2 * self.out)


class Abs(Function):
    def forward(self, a):
        self.a = a
        return np.abs(a)

    def backward(self, g):
        return g * np.sign(self.a)


class Sin(Function):
    def forward(self, a):
        self.a = a
        return np.sin(a)

    def backward(self, g):
        return g * np.cos(self.a)


class Cos(Function):
    def forward(self, a):
        self.a = a
        return np.cos(a)

    def backward(self, g):
        return -g * np.sin(self.a)


class Clamp(Function):
    def forward(self, a, lo=None, hi=None):
        self.a, self.lo, self.hi = a, lo, hi
        return np.clip(a, lo, hi)

    def backward(self, g):
        a, lo, hi = self.a, self.lo, self.hi
        mask = np.ones(a.shape, bool)
        if lo is not None:
            mask &= a >= lo
        if hi is not None:
            mask &= a <= hi
        return g * mask


class Maximum(Function):
    """Ties send half the gradient to each side (as torch does)."""

    def forward(self, a, b):
        if a.shape != b.shape:
            _bshape("maximum", a, b)
        self.a, self.b = a, b
        return np.maximum(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        wa = (a > b) + 0.5 * (a == b)
        ga = unbroadcast(g * wa, a.shape) if self.needs_input_grad[0] else None
        gb = unbroadcast(g * (1 - wa), b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Minimum(Function):
    def forward(self, a, b):
        if a.shape != b.shape:
            _bshape("minimum", a, b)
        self.a, self.b = a, b
        return np.minimum(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        wa = (a < b) + 0.5 * (a == b)
        ga = unbroadcast(g * wa, a.shape) if self.needs_input_grad[0] else None
        gb = unbroadcast(g * (1 - wa), b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Where(Function):
    def forward(self, a, b, cond=None):
        self.cond, self.sa, self.sb = cond, a.shape, b.shape
        return np.where(cond, a, b)

    def backward(self, g):
        c = self.cond
        ga = unbroadcast(np.where(c, g, 0), self.sa) if self.needs_input_grad[0] else None
        gb = unbroadcast(np.where(c, 0, g), self.sb) if self.needs_input_grad[1] else None
        return ga, gb


class MatMul(Function):
    """``a @ b`` for tensors with >= 2 dims, batch dims broadcast."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return np.matmul(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = unbroadcast(np.matmul(g, np.swapaxes(b, -1, -2)), a.shape)
        if self.needs_input_grad[1]:
            if a.ndim == 2 and g.ndim == 2:
                gb = a.T @ g
            else:
                gb = unbroadcast(np.matmul(np.swapaxes(a, -1, -2), g), b.shape)
        return ga, gb


class Cast(Function):
    def forward(self, a, dtype=None):
        self.dtype = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return g.astype(self.dtype)


class Clone(Function):
    def forward(self, a):
        return a.copy()

    def backward(self, g):
        return g


# ------------------------------------------------------------------ wrappers
def add(a, b) -> Tensor:
    a, b = pair(a, b)
    return Add.apply(a, b)


def sub(a, b) -> Tensor:
    a, b = pair(a, b)
    return Sub.apply(a, b)


def mul(a, b) -> Tensor:
    a, b = pair(a, b)
    return Mul.apply(a, b)


def div(a, b) -> Tensor:
    a, b = pair(a, b)
    if a.data.dtype.kind in "biu" and b.data.dtype.kind in "biu":
        a = cast(a, np.dtype(np.float32))
    return Div.apply(a, b)


def pow(a, exponent) -> Tensor:
    """``a ** exponent``; a Python-number exponent takes the fast path."""
    if isinstance(a, Tensor) and isinstance(exponent, (int, float)) and not isinstance(
        exponent, bool
    ):
        return PowScalar.apply(a, exponent=exponent)
    a, b = pair(a, exponent)
    return Pow.apply(a, b)


def square(a: Tensor) -> Tensor:
    return PowScalar.apply(a, exponent=2)


def neg(a: Tensor) -> Tensor:
    return Neg.apply(a)


def exp(a: Tensor) -> Tensor:
    return Exp.apply(as_tensor(a))


def log(a: Tensor) -> Tensor:
    return Log.apply(as_tensor(a))


def log1p(a: Tensor) -> Tensor:
    return Log1p.apply(as_tensor(a))


def sqrt(a: Tensor) -> Tensor:
    return Sqrt.apply(as_tensor(a))


def abs(a: Tensor) -> Tensor:
    return Abs.apply(as_tensor(a))


def sin(a: Tensor) -> Tensor:
    return Sin.apply(as_tensor(a))


def cos(a: Tensor) -> Tensor:
    return Cos.apply(as_tensor(a))


def sign(a: Tensor) -> Tensor:
    return Tensor(np.sign(a.data))


def clamp(a: Tensor, min=None, max=None) -> Tensor:
    """Limit values to ``[min, max]``; the gradient passes where ``min <= a <= max``."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        out = a
        if min is not None:
            out = maximum(out, min)
        if max is not None:
            out = minimum(out, max)
        return out
    return Clamp.apply(a, lo=min, hi=max)


clip = clamp


def maximum(a, b) -> Tensor:
    a, b = pair(a, b)
    return Maximum.apply(a, b)


def minimum(a, b) -> Tensor:
    a, b = pair(a, b)
    return Minimum.apply(a, b)


def where(condition, a, b) -> Tensor:
    """``a`` where ``condition`` is true, else ``b`` (all three broadcast)."""
    cond = condition.data if isinstance(condition, Tensor) else np.asarray(condition)
    if cond.dtype != np.bool_:
        cond = cond.astype(bool)
    a, b = pair(a, b)
    return Where.apply(a, b, cond=cond)


def masked_fill(a: Tensor, mask, value) -> Tensor:
    """``a`` with ``value`` wherever ``mask`` is true."""
    return where(mask, as_tensor(value, a), a)


def matmul(a, b) -> Tensor:
    """Matrix product with NumPy's rules: 1-D operands are promoted, batch dims broadcast."""
    a, b = pair(a, b)
    ad, bd = a.data, b.data
    if ad.ndim == 0 or bd.ndim == 0:
        raise ValueError(f"matmul: both arguments must be at least 1-D, got shapes "
                         f"{ad.shape} and {bd.shape}")
    ka = ad.shape[-1]
    kb = bd.shape[-2] if bd.ndim >= 2 else bd.shape[0]
    if ka != kb:
        raise ValueError(
            f"matmul: shapes {ad.shape} and {bd.shape} cannot be multiplied "
            f"({ka} != {kb} in the contracted dimension)"
        )
    if ad.ndim > 2 or bd.ndim > 2:
        try:
            np.broadcast_shapes(ad.shape[:-2], bd.shape[:-2])
        except ValueError:
            raise ValueError(f"matmul: batch dimensions of {ad.shape} and {bd.shape} "
                             "cannot be broadcast") from None
    from shendu.functional.shape import reshape

    if ad.ndim == 1 and bd.ndim == 1:
        return reshape(MatMul.apply(reshape(a, (1, -1)), reshape(b, (-1, 1))), ())
    if ad.ndim == 1:
        out = MatMul.apply(reshape(a, (1, -1)), b)
        return reshape(out, out.shape[:-2] + out.shape[-1:])
    if bd.ndim == 1:
        out = MatMul.apply(a, reshape(b, (-1, 1)))
        return reshape(out, out.shape[:-1])
    return MatMul.apply(a, b)


def cast(a: Tensor, dtype) -> Tensor:
    if a.data.dtype == dtype:
        return a
    if np.dtype(dtype).kind not in "fc":
        return Tensor(a.data.astype(dtype))
    return Cast.apply(a, dtype=dtype)


def clone(a: Tensor) -> Tensor:
    return Clone.apply(a)
