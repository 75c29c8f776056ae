"""Activations as modules: thin wrappers over :mod:`shendu.functional`, with torch's
constructor arguments and ``repr``.

``inplace=True`` is accepted for compatibility and shown in ``repr`` as torch does; the
result is computed out of place (an in-place activation would overwrite what the backward
of the previous op saved).
"""

from __future__ import annotations

import warnings

import numpy as np

from shendu import functional as F
from shendu.backend import as_dtype, get_default_dtype
from shendu.nn.module import Module, Parameter
from shendu.tensor import Tensor

__all__ = ["ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "SELU", "GELU", "SiLU", "Mish",
           "Sigmoid", "Tanh", "Hardtanh", "Softplus", "Softmax", "LogSoftmax"]


def _inplace_repr(inplace: bool) -> str:
    return "inplace=True" if inplace else ""


class ReLU(Module):
    """``max(0, x)`` (Nair & Hinton 2010; Glorot, Bordes & Bengio 2011)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)

    def extra_repr(self) -> str:
        return _inplace_repr(self.inplace)


class Hardtanh(Module):
    """``clip(x, min_val, max_val)``: a piecewise-linear tanh."""

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False
                 ) -> None:
        super().__init__()
        if not max_val > min_val:
            raise ValueError(f"{type(self).__name__}: max_val ({max_val}) must be greater than "
                             f"min_val ({min_val})")
        self.min_val, self.max_val, self.inplace = min_val, max_val, inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.hardtanh(x, self.min_val, self.max_val)

    def extra_repr(self) -> str:
        tail = ", inplace=True" if self.inplace else ""
        return f"min_val={self.min_val}, max_val={self.max_val}{tail}"


class ReLU6(Hardtanh):
    """``min(max(0, x), 6)`` (Krizhevsky 2010; MobileNets, Howard et al. 2017)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self) -> str:
        return _inplace_repr(self.inplace)


class LeakyReLU(Module):
    """``x`` for ``x > 0`` else ``negative_slope * x`` (Maas, Hannun & Ng 2013)."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace
                                                          else "")


class PReLU(Module):
    """Leaky ReLU with a learned slope ``weight`` (He et al. 2015): ``max(0, x) + a min(0, x)``.

    ``num_parameters`` is 1 (one slope shared) or the number of channels (dim 1 of the
    input); every slope starts at ``init``.
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.25, device=None, dtype=None
                 ) -> None:
        super().__init__()
        if num_parameters < 1:
            raise ValueError(f"PReLU: num_parameters must be at least 1, got {num_parameters}")
        self.num_parameters = int(num_parameters)
        self.init = init
        dt = get_default_dtype() if dtype is None else as_dtype(dtype)
        self.weight = Parameter(np.full((self.num_parameters,), init, dt))

    def reset_parameters(self) -> None:
        self.weight.data[...] = self.init

    def forward(self, x: Tensor) -> Tensor:
        a = self.weight
        if self.num_parameters > 1:
            if x.ndim < 2:
                raise ValueError(f"PReLU({self.num_parameters}) expected input with a channel "
                                 f"dim (dim 1), got {tuple(x.shape)}: a 0- or 1-D input has "
                                 "no channel dim (one channel)")
            if x.shape[1] != self.num_parameters:
                raise ValueError(f"PReLU({self.num_parameters}) expected {self.num_parameters} "
                                 f"channels at dim 1, got input {tuple(x.shape)}")
            a = F.reshape(a, (self.num_parameters,) + (1,) * (x.ndim - 2))
        return F.where(x > 0, x, a * x)  # at 0 the slope is the weight's (as torch)

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"


class ELU(Module):
    """``x`` for ``x > 0`` else ``alpha (e^x - 1)`` (Clevert, Unterthiner & Hochreiter 2015)."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha, self.inplace = alpha, inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class SELU(Module):
    """``scale * elu(x, alpha)`` with the self-normalising constants of Klambauer et al.
    (2017); pair it with ``kaiming_normal_(w, nonlinearity='linear')`` initialisation."""

    alpha = 1.6732632423543772848170429916717
    scale = 1.0507009873554804934193349852946

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.elu(x, self.alpha) * self.scale

    def extra_repr(self) -> str:
        return _inplace_repr(self.inplace)


class GELU(Module):
    """``x Phi(x)``, exact or with the tanh approximation (Hendrycks & Gimpel 2016)."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    """``x sigmoid(x)`` (Elfwing, Uchibe & Doya 2018; "Swish", Ramachandran et al. 2017)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)

    def extra_repr(self) -> str:
        return _inplace_repr(self.inplace)


class Mish(Module):
    """``x tanh(softplus(x))`` (Misra 2019)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return x * F.tanh(F.softplus(x))

    def extra_repr(self) -> str:
        return _inplace_repr(self.inplace)


class Sigmoid(Module):
    """The logistic function ``1 / (1 + e^{-x})``, stable for large ``|x|``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class Tanh(Module):
    """``tanh(x)``, the zero-centred squashing function LeCun et al. (1998) recommend."""

    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


class Softplus(Module):
    """``log(1 + e^{beta x}) / beta``, linear where ``beta x > threshold`` (Dugas et al.
    2001)."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(x, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


def _implicit_dim(name: str, ndim: int) -> int:
    """torch's legacy choice when ``dim`` is not given: 0 for 0-, 1- and 3-D input, else 1."""
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call "
                  "to include dim=X as an argument.", UserWarning, stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(Module):
    """``e^{x_i} / sum_j e^{x_j}`` along ``dim`` (Bridle 1990). Pass ``dim``: without it the
    dimension is guessed from the input's rank, as torch does, with the same warning."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        dim = self.dim if self.dim is not None else _implicit_dim("softmax", x.ndim)
        return F.softmax(x, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """``x_i - log sum_j e^{x_j}`` along ``dim``, computed stably; pair with ``NLLLoss``."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        dim = self.dim if self.dim is not None else _implicit_dim("log_softmax", x.ndim)
        return F.log_softmax(x, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
