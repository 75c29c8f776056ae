"""Adagrad (torch's rules)."""

from __future__ import annotations

from typing import Any

import numpy as np

from shendu.optim.optimizer import Optimizer, ParamsT

__all__ = ["Adagrad", "adagrad_update"]


def adagrad_update(p: np.ndarray, g: np.ndarray, state_sum: np.ndarray, step: int, *,
                   lr: float, lr_decay: float = 0.0, weight_decay: float = 0.0,
                   eps: float = 1e-10, maximize: bool = False) -> None:
    """One Adagrad step on ``p`` and its accumulator, in place (``step`` counts from 1).

    ``g`` is only read. Hyperparameters are cast to ``p``'s dtype, so float32 stays
    float32. The arithmetic is torch's, operation for operation.
    """
    t = p.dtype.type
    d = np.negative(g) if maximize else g
    if weight_decay != 0:                         # d = g + λθ
        d = np.add(d, np.multiply(p, t(weight_decay)))
    clr = lr / (1 + (step - 1) * lr_decay)        # γ_t = γ / (1 + (t-1)η)
    tmp = np.multiply(d, d)                       # G ← G + d·d
    state_sum += tmp
    np.sqrt(state_sum, out=tmp)                   # θ ← θ - γ_t·d / (√G + ε)
    tmp += t(eps)
    upd = np.multiply(d, t(-clr))
    upd /= tmp
    p += upd


class Adagrad(Optimizer):
    r"""Adagrad (Duchi, Hazan & Singer 2011, *Adaptive Subgradient Methods for Online
    Learning and Stochastic Optimization*, JMLR): each coordinate's step shrinks with the
    sum of its squared gradients, so rare features keep large steps.

    With gradient :math:`g_t` (negated when ``maximize``, plus :math:`\lambda\theta_{t-1}`
    with weight decay) and accumulator :math:`G_0` = ``initial_accumulator_value``:

    .. math::

        \gamma_t &= \gamma / (1 + (t-1)\,\eta) \\
        G_t &= G_{t-1} + g_t^2 \\
        \theta_t &= \theta_{t-1} - \gamma_t\, g_t / (\sqrt{G_t} + \epsilon)

    Parameters
    ----------
    params: parameters or parameter groups (see :class:`Optimizer`).
    lr: learning rate :math:`\gamma \ge 0` (default 1e-2).
    lr_decay: :math:`\eta \ge 0` (default 0).
    weight_decay: L2 penalty :math:`\lambda \ge 0` (default 0).
    initial_accumulator_value: :math:`G_0 \ge 0` (default 0).
    eps: :math:`\epsilon \ge 0` (default 1e-10).
    maximize: ascend the objective instead of descending it.

    State per parameter (created at construction, as torch does): ``step``, ``sum``.
    """

    def __init__(self, params: ParamsT, lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, *, maximize: bool = False) -> None:
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value,
                        maximize=maximize)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, group)

    def _init_state(self, p, group: dict[str, Any]) -> dict[str, Any]:
        state = self.state[p]
        state["step"] = np.array(0.0)
        state["sum"] = np.full_like(p.data, group["initial_accumulator_value"])
        return state

    def _check_group(self, group: dict[str, Any]) -> None:
        for key, what in (("lr", "learning rate"), ("lr_decay", "lr_decay"),
                          ("weight_decay", "weight_decay"),
                          ("initial_accumulator_value", "initial_accumulator_value"),
                          ("eps", "epsilon")):
            v = self._real(group, key)
            self._check(v >= 0, what, v, f"{key} >= 0")

    def _update_group(self, group: dict[str, Any]) -> None:
        for p, g in self._with_grads(group):
            state = self.state[p] if p in self.state else self._init_state(p, group)
            state["step"] += 1
            adagrad_update(p.data, g, state["sum"], float(state["step"]), lr=group["lr"],
                           lr_decay=group["lr_decay"], weight_decay=group["weight_decay"],
                           eps=group["eps"], maximize=group["maximize"])
