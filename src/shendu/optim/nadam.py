"""NAdam (torch's rules): Adam with Nesterov momentum and a warming momentum schedule."""

from __future__ import annotations

from typing import Any

import numpy as np

from shendu.backend import get_default_dtype
from shendu.optim.adam import Adam
from shendu.optim.adamax import lerp_
from shendu.optim.optimizer import Optimizer, ParamsT

__all__ = ["NAdam", "nadam_update"]


def nadam_update(p: np.ndarray, g: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
                 mu_product: np.ndarray, step: float, *, lr: float, beta1: float,
                 beta2: float, eps: float, weight_decay: float = 0.0,
                 momentum_decay: float = 4e-3, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
    """One NAdam step on ``p``, its moments and the 0-d ``mu_product``, in place (``step``
    counts from 1); ``g`` is only read. Torch's arithmetic, in ``p``'s dtype (``mu_product``
    in its own, the default dtype, as torch keeps it)."""
    t = p.dtype.type
    d = np.negative(g) if maximize else g
    bc2 = 1 - beta2 ** step
    if weight_decay != 0:
        if decoupled_weight_decay:                     # θ ← θ·(1 - γλ)
            p *= t(1 - lr * weight_decay)
        else:                                          # d = g + λθ
            d = np.add(d, np.multiply(p, t(weight_decay)))
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))          # μ_t
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    mu_product *= mu                                   # Π μ_i, i ≤ t
    lerp_(exp_avg, d, t(1 - beta1))                    # m ← β₁m + (1-β₁)d
    exp_avg_sq *= t(beta2)                             # v ← β₂v + (1-β₂)d²
    exp_avg_sq += np.multiply(np.multiply(d, t(1 - beta2)), d)
    denom = np.sqrt(exp_avg_sq / t(bc2))
    denom += t(eps)
    prod = float(mu_product)
    upd = np.multiply(d, t(-lr * (1.0 - mu) / (1.0 - prod)))
    upd /= denom
    p += upd
    upd = np.multiply(exp_avg, t(-lr * mu_next / (1.0 - prod * mu_next)))
    upd /= denom
    p += upd


class NAdam(Optimizer):
    r"""NAdam (Dozat 2016, *Incorporating Nesterov Momentum into Adam*), with the momentum
    schedule :math:`\mu_t = \beta_1(1 - \tfrac12\, 0.96^{t\psi})` (``momentum_decay`` ψ):

    .. math::

        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        \theta_t &= \theta_{t-1} - \gamma\Big(
            \frac{(1-\mu_t)\, g_t}{1-\prod_{i\le t}\mu_i}
            + \frac{\mu_{t+1}\, m_t}{1-\prod_{i\le t+1}\mu_i}\Big)
            \Big/ \Big(\sqrt{v_t/(1-\beta_2^t)} + \epsilon\Big)

    Parameters: ``lr`` (2e-3), ``betas`` (0.9, 0.999), ``eps`` (1e-8), ``weight_decay`` (0),
    ``momentum_decay`` (4e-3), ``decoupled_weight_decay`` (NAdamW), ``maximize``. State per
    parameter: ``step``, ``mu_product``, ``exp_avg``, ``exp_avg_sq``.
    """

    def __init__(self, params: ParamsT, lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, maximize: bool = False) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        Adam._check_group(self, group)  # lr, eps, weight_decay >= 0; betas in [0, 1)
        md = self._real(group, "momentum_decay")
        self._check(md >= 0, "momentum_decay", md, "momentum_decay >= 0")

    def _update_group(self, group: dict[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        for p, g in self._with_grads(group):
            state = self.state[p]
            if not state:
                state["step"] = np.array(0.0)
                state["mu_product"] = np.ones((), get_default_dtype())
                state["exp_avg"] = np.zeros_like(p.data)
                state["exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] += 1
            nadam_update(p.data, g, state["exp_avg"], state["exp_avg_sq"],
                         state["mu_product"], float(state["step"]), lr=group["lr"],
                         beta1=beta1, beta2=beta2, eps=group["eps"],
                         weight_decay=group["weight_decay"],
                         momentum_decay=group["momentum_decay"], maximize=group["maximize"],
                         decoupled_weight_decay=group["decoupled_weight_decay"])
