"""Stochastic gradient descent, with heavy-ball or Nesterov momentum (torch's rules)."""

from __future__ import annotations

from typing import Any

import numpy as np

from shendu.functional import _numba
from shendu.optim.optimizer import Optimizer, ParamsT

__all__ = ["SGD", "sgd_update"]


def sgd_update(p: np.ndarray, g: np.ndarray, buf: np.ndarray | None, *, lr: float,
               momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
               nesterov: bool = False, maximize: bool = False) -> np.ndarray | None:
    """One SGD step on the array ``p`` in place; returns the (new) momentum buffer.

    ``g`` is only read. Hyperparameters are cast to ``p``'s dtype, so float32 stays
    float32. The arithmetic is torch's, operation for operation.
    """
    t = p.dtype.type
    if (weight_decay == 0 and dampening == 0 and not nesterov and not maximize
            and (momentum == 0 or buf is not None)):
        # the common steps as one compiled pass (functional._numba): the same roundings
        arrays = (p, g) if momentum == 0 else (p, g, buf)
        kern = _numba.kernels_for(p, *arrays[1:], min_size=_COMPILED_MIN)
        if (kern is not None and all(a.shape == p.shape and a.flags.c_contiguous for a in arrays)
                and p.flags.writeable and (buf is None or buf.flags.writeable)):
            flat = [a.reshape(-1) for a in arrays]
            if momentum == 0:
                _numba.run_flat(kern.sgd_plain, flat, t(-lr))
            else:
                _numba.run_flat(kern.sgd_momentum, flat, t(momentum), t(-lr))
            return buf
    if weight_decay != 0:                         # d = ±g + λ·p
        d = np.multiply(p, t(weight_decay))
        (np.subtract if maximize else np.add)(d, g, out=d)
    else:
        d = np.negative(g) if maximize else g
    if momentum != 0:
        if buf is None:                           # b_1 = d_1 (no dampening at the first step)
            buf = d.copy() if d is g else d
        else:                                     # b_t = μ·b_{t-1} + (1-τ)·d_t
            buf *= t(momentum)
            if dampening == 0:
                buf += d
            else:
                buf += d * t(1 - dampening)
        if nesterov:                              # d = d + μ·b_t
            step = np.multiply(buf, t(momentum))
            step += d
            d = step
        else:
            d = buf
    upd = np.multiply(d, t(-lr))                  # θ ← θ - γ·d
    p += upd
    return buf


#: elements from which an SGD step runs as one compiled loop
_COMPILED_MIN = 1 << 14


class SGD(Optimizer):
    r"""Stochastic gradient descent (Robbins & Monro 1951), optionally with momentum.

    With gradient :math:`g_t` (negated when ``maximize``), learning rate :math:`\gamma`,
    weight decay :math:`\lambda`, momentum :math:`\mu` and dampening :math:`\tau`:

    .. math::

        d_t &= g_t + \lambda\,\theta_{t-1} \\
        b_t &= \begin{cases} d_t & t = 1 \\ \mu\, b_{t-1} + (1-\tau)\, d_t & t > 1\end{cases} \\
        d_t &\leftarrow \begin{cases} d_t + \mu\, b_t & \text{nesterov} \\
                                      b_t & \text{otherwise}\end{cases} \\
        \theta_t &= \theta_{t-1} - \gamma\, d_t

    Momentum is Polyak's heavy ball (1964); the Nesterov variant follows Nesterov (1983)
    as rewritten for deep learning by Sutskever, Martens, Dahl & Hinton (2013). As in
    torch (and unlike Sutskever et al.), the learning rate multiplies the buffer rather
    than being folded into it, so changing ``lr`` mid-run rescales the whole step.

    Parameters
    ----------
    params: parameters or parameter groups (see :class:`Optimizer`).
    lr: learning rate :math:`\gamma \ge 0` (default 1e-3, as torch).
    momentum: :math:`\mu \ge 0` (default 0: plain SGD).
    dampening: :math:`\tau` (default 0).
    weight_decay: L2 penalty :math:`\lambda \ge 0` (default 0).
    nesterov: use Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    maximize: ascend the objective instead of descending it.

    State per parameter: ``momentum_buffer`` (only when ``momentum != 0``).

    >>> opt = SGD(model.parameters(), lr=0.1, momentum=0.9)   # doctest: +SKIP
    >>> opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()   # doctest: +SKIP
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 *, maximize: bool = False) -> None:
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        lr, mom = self._real(group, "lr"), self._real(group, "momentum")
        wd, damp = self._real(group, "weight_decay"), self._real(group, "dampening")
        self._check(lr >= 0, "learning rate", lr, "lr >= 0")
        self._check(mom >= 0, "momentum", mom, "momentum >= 0")
        self._check(wd >= 0, "weight_decay", wd, "weight_decay >= 0")
        if group["nesterov"] and (mom <= 0 or damp != 0):
            raise ValueError(f"SGD: Nesterov momentum needs momentum > 0 and dampening == 0, "
                             f"got momentum={mom!r}, dampening={damp!r}")

    def _update_group(self, group: dict[str, Any]) -> None:
        momentum = group["momentum"]
        for p, g in self._with_grads(group):
            state = self.state[p] if momentum != 0 else {}   # no state without momentum
            buf = sgd_update(p.data, g, state.get("momentum_buffer"), lr=group["lr"],
                             momentum=momentum, dampening=group["dampening"],
                             weight_decay=group["weight_decay"], nesterov=group["nesterov"],
                             maximize=group["maximize"])
            if momentum != 0:
                state["momentum_buffer"] = buf
