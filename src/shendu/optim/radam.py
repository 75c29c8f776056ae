"""RAdam (torch's rules): Adam with its early-step variance rectified."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from shendu.optim.adam import Adam
from shendu.optim.adamax import lerp_
from shendu.optim.optimizer import Optimizer, ParamsT

__all__ = ["RAdam", "radam_update"]


def radam_update(p: np.ndarray, g: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
                 step: float, *, lr: float, beta1: float, beta2: float, eps: float,
                 weight_decay: float = 0.0, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
    """One RAdam step on ``p`` and its moments, in place (``step`` counts from 1); ``g`` is
    only read. Torch's arithmetic, operation for operation, in ``p``'s dtype."""
    t = p.dtype.type
    d = np.negative(g) if maximize else g
    if weight_decay != 0:
        if decoupled_weight_decay:                     # θ ← θ·(1 - γλ)
            p *= t(1 - lr * weight_decay)
        else:                                          # d = g + λθ
            d = np.add(d, np.multiply(p, t(weight_decay)))
    lerp_(exp_avg, d, t(1 - beta1))                    # m ← β₁m + (1-β₁)d
    exp_avg_sq *= t(beta2)                             # v ← β₂v + (1-β₂)d²
    exp_avg_sq += np.multiply(np.multiply(d, t(1 - beta2)), d)
    bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
    m_hat = exp_avg / t(bc1)
    rho_inf = 2 / (1 - beta2) - 1                      # length of the approximated SMA
    rho_t = rho_inf - 2 * step * (beta2 ** step) / bc2
    upd = np.multiply(m_hat, t(lr))
    if rho_t > 5.0:                                    # variance is tractable: rectify
        rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                         / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        denom = np.sqrt(exp_avg_sq)
        denom += t(eps)
        adaptive = np.reciprocal(denom)                # torch's scalar / tensor
        adaptive *= t(bc2 ** 0.5)
        upd *= adaptive
        upd *= t(rect)
    p -= upd


class RAdam(Optimizer):
    r"""RAdam (Liu et al. 2020, *On the Variance of the Adaptive Learning Rate and Beyond*):
    while too few steps have been seen for :math:`v_t` to be a usable estimate
    (:math:`\rho_t \le 5`) the step is SGD with momentum; after that Adam's adaptive step,
    scaled by the rectification :math:`r_t`.

    .. math::

        \rho_\infty &= \frac{2}{1-\beta_2} - 1, \qquad
        \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t} \\
        r_t &= \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}
        \\
        \theta_t &= \theta_{t-1} - \gamma\,\frac{m_t}{1-\beta_1^t}\,
            \frac{\sqrt{1-\beta_2^t}}{\sqrt{v_t}+\epsilon}\, r_t
            \quad (\rho_t > 5), \text{ else } \theta_{t-1} - \gamma\,\frac{m_t}{1-\beta_1^t}

    Parameters: ``lr`` (1e-3), ``betas`` (0.9, 0.999), ``eps`` (1e-8), ``weight_decay`` (0),
    ``decoupled_weight_decay`` (AdamW-style decay), ``maximize``. State per parameter:
    ``step``, ``exp_avg``, ``exp_avg_sq``.
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *,
                 maximize: bool = False) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
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
                state["exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] += 1
            radam_update(p.data, g, state["exp_avg"], state["exp_avg_sq"],
                         float(state["step"]), lr=group["lr"], beta1=beta1, beta2=beta2,
                         eps=group["eps"], weight_decay=group["weight_decay"],
                         maximize=group["maximize"],
                         decoupled_weight_decay=group["decoupled_weight_decay"])
