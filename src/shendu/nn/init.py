r"""Parameter initialisation with torch's names, formulas and fan rules (``nn.init``).

Why the scale matters: a layer ``y = W x`` with ``fan_in`` inputs of unit variance gives
outputs of variance ``fan_in Var(W)``; keeping that near one through depth is what makes deep
networks trainable. The schemes differ in which variance they keep and for which activation:

=============================  ============================================================
``xavier_*`` (Glorot &          ``Var(W) = gain^2 * 2 / (fan_in + fan_out)``: a compromise
Bengio 2010)                    between forward and backward variance, for tanh/sigmoid.
``kaiming_*`` (He et al.        ``Var(W) = gain^2 / fan``: ``gain = sqrt(2)`` for ReLU,
2015)                           ``sqrt(2 / (1 + a^2))`` for leaky ReLU of slope ``a``.
``orthogonal_`` (Saxe,          a random (semi-)orthogonal matrix: every singular value is
McClelland & Ganguli 2014)      ``gain``, so deep linear maps neither shrink nor explode.
=============================  ============================================================

A uniform ``U(-b, b)`` has variance ``b^2 / 3``, hence the uniform bounds ``sqrt(3) * std``.
For a weight of shape ``(out, in, k1, k2, ...)`` (torch's layout, convolutions included)
``fan_in = in * k1 * k2 ...`` and ``fan_out = out * k1 * k2 ...``.

Every draw uses shendu's seeded generator (:func:`shendu.manual_seed`), or the
``generator`` passed: the same seed gives the same weights, bit for bit. Zero-element
tensors are left alone, as in torch.
"""

from __future__ import annotations

import math

import numpy as np

from shendu.backend import rng
from shendu.tensor import Tensor

__all__ = ["calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_", "eye_",
           "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
           "orthogonal_", "trunc_normal_"]

_LINEAR = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
           "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The gain torch recommends for an activation: 1 for linear/conv/sigmoid, 5/3 for tanh,
    sqrt(2) for ReLU, sqrt(2 / (1 + slope^2)) for leaky ReLU (slope ``param``, default
    0.01), 3/4 for SELU."""
    if nonlinearity in _LINEAR:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(t: Tensor) -> tuple[int, int]:
    shape = t.data.shape
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out can not be computed for a tensor with fewer than "
                         f"2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan(t: Tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(t)
    return fan_in if mode == "fan_in" else fan_out


def _gen(generator) -> np.random.Generator:
    return rng() if generator is None else generator


def _fill(t: Tensor, arr) -> Tensor:
    if t.data.dtype.kind != "f":
        raise TypeError(f"nn.init: expected a floating tensor, got {t.data.dtype}")
    t.data[...] = np.asarray(arr).astype(t.data.dtype, copy=False)
    t._version[0] += 1
    return t


def uniform_(t: Tensor, a: float = 0.0, b: float = 1.0, generator=None) -> Tensor:
    """Fill ``t`` from ``U(a, b)``."""
    if not a <= b:
        raise ValueError(f"uniform_: expects a <= b, got a={a}, b={b}")
    return _fill(t, _gen(generator).uniform(a, b, t.data.shape))


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0, generator=None) -> Tensor:
    """Fill ``t`` from ``N(mean, std^2)``."""
    if not std >= 0:
        raise ValueError(f"normal_: expects std >= 0, got {std}")
    return _fill(t, _gen(generator).normal(mean, std, t.data.shape))


# Acklam's rational approximation of the standard normal quantile (relative error < 1.2e-9)
_A = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
      1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00)
_B = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
      6.680131188771972e+01, -1.328068155288572e+01, 1.0)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
      -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
      3.754408661907416e+00, 1.0)


def _ndtri(p: np.ndarray) -> np.ndarray:
    """Inverse of the standard normal CDF for ``p`` in (0, 1)."""
    p = np.clip(p, np.finfo(np.float64).tiny, 1 - np.finfo(np.float64).epsneg)
    x = np.empty_like(p)
    lo, hi = p < 0.02425, p > 1 - 0.02425
    mid = ~(lo | hi)
    q = p[mid] - 0.5
    r = q * q
    x[mid] = q * np.polyval(_A, r) / np.polyval(_B, r)
    for mask, sign, tail in ((lo, 1.0, p[lo]), (hi, -1.0, 1 - p[hi])):
        s = np.sqrt(-2 * np.log(tail))
        x[mask] = sign * np.polyval(_C, s) / np.polyval(_D, s)
    return x


def _phi(z: float) -> float:
    """Standard normal CDF, accurate in the lower tail."""
    return 0.5 * math.erfc(-z / math.sqrt(2))


def trunc_normal_(t: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                  b: float = 2.0, generator=None) -> Tensor:
    """Fill ``t`` from ``N(mean, std^2)`` truncated to ``[a, b]`` (absolute bounds, as torch).

    Exact inverse-CDF sampling, ``x = Phi^{-1}(U(Phi(alpha), Phi(beta)))`` with the standardised
    bounds, done in whichever tail keeps the probabilities representable; so a window far
    from the mean costs no more than one around it (rejection sampling would never end).
    """
    if not std > 0:
        raise ValueError(f"trunc_normal_: expects std > 0, got {std}")
    if not a < b:
        raise ValueError(f"trunc_normal_: expects a < b, got a={a}, b={b}")
    lo, hi = (a - mean) / std, (b - mean) / std
    flip = lo > 0  # both bounds in the upper tail: sample the mirror image in the lower one
    if flip:
        lo, hi = -hi, -lo
    u = _gen(generator).uniform(_phi(lo), _phi(hi), t.data.shape)
    z = _ndtri(u)
    if flip:
        z = -z
    return _fill(t, np.clip(mean + std * z, a, b))


def constant_(t: Tensor, val: float) -> Tensor:
    """Fill ``t`` with ``val``."""
    t.data[...] = val
    t._version[0] += 1
    return t


def zeros_(t: Tensor) -> Tensor:
    return constant_(t, 0.0)


def ones_(t: Tensor) -> Tensor:
    return constant_(t, 1.0)


def eye_(t: Tensor) -> Tensor:
    """The identity matrix (2-D tensors only); keeps the input in linear layers."""
    if t.data.ndim != 2:
        raise ValueError(f"eye_: only 2-D tensors are supported, got {t.data.shape}")
    return _fill(t, np.eye(*t.data.shape))


def xavier_uniform_(t: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    """Glorot & Bengio (2010): ``U(-b, b)``, ``b = gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(t)
    if t.data.size == 0:
        return t
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound, generator)


def xavier_normal_(t: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    """Glorot & Bengio (2010): ``N(0, std^2)``, ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(t)
    if t.data.size == 0:
        return t
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def kaiming_uniform_(t: Tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", generator=None) -> Tensor:
    """He et al. (2015): ``U(-b, b)``, ``b = gain * sqrt(3 / fan)``, gain from
    :func:`calculate_gain` (``a`` is the leaky-ReLU slope)."""
    fan = _fan(t, mode)
    if t.data.size == 0:
        return t
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return uniform_(t, -bound, bound, generator)


def kaiming_normal_(t: Tensor, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", generator=None) -> Tensor:
    """He et al. (2015): ``N(0, std^2)``, ``std = gain / sqrt(fan)``."""
    fan = _fan(t, mode)
    if t.data.size == 0:
        return t
    return normal_(t, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan), generator)


def orthogonal_(t: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    """Saxe, McClelland & Ganguli (2014): ``gain`` times a (semi-)orthogonal matrix.

    The tensor is viewed as ``(rows, cols)`` = ``(shape[0], size / shape[0])``; the Q of a
    Gaussian matrix's QR, with the signs of R's diagonal folded in so that Q is uniformly
    (Haar) distributed (Mezzadri 2007), has orthonormal rows or columns, whichever are fewer.
    """
    if t.data.ndim < 2:
        raise ValueError(f"orthogonal_: only tensors with 2 or more dimensions are supported, "
                         f"got {t.data.shape}")
    if t.data.size == 0:
        return t
    rows = t.data.shape[0]
    cols = t.data.size // rows
    flat = _gen(generator).standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return _fill(t, gain * q.reshape(t.data.shape))
