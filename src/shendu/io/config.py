"""Architecture as JSON: how a module is described (``encode_config``) and rebuilt
(``decode_config``), and the budget every rebuild runs under.

A module is described by its class and constructor arguments, recorded by
``Module.__new__`` through :func:`record_args` in a light form that keeps nothing alive: a
module argument is kept as its description, an array of more than
:data:`MAX_INLINE_ELEMENTS` elements as its shape and dtype (it must be among the module's
weights, which the file holds). The containers ``Sequential``, ``ModuleList`` and
``ModuleDict`` are described by the children they hold when saved, so appending to them or
replacing a layer is saved as it is.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict

import numpy as np

from shendu.io.classes import _class_path, _resolve_class
from shendu.io.format import MAX_DEPTH, FileFormatError

#: Arrays up to this many elements are stored in a module's recorded arguments by value.
MAX_INLINE_ELEMENTS = 4096
#: Most modules one file may ask to build.
MAX_MODULES = 20_000


class _Unsaveable:
    """A constructor argument that cannot be written as JSON (the reason, kept for save)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _ArraySpec:
    """A large array argument, kept as shape and dtype only (its values are weights)."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype) -> None:
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)


class _ModuleArg:
    """A module passed as a constructor argument, kept as its description."""

    __slots__ = ("config",)

    def __init__(self, config) -> None:
        self.config = config


def _is_container(cls) -> bool:
    from shendu.nn.container import ModuleDict, ModuleList, Sequential

    return cls in (Sequential, ModuleList, ModuleDict)


def record_args(cls, args: tuple, kwargs: dict):
    """What ``Module.__new__`` keeps of a constructor call (see the module docstring)."""
    if _is_container(cls):
        return None  # containers are described by their children when saved
    return (tuple(_light(a, 0) for a in args),
            {k: _light(v, 0) for k, v in kwargs.items()})


def _light(v, depth: int):
    from shendu.nn.module import Module
    from shendu.tensor import Tensor

    if depth > MAX_DEPTH:
        return _Unsaveable(f"an argument nested more than {MAX_DEPTH} levels deep")
    if v is None or isinstance(v, (bool, int, float, str, np.generic, np.dtype)):
        return v
    if isinstance(v, Module):
        try:
            return _ModuleArg(encode_config(v))
        except TypeError as e:
            return _Unsaveable(str(e).removeprefix("save: "))
    if isinstance(v, Tensor):
        v = v.data
    if isinstance(v, np.ndarray):
        if v.dtype.kind not in "biuf":
            return _Unsaveable(f"an array of dtype {v.dtype}")
        if v.size <= MAX_INLINE_ELEMENTS:
            return np.array(v, copy=True)
        return _ArraySpec(v.shape, v.dtype)
    if isinstance(v, list):
        return [_light(x, depth + 1) for x in v]
    if isinstance(v, tuple):
        return tuple(_light(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return {k: _light(x, depth + 1) for k, x in v.items()}
    return v  # a function, a class...: kept, and refused at save time if not JSON


def _check_depth(depth: int, where: str, path=None) -> None:
    if depth > MAX_DEPTH:
        if path is None:
            raise TypeError(f"save: {where} is nested more than {MAX_DEPTH} levels deep "
                            "(is there a cycle?)")
        raise FileFormatError(path, f"stored state is nested more than {MAX_DEPTH} levels deep")


def _safe_dtype(path, name, kinds: str = "biuf") -> np.dtype:
    try:
        dt = np.dtype(str(name)[:40])
    except TypeError:
        raise FileFormatError(path, f"unknown dtype {str(name)[:40]!r}") from None
    if dt.kind not in kinds:
        raise FileFormatError(path, f"dtype {dt} is not allowed here")
    return dt


def _module_config(m, depth: int) -> dict:
    """The description of module ``m`` as it is now."""
    from shendu.nn.container import ModuleDict, ModuleList, Sequential

    cls = type(m)
    name = _class_path(m)
    children = list(m._modules.items())
    if cls in (Sequential, ModuleList, ModuleDict):
        if any(c is None for _, c in children):
            raise TypeError(f"save: {cls.__name__} holds None in place of a module")
        cfg = [(k, encode_config(c, depth + 1)) for k, c in children]
        if cls is ModuleList:
            return {"__module__": name, "args": [[c for _, c in cfg]], "kwargs": {}}
        if cls is Sequential and [k for k, _ in cfg] == [str(i) for i in range(len(cfg))]:
            return {"__module__": name, "args": [c for _, c in cfg], "kwargs": {}}
        return {"__module__": name, "args": [{"__odict__": [[k, c] for k, c in cfg]}],
                "kwargs": {}}
    init = m.__dict__.get("_init_args")
    if init is None:
        raise TypeError(f"save: cannot record how to build {cls.__name__}; "
                        "save its state_dict instead")
    args, kwargs = init
    specs = [a for a in _walk_args((args, kwargs)) if isinstance(a, _ArraySpec)]
    if specs:
        shapes = {tuple(t.shape) for t in m.state_dict().values()}
        for s in specs:
            if s.shape not in shapes:
                raise TypeError(f"save: {cls.__name__} was built from an array of shape "
                                f"{s.shape} that is not among its weights, so the file could "
                                "not rebuild it; save its state_dict instead")
    return {"__module__": name,
            "args": [encode_config(a, depth + 1) for a in args],
            "kwargs": {k: encode_config(v, depth + 1) for k, v in kwargs.items()}}


def _walk_args(v):
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.values())
        else:
            yield x


def encode_config(value, _depth: int = 0):
    """A constructor argument as JSON; modules become ``{"__module__": class, args, kwargs}``
    (containers list the children they hold now)."""
    from shendu.nn.module import Module

    _check_depth(_depth, "a constructor argument")
    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, float) and not np.isfinite(value):
            return {"__float__": repr(value)}
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return encode_config(value.item())
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return {"__dtype__": np.dtype(value).name}
    if isinstance(value, _ModuleArg):
        return value.config
    if isinstance(value, _ArraySpec):
        return {"__weights__": list(value.shape), "dtype": value.dtype.name}
    if isinstance(value, _Unsaveable):
        raise TypeError(f"save: a constructor argument is {value.reason}, which cannot be "
                        "stored as JSON")
    if isinstance(value, (list, tuple)):
        enc = [encode_config(v, _depth + 1) for v in value]
        return enc if isinstance(value, list) else {"__tuple__": enc}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("save: dict constructor arguments must have string keys")
        return {"__dict__": {k: encode_config(v, _depth + 1) for k, v in value.items()}}
    if isinstance(value, Module):
        return _module_config(value, _depth)
    if isinstance(value, np.ndarray) and value.size <= MAX_INLINE_ELEMENTS \
            and value.dtype.kind in "biuf":
        return {"__array__": value.tolist(), "dtype": value.dtype.name}
    raise TypeError(f"save: constructor argument of type {type(value).__name__} cannot be "
                    "stored as JSON")


# ----------------------------------------------------------------- the rebuild budget
_local = threading.local()


class _Budget:
    def __init__(self, path, nbytes: int | None) -> None:
        self.path, self.left, self.modules = path, nbytes, 0

    def charge(self, nbytes: int) -> None:
        if self.left is None:
            return
        self.left -= int(nbytes)
        if self.left < 0:
            raise MemoryError(f"rebuilding {self.path} would exceed its memory budget")

    def count_module(self) -> None:
        self.modules += 1
        if self.modules > MAX_MODULES:
            raise FileFormatError(self.path, f"asks to build more than {MAX_MODULES} modules")


_SIZE_AT = {"uniform": 2, "normal": 2, "integers": 2, "binomial": 2, "standard_normal": 0,
            "random": 0, "standard_exponential": 0}


def _mid(args, kwargs, at: int, key: str, default: float):
    return kwargs[key] if key in kwargs else args[at] if len(args) > at else default


#: What a rebuild "draws" instead of random numbers: every array it initialises is
#: overwritten by the file's weights, so a constant (the middle of the distribution) does,
#: at the cost of a fill.
_FILL = {
    "uniform": lambda a, k: (_mid(a, k, 0, "low", 0.0) + _mid(a, k, 1, "high", 1.0)) / 2,
    "normal": lambda a, k: _mid(a, k, 0, "loc", 0.0),
    "standard_normal": lambda a, k: 0.0,
    "random": lambda a, k: 0.5,
}


class _BudgetGenerator:
    """The generator a rebuild runs with: every draw is charged against the budget *before*
    it allocates; the common draws of initialisation are constant fills (the weights are
    replaced by the file's); shendu's own generator is not advanced by a load or a save."""

    def __init__(self, budget: _Budget) -> None:
        self._gen = np.random.Generator(np.random.PCG64(0))
        self._budget = budget

    def __getattr__(self, name):
        fn = getattr(self._gen, name)
        if not callable(fn):
            return fn

        def draw(*args, **kwargs):
            size = kwargs.get("size")
            at = _SIZE_AT.get(name)
            if size is None and at is not None and len(args) > at:
                size = args[at]
            out = kwargs.get("out")
            if out is not None:
                n = out.size
            elif size is None:
                n = np.size(args[0]) if name in ("permutation", "shuffle") and args else 1
            else:
                n = int(np.prod(size, dtype=object))
            self._budget.charge(8 * n)
            fill = _FILL.get(name)
            if fill is None or np.ndim(fill(args, kwargs)) != 0:
                return fn(*args, **kwargs)
            dtype = kwargs.get("dtype", np.float64)
            if out is not None:
                out[...] = fill(args, kwargs)
                return out
            if size is None:
                return np.asarray(fill(args, kwargs), dtype)[()]
            return np.full(size, fill(args, kwargs), dtype)

        return draw


@contextlib.contextmanager
def rebuild_budget(path, nbytes: int | None):
    """Rebuild under a budget of ``nbytes`` (``None``: unlimited) drawn from a private
    generator; nested uses share the outermost budget."""
    from shendu import backend

    if getattr(_local, "budget", None) is not None:
        yield _local.budget
        return
    b = _local.budget = _Budget(path, nbytes)
    try:
        with backend._use_generator(_BudgetGenerator(b)):
            yield b
    finally:
        _local.budget = None


def _current_budget(path) -> _Budget:
    b = getattr(_local, "budget", None)
    return b if b is not None else _Budget(path, None)


def decode_config(value, path="<config>", _depth: int = 0):
    """Inverse of :func:`encode_config` (classes resolved only inside shendu)."""
    from shendu.nn.module import Module

    _check_depth(_depth, "config", path)
    if isinstance(value, list):
        return [decode_config(v, path, _depth + 1) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tuple__" in value and isinstance(value["__tuple__"], list):
        return tuple(decode_config(v, path, _depth + 1) for v in value["__tuple__"])
    if "__dict__" in value and isinstance(value["__dict__"], dict):
        return {k: decode_config(v, path, _depth + 1) for k, v in value["__dict__"].items()}
    if "__odict__" in value and isinstance(value["__odict__"], list):
        pairs = value["__odict__"]
        if not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in pairs):
            raise FileFormatError(path, "malformed module config")
        return OrderedDict((k, decode_config(v, path, _depth + 1)) for k, v in pairs)
    if "__dtype__" in value:
        return _safe_dtype(path, value["__dtype__"], "biufc")
    if "__float__" in value and value["__float__"] in ("nan", "inf", "-inf"):
        return float(value["__float__"])
    if "__array__" in value:
        dt = _safe_dtype(path, value.get("dtype"))
        if not isinstance(value["__array__"], list) or len(value["__array__"]) > 2**16:
            raise FileFormatError(path, "malformed array in the stored config")
        try:
            return np.asarray(value["__array__"], dtype=dt)
        except (TypeError, ValueError, OverflowError):
            raise FileFormatError(path, "malformed array in the stored config") from None
    if "__weights__" in value:
        shape, dt = value["__weights__"], _safe_dtype(path, value.get("dtype"))
        if not isinstance(shape, list) or len(shape) > 32 or not all(
                type(s) is int and 0 <= s < 2**40 for s in shape):
            raise FileFormatError(path, "malformed array in the stored config")
        n = int(np.prod(shape, dtype=object))
        _current_budget(path).charge(n * dt.itemsize)
        return np.zeros(shape, dt)  # the weights themselves come from the file's tensors
    if "__module__" in value:
        _current_budget(path).count_module()
        cls = _resolve_class(path, value["__module__"], Module)
        args, kwargs = value.get("args", []), value.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise FileFormatError(path, "malformed module config")
        args = [decode_config(a, path, _depth + 1) for a in args]
        kwargs = {k: decode_config(v, path, _depth + 1) for k, v in kwargs.items()}
        try:
            return cls(*args, **kwargs)
        except (MemoryError, FileFormatError):
            raise
        except Exception as e:
            raise FileFormatError(path, f"cannot rebuild {value['__module__']}: "
                                        f"{type(e).__name__}: {str(e)[:300]}") from None
    raise FileFormatError(path, "unrecognised entry in the stored config")


def check_rebuildable(m, where: str = "the module") -> None:
    """Refuse (``TypeError``, at save time) a module whose description would not rebuild
    what it is now: the description is rebuilt (with a private generator, so shendu's own is
    not advanced) and its submodules, parameter names and shapes compared."""
    cfg = encode_config(m)
    with rebuild_budget("<save>", None):
        try:
            twin = decode_config(cfg, "<save>")
        except FileFormatError as e:
            raise TypeError(f"save: {where} ({type(m).__name__}) cannot be rebuilt from its "
                            f"recorded constructor arguments ({e.problem}); save its "
                            "state_dict instead") from None
    have = {n: type(s) for n, s in m.named_modules()}
    got = {n: type(s) for n, s in twin.named_modules()}
    problem = None
    for n in sorted(set(have) | set(got)):
        if have.get(n) is not got.get(n):
            a = have[n].__name__ if n in have else "nothing"
            b = got[n].__name__ if n in got else "nothing"
            problem = f"submodule {n or '(top)'!r} is {a} but rebuilding gives {b}"
            break
    if problem is None:
        sa = {k: tuple(v.shape) for k, v in m.state_dict().items()}
        sb = {k: tuple(v.shape) for k, v in twin.state_dict().items()}
        for k in sorted(set(sa) | set(sb)):
            if sa.get(k) != sb.get(k):
                problem = (f"{k!r} has shape {sa.get(k)} but rebuilding gives {sb.get(k)}"
                           if k in sa and k in sb else
                           f"{k!r} is {'missing after' if k in sa else 'added by'} rebuilding")
                break
    if problem is not None:
        raise TypeError(f"save: {where} ({type(m).__name__}) was changed after it was built "
                        f"and could not be rebuilt from the file: {problem}. Save its "
                        "state_dict instead (shendu.save(model.state_dict(), path)), or build "
                        "it so that its constructor makes it as it is")
