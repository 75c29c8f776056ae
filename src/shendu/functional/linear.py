"""The general neural network layer ``y = x W^T + b`` as one fused op."""

from __future__ import annotations

from shendu.autograd import Function
from shendu.tensor import Tensor

__all__ = ["linear"]


class Linear(Function):
    r"""``y = x W^T + b`` for ``x`` of shape (..., in), ``W`` (out, in), ``b`` (out,).

    Backward (the seed's formulas, corrected):
    ``dx = dy W``, ``dW = dy^T x`` (summed over every leading dim), ``db = sum dy``.
    """

    def forward(self, x, w, b=None):
        self.x, self.w = x, w
        y = x @ w.T
        if b is not None:
            y += b
        return y

    def backward(self, g):
        x, w = self.x, self.w
        gx = g @ w if self.needs_input_grad[0] else None
        gw = gb = None
        if self.needs_input_grad[1]:
            if x.ndim == 2:
                gw = g.T @ x
            else:
                g2 = g.reshape(-1, g.shape[-1])
                gw = g2.T @ x.reshape(-1, x.shape[-1])
        if len(self.needs_input_grad) > 2 and self.needs_input_grad[2]:
            gb = g.sum(axis=tuple(range(g.ndim - 1))) if g.ndim > 1 else g
        return gx, gw, gb


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Apply ``x @ weight.T + bias``."""
    xs, ws = x.data.shape, weight.data.shape
    if len(ws) != 2:
        raise ValueError(f"linear: weight must be 2-D (out, in), got {ws}")
    if x.data.ndim == 0 or xs[-1] != ws[1]:
        raise ValueError(
            f"linear: expected input (..., {ws[1]}) for weight {ws}, got {xs}"
        )
    if bias is not None and bias.data.shape != (ws[0],):
        raise ValueError(f"linear: bias must have shape ({ws[0]},), got {bias.data.shape}")
    if x.data.dtype != weight.data.dtype and x.data.dtype.kind != "f":
        x = Tensor(x.data.astype(weight.data.dtype))
    if bias is None:
        return Linear.apply(x, weight)
    return Linear.apply(x, weight, bias)



