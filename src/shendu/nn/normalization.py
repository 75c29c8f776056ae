"""Normalisation layers with torch's names, shapes and initialisation."""

from __future__ import annotations

import numpy as np

from shendu import functional as F
from shendu.backend import get_default_dtype
from shendu.nn.module import Module, Parameter
from shendu.tensor import Tensor

__all__ = ["LayerNorm"]


class LayerNorm(Module):
    """Layer normalisation (Ba, Kiros & Hinton 2016) over the trailing ``normalized_shape``.

    ``weight`` (ones) and ``bias`` (zeros) of shape ``normalized_shape`` when
    ``elementwise_affine``; ``bias=False`` drops the shift, as in torch.
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, dtype=None) -> None:
        super().__init__()
        ns = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) \
            else tuple(int(s) for s in normalized_shape)
        if not ns or any(s <= 0 for s in ns):
            raise ValueError(f"LayerNorm: normalized_shape must be positive sizes, got "
                             f"{normalized_shape}")
        self.normalized_shape, self.eps = ns, float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        dt = dtype or get_default_dtype()
        if elementwise_affine:
            self.weight = Parameter(np.ones(ns, dt))
            if bias:
                self.bias = Parameter(np.zeros(ns, dt))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        if self.weight is not None:
            self.weight.data[...] = 1
        if self.bias is not None:
            self.bias.data[...] = 0

    def forward(self, x: Tensor) -> Tensor:
        ns = self.normalized_shape
        if x.shape[max(len(x.shape) - len(ns), 0):] != ns:
            raise ValueError(f"LayerNorm({', '.join(map(str, ns))}) expected input "
                             f"(..., {', '.join(map(str, ns))}), got {tuple(x.shape)}")
        return F.layer_norm(x, ns, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")
