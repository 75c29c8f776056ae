"""Activation functions and the softmax family."""

from __future__ import annotations

import math

import numpy as np

from shendu.autograd import Function
from shendu.functional._util import norm_dim
from shendu.tensor import Tensor

__all__ = ["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "softplus", "softmax",
           "log_softmax", "elu", "silu"]


class ReLU(Function):
    def forward(self, a):
        self.out = np.maximum(a, 0)
        return self.out

    def backward(self, g):
        return g * (self.out > 0)


class LeakyReLU(Function):
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
    def forward(self, a):
        self.out = _sigmoid(a)
        return self.out

    def backward(self, g):
        s = self.out
        return g * s * (1 - s)


class Tanh(Function):
    def forward(self, a):
        self.out = np.tanh(a)
        return self.out

    def backward(self, g):
        return g * (1 - self.out * self.out)


def _erf(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erf
    except ImportError:  # pragma: no cover - scipy is usually present
        erf = np.frompyfunc(math.erf, 1, 1)
    return np.asarray(erf(x), dtype=x.dtype)


class GELU(Function):
    """Exact ``x * Phi(x)`` or the tanh approximation (Hendrycks & Gimpel 2016)."""

    def forward(self, a, approximate="none"):
        self.a, self.approx = a, approximate
        if approximate == "tanh":
            k = math.sqrt(2 / math.pi)
            self.t = np.tanh(k * (a + 0.044715 * a ** 3))
            return 0.5 * a * (1 + self.t)
        self.cdf = 0.5 * (1 + _erf(a / math.sqrt(2)))
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
    def forward(self, a, beta=1.0, threshold=20.0):
        self.lin = a * beta > threshold
        self.ba = a * beta
        return np.where(self.lin, a, np.logaddexp(0, self.ba) / beta).astype(a.dtype, copy=False)

    def backward(self, g):
        return np.where(self.lin, g, g * _sigmoid(self.ba))


class ELU(Function):
    def forward(self, a, alpha=1.0):
        self.pos, self.alpha = a > 0, alpha
        self.em1 = np.expm1(np.minimum(a, 0))
        return np.where(self.pos, a, alpha * self.em1)

    def backward(self, g):
        return np.where(self.pos, g, g * self.alpha * (self.em1 + 1))


class SiLU(Function):
    def forward(self, a):
        self.a, self.s = a, _sigmoid(a)
        return a * self.s

    def backward(self, g):
        s = self.s
        return g * s * (1 + self.a * (1 - s))


class Softmax(Function):
    def forward(self, a, dim=-1):
        e = np.exp(a - a.max(axis=dim, keepdims=True))
        self.out = e / e.sum(axis=dim, keepdims=True)
        self.dim = dim
        return self.out

    def backward(self, g):
        s = self.out
        return s * (g - (g * s).sum(axis=self.dim, keepdims=True))


class LogSoftmax(Function):
    def forward(self, a, dim=-1):
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


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    return Softmax.apply(x, dim=norm_dim(dim, max(x.data.ndim, 1), "softmax"))


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    return LogSoftmax.apply(x, dim=norm_dim(dim, max(x.data.ndim, 1), "log_softmax"))
