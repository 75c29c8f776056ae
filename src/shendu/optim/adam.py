"""Adam and AdamW (torch's rules), with the AMSGrad variant."""

from __future__ import annotations

from typing import Any

import numpy as np

from shendu.functional import _numba
from shendu.optim.optimizer import Optimizer, ParamsT

__all__ = ["Adam", "AdamW", "adam_update"]


def adam_update(p: np.ndarray, g: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
                max_exp_avg_sq: np.ndarray | None, step: int, *, lr: float, beta1: float,
                beta2: float, eps: float, weight_decay: float = 0.0, amsgrad: bool = False,
                maximize: bool = False, decoupled_weight_decay: bool = False) -> None:
    """One Adam step on ``p`` and its moment arrays, in place (``step`` counts from 1).

    ``g`` is only read. Hyperparameters are cast to ``p``'s dtype, so float32 stays
    float32. The arithmetic is torch's, operation for operation.
    """
    t = p.dtype.type
    arrays = (p, g, exp_avg, exp_avg_sq)
    kern = None
    if not (maximize or amsgrad or (weight_decay != 0 and not decoupled_weight_decay)):
        kern = _numba.kernels_for(p, g, exp_avg, exp_avg_sq)
    if (kern is not None and all(a.shape == p.shape and a.flags.c_contiguous for a in arrays)
            and p.flags.writeable and exp_avg.flags.writeable and exp_avg_sq.flags.writeable):
        # Adam's and AdamW's common step as one compiled pass (functional._numba): the same
        # roundings; maximize, AMSGrad and the L2 penalty take the NumPy passes below
        w = t(1 - beta1)
        small = bool(abs(w) < 0.5)
        _numba.run_flat(kern.adam_step, [a.reshape(-1) for a in arrays],
                        t(1 - lr * weight_decay), w if small else t(1) - w, small, t(beta2),
                        t(1 - beta2), t((1 - beta2 ** step) ** 0.5), t(eps),
                        t(-(lr / (1 - beta1 ** step))))
        return
    d = np.negative(g) if maximize else g
    if weight_decay != 0:
        if decoupled_weight_decay:                # θ ← θ·(1 - γλ)     (AdamW)
            p *= t(1 - lr * weight_decay)
        else:                                     # d = g + λθ          (L2 penalty)
            d = np.add(d, np.multiply(p, t(weight_decay)))
    # m ← m + (1-β₁)(d - m), torch's lerp (the mirrored form when the weight is ≥ ½)
    w = t(1 - beta1)
    tmp = np.subtract(d, exp_avg)
    if abs(w) < 0.5:
        tmp *= w
        exp_avg += tmp
    else:
        tmp *= t(1) - w
        np.subtract(d, tmp, out=exp_avg)
    # v ← β₂v + (1-β₂)·d·d
    exp_avg_sq *= t(beta2)
    np.multiply(d, t(1 - beta2), out=tmp)
    tmp *= d
    exp_avg_sq += tmp
    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
    step_size = lr / bias_correction1
    if amsgrad:                                   # v̂ ← max(v̂, v)
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        np.sqrt(max_exp_avg_sq, out=tmp)
    else:
        np.sqrt(exp_avg_sq, out=tmp)
    tmp /= t(bias_correction2_sqrt)               # denom = √v / √(1-β₂ᵗ) + ε
    tmp += t(eps)
    upd = np.multiply(exp_avg, t(-step_size))     # θ ← θ - γ/(1-β₁ᵗ) · m / denom
    upd /= tmp
    p += upd


class Adam(Optimizer):
    r"""Adam (Kingma & Ba 2015): per-coordinate steps from bias-corrected estimates of
    the gradient's first and second moments.

    With gradient :math:`g_t` (negated when ``maximize``):

    .. math::

        g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad (\text{L2 weight decay})\\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \ \text{(amsgrad)}, \text{ else } v_t \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,
                    \frac{m_t}{\sqrt{\hat v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    ``amsgrad`` keeps the running maximum of :math:`v_t` (Reddi, Kale & Kumar 2018), which
    restores convergence on the counter-examples where Adam's effective step grows.
    ``decoupled_weight_decay=True`` turns this into :class:`AdamW`.

    Parameters
    ----------
    params: parameters or parameter groups (see :class:`Optimizer`).
    lr: learning rate :math:`\gamma \ge 0` (default 1e-3).
    betas: :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)` (default (0.9, 0.999)).
    eps: :math:`\epsilon \ge 0` added to the denominator (default 1e-8).
    weight_decay: :math:`\lambda \ge 0` (default 0).
    amsgrad: use the AMSGrad maximum (default False).
    maximize: ascend the objective instead of descending it.
    decoupled_weight_decay: decay the weights directly, as AdamW (default False).

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq``).
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas,
                        eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        lr, eps, wd = self._real(group, "lr"), self._real(group, "eps"),\
            self._real(group, "weight_decay")
        self._check(lr >= 0, "learning rate", lr, "lr >= 0")
        self._check(eps >= 0, "epsilon", eps, "eps >= 0")
        self._check(wd >= 0, "weight_decay", wd, "weight_decay >= 0")
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{self._name}: betas must be a pair (beta1, beta2), got {betas!r}")
        for i, b in enumerate(betas):
            if isinstance(b, bool) or not isinstance(b, (int, float, np.number)):
                raise TypeError(f"{self._name}: betas[{i}] must be a real number, got {b!r}")
            self._check(0.0 <= b < 1.0, f"beta parameter at index {i}:", b, "0 <= beta < 1")

    def _update_group(self, group: dict[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        amsgrad = group["amsgrad"]
        for p, g in self._with_grads(group):
            state = self.state[p]
            if not state:
                state["step"] = np.array(0.0)
                state["exp_avg"] = np.zeros_like(p.data)
                state["exp_avg_sq"] = np.zeros_like(p.data)
                if amsgrad:
                    state["max_exp_avg_sq"] = np.zeros_like(p.data)
            if amsgrad and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] += 1
            adam_update(p.data, g, state["exp_avg"], state["exp_avg_sq"],
                        state.get("max_exp_avg_sq"), float(state["step"]), lr=group["lr"],
                        beta1=beta1, beta2=beta2, eps=group["eps"],
                        weight_decay=group["weight_decay"], amsgrad=amsgrad,
                        maximize=group["maximize"],
                        decoupled_weight_decay=group["decoupled_weight_decay"])


class AdamW(Adam):
    r"""AdamW (Loshchilov & Hutter 2019, *Decoupled Weight Decay Regularization*): Adam
    whose weight decay shrinks the weights directly instead of entering the gradient.

    .. math::

        \theta_{t-1} &\leftarrow \theta_{t-1}\,(1 - \gamma\lambda) \\
        \theta_t &= \text{Adam step from } \theta_{t-1} \text{ with gradient } g_t

    With L2 decay inside Adam the penalty's gradient is divided by :math:`\sqrt{\hat v_t}`,
    so weights with large gradients are barely regularised; decoupling makes the decay
    uniform. Same parameters as :class:`Adam`, but ``weight_decay`` defaults to 1e-2.
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
