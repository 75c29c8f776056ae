"""``save``/``load`` of modules, optimizers, schedulers, ready models and checkpoints."""

from __future__ import annotations

import inspect
import json
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

from shendu.io.classes import _class_path, _is_plain_object, _is_shendu_class, _resolve_class
from shendu.io.config import check_rebuildable, decode_config, encode_config, rebuild_budget
from shendu.io.format import (
    FORMAT_VERSION,
    FileFormatError,
    _json_loads,
    _serialize,
    _UsageError,
    atomic_write,
    load_arrays,
)
from shendu.io.state import (
    _build_optimizer,
    _load_exact,
    _object_restore,
    _object_state,
    _set_training,
    pack_state,
    unpack_state,
)


def _rebuild_budget(arrays: dict) -> int:
    """What rebuilding may draw and allocate before the file's weights replace it: four
    times the weights (float64 draws for float32 weights, and the arrays themselves) plus
    256 MiB for everything else."""
    return 4 * sum(a.nbytes for a in arrays.values()) + 2**28


def _describe(kind: str, **fields) -> str:
    from shendu import __version__

    return json.dumps({"format": "shendu", "format_version": FORMAT_VERSION,
                       "version": __version__, "kind": kind, **fields})


def _to_bytes(obj) -> bytes:
    from shendu.nn.module import Module
    from shendu.optim.lr_scheduler import LRScheduler
    from shendu.optim.optimizer import Optimizer

    if isinstance(obj, Module):
        check_rebuildable(obj)
        arrays = OrderedDict(obj.state_dict())
        desc = _describe("module", config=encode_config(obj),
                         eval=[n for n, m in obj.named_modules() if not m.training])
    elif isinstance(obj, Optimizer):
        sizes = [len(g["params"]) for g in obj.param_groups]
        shapes = [list(p.data.shape) for g in obj.param_groups for p in g["params"]]
        arrays, skeleton = pack_state({"defaults": dict(obj.defaults),
                                       "state": obj.state_dict()}, prefix="")
        desc = _describe("optimizer", **{"class": _class_path(obj)}, groups=sizes,
                         shapes=shapes, step_count=int(getattr(obj, "_step_count", 0)),
                         state=skeleton)
    elif isinstance(obj, LRScheduler):
        arrays, skeleton = pack_state(obj.state_dict(), prefix="scheduler")
        desc = _describe("scheduler", **{"class": _class_path(obj)}, state=skeleton)
    elif hasattr(obj, "_shendu_state"):
        arrays, extra = obj._shendu_state()
        desc = _describe("object", **{"class": _class_path(obj)}, state=extra)
    elif _is_plain_object(obj):
        arrays, extra = _object_state(obj)
        desc = _describe("object", **{"class": _class_path(obj)}, state=extra)
    elif isinstance(obj, dict):
        arrays = OrderedDict()
        for k, v in obj.items():
            a = v.data if hasattr(v, "grad") else v
            if hasattr(a, "detach") and hasattr(a, "numpy"):  # a torch tensor
                a = a.detach().cpu().numpy()
            if not isinstance(a, np.ndarray) or not isinstance(k, str):
                break
            arrays[k] = a
        else:
            return _serialize(arrays, {"shendu": _describe("arrays")})
        # a nested dict (an optimizer's state_dict, {"model": ..., "iter_num": ...}): a
        # checkpoint whose parts are its items, which load() gives back as a dict
        if not all(isinstance(k, str) for k in obj):
            bad = next(k for k in obj if not isinstance(k, str))
            raise TypeError(f"save: a dict's keys must be strings, got {bad!r} "
                            f"({type(bad).__name__})")
        return _checkpoint_bytes(obj)
    else:
        raise TypeError(f"save: don't know how to save a {type(obj).__name__} (a Module, an "
                        "optimizer, a scheduler, a shendu model or a dict)")
    return _serialize(arrays, {"shendu": desc})


def save(obj, path) -> None:
    """Save ``obj`` to ``path`` (atomically) so that :func:`load` rebuilds it.

    ``obj`` is a ``Module`` (class, constructor arguments, train/eval mode and weights), an
    optimizer (class, hyper-parameters and state; parameters are matched on load), a
    learning-rate scheduler, a ready model from ``shendu.models`` (constructor parameters,
    fitted attributes, network and optimizer), another shendu object (by its attributes),
    a dict of arrays (a ``state_dict``, written as a plain safetensors file; torch tensors
    are converted) or any other dict with string keys (an optimizer's ``state_dict()``,
    ``{"model": model.state_dict(), "optimizer": opt.state_dict(), "iter_num": 5}``),
    written as a checkpoint (see :func:`save_checkpoint`) that :func:`load` gives back as
    the same dict.
    """
    atomic_write(path, _to_bytes(obj))


def _read_desc(path) -> tuple[OrderedDict, dict | None]:
    arrays, meta = load_arrays(path)
    if "shendu" not in meta:
        return arrays, None
    desc = _json_loads(path, meta["shendu"], "shendu metadata")
    if not isinstance(desc, dict) or desc.get("format") != "shendu":
        raise FileFormatError(path, "shendu metadata is malformed")
    if desc.get("format_version") != FORMAT_VERSION:
        raise FileFormatError(path, f"format version {str(desc.get('format_version'))[:20]} is "
                                    f"not supported (this shendu reads {FORMAT_VERSION})")
    return arrays, desc


def load(path, *, into=None, params=None, optimizer=None, model=None):
    """Load what :func:`save` (or :func:`save_checkpoint`) wrote.

    Modules, ready models and other shendu objects are rebuilt from the file alone. For the
    rest, or to load into objects you already have:

    ``into=obj``
        Load the file's state into ``obj`` in place and return it: a module (any
        safetensors file of matching names and shapes works, e.g. one written from a torch
        ``state_dict``), an optimizer of the same class, or a scheduler.
    ``params=``
        An optimizer file is rebuilt over these parameters (``model.parameters()``, or the
        model itself), which must be as many and of the same shapes as when it was saved.
    ``optimizer=``
        A scheduler file is rebuilt on this optimizer.

    ``model=`` is the same as ``into=`` for modules. A checkpoint returns the dict of its
    parts, a dict of arrays (or a plain safetensors file) the arrays. Raises
    :class:`FileFormatError` naming the file for anything wrong with it (including weights
    that do not fit ``into``), ``FileNotFoundError`` if it is missing, and ``TypeError``
    when an argument the file's kind needs is missing.
    """
    from shendu.nn.module import Module

    if model is not None:
        if into is not None:
            raise _UsageError("load: give into= or model=, not both")
        into = model
    arrays, desc = _read_desc(path)
    kind = "arrays" if desc is None else desc.get("kind")
    if kind == "arrays":
        if into is None:
            return arrays
        if not isinstance(into, Module):
            raise _UsageError(f"load: {path} holds named arrays, which load into a Module, not a "
                            f"{type(into).__name__}")
        return _load_module_state(path, into, arrays)
    if kind == "checkpoint":
        return _checkpoint_parts(path, arrays, desc)
    if into is not None and kind not in ("module", "optimizer", "scheduler"):
        raise _UsageError(f"load: into= takes a module, an optimizer or a scheduler; {path} "
                        f"holds a{'n' if str(kind)[:1] in 'aeiou' else ''} {kind}")
    return _guarded(path, kind, arrays, _rebuild, path, kind, arrays, desc, into, params, optimizer)


def _guarded(path, kind, arrays, fn, *args):
    """``fn(*args)`` under the rebuild budget; whatever goes wrong rebuilding from the file
    becomes one :class:`FileFormatError` (usage errors stay ``TypeError``)."""
    with rebuild_budget(path, _rebuild_budget(arrays)):
        try:
            return fn(*args)
        except (FileFormatError, _UsageError):
            raise
        except MemoryError:
            raise FileFormatError(path, "rebuilding it would need far more memory than the "
                                        "file's size justifies (corrupted or hostile)") from None
        except RecursionError:
            raise FileFormatError(path, "stored state is nested too deeply") from None
        except Exception as e:
            raise FileFormatError(path, f"cannot rebuild the {str(kind)[:20]}: "
                                        f"{type(e).__name__}: {str(e)[:300]}") from None


def _load_module_state(path, m, arrays):
    try:
        _load_exact(m, arrays)
    except (KeyError, ValueError, RuntimeError) as e:
        raise FileFormatError(path, f"weights do not fit the architecture: {e}") from None
    return m


def _rebuild(path, kind, arrays, desc, into, params, optimizer):
    from shendu.nn.module import Module
    from shendu.optim.lr_scheduler import LRScheduler
    from shendu.optim.optimizer import Optimizer

    if kind == "module":
        if into is not None and not isinstance(into, Module):
            raise _UsageError(f"load: {path} holds a module; into= must be a Module, got "
                            f"{type(into).__name__}")
        m = into if into is not None else decode_config(desc.get("config"), path)
        if not isinstance(m, Module):
            raise FileFormatError(path, "stored config does not describe a module")
        _load_module_state(path, m, arrays)
        if into is None:
            evals = desc.get("eval", [])
            _set_training(m, evals if isinstance(evals, list) else [])
        return m
    if kind == "optimizer":
        cls = _resolve_class(path, desc.get("class"), Optimizer)
        tree = unpack_state(desc.get("state"), arrays, path)
        if not isinstance(tree, dict) or not isinstance(tree.get("defaults"), dict):
            raise FileFormatError(path, "malformed optimizer state")
        if into is not None:
            if type(into) is not cls:
                raise _UsageError(f"load: {path} holds a {cls.__name__} optimizer; into= is a "
                                f"{type(into).__name__}")
            try:
                into.load_state_dict(tree.get("state"))
            except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
                raise FileFormatError(path, f"the {cls.__name__} state does not fit: "
                                            f"{str(e)[:300]}") from None
            return into
        if params is None:
            raise _UsageError(f"load: {path} holds a {cls.__name__} optimizer; pass "
                            "params=model.parameters() to rebuild it, or into=optimizer")
        return _optimizer_over(path, cls, desc, tree, params)
    if kind == "scheduler":
        cls = _resolve_class(path, desc.get("class"), LRScheduler)
        state = unpack_state(desc.get("state"), arrays, path)
        if not isinstance(state, dict) or not all(isinstance(k, str) and k.isidentifier()
                                                  and not k.startswith("__") for k in state):
            raise FileFormatError(path, "malformed scheduler state")
        for k in state:  # state is data: it may not stand in for the class's methods
            if callable(getattr(cls, k, None)) or isinstance(getattr(cls, k, None), property):
                raise FileFormatError(path, f"scheduler state {k!r} would replace "
                                            f"{cls.__name__}.{k}")
        if into is not None:
            if type(into) is not cls:
                raise _UsageError(f"load: {path} holds a {cls.__name__}; into= is a "
                                f"{type(into).__name__}")
            into.load_state_dict(state)
            return into
        if optimizer is None:
            raise _UsageError(f"load: {path} holds a {cls.__name__} scheduler; pass optimizer= "
                            "to rebuild it on that optimizer, or into=scheduler")
        if cls.__name__ == "LambdaLR":
            raise _UsageError(f"load: {path} holds a LambdaLR, whose functions cannot be stored; "
                            "create it again and load with into=scheduler")
        sched = cls.__new__(cls)
        sched.__dict__.update(state)  # so a load_state_dict that reads attributes finds them
        sched.optimizer = optimizer
        sched.load_state_dict(state)
        return sched
    if kind == "object":
        cls = _resolve_class(path, desc.get("class"), object)
        state = desc.get("state")
        if hasattr(cls, "_shendu_restore"):
            restore = cls._shendu_restore
            try:
                if "path" in inspect.signature(restore).parameters:
                    return restore(arrays, state, path=path)
                return restore(arrays, state)
            except (FileFormatError, MemoryError, RecursionError):
                raise
            except Exception as e:
                raise FileFormatError(path, f"cannot rebuild {cls.__name__}: "
                                            f"{type(e).__name__}: {str(e)[:300]}") from None
        if not _is_shendu_class(cls):
            raise FileFormatError(path, f"unknown class {desc.get('class')!r}")
        return _object_restore(path, cls, arrays, state)
    raise FileFormatError(path, f"unknown kind {str(kind)[:40]!r}")


def _optimizer_over(path, cls, desc, tree, params):
    from shendu.nn.module import Module

    if isinstance(params, Module):
        params = params.parameters()
    if not isinstance(params, Iterable):
        raise _UsageError(f"load: params= must be an iterable of parameters, got "
                        f"{type(params).__name__}")
    flat = list(params)
    sizes, shapes = desc.get("groups"), desc.get("shapes")
    if (not isinstance(sizes, list) or not all(type(n) is int and n >= 0 for n in sizes)
            or not isinstance(shapes, list) or len(shapes) != sum(sizes)):
        raise FileFormatError(path, "malformed optimizer description")
    if len(flat) != len(shapes):
        raise FileFormatError(path, f"the saved {cls.__name__} updates {len(shapes)} "
                                    f"parameters, but params= gave {len(flat)}")
    for i, (p, s) in enumerate(zip(flat, shapes)):
        shape = tuple(getattr(p, "shape", ()))
        if list(shape) != s:
            raise FileFormatError(path, f"parameter {i} has shape {shape} in params= but "
                                        f"{tuple(s) if isinstance(s, list) else s} in the "
                                        f"saved {cls.__name__}")
    groups, k = [], 0
    for n in sizes:
        groups.append(flat[k:k + n])
        k += n
    return _build_optimizer(path, cls, groups, tree["defaults"], tree.get("state"),
                            desc.get("step_count", 0))


# ----------------------------------------------------------------- checkpoints
def _checkpoint_bytes(parts: dict) -> bytes:
    arrays, skeleton = pack_state(parts, prefix="")
    return _serialize(arrays, {"shendu": _describe("checkpoint", state=skeleton)})


def save_checkpoint(path, **parts) -> None:
    """Write a checkpoint atomically. ``parts`` are named state trees (a model's state_dict,
    an optimizer's, a scheduler's, the epoch, the RNG state, the history, a fitted model...;
    anything :func:`pack_state` takes). :func:`load_checkpoint` (or :func:`load`) gives
    back the dict of parts."""
    atomic_write(path, _checkpoint_bytes(parts))


def _checkpoint_parts(path, arrays, desc) -> dict:
    state = _guarded(path, "checkpoint", arrays, unpack_state, desc.get("state"), arrays, path)
    if not isinstance(state, dict):
        raise FileFormatError(path, "malformed checkpoint")
    return state


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (the dict of its parts)."""
    arrays, desc = _read_desc(path)
    if desc is None or desc.get("kind") != "checkpoint":
        raise FileFormatError(path, "not a shendu checkpoint")
    return _checkpoint_parts(path, arrays, desc)
