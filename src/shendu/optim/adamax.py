"""Adamax (torch's rules): Adam with the infinity norm in place of the second moment."""

from __future__ import annotations

from typing import Any

import numpy as np

from shendu.optim.adam import Adam
from shendu.optim.optimizer import Optimizer, ParamsT

__all__ = ["Adamax", "adamax_update", "lerp_"]


def lerp_(avg: np.ndarray, d: np.ndarray, w) -> None:
    """``avg ← avg + w·(d - avg)`` in place, as torch's ``lerp_`` (the mirrored form
    ``d - (1-w)·(d - avg)`` when the weight is ≥ ½); ``w`` already in ``avg``'s dtype."""
    tmp = np.subtract(d, avg)
    if abs(w) < 0.5:
        tmp *= w
        avg += tmp
    else:
        tmp *= avg.dtype.type(1) - w
        np.subtract(d, tmp, out=avg)


def adamax_update(p: np.ndarray, g: np.ndarray, exp_avg: np.ndarray, exp_inf: np.ndarray,
                  step: float, *, lr: float, beta1: float, beta2: float, eps: float,
                  weight_decay: float = 0.0, maximize: bool = False) -> None:
    """One Adamax step on ``p``, ``exp_avg`` and ``exp_inf``, in place (``step`` counts
    from 1); ``g`` is only read. Torch's arithmetic, in ``p``'s dtype."""
    t = p.dtype.type
    d = np.negative(g) if maximize else g
    if weight_decay != 0:                              # d = g + λθ
        d = np.add(d, np.multiply(p, t(weight_decay)))
    lerp_(exp_avg, d, t(1 - beta1))                    # m ← β₁m + (1-β₁)d
    exp_inf *= t(beta2)                                # u ← max(β₂u, |d| + ε)
    np.maximum(exp_inf, np.abs(d) + t(eps), out=exp_inf)
    clr = lr / (1 - beta1 ** step)                     # θ ← θ - γ/(1-β₁ᵗ) · m / u
    upd = np.multiply(exp_avg, t(-clr))
    upd /= exp_inf
    p += upd


class Adamax(Optimizer):
    r"""Adamax (Kingma & Ba 2015, *Adam*, section 7.1): Adam's update with the
    :math:`L^\infty` norm of past gradients as the scale.

    .. math::

        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
        u_t &= \max(\beta_2 u_{t-1},\ |g_t| + \epsilon) \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\, \frac{m_t}{u_t}

    Parameters: ``lr`` :math:`\gamma` (default 2e-3), ``betas`` (0.9, 0.999), ``eps``
    (1e-8), ``weight_decay`` (L2, 0), ``maximize``. State per parameter: ``step``,
    ``exp_avg``, ``exp_inf``.
    """

    def __init__(self, params: ParamsT, lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, maximize: bool = False) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        Adam._check_group(self, group)  # lr, eps, weight_decay >= 0; betas in [0, 1)

    def _update_group(self, group: dict[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        for p, g in self._with_grads(group):
            state = self.state[p]
            if not state:
                state["step"] = np.array(0.0)
                state["exp_avg"] = np.zeros_like(p.data)
                state["exp_inf"] = np.zeros_like(p.data)
            state["step"] += 1
            adamax_update(p.data, g, state["exp_avg"], state["exp_inf"], float(state["step"]),
                          lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                          weight_decay=group["weight_decay"], maximize=group["maximize"])
