"""Activation functions and the softmax family.

At kinks we follow torch: ``relu'(0) = 0``, ``leaky_relu'(0) = negative_slope``,
``elu'(0) = alpha``. Sigmoid, softplus, softmax and log-softmax are written so that
inputs of ±1000 give finite values and gradients.
"""

from __future__ import annotations

import math

import numpy as np

from shendu.autograd import Function
from shendu.functional import _numba
from shendu.functional import conv as _conv
from shendu.functional._util import norm_dim
from shendu.tensor import Tensor

__all__ = ["relu", "hardtanh", "relu6", "leaky_relu", "sigmoid", "tanh", "gelu", "softplus",
           "softmax",
           "log_softmax", "elu", "silu"]


class ReLU(Function):
    """``max(a, 0)``; ``da = g [a > 0]``."""

    saved_inputs = ()
    saved_outputs = (0,)

    def forward(self, a):
        kern = _numba.kernels_for(a, min_size=_COMPILED_MIN)
        if kern is not None or a.size >= _conv.PARALLEL_MIN:
            out = np.empty_like(a)
            flat = (a.reshape(-1), out.reshape(-1)) if a.flags.c_contiguous else \
                _dense_flat(a, out)
            if flat is not None:     # one compiled pass; large: split over the kernel threads
                fa, fo = flat
                if kern is not None:
                    def part(lo, hi):
                        kern.relu_into(fa[lo:hi], fo[lo:hi])
                else:
                    def part(lo, hi):
                        np.maximum(fa[lo:hi], 0, out=fo[lo:hi])
                if a.size >= _conv.PARALLEL_MIN:
                    _conv.parallel(part, fa.size, fa.size)
                else:
                    part(0, fa.size)
                self.out = out
                return out
        self.out = np.maximum(a, 0)
        return self.out

    def backward(self, g):
        out = self.out
        kern = _numba.kernels_for(g, out, min_size=_COMPILED_MIN)
        if kern is not None and g.shape == out.shape and g.strides == out.strides:
            # one pass over the memory of both, whatever its order (conv's batch-innermost
            # activations included), where both are dense in it
            d = np.empty_like(g)
            flat = _dense_flat(g, out, d)
            if flat is not None:
                fg, fh, fd = flat
                _conv.parallel(lambda lo, hi: kern.relu_grad_into(fg[lo:hi], fh[lo:hi],
                                                                  fd[lo:hi]),
                               fg.size, fg.size)
                return d
        return g * ~(out <= 0)  # 0 at 0; g at NaN (torch's threshold rule)


def _dense_flat(*arrays):
    """The 1-D views of ``arrays`` in their memory order (``ravel(order="K")``), or None
    when one of them is not dense in memory (the ravel would copy) or they do not share
    one order (then the i-th elements of the views would not be the same element)."""
    if any(a.strides != arrays[0].strides for a in arrays):
        return None
    flat = [a.ravel(order="K") for a in arrays]
    if all(np.may_share_memory(f, a) for f, a in zip(flat, arrays)):
        return flat
    return None


#: elements from which ReLU's forward and backward run as one compiled loop
#: (``functional._numba``); below, NumPy's passes cost less than the call (a (64, 64)
#: float32 array: forward 1.7 against 2.9 µs, backward 4.4 against 7.1)
_COMPILED_MIN = 1 << 14


class LeakyReLU(Function):
    """``a`` for ``a > 0``, else ``slope * a`` (Maas, Hannun & Ng 2013)."""

    saved_inputs = (0,)

    def forward(self, a, slope=0.01):
        self.pos, self.slope = a > 0, slope
        return np.where(self.pos, a, a * slope)

    def backward(self, g):
        return np.where(self.pos, g, g * self.slope)


def _sigmoid(a: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-a)) without overflow for large |a|."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)


class Sigmoid(Function):
    """``s = 1 / (1 + e^-a)``; ``da = g s (1 - s)``."""

    saved_inputs = ()
    saved_outputs = (0,)

    def forward(self, a):
        self.out = _sigmoid(a)
        return self.out

    def backward(self, g):
        s = self.out
        return g * s * (1 - s)


class Tanh(Function):
    """``t = tanh(a)``; ``da = g (1 - t^2)``."""

    saved_inputs = ()
    saved_outputs = (0,)

    def forward(self, a):
        self.out = np.tanh(a)
        return self.out

    def backward(self, g):
        return g * (1 - self.out * self.out)


# W. J. Cody, "Rational Chebyshev approximations for the error function", Mathematics of
# Computation 23 (1969) 631-638: near-minimax rational approximations on three intervals,
# good to about 1e-16 relative in float64 (the published coefficients).
_ERF_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
          3.20937758913846947e03, 1.85777706184603153e-1)
_ERF_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
          2.84423683343917062e03)
_ERF_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
          2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
          2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_ERF_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
          1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
          3.43936767414372164e03, 1.23033935480374942e03)
_ERF_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
          1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_ERF_Q = (2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1,
          6.05183413124413191e-2, 2.33520497626869185e-3)
_SQRT_1_PI = 0.56418958354775628695


def _erfc_tail(y: np.ndarray) -> np.ndarray:
    """``erfc(y)`` for ``y > 0.46875`` (Cody's second and third intervals)."""
    mid = y <= 4.0
    ym = np.where(mid, y, 4.0)
    num, den = _ERF_C[8] * ym, ym
    for i in range(7):
        num, den = (num + _ERF_C[i]) * ym, (den + _ERF_D[i]) * ym
    r_mid = (num + _ERF_C[7]) / (den + _ERF_D[7])
    yl = np.where(mid, 4.0, y)
    z = 1.0 / (yl * yl)
    num, den = _ERF_P[5] * z, z
    for i in range(4):
        num, den = (num + _ERF_P[i]) * z, (den + _ERF_Q[i]) * z
    r_big = (_SQRT_1_PI - z * (num + _ERF_P[4]) / (den + _ERF_Q[4])) / yl
    # exp(-y^2) split as exp(-t^2) exp(-(y-t)(y+t)), t = y rounded down to 1/16: keeps
    # the relative accuracy of the tiny result
    t = np.trunc(y * 16.0) / 16.0
    with np.errstate(under="ignore", over="ignore"):
        e = np.exp(-t * t) * np.exp(-(y - t) * (y + t))
    return np.where(y >= 26.543, 0.0, e * np.where(mid, r_mid, r_big))


def _erf_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(erf on the small interval, erfc(|x|) elsewhere, mask of the small interval)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.abs(x)
    small = y <= 0.46875
    ys = np.where(small, y, 0.0)
    z = ys * ys
    num, den = _ERF_A[4] * z, z
    for i in range(3):
        num, den = (num + _ERF_A[i]) * z, (den + _ERF_B[i]) * z
    erf_small = np.where(small, x, 0.0) * (num + _ERF_A[3]) / (den + _ERF_B[3])
    tail = _erfc_tail(np.where(small, 1.0, y))
    return erf_small, tail, small


def erf(x: np.ndarray) -> np.ndarray:
    """The error function ``(2/sqrt(pi)) int_0^x exp(-t^2) dt`` on arrays (float64 math)."""
    x = np.asarray(x)
    small_val, tail, small = _erf_parts(x)
    out = np.where(small, small_val, np.copysign(1.0 - tail, x))
    return out.astype(x.dtype if x.dtype.kind == "f" else np.float64, copy=False)


_SCIPY_ERFC: list = []  # [function or None], looked up on first use


def _scipy_erfc():
    """SciPy's compiled erfc when SciPy is installed (about 30x faster than the NumPy
    rational approximation below, and as accurate); never imported at ``import shendu``."""
    if not _SCIPY_ERFC:
        try:
            from scipy.special import erfc as f
        except ImportError:  # pragma: no cover - SciPy is optional
            f = None
        _SCIPY_ERFC.append(f)
    return _SCIPY_ERFC[0]


def erfc(x: np.ndarray) -> np.ndarray:
    """``1 - erf(x)``, without the cancellation for large ``x``."""
    x = np.asarray(x)
    fast = _scipy_erfc()
    if fast is not None and x.dtype.kind == "f":
        return fast(x)
    small_val, tail, small = _erf_parts(x)
    out = np.where(small, 1.0 - small_val, np.where(x < 0, 2.0 - tail, tail))
    return out.astype(x.dtype if x.dtype.kind == "f" else np.float64, copy=False)


class GELU(Function):
    r"""Gaussian error linear unit (Hendrycks & Gimpel 2016).

    Exact: ``x Phi(x)``, ``Phi(x) = erfc(-x / sqrt 2) / 2``, derivative ``Phi(x) + x phi(x)``.
    ``approximate="tanh"``: ``x (1 + tanh(k (x + 0.044715 x^3))) / 2``, ``k = sqrt(2/pi)``.
    """

    saved_inputs = (0,)

    def forward(self, a, approximate="none"):
        self.a, self.approx = a, approximate
        if approximate == "tanh":
            k = math.sqrt(2 / math.pi)
            self.t = np.tanh(k * (a + 0.044715 * (a * a * a)))  # a ** 3 is ~30x slower
            return 0.5 * a * (1 + self.t)
        self.cdf = 0.5 * erfc(-a * (1 / math.sqrt(2)))  # Phi(a), accurate in both tails
        return a * self.cdf

    def backward(self, g):
        a = self.a
        if self.approx == "tanh":
            k = math.sqrt(2 / math.pi)
            t = self.t
            return g * (0.5 * (1 + t) + 0.5 * a * (1 - t * t) * k * (1 + 3 * 0.044715 * a * a))
        pdf = np.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
        return g * (self.cdf + a * pdf)


class Softplus(Function):
    """``log(1 + e^(beta a)) / beta``, linear where ``beta a > threshold`` (as torch);
    ``da = g sigmoid(beta a)``."""

    saved_inputs = (0,)

    def forward(self, a, beta=1.0, threshold=20.0):
        self.lin = a * beta > threshold
        self.ba = a * beta
        return np.where(self.lin, a, np.logaddexp(0, self.ba) / beta).astype(a.dtype, copy=False)

    def backward(self, g):
        return np.where(self.lin, g, g * _sigmoid(self.ba))


class ELU(Function):
    """``a`` for ``a > 0``, else ``alpha (e^a - 1)`` (Clevert, Unterthiner & Hochreiter 2016)."""

    saved_inputs = (0,)

    def forward(self, a, alpha=1.0):
        self.neg, self.alpha = a <= 0, alpha
        self.em1 = np.expm1(np.minimum(a, 0))
        return np.where(self.neg, alpha * self.em1, a)

    def backward(self, g):
        # alpha e^a where a <= 0, g elsewhere (NaN included, as torch)
        return np.where(self.neg, g * self.alpha * (self.em1 + 1), g)


class SiLU(Function):
    """``a sigmoid(a)`` (Elfwing, Uchibe & Doya 2018; "swish");
    ``da = g s (1 + a (1 - s))``."""

    saved_inputs = (0,)

    def forward(self, a):
        self.a, self.s = a, _sigmoid(a)
        return a * self.s

    def backward(self, g):
        s = self.s
        return g * s * (1 + self.a * (1 - s))


class Hardtanh(Function):
    """``clip(a, lo, hi)``; ``da = g`` strictly inside ``(lo, hi)``, 0 on and outside the
    edges (torch's rule, unlike ``clamp``, whose gradient passes on the edges)."""

    saved_inputs = (0,)

    def forward(self, a, lo=-1.0, hi=1.0):
        self.a, self.lo, self.hi = a, lo, hi
        return np.clip(a, lo, hi)

    def backward(self, g):
        a = self.a
        return np.where((a <= self.lo) | (a >= self.hi), 0, g)


class Softmax(Function):
    r"""``s_i = e^(a_i - m) / sum_j e^(a_j - m)``, ``m = max a`` (shift-invariant, no overflow).

    ``da = s (g - sum_j g_j s_j)`` (the Jacobian ``diag(s) - s s^T`` applied to ``g``).
    """

    saved_inputs = ()
    saved_outputs = (0,)

    def forward(self, a, dim=-1):
        if a.size == 0:
            self.out, self.dim = np.empty_like(a), dim
            return self.out
        e = np.exp(a - a.max(axis=dim, keepdims=True))
        self.out = e / e.sum(axis=dim, keepdims=True)
        self.dim = dim
        return self.out

    def backward(self, g):
        s = self.out
        return s * (g - (g * s).sum(axis=self.dim, keepdims=True))


class LogSoftmax(Function):
    r"""``l_i = a_i - logsumexp(a)``, shifted by the max; ``da = g - softmax(a) sum_j g_j``."""

    saved_inputs = ()
    saved_outputs = (0,)

    def forward(self, a, dim=-1):
        if a.size == 0:
            self.out, self.dim = np.empty_like(a), dim
            return self.out
        shifted = a - a.max(axis=dim, keepdims=True)
        self.out = shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))
        self.dim = dim
        return self.out

    def backward(self, g):
        return g - np.exp(self.out) * g.sum(axis=self.dim, keepdims=True)


def relu(x: Tensor) -> Tensor:
    return ReLU.apply(x)


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    return LeakyReLU.apply(x, slope=negative_slope)


def hardtanh(x: Tensor, min_val: float = -1.0, max_val: float = 1.0) -> Tensor:
    """``clip(x, min_val, max_val)``, with torch's gradient (0 on the edges)."""
    return Hardtanh.apply(x, lo=min_val, hi=max_val)


def relu6(x: Tensor) -> Tensor:
    return Hardtanh.apply(x, lo=0.0, hi=6.0)


def sigmoid(x: Tensor) -> Tensor:
    """Logistic function, stable for large |x|."""
    return Sigmoid.apply(x)


def tanh(x: Tensor) -> Tensor:
    return Tanh.apply(x)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(x, approximate=approximate)


def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``log(1 + exp(beta x)) / beta``; linear above ``threshold`` (as torch)."""
    return Softplus.apply(x, beta=beta, threshold=threshold)


def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    return ELU.apply(x, alpha=alpha)


def silu(x: Tensor) -> Tensor:
    return SiLU.apply(x)


def _softmax_dim(x: Tensor, dim, op: str):
    d = norm_dim(dim, max(x.data.ndim, 1), op)
    return None if x.data.ndim == 0 else d


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Softmax along ``dim``: ``e^x_i / sum_j e^x_j``, stable for any input magnitude."""
    return Softmax.apply(x, dim=_softmax_dim(x, dim, "softmax"))


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """``log softmax(x)`` along ``dim``, computed as ``x - logsumexp(x)`` (stable)."""
    return LogSoftmax.apply(x, dim=_softmax_dim(x, dim, "log_softmax"))
