"""``Module``: the base of every layer — parameters, buffers, children, train/eval,
``state_dict``.

The layout is torch's: a module's own parameters and buffers live in ordered dicts beside its
children, dotted names (``"0.weight"``) come from a pre-order walk, and ``state_dict`` keys,
``named_parameters`` order and ``repr`` are identical to ``torch.nn.Module`` for the same
architecture, so weights move between the two unchanged. Every walk over the module tree is
iterative.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping

import numpy as np

from shendu.autograd import no_grad
from shendu.backend import get_default_dtype
from shendu.tensor import Tensor, tensor


class StateDictError(RuntimeError, ValueError):
    """``load_state_dict`` found missing or unexpected keys, or a shape that does not fit.

    A ``RuntimeError`` as in torch, and a ``ValueError`` (the value passed is wrong)."""

__all__ = ["Module", "Parameter", "StateDictError"]


class Parameter(Tensor):
    """A tensor that a :class:`Module` registers as one of its learnable parameters."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad: bool = True) -> None:
        if data is None:
            data = np.empty((0,), get_default_dtype())
        if isinstance(data, Tensor):
            arr = data.data  # shares memory, as torch.nn.Parameter(t) does
        elif isinstance(data, np.ndarray):
            arr = data
        else:  # Python numbers and lists: floats get the default dtype, as in tensor()
            arr = tensor(data).data
        super().__init__(arr, requires_grad=requires_grad)
        if isinstance(data, Tensor):
            self._version = data._version  # one memory, one version counter

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class for layers and models (as ``torch.nn.Module``).

    Assigning a :class:`Parameter`, a ``Module`` or calling :meth:`register_buffer` in
    ``__init__`` registers it; ``forward`` defines the computation; calling the module
    runs ``forward``.
    """

    training: bool

    def __new__(cls, *args, **kwargs):
        # Remember how this module was built, so shendu.save/load can rebuild it (as JSON).
        # The record keeps nothing the caller passed alive: a module argument is kept as its
        # description, a large array as its shape (shendu.io.config.record_args).
        from shendu.io.config import record_args

        self = super().__new__(cls)
        object.__setattr__(self, "_init_args", record_args(cls, args, kwargs))
        return self

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ---------------------------------------------------------- registration
    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            if isinstance(value, (Parameter, Module)):
                raise AttributeError(
                    f"cannot assign {type(value).__name__} '{name}' before "
                    f"Module.__init__() was called (call super().__init__() first)"
                )
            object.__setattr__(self, name, value)
            return
        params, mods, bufs = self._parameters, self._modules, self._buffers
        if isinstance(value, Parameter):
            self.__dict__.pop(name, None)
            mods.pop(name, None)
            bufs.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            self.__dict__.pop(name, None)
            params.pop(name, None)
            bufs.pop(name, None)
            mods[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter '{name}' "
                                "(a Parameter or None is required)")
            params[name] = None
        elif name in mods:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module "
                                f"'{name}' (a Module or None is required)")
            mods[name] = None
        elif name in bufs:
            if value is not None and not isinstance(value, Tensor):
                value = Tensor(np.asarray(value))
            bufs[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            s = d.get(store)
            if s is not None and name in s:
                return s[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def _check_new_name(self, kind: str, name: str, store: dict) -> None:
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
        if not name:
            raise KeyError(f'{kind} name can\'t be empty string ""')
        if "." in name:
            raise KeyError(f'{kind} name can\'t contain ".", got: {name}')
        if name in self.__dict__:
            if self.__dict__[name] is not None:
                raise KeyError(f"attribute '{name}' already exists")
            del self.__dict__[name]  # a plain ``None`` placeholder gives way to the slot
        elif hasattr(type(self), name) and name not in store:
            raise KeyError(f"attribute '{name}' already exists (a {type(self).__name__} "
                           "class attribute)")
        for other in (self._parameters, self._buffers, self._modules):
            if other is not store and name in other:
                raise KeyError(f"attribute '{name}' already exists")

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` (a :class:`Parameter`, or None for an absent one) as ``name``."""
        self._check_new_name("parameter", name, self._parameters)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: '{name}' must be a Parameter or None, got "
                            f"{type(param).__name__}")
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Register a tensor that is state but not a parameter (e.g. running statistics).

        Persistent buffers are part of :meth:`state_dict`; ``None`` registers an absent one.
        """
        self._check_new_name("buffer", name, self._buffers)
        if tensor is not None and not isinstance(tensor, Tensor):
            tensor = Tensor(np.asarray(tensor))
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent.add(name)
        else:
            self._non_persistent.discard(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Register ``module`` as the child ``name`` (None keeps the slot empty)."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {type(module).__name__} is not a Module")
        self._check_new_name("module", name, self._modules)
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target: str) -> Module:
        """The module at dotted path ``target`` (``""`` is this module)."""
        mod = self
        if target == "":
            return mod
        walked = []
        for atom in target.split("."):
            child = mod._modules.get(atom)
            if child is None:
                where = ".".join(walked) or type(self).__name__
                raise AttributeError(f"get_submodule: {where} has no submodule '{atom}' "
                                     f"(looking for '{target}')")
            walked.append(atom)
            mod = child
        return mod

    # ---------------------------------------------------------------- calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward() defined")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -------------------------------------------------------------- traversal
    def named_modules(self, memo: set | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """Every module in the tree, this one first (depth-first pre-order, as torch).

        A module reachable along two paths is yielded once, under its first name, unless
        ``remove_duplicate=False``.
        """
        seen = set() if memo is None else memo
        stack = [(prefix, self)]
        while stack:
            name, mod = stack.pop()
            if remove_duplicate:
                if id(mod) in seen:
                    continue
                seen.add(id(mod))
            yield name, mod
            kids = [(f"{name}.{k}" if name else k, m) for k, m in mod._modules.items()
                    if m is not None]
            stack.extend(reversed(kids))

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, parameter)`` in torch's order: each module's own parameters in
        registration order, modules in pre-order. A shared parameter is listed once."""
        seen = set()
        mods = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
                if recurse else [(prefix, self)])
        for mname, m in mods:
            for pname, p in m._parameters.items():
                if p is None:
                    continue
                if remove_duplicate:
                    if id(p) in seen:
                        continue
                    seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        seen = set()
        mods = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
                if recurse else [(prefix, self)])
        for mname, m in mods:
            for bname, b in m._buffers.items():
                if b is None:
                    continue
                if remove_duplicate:
                    if id(b) in seen:
                        continue
                    seen.add(id(b))
                yield (f"{mname}.{bname}" if mname else bname), b

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> Module:
        """Set training mode (Dropout active, BatchNorm on batch statistics) recursively."""
        if not isinstance(mode, (bool, np.bool_)):
            raise ValueError(f"train: mode is expected to be a bool, got {mode!r}")
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget every parameter's gradient (``None``, or zeros in place)."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.data[...] = 0

    def apply(self, fn) -> Module:
        """Call ``fn`` on every submodule, children before parents (post-order, as torch),
        then on this module; e.g. ``model.apply(init_weights)``."""
        stack = [(self, False)]
        while stack:
            mod, expanded = stack.pop()
            if expanded:
                fn(mod)
                continue
            stack.append((mod, True))
            stack.extend((c, False) for c in reversed(list(mod.children())))
        return self

    def _cast(self, dtype) -> Module:
        for m in self.modules():
            for store in (m._parameters, m._buffers):
                for t in store.values():
                    if t is not None and t.data.dtype.kind == "f":
                        t.data = t.data.astype(dtype)
                        if t.grad is not None:
                            t.grad = Tensor(t.grad.data.astype(dtype))
        return self

    def to(self, *args, dtype=None, device=None, non_blocking: bool = False) -> Module:
        """``to(device)``, ``to(dtype)``, ``to(device, dtype)`` or ``to(tensor)``: cast floating
        parameters and buffers to ``dtype``. The CPU is the one device (NumPy arrays live
        there); any other device is an error."""
        from shendu.backend import as_dtype
        from shendu.device import _KNOWN, check_device
        from shendu.device import device as _device

        for a in args:
            if isinstance(a, Tensor):
                dtype = a.data.dtype
            elif isinstance(a, _device) or (isinstance(a, str) and a.split(":")[0] in _KNOWN):
                device = a
            else:
                dtype = a
        check_device(device, f"{type(self).__name__}.to")
        if dtype is None:
            return self
        return self._cast(as_dtype(dtype))

    def cpu(self) -> Module:
        return self

    def cuda(self, device=None) -> Module:
        from shendu.device import check_device

        check_device("cuda" if device is None else device, f"{type(self).__name__}.cuda")
        return self

    def double(self) -> Module:
        return self._cast(np.dtype(np.float64))

    def float(self) -> Module:
        return self._cast(np.dtype(np.float32))

    # ------------------------------------------------------------- state dict
    def state_dict(self, prefix: str = "", keep_vars: bool = False) -> OrderedDict:
        """Parameters and persistent buffers by dotted name (arrays unless ``keep_vars``).

        The order and keys are torch's: each module's parameters, then its buffers, then its
        children; a module shared along two paths appears under both names.
        """
        out = OrderedDict()
        for mname, m in self.named_modules(prefix=prefix.rstrip("."), remove_duplicate=False):
            for k, p in m._parameters.items():
                if p is not None:
                    out[f"{mname}.{k}" if mname else k] = p if keep_vars else p.data
            for k, b in m._buffers.items():
                if b is not None and k not in m._non_persistent:
                    out[f"{mname}.{k}" if mname else k] = b if keep_vars else b.data
        return out

    def load_state_dict(self, state_dict: Mapping, strict: bool = True) -> _IncompatibleKeys:
        """Copy arrays (NumPy, shendu or anything with ``.numpy()``, e.g. a torch
        ``state_dict()``) into this module's parameters and buffers, in place.

        Returns ``(missing_keys, unexpected_keys)``. With ``strict`` either one is an error;
        a shape that does not fit always is. Everything is checked before anything is copied,
        so a failed load leaves the module unchanged. Raises :class:`StateDictError` naming
        every offending key (and both shapes).
        """
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        if strict and missing:
            errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing)
                          + ".")
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: "
                          + ", ".join(f'"{k}"' for k in unexpected) + ".")
        arrays = {}
        for k, t in own.items():
            if k not in state_dict:
                continue
            arr = _as_array(state_dict[k])
            if arr.shape != t.data.shape:
                errors.append(f"size mismatch for {k}: copying a param with shape {arr.shape} "
                              f"from checkpoint, the shape in current model is {t.data.shape}.")
            elif arr.dtype.kind not in "biuf":
                errors.append(f"{k}: expected a numeric array, got dtype {arr.dtype}")
            else:
                arrays[k] = arr
        if errors:
            raise StateDictError(f"Error(s) in loading state_dict for {type(self).__name__}:"
                                 "\n\t" + "\n\t".join(errors))
        with no_grad():
            for k, arr in arrays.items():
                t = own[k]
                if t.data.flags.writeable and (t.data.dtype.kind == "f"
                                               or arr.dtype.kind == t.data.dtype.kind):
                    np.copyto(t.data, arr, casting="unsafe")
                    t._version[0] += 1
                elif t.data.dtype.kind == "f":
                    t.data = np.array(arr, dtype=t.data.dtype)
                else:
                    t.data = np.array(arr)
        return _IncompatibleKeys(missing, unexpected)

    # ---------------------------------------------------------------- printing
    def extra_repr(self) -> str:
        """The layer's settings for ``repr`` (e.g. ``in_features=4, out_features=3``)."""
        return ""

    def __repr__(self) -> str:
        # torch's layout: settings on one line when there are no children, otherwise one
        # line per setting and per child, indented by two spaces.
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        n_extra = len(lines)
        for name, m in self._modules.items():
            lines.append(f"({name}): " + repr(m).replace("\n", "\n  "))
        if not lines:
            return f"{type(self).__name__}()"
        if n_extra == 1 and len(lines) == 1:
            return f"{type(self).__name__}({lines[0]})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"

    def __dir__(self):
        return list(super().__dir__()) + list(self._parameters) + list(self._modules) + list(
            self._buffers)


class _IncompatibleKeys(tuple):
    """``(missing_keys, unexpected_keys)`` of a load, with torch's attribute names."""

    def __new__(cls, missing, unexpected):
        return super().__new__(cls, (missing, unexpected))

    @property
    def missing_keys(self):
        return self[0]

    @property
    def unexpected_keys(self):
        return self[1]

    def __repr__(self) -> str:
        if not self[0] and not self[1]:
            return "<All keys matched successfully>"
        return f"_IncompatibleKeys(missing_keys={self[0]}, unexpected_keys={self[1]})"


def _as_array(v) -> np.ndarray:
    if isinstance(v, Tensor):
        return v.data
    if isinstance(v, np.ndarray):
        return v
    if hasattr(v, "detach") and hasattr(v, "numpy"):  # a torch tensor
        return v.detach().cpu().numpy()
    return np.asarray(v)
