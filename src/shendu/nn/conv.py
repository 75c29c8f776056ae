"""Convolution layers (``Conv2d``, ``Conv1d``) and channel-wise dropout (``Dropout2d``,
``Dropout1d``) with torch's parameter names, shapes and default initialisation."""

from __future__ import annotations

import math

import numpy as np

from shendu import functional as F
from shendu.backend import get_default_dtype
from shendu.functional.conv import _tuple
from shendu.nn import init
from shendu.nn.module import Module, Parameter
from shendu.tensor import Tensor

__all__ = ["Conv2d", "Conv1d", "Dropout2d", "Dropout1d"]


class _ConvNd(Module):
    _nd = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None) -> None:
        super().__init__()
        nd, name = self._nd, type(self).__name__
        from shendu.device import check_device
        check_device(device, name)
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"{name}: in_channels and out_channels must be positive, got "
                             f"{in_channels} and {out_channels}")
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        if padding_mode != "zeros":
            raise NotImplementedError(f"{name}: padding_mode {padding_mode!r} is not "
                                      f"supported (only 'zeros')")
        self.kernel_size = _tuple(kernel_size, nd, "kernel_size", name)
        self.stride = _tuple(stride, nd, "stride", name)
        self.dilation = _tuple(dilation, nd, "dilation", name)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{name}: padding must be an int, a tuple, 'valid' or 'same', "
                                 f"got {padding!r}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"{name}: padding='same' is not supported for strided "
                                 f"convolutions, got stride {self.stride}")
            self.padding = padding
        else:
            self.padding = _tuple(padding, nd, "padding", name)
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            raise ValueError(f"{name}: kernel_size, stride and dilation must be positive, got "
                             f"{self.kernel_size}, {self.stride}, {self.dilation}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.groups, self.padding_mode = int(groups), padding_mode
        dt = dtype or get_default_dtype()
        self.weight = Parameter(np.empty((out_channels, in_channels // groups)
                                         + self.kernel_size, dt))
        if bias:
            self.bias = Parameter(np.empty((out_channels,), dt))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's default: ``kaiming_uniform_(a=sqrt(5))``, i.e. ``U(-1/sqrt(fan_in),
        1/sqrt(fan_in))`` for the weight, and the same bound for the bias."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.data[0].size
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def _check(self, x: Tensor) -> None:
        nd = self._nd
        xs = tuple(x.shape)
        if len(xs) not in (nd + 1, nd + 2) or xs[-nd - 1] != self.in_channels:
            k = "x".join(map(str, self.kernel_size))
            spatial = "H, W" if nd == 2 else "L"
            raise ValueError(f"{type(self).__name__}({self.in_channels}→{self.out_channels}, "
                             f"{k}) expected input (N, {self.in_channels}, {spatial}), got {xs}")

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * self._nd:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._nd:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Conv2d(_ConvNd):
    """2-D convolution layer: ``weight`` (out, in/groups, kH, kW), ``bias`` (out,).

    ``y = conv2d(x, weight, bias, stride, padding, dilation, groups)`` on (N, C, H, W)
    input; see :func:`shendu.functional.conv2d` for the equations and the fast kernel.
    """

    _nd = 2

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class Conv1d(_ConvNd):
    """1-D convolution layer: ``weight`` (out, in/groups, k), ``bias`` (out,), on (N, C, L)."""

    _nd = 1

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class Dropout2d(Module):
    """Spatial dropout (Tompson et al. 2015) in ``train()`` mode: each channel of each sample
    is zeroed with probability ``p``, the others scaled by ``1/(1-p)``; identity in
    ``eval()`` mode. ``inplace`` is accepted for torch compatibility (the op never is)."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: probability has to be between 0 and 1, "
                             f"got {p}")
        self.p, self.inplace = float(p), bool(inplace)

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout2d(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout1d(Dropout2d):
    """Channel-wise dropout of (N, C, L) inputs (see :class:`Dropout2d`)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout1d(x, self.p, self.training)
