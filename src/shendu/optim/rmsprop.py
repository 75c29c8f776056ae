"""RMSprop (torch's rules), plain or centered, with optional momentum."""

from __future__ import annotations

from typing import Any

import numpy as np

from shendu.optim.optimizer import Optimizer, ParamsT

__all__ = ["RMSprop", "rmsprop_update"]


def rmsprop_update(p: np.ndarray, g: np.ndarray, square_avg: np.ndarray,
                   grad_avg: np.ndarray | None, momentum_buffer: np.ndarray | None, *,
                   lr: float, alpha: float, eps: float, weight_decay: float = 0.0,
                   momentum: float = 0.0, centered: bool = False,
                   maximize: bool = False) -> None:
    """One RMSprop step on ``p`` and its state arrays, in place.

    ``g`` is only read. Hyperparameters are cast to ``p``'s dtype, so float32 stays
    float32. The arithmetic is torch's, operation for operation.
    """
    t = p.dtype.type
    d = np.negative(g) if maximize else g
    if weight_decay != 0:                         # d = g + λθ
        d = np.add(d, np.multiply(p, t(weight_decay)))
    square_avg *= t(alpha)                        # v ← αv + (1-α)·d·d
    avg = np.multiply(d, t(1 - alpha))
    avg *= d
    square_avg += avg
    if centered:                                  # ḡ ← ḡ + (1-α)(d - ḡ);  v - ḡ²
        w = t(1 - alpha)
        np.subtract(d, grad_avg, out=avg)
        if abs(w) < 0.5:
            avg *= w
            grad_avg += avg
        else:
            avg *= t(1) - w
            np.subtract(d, avg, out=grad_avg)
        np.multiply(grad_avg, grad_avg, out=avg)
        np.subtract(square_avg, avg, out=avg)
        np.sqrt(avg, out=avg)
    else:
        np.sqrt(square_avg, out=avg)
    avg += t(eps)                                 # denom = √(v [- ḡ²]) + ε
    if momentum > 0:                              # b ← μb + d/denom;  θ ← θ - γb
        momentum_buffer *= t(momentum)
        np.divide(d, avg, out=avg)
        momentum_buffer += avg
        np.multiply(momentum_buffer, t(-lr), out=avg)
    else:                                         # θ ← θ - γ·d/denom
        upd = np.multiply(d, t(-lr))
        np.divide(upd, avg, out=avg)
    p += avg


class RMSprop(Optimizer):
    r"""RMSprop (Tieleman & Hinton 2012, *Neural Networks for Machine Learning*, lecture
    6.5): divide each coordinate's gradient by a running root-mean-square of its recent
    magnitudes.

    With gradient :math:`g_t` (negated when ``maximize``, plus :math:`\lambda\theta_{t-1}`
    with weight decay):

    .. math::

        v_t &= \alpha v_{t-1} + (1-\alpha)\, g_t^2 \\
        \bar g_t &= \alpha \bar g_{t-1} + (1-\alpha)\, g_t \quad (\text{centered}) \\
        \delta_t &= \sqrt{v_t - \bar g_t^2} + \epsilon \ \ (\text{centered}),
                    \text{ else } \sqrt{v_t} + \epsilon \\
        b_t &= \mu b_{t-1} + g_t/\delta_t, \quad \theta_t = \theta_{t-1} - \gamma b_t
                    \quad (\mu > 0) \\
        \theta_t &= \theta_{t-1} - \gamma\, g_t/\delta_t \quad (\mu = 0)

    The centered form divides by an estimate of the gradient's standard deviation rather
    than its root mean square (Graves 2013, *Generating Sequences With Recurrent Neural
    Networks*). :math:`\epsilon` is added outside the square root, as in torch.

    Parameters
    ----------
    params: parameters or parameter groups (see :class:`Optimizer`).
    lr: learning rate :math:`\gamma \ge 0` (default 1e-2).
    alpha: smoothing constant :math:`\alpha \ge 0` (default 0.99).
    eps: :math:`\epsilon \ge 0` (default 1e-8).
    weight_decay: L2 penalty :math:`\lambda \ge 0` (default 0).
    momentum: :math:`\mu \ge 0` (default 0).
    centered: normalise by the centered second moment (default False).
    maximize: ascend the objective instead of descending it.

    State per parameter: ``step``, ``square_avg`` (and ``momentum_buffer``, ``grad_avg``).
    """

    def __init__(self, params: ParamsT, lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, *, maximize: bool = False) -> None:
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        for key, what in (("lr", "learning rate"), ("eps", "epsilon"),
                          ("momentum", "momentum"), ("weight_decay", "weight_decay"),
                          ("alpha", "alpha")):
            v = self._real(group, key)
            self._check(v >= 0, what, v, f"{key} >= 0")

    def _update_group(self, group: dict[str, Any]) -> None:
        momentum, centered = group["momentum"], group["centered"]
        for p, g in self._with_grads(group):
            state = self.state[p]
            if not state:
                state["step"] = np.array(0.0)
                state["square_avg"] = np.zeros_like(p.data)
                if momentum > 0:
                    state["momentum_buffer"] = np.zeros_like(p.data)
                if centered:
                    state["grad_avg"] = np.zeros_like(p.data)
            if momentum > 0 and "momentum_buffer" not in state:
                state["momentum_buffer"] = np.zeros_like(p.data)
            if centered and "grad_avg" not in state:
                state["grad_avg"] = np.zeros_like(p.data)
            state["step"] += 1
            rmsprop_update(p.data, g, state["square_avg"], state.get("grad_avg"),
                           state.get("momentum_buffer"), lr=group["lr"], alpha=group["alpha"],
                           eps=group["eps"], weight_decay=group["weight_decay"],
                           momentum=momentum, centered=centered, maximize=group["maximize"])
