"""Adadelta (torch's rules)."""

from __future__ import annotations

from typing import Any

import numpy as np

from shendu.optim.optimizer import Optimizer, ParamsT

__all__ = ["Adadelta", "adadelta_update"]


def adadelta_update(p: np.ndarray, g: np.ndarray, square_avg: np.ndarray,
                    acc_delta: np.ndarray, *, lr: float, rho: float = 0.9, eps: float = 1e-6,
                    weight_decay: float = 0.0, maximize: bool = False) -> None:
    """One Adadelta step on ``p`` and its two running averages, in place; ``g`` is only read.
    The arithmetic is torch's, operation for operation, in ``p``'s dtype."""
    t = p.dtype.type
    d = np.negative(g) if maximize else g
    if weight_decay != 0:                              # d = g + λθ
        d = np.add(d, np.multiply(p, t(weight_decay)))
    square_avg *= t(rho)                               # E[g²] ← ρE[g²] + (1-ρ)d²
    square_avg += np.multiply(np.multiply(d, t(1 - rho)), d)
    std = np.sqrt(square_avg + t(eps))
    delta = np.sqrt(acc_delta + t(eps))                # Δ = √(E[Δ²]+ε) / √(E[g²]+ε) · d
    delta /= std
    delta *= d
    acc_delta *= t(rho)                                # E[Δ²] ← ρE[Δ²] + (1-ρ)Δ²
    acc_delta += np.multiply(np.multiply(delta, t(1 - rho)), delta)
    p += np.multiply(delta, t(-lr))                    # θ ← θ - γΔ


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler 2012, *ADADELTA: An Adaptive Learning Rate Method*): the step is the
    ratio of two running RMS values, of past updates and of gradients, so it carries the
    parameter's units and needs little tuning of ``lr``.

    .. math::

        v_t &= \rho v_{t-1} + (1-\rho) g_t^2 \\
        \Delta_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t \\
        u_t &= \rho u_{t-1} + (1-\rho) \Delta_t^2 \\
        \theta_t &= \theta_{t-1} - \gamma \Delta_t

    Parameters: ``lr`` :math:`\gamma` (default 1.0), ``rho`` (0.9), ``eps`` (1e-6),
    ``weight_decay`` (L2, 0), ``maximize``. State per parameter (created at its first step,
    as torch): ``step``, ``square_avg``, ``acc_delta``.
    """

    def __init__(self, params: ParamsT, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, *, maximize: bool = False) -> None:
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        for key, what in (("lr", "learning rate"), ("eps", "epsilon"),
                          ("weight_decay", "weight_decay")):
            v = self._real(group, key)
            self._check(v >= 0, what, v, f"{key} >= 0")
        rho = self._real(group, "rho")
        self._check(0 <= rho <= 1, "rho value", rho, "0 <= rho <= 1")

    def _update_group(self, group: dict[str, Any]) -> None:
        for p, g in self._with_grads(group):
            state = self.state[p]
            if not state:
                state["step"] = np.array(0.0)
                state["square_avg"] = np.zeros_like(p.data)
                state["acc_delta"] = np.zeros_like(p.data)
            state["step"] += 1
            adadelta_update(p.data, g, state["square_avg"], state["acc_delta"],
                            lr=group["lr"], rho=group["rho"], eps=group["eps"],
                            weight_decay=group["weight_decay"], maximize=group["maximize"])
