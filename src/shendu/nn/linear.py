"""``Linear``, ``Identity``, ``Flatten``, ``Unflatten``.

``Linear`` is the fully connected layer ``y = x W^T + b``: with a threshold it is
Rosenblatt's (1958) perceptron, stacked with nonlinearities it is the multi-layer perceptron
trained by backpropagation (Rumelhart, Hinton & Williams 1986).
"""

from __future__ import annotations

import math

import numpy as np

from shendu import functional as F
from shendu.backend import as_dtype, get_default_dtype
from shendu.nn import init
from shendu.nn.module import Module, Parameter
from shendu.tensor import Tensor

__all__ = ["Linear", "Identity", "Flatten", "Unflatten"]


class Linear(Module):
    r"""``y = x W^T + b`` on the last dimension of ``x`` (..., in_features).

    Parameters, with torch's names and shapes: ``weight`` (out_features, in_features) and
    ``bias`` (out_features,). Both start as torch's: ``U(-1/sqrt(in), 1/sqrt(in))``, which is
    ``kaiming_uniform_(weight, a=sqrt(5))`` (He et al. 2015, with the leaky-ReLU gain
    ``sqrt(2 / (1 + a^2))`` making the bound ``gain sqrt(3 / fan_in) = 1 / sqrt(fan_in)``),
    the 1/sqrt(fan-in) scale LeCun et al. (1998, "Efficient BackProp") recommend.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"Linear: in_features and out_features must be positive, got "
                             f"{in_features} and {out_features}")
        from shendu.device import check_device
        check_device(device, "Linear")
        self.in_features, self.out_features = int(in_features), int(out_features)
        dt = get_default_dtype() if dtype is None else as_dtype(dtype)
        self.weight = Parameter(np.empty((out_features, in_features), dt))
        if bias:
            self.bias = Parameter(np.empty((out_features,), dt))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw ``weight`` and ``bias`` again from torch's default distribution."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        xs = x.shape
        if not xs or xs[-1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}→{self.out_features}) expected input "
                             f"(..., {self.in_features}), got {tuple(xs)}")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Identity(Module):
    """Returns its input unchanged (any constructor arguments are ignored, as torch)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()

    def forward(self, x):
        return x


class Flatten(Module):
    """Merge dims ``start_dim..end_dim`` into one: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Tensor) -> Tensor:
        return F.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Split dim ``dim`` into ``unflattened_size``: the inverse of :class:`Flatten`."""

    def __init__(self, dim: int, unflattened_size) -> None:
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, x: Tensor) -> Tensor:
        sh = x.shape
        d = self.dim % len(sh)
        return F.reshape(x, sh[:d] + self.unflattened_size + sh[d + 1:])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
