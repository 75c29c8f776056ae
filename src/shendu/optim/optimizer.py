"""``Optimizer``: the base of every optimizer — parameter groups, per-parameter state,
``zero_grad``, ``step`` and a ``state_dict`` in torch's layout.

An optimizer holds a list of *parameter groups*. Each group is a dict with the tensors it
updates under ``"params"`` and its own hyperparameters (``"lr"``, ``"momentum"``, ...);
options a group does not give come from the optimizer's ``defaults``. Per-parameter state
(momentum buffers, moment estimates, step counts) lives in ``optimizer.state[param]`` as
NumPy arrays, created the first time the parameter is updated.

``state_dict()`` has torch's shape::

    {"state": {0: {"momentum_buffer": array(...)}, 1: {...}},
     "param_groups": [{"lr": 0.1, "momentum": 0.9, ..., "params": [0, 1]}]}

where parameters are referred to by their index in the order of ``param_groups``, so a
state dict moves between a shendu and a torch optimizer (tensors ⇄ arrays) and
survives a trip through JSON + safetensors without pickling anything.
"""

from __future__ import annotations

import copy
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any

import numpy as np

from shendu.autograd import enable_grad
from shendu.tensor import Tensor

__all__ = ["Optimizer", "ParamsT"]

#: What an optimizer accepts: tensors, ``(name, tensor)`` pairs, or dicts of group options.
ParamsT = Iterable[Tensor] | Iterable[tuple[str, Tensor]] | Iterable[dict[str, Any]]

#: State keys that are counters, never cast to a parameter's dtype on load.
_STEP_KEYS = frozenset({"step"})


def _as_array(value) -> np.ndarray:
    """An array from a NumPy array, a shendu Tensor or a torch tensor (duck-typed)."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, Tensor):
        return value.data
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _is_array_like(value) -> bool:
    return isinstance(value, (np.ndarray, Tensor, np.generic)) or (
        hasattr(value, "detach") and hasattr(value, "numpy"))


class Optimizer:
    """Base class of the optimizers (as ``torch.optim.Optimizer``).

    Parameters
    ----------
    params:
        An iterable of tensors (or of ``(name, tensor)`` pairs, as ``named_parameters()``
        gives), or an iterable of dicts, each a parameter group with a ``"params"`` entry
        and any per-group options.
    defaults:
        The options a group takes when it does not give them.

    Subclasses validate their options in :meth:`_check_group` and update one group in
    :meth:`_update_group`; :meth:`step` runs the closure and loops over the groups.
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        self._step_count = 0
        if isinstance(params, Tensor):
            raise TypeError(
                f"{self._name}: params should be an iterable of Tensors or dicts, got a single "
                f"Tensor of shape {params.shape}; wrap it in a list"
            )
        if isinstance(params, dict):
            raise TypeError(f"{self._name}: params should be an iterable of Tensors or dicts, "
                            "got a dict; pass a list of parameter-group dicts")
        groups = list(params)
        if not groups:
            raise ValueError(f"{self._name}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    @property
    def _name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        lines = [f"{self._name} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {group[k]}" for k in sorted(group) if k != "params"]
        return "\n".join(lines) + "\n)"

    # ------------------------------------------------------------------ groups
    def _check_group(self, group: dict[str, Any]) -> None:
        """Validate a group's options (subclasses raise ``ValueError`` naming the value)."""

    def _check(self, ok: bool, what: str, value, expected: str) -> None:
        if not ok:
            raise ValueError(f"{self._name}: invalid {what} {value!r} (expected {expected})")

    def _real(self, group: dict[str, Any], key: str) -> float:
        """``group[key]`` as a float, with an error naming the optimizer if it is not one."""
        value = group[key]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            raise TypeError(
                f"{self._name}: {key} must be a real number, got {type(value).__name__} {value!r}"
            )
        return float(value)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters with its own options (e.g. to unfreeze layers while
        fine-tuning). Options it does not give come from ``defaults``."""
        if not isinstance(param_group, dict):
            raise TypeError(f"{self._name}.add_param_group: expected a dict, got "
                            f"{type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError(f"{self._name}.add_param_group: the group has no 'params' entry")
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(
                f"{self._name}: parameters must be an ordered collection (a list), got a set, "
                "whose order changes between runs"
            )
        params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        tensors = [p[1] if isinstance(p, tuple) else p for p in params]
        if names and len(names) != len(tensors):
            raise ValueError(f"{self._name}: give either all parameters with names or none")
        for i, t in enumerate(tensors):
            if not isinstance(t, Tensor):
                raise TypeError(f"{self._name} can only optimize Tensors, but parameter {i} is "
                                f"a {type(t).__name__}")
            if not t.is_leaf:
                raise ValueError(f"{self._name} can't optimize a non-leaf Tensor (parameter {i} "
                                 "was made by an op; optimize the leaf it came from)")
            if t.data.dtype.kind != "f":
                raise TypeError(f"{self._name} can only optimize floating-point Tensors, but "
                                f"parameter {i} is {t.data.dtype}")
        group["params"] = tensors
        if names:
            group["param_names"] = names
        for key, default in self.defaults.items():
            group.setdefault(key, default)
        self._check_group(group)
        if len({id(t) for t in tensors}) != len(tensors):
            warnings.warn(f"{self._name}: a parameter group contains the same parameter twice; "
                          "it will be updated twice per step", stacklevel=3)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(t) in seen for t in tensors):
            raise ValueError(f"{self._name}: some parameters appear in more than one "
                             "parameter group")
        for g in self.param_groups:
            if ("param_names" in g) != ("param_names" in group):
                raise ValueError(f"{self._name}: all parameter groups must be given with names "
                                 "or all without")
        self.param_groups.append(group)

    # -------------------------------------------------------------------- steps
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: set each ``p.grad`` to ``None`` (default), or fill it
        with zeros in place. Note that a step skips parameters whose grad is ``None`` but
        does update (decay, momentum) those whose grad is zero."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.data.fill(0)

    def step(self, closure: Callable[[], Any] | None = None):
        """Update every parameter that has a gradient, once.

        ``closure`` (optional) re-evaluates the model and returns the loss; it runs with
        gradients enabled before the update and its value is returned.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._update_group(group)
        self._step_count += 1
        return loss

    def _update_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError(f"{self._name} does not implement _update_group()")

    def _with_grads(self, group: dict[str, Any]):
        """``(param, grad array)`` for the group's parameters that have a gradient (the
        gradient cast to the parameter's dtype if it differs)."""
        for p in group["params"]:
            if p.grad is None:
                continue
            p._version[0] += 1  # the step changes p in place (a graph that saved p sees it)
            g = p.grad.data
            if g.shape != p.data.shape:
                raise RuntimeError(f"{self._name}: a parameter of shape {p.data.shape} has a "
                                   f"gradient of shape {g.shape}")
            if g.dtype != p.data.dtype:
                g = g.astype(p.data.dtype)
            yield p, g

    # --------------------------------------------------------------- state dict
    def state_dict(self) -> dict[str, Any]:
        """A snapshot of the optimizer: ``{"state": {index: {...}}, "param_groups": [...]}``.

        Parameters are numbered in the order of ``param_groups`` (torch's layout). State
        arrays are copies, so training on does not change a state dict already taken.
        """
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {}
        for p, s in self.state.items():
            key = index[id(p)] if isinstance(p, Tensor) and id(p) in index else p
            state[key] = {k: (np.array(v, copy=True) if isinstance(v, np.ndarray)
                              else copy.deepcopy(v)) for k, v in s.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict from :meth:`state_dict` (or from a torch optimizer, its
        tensors given as arrays or tensors).

        Groups are matched by position and must hold the same number of parameters. State
        arrays are copied and cast to their parameter's dtype (step counters keep theirs).
        Load *after* creating an LR scheduler, which would otherwise overwrite the loaded
        learning rates.
        """
        if not isinstance(state_dict, dict) or "param_groups" not in state_dict \
                or "state" not in state_dict:
            raise ValueError(f"{self._name}.load_state_dict: expected a dict with 'state' and "
                             f"'param_groups', got {type(state_dict).__name__}")
        saved_groups = copy.deepcopy(list(state_dict["param_groups"]))
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{self._name}.load_state_dict: the state dict has {len(saved_groups)} "
                f"parameter groups, this optimizer has {len(self.param_groups)}"
            )
        for i, (g, sg) in enumerate(zip(self.param_groups, saved_groups)):
            if len(g["params"]) != len(sg["params"]):
                raise ValueError(
                    f"{self._name}.load_state_dict: parameter group {i} holds "
                    f"{len(sg['params'])} parameters in the state dict, {len(g['params'])} "
                    "in this optimizer"
                )
        id_map = dict(zip(chain.from_iterable(g["params"] for g in saved_groups),
                          chain.from_iterable(g["params"] for g in self.param_groups)))
        state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for k, v in state_dict["state"].items():
            key = int(k) if isinstance(k, str) and k.isdigit() else k
            if key not in id_map:
                state[key] = copy.deepcopy(v)
                continue
            p = id_map[key]
            state[p] = {name: self._load_value(p, name, val) for name, val in v.items()}
        groups = []
        for g, sg in zip(self.param_groups, saved_groups):
            sg["params"] = g["params"]
            if "param_names" in g and "param_names" not in sg:
                sg["param_names"] = g["param_names"]
            for key, default in self.defaults.items():
                sg.setdefault(key, default)
            if isinstance(sg.get("betas"), list):
                sg["betas"] = tuple(sg["betas"])
            self._check_group(sg)
            groups.append(sg)
        self.state = state
        self.param_groups = groups

    def _load_value(self, p: Tensor, name: str, value):
        """A copy of one loaded state entry: arrays (or tensors, or the nested lists JSON
        makes of them) become arrays of the parameter's dtype; ``step`` a float64 0-d
        array; anything else is copied as is."""
        if name in _STEP_KEYS and value is not None and not isinstance(value, (str, dict)):
            return np.array(_as_array(value), dtype=np.float64).reshape(())
        if not (_is_array_like(value) or isinstance(value, (list, tuple))):
            return copy.deepcopy(value)
        arr = _as_array(value)
        if arr.ndim and arr.shape != p.data.shape:
            raise ValueError(f"{self._name}.load_state_dict: state {name!r} has shape "
                             f"{arr.shape}, its parameter has shape {p.data.shape}")
        return np.array(arr, dtype=p.data.dtype, copy=True)
