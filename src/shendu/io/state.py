"""State trees: a nested structure of numbers, arrays, tensors, modules, optimizers and
shendu objects split into named arrays plus a JSON skeleton (:func:`pack_state`), and back
(:func:`unpack_state`); estimators and other shendu objects by their attributes."""

from __future__ import annotations

import inspect
from collections import OrderedDict

import numpy as np

from shendu.io.classes import _class_path, _is_plain_object, _is_shendu_class, _resolve_class
from shendu.io.config import (
    _check_depth,
    _safe_dtype,
    check_rebuildable,
    decode_config,
    encode_config,
)
from shendu.io.format import _NAME_RE, MAX_DEPTH, MAX_HEADER_BYTES, FileFormatError, _as_saveable


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


class _Packer:
    """Turns a tree of Python values into named arrays plus a JSON skeleton.

    Plain dicts become ``{"__dict__": [[key, value], ...]}`` (any JSON-able keys), so every
    other dict in the skeleton is a tagged node: ``{"__tensor__": name}`` (an array in the
    data section), ``__tuple__``, ``__float__`` (NaN, ±inf), ``__scalar__`` (a NumPy scalar,
    dtype kept), ``__strarray__``, ``__dtype__``, ``__Tensor__``, ``__module__`` (a module:
    its config and state_dict), ``__module_ref__`` (the same module again),
    ``__optimizer__`` (class, hyper-parameters, state_dict and which module parameters it
    updates), ``__mapping__`` (a shendu dict subclass such as ``History``) and ``__object__``
    (any other shendu object, by its attributes).
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.arrays: OrderedDict = OrderedDict()
        self.names: dict[int, str] = {}      # id(array) -> name, so aliases stay aliases
        self.keep: list = []                 # keep packed arrays alive while ids are in use
        self.modules: dict[int, int] = {}    # id(module) -> module number
        self.module_params: dict[int, tuple[int, int]] = {}  # id(param) -> (module, index)
        self.packed_modules: set[int] = set()

    # a first pass finds every module, so optimizers can point at their parameters
    def index_modules(self, v, depth: int = 0) -> None:
        from shendu.nn.module import Module

        if depth > MAX_DEPTH:
            return
        if isinstance(v, Module):
            if id(v) not in self.modules:
                k = self.modules[id(v)] = len(self.modules)
                for i, p in enumerate(v.parameters()):
                    self.module_params.setdefault(id(p), (k, i))
            return
        if isinstance(v, dict):
            items = v.values()
        elif isinstance(v, (list, tuple)):
            items = v
        elif _is_plain_object(v):
            items = vars(v).values()
        else:
            return
        for x in items:
            self.index_modules(x, depth + 1)

    def array(self, a: np.ndarray, path: str) -> dict:
        if id(a) in self.names:
            return {"__tensor__": self.names[id(a)]}
        name = path if path and _NAME_RE.match(path) and path not in self.arrays else None
        n = len(self.arrays)
        while name is None or name in self.arrays:
            name, n = f"{self.prefix or 't'}:{n}", n + 1
        _as_saveable(name, a)                # fail now, naming the path, if it cannot be held
        self.arrays[name] = a
        self.names[id(a)] = name
        self.keep.append(a)
        return {"__tensor__": name}

    def walk(self, v, path: str, depth: int = 0):
        from shendu.nn.module import Module
        from shendu.optim.optimizer import Optimizer
        from shendu.tensor import Tensor

        _check_depth(depth, path or "the state")
        if isinstance(v, np.generic):  # before float: np.float64 is a float
            if v.dtype.kind not in "biuf":
                raise TypeError(f"save: cannot store a {type(v).__name__} at {path}")
            item = v.item()
            if isinstance(item, float) and not np.isfinite(item):
                item = {"__float__": repr(item)}
            return {"__scalar__": item, "dtype": v.dtype.name}
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if isinstance(v, float):
            return v if np.isfinite(v) else {"__float__": repr(v)}
        if isinstance(v, np.ndarray):
            if v.dtype.kind in "biuf":
                return self.array(v, path)
            if v.dtype.kind in "UO":
                flat = v.ravel().tolist()
                if v.dtype.kind == "O" and not all(
                        x is None or isinstance(x, (bool, int, float, str)) for x in flat):
                    raise TypeError(f"save: object array at {path} holds values other than "
                                    "numbers and strings")
                return {"__strarray__": flat, "dtype": v.dtype.str, "shape": list(v.shape)}
            raise TypeError(f"save: cannot store an array of dtype {v.dtype} at {path}")
        if isinstance(v, np.dtype) or (isinstance(v, type) and issubclass(v, np.generic)):
            return {"__dtype__": np.dtype(v).name, "type": isinstance(v, type)}
        if isinstance(v, Module):
            return self.module(v, path, depth)
        if isinstance(v, Tensor):
            if not v.is_leaf:  # the output of a recorded computation: its graph is not data
                return None
            return {"__Tensor__": self.array(v.data, path), "requires_grad": v.requires_grad,
                    "parameter": type(v).__name__ == "Parameter"}
        if isinstance(v, Optimizer):
            return self.optimizer(v, path, depth)
        if isinstance(v, dict) and not _is_shendu_class(type(v)):
            return {"__dict__": [[self.walk(k, _join(path, "key"), depth + 1),
                                  self.walk(x, _join(path, k), depth + 1)]
                                 for k, x in v.items()]}
        if isinstance(v, list):
            return [self.walk(x, _join(path, i), depth + 1) for i, x in enumerate(v)]
        if isinstance(v, tuple):
            return {"__tuple__": [self.walk(x, _join(path, i), depth + 1)
                                  for i, x in enumerate(v)]}
        if isinstance(v, dict) and _is_shendu_class(type(v)):
            return {"__mapping__": _class_path(v),
                    "items": self.walk(dict(v), _join(path, "items"), depth + 1),
                    "attrs": self.walk(dict(vars(v)), path, depth + 1)}
        if _is_plain_object(v):
            return {"__object__": _class_path(v),
                    "attrs": self.walk(dict(vars(v)), path, depth + 1)}
        raise TypeError(f"save: cannot store a {type(v).__name__} at {path or 'the top'}")

    def module(self, m, path: str, depth: int) -> dict:
        k = self.modules.get(id(m))
        if k is None:
            k = self.modules[id(m)] = len(self.modules)
        if k in self.packed_modules:
            return {"__module_ref__": k}
        self.packed_modules.add(k)
        check_rebuildable(m, path or "the module")
        state = {name: self.array(a, _join(path, name)) for name, a in m.state_dict().items()}
        eval_names = [n for n, sub in m.named_modules() if not sub.training]
        return {"__module__": encode_config(m), "id": k, "state": state, "eval": eval_names}

    def optimizer(self, opt, path: str, depth: int) -> dict:
        groups = []
        for gi, g in enumerate(opt.param_groups):
            refs = []
            for p in g["params"]:
                if id(p) not in self.module_params:
                    raise TypeError(f"save: the optimizer at {path} updates a parameter (group "
                                    f"{gi}) that belongs to no module saved with it; save the "
                                    "optimizer on its own and load it with params=")
                refs.append(list(self.module_params[id(p)]))
            groups.append(refs)
        return {"__optimizer__": _class_path(opt), "groups": groups,
                "defaults": self.walk(dict(opt.defaults), _join(path, "defaults"), depth + 1),
                "state": self.walk(opt.state_dict(), _join(path, "state"), depth + 1),
                "step_count": int(getattr(opt, "_step_count", 0))}


class _Unpacker:
    """Inverse of :class:`_Packer`; every malformed node is a :class:`FileFormatError`."""

    def __init__(self, arrays: dict, path) -> None:
        self.arrays, self.path = arrays, path
        self.module_nodes: dict[int, dict] = {}
        self.modules: dict[int, object] = {}

    def fail(self, problem: str):
        raise FileFormatError(self.path, problem)

    def index_modules(self, v, depth: int = 0) -> None:
        _check_depth(depth, "state", self.path)
        if isinstance(v, list):
            for x in v:
                self.index_modules(x, depth + 1)
        elif isinstance(v, dict):
            if "__module__" in v:
                k = v.get("id")
                if type(k) is not int or k in self.module_nodes:
                    self.fail("malformed module entry in stored state")
                self.module_nodes[k] = v
                return
            for x in v.values():
                self.index_modules(x, depth + 1)

    def module(self, k):
        from shendu.nn.module import Module

        if type(k) is not int or k not in self.module_nodes:
            self.fail("stored state refers to a missing module")
        if k in self.modules:
            return self.modules[k]
        node = self.module_nodes[k]
        m = decode_config(node["__module__"], self.path)
        if not isinstance(m, Module):
            self.fail("stored config does not describe a module")
        state = node.get("state")
        if not isinstance(state, dict):
            self.fail("malformed module state")
        sd = {name: self.tensor(ref) for name, ref in state.items()}
        try:
            _load_exact(m, sd)
        except (KeyError, ValueError, RuntimeError) as e:
            self.fail(f"weights do not fit the architecture: {str(e)[:600]}")
        evals = node.get("eval", [])
        if not isinstance(evals, list):
            self.fail("malformed module state")
        _set_training(m, evals)
        self.modules[k] = m
        return m

    def tensor(self, ref) -> np.ndarray:
        if not isinstance(ref, dict) or not isinstance(ref.get("__tensor__"), str):
            self.fail("malformed tensor reference in stored state")
        name = ref["__tensor__"]
        if name not in self.arrays:
            self.fail(f"state refers to a missing tensor {name[:80]!r}")
        return self.arrays[name]

    def walk(self, v, depth: int = 0):
        _check_depth(depth, "state", self.path)
        if isinstance(v, list):
            return [self.walk(x, depth + 1) for x in v]
        if not isinstance(v, dict):
            return v
        if "__tensor__" in v:
            return self.tensor(v)
        if "__dict__" in v:
            pairs = v["__dict__"]
            if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2
                                                      for p in pairs):
                self.fail("malformed dict in stored state")
            out = {}
            for k, x in pairs:
                k = self.walk(k, depth + 1)
                if isinstance(k, list):
                    k = tuple(k)
                try:
                    out[k] = self.walk(x, depth + 1)
                except TypeError:  # an unhashable key
                    self.fail("malformed dict key in stored state")
            return out
        if "__tuple__" in v:
            items = v["__tuple__"]
            if not isinstance(items, list):
                self.fail("malformed tuple in stored state")
            return tuple(self.walk(x, depth + 1) for x in items)
        if "__float__" in v:
            if v["__float__"] not in ("nan", "inf", "-inf"):
                self.fail("malformed float in stored state")
            return float(v["__float__"])
        if "__scalar__" in v:
            dt = _safe_dtype(self.path, v.get("dtype"))
            item = v["__scalar__"]
            if isinstance(item, dict):
                item = self.walk(item, depth + 1)  # NaN or ±inf
            if not isinstance(item, (bool, int, float)):
                self.fail("malformed scalar in stored state")
            try:
                return np.array(item, dtype=dt)[()]
            except (OverflowError, ValueError, TypeError):
                self.fail("malformed scalar in stored state")
        if "__strarray__" in v:
            return self.strarray(v)
        if "__dtype__" in v:
            dt = _safe_dtype(self.path, v["__dtype__"], "biufcUSOMm")
            return dt.type if v.get("type") is True else dt
        if "__module__" in v:
            return self.module(v.get("id"))
        if "__module_ref__" in v:
            return self.module(v["__module_ref__"])
        if "__Tensor__" in v:
            return self.torch_like_tensor(v)
        if "__optimizer__" in v:
            return self.optimizer(v, depth)
        if "__mapping__" in v:
            cls = _resolve_class(self.path, v["__mapping__"], dict)
            obj = cls.__new__(cls)
            items, attrs = self.walk(v.get("items"), depth + 1), self.walk(v.get("attrs"),
                                                                           depth + 1)
            if not isinstance(items, dict) or not isinstance(attrs, dict):
                self.fail("malformed mapping in stored state")
            dict.update(obj, items)
            _set_attrs(self.path, obj, attrs)
            return obj
        if "__object__" in v:
            cls = _resolve_class(self.path, v["__object__"], object)
            attrs = self.walk(v.get("attrs"), depth + 1)
            if not isinstance(attrs, dict):
                self.fail("malformed object in stored state")
            try:
                obj = cls.__new__(cls)
            except TypeError:
                self.fail(f"cannot rebuild {v['__object__']}")
            _set_attrs(self.path, obj, attrs)
            return obj
        self.fail("unrecognised entry in stored state")

    def strarray(self, v) -> np.ndarray:
        flat, shape = v["__strarray__"], v.get("shape")
        if (not isinstance(flat, list) or not isinstance(shape, list)
                or not all(type(s) is int and s >= 0 for s in shape) or len(shape) > 32
                or int(np.prod(shape, dtype=object)) != len(flat)
                or not all(x is None or isinstance(x, (bool, int, float, str)) for x in flat)):
            self.fail("malformed string array in stored state")
        dt = _safe_dtype(self.path, v.get("dtype"), "UO")
        if dt.itemsize * len(flat) > MAX_HEADER_BYTES:
            self.fail("string array too large")
        if dt.kind == "O":
            out = np.empty(len(flat), dtype=object)
            out[:] = flat
        else:
            if not all(isinstance(x, str) for x in flat):
                self.fail("malformed string array in stored state")
            out = np.array(flat, dtype=dt)
        return out.reshape(shape)

    def torch_like_tensor(self, v):
        from shendu.nn.module import Parameter
        from shendu.tensor import Tensor

        data = self.tensor(v["__Tensor__"])
        rg = v.get("requires_grad") is True
        if v.get("parameter") is True:
            return Parameter(data, requires_grad=rg)
        return Tensor(data, requires_grad=rg and data.dtype.kind == "f")

    def optimizer(self, v, depth: int):
        from shendu.optim.optimizer import Optimizer

        cls = _resolve_class(self.path, v["__optimizer__"], Optimizer)
        groups = v.get("groups")
        if not isinstance(groups, list) or not all(isinstance(g, list) for g in groups):
            self.fail("malformed optimizer entry in stored state")
        params = []
        for g in groups:
            ps = []
            for ref in g:
                if not (isinstance(ref, list) and len(ref) == 2 and type(ref[1]) is int):
                    self.fail("malformed optimizer entry in stored state")
                mps = list(self.module(ref[0]).parameters())
                if not 0 <= ref[1] < len(mps):
                    self.fail("optimizer refers to a missing parameter")
                ps.append(mps[ref[1]])
            params.append(ps)
        defaults = self.walk(v.get("defaults"), depth + 1)
        state = self.walk(v.get("state"), depth + 1)
        return _build_optimizer(self.path, cls, params, defaults, state, v.get("step_count", 0))


def _load_exact(m, sd) -> None:
    """``m.load_state_dict(sd)``, then give every floating tensor the dtype it was saved in
    (the module was rebuilt in the default dtype; a float64 module must come back float64,
    with its exact values)."""
    from shendu.tensor import Tensor

    m.load_state_dict(sd)
    own = m.state_dict(keep_vars=True)
    for name, v in sd.items():
        arr = v.data if isinstance(v, Tensor) else np.asarray(v)
        t = own.get(name)
        if t is not None and arr.dtype.kind == "f" and t.data.dtype != arr.dtype:
            t.data = np.array(arr, copy=True)
            t._version[0] += 1


def _set_training(m, eval_names: list) -> None:
    """Put every submodule named in ``eval_names`` in eval mode, the others in train mode."""
    names = set(n for n in eval_names if isinstance(n, str))
    for n, sub in m.named_modules():
        object.__setattr__(sub, "training", n not in names)


def _set_attrs(path, obj, attrs: dict) -> None:
    for k, val in attrs.items():
        if not isinstance(k, str) or not k.isidentifier() or k.startswith("__"):
            raise FileFormatError(path, f"bad attribute name {str(k)[:60]!r} in stored state")
        try:
            object.__setattr__(obj, k, val)
        except (AttributeError, TypeError):
            raise FileFormatError(path, f"cannot set attribute {k!r} of "
                                        f"{type(obj).__name__}") from None


def _build_optimizer(path, cls, groups: list, defaults, state, step_count):
    """An optimizer of class ``cls`` over ``groups`` (lists of tensors) with the stored
    hyper-parameters and state."""
    if not isinstance(defaults, dict) or not all(isinstance(k, str) for k in defaults):
        raise FileFormatError(path, "malformed optimizer hyper-parameters")
    sig = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in defaults.items() if k in sig and k not in ("self", "params")}
    try:
        opt = cls([{"params": g} for g in groups], **kwargs)
        opt.defaults = dict(defaults)
        opt.load_state_dict(state)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
        raise FileFormatError(path, f"cannot rebuild the {cls.__name__} optimizer: "
                                    f"{type(e).__name__}: {str(e)[:300]}") from None
    if type(step_count) is int and step_count >= 0:
        opt._step_count = step_count
    return opt


def pack_state(tree, prefix: str = "s") -> tuple[OrderedDict, object]:
    """Split a nested structure into named arrays and a JSON-able skeleton.

    The structure may hold dicts (any JSON-able keys), lists, tuples, numbers (NaN and ±inf
    too), strings, ``None``, NumPy arrays and scalars (dtype kept), string arrays, dtypes,
    tensors, modules (rebuilt from their constructor arguments, weights from the arrays),
    optimizers over the parameters of modules in the same structure, and shendu objects
    (by their attributes). Each array is named after its path in the tree (``model.0.weight``)
    when that name is allowed, else ``prefix:<n>``; an array referred to twice is stored once.
    """
    p = _Packer(prefix)
    p.index_modules(tree)
    skeleton = p.walk(tree, prefix)
    return p.arrays, skeleton


def unpack_state(skeleton, arrays: dict, path="<state>"):
    """Inverse of :func:`pack_state` (``path`` names the file in errors)."""
    u = _Unpacker(arrays, path)
    u.index_modules(skeleton)
    return u.walk(skeleton)


# ------------------------------------------------------------- ready models
def estimator_state(est) -> tuple[OrderedDict, dict]:
    """A scikit-learn-style estimator as ``(arrays, JSON)``: ``get_params()`` (its
    constructor arguments) and every other attribute — fitted ones such as ``classes_``,
    ``n_features_in_``, the network ``model_`` (config + weights), the optimizer
    ``optimizer_`` (state, so ``partial_fit`` continues exactly) and ``history_``."""
    names = list(type(est)._param_names())
    params = {n: getattr(est, n) for n in names}
    attrs = {k: v for k, v in vars(est).items() if k not in params}
    arrays, skeleton = pack_state({"params": params, "attrs": attrs}, prefix="")
    return arrays, {"via": "estimator", "state": skeleton}


def estimator_restore(cls, arrays: dict, state, path="<state>"):
    """Inverse of :func:`estimator_state`: ``cls(**params)``, then the fitted attributes."""
    if not isinstance(state, dict) or state.get("via") != "estimator":
        raise FileFormatError(path, "malformed estimator state")
    tree = unpack_state(state.get("state"), arrays, path)
    if not isinstance(tree, dict) or not isinstance(tree.get("params"), dict) \
            or not isinstance(tree.get("attrs"), dict):
        raise FileFormatError(path, "malformed estimator state")
    params = tree["params"]
    if not all(isinstance(k, str) for k in params):
        raise FileFormatError(path, "malformed estimator parameters")
    try:
        est = cls(**params)
    except MemoryError:
        raise
    except Exception as e:
        raise FileFormatError(path, f"cannot rebuild {cls.__name__}: {type(e).__name__}: "
                                    f"{str(e)[:300]}") from None
    _set_attrs(path, est, tree["attrs"])
    return est


def _object_state(obj) -> tuple[OrderedDict, dict]:
    arrays, skeleton = pack_state(dict(vars(obj)), prefix="attrs")
    return arrays, {"via": "attrs", "attrs": skeleton}


def _object_restore(path, cls, arrays: dict, state):
    if not isinstance(state, dict) or state.get("via") != "attrs":
        raise FileFormatError(path, "malformed object state")
    attrs = unpack_state(state.get("attrs"), arrays, path)
    if not isinstance(attrs, dict):
        raise FileFormatError(path, "malformed object state")
    try:
        obj = cls.__new__(cls)
    except TypeError:
        raise FileFormatError(path, f"cannot rebuild {cls.__name__}") from None
    _set_attrs(path, obj, attrs)
    return obj


