"""The general neural network layer ``y = x W^T + b`` as one fused op."""

from __future__ import annotations

from shendu.autograd import Function
from shendu.functional import _gemm
from shendu.functional._gemm import matmul
from shendu.tensor import Tensor

__all__ = ["linear"]


class Linear(Function):
    r"""``y = x W^T + b`` for ``x`` of shape (..., in), ``W`` (out, in), ``b`` (out,).

    Backward (the seed's formulas, corrected):
    ``dx = dy W``, ``dW = dy^T x`` (summed over every leading dim), ``db = sum dy``.
    """

    saved_inputs = ((0, 1), (1, 0))  # x for dW, W for dx (as torch's addmm)

    def forward(self, x, w, b=None):
        self.shape = x.shape
        x2 = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])  # (M, in): one big GEMM
        self.x, self.w = x2, w
        y = _gemm.linear(x2, w, b)  # (M, out): torch's addmm
        return y if x.ndim == 2 else y.reshape(x.shape[:-1] + (w.shape[0],))

    def backward(self, g):
        x2, w = self.x, self.w
        g2 = g if g.ndim == 2 else g.reshape(-1, g.shape[-1])  # (M, out)
        gx = gw = gb = None
        if self.needs_input_grad[0]:
            gx = matmul(g2, w)  # (M, in)
            if g.ndim != 2:
                gx = gx.reshape(self.shape)
        if self.needs_input_grad[1]:
            gw = matmul(g2.T, x2)  # (out, in)
        if len(self.needs_input_grad) > 2 and self.needs_input_grad[2]:
            gb = g2.sum(axis=0)
        return gx, gw, gb


def check_same_dtype(op: str, x: Tensor, weight: Tensor | None) -> None:
    """torch's rule: a layer computes in its weights' dtype and refuses input of another
    (no silent cast either way)."""
    if weight is not None and x.data.dtype != weight.data.dtype:
        raise RuntimeError(
            f"{op}: expected input of dtype {weight.data.dtype} (the weight's), got "
            f"{x.data.dtype}; convert one of them (x.float(), x.double(), "
            f"module.double(), ...)")


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
    check_same_dtype("linear", x, weight)
    if bias is None:
        return Linear.apply(x, weight)
    return Linear.apply(x, weight, bias)



