"""Classes by name: only shendu's own classes, or those passed to :func:`register`, are
ever looked up from a file (never ``__main__``, whose import could run code)."""

from __future__ import annotations

import importlib
import re

from shendu.io.format import FileFormatError

_registry: dict[str, type] = {}
_PART_RE = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]*$")


def _class_path(obj_or_cls) -> str:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls: type) -> type:
    """Allow :func:`load` to rebuild instances of a class defined outside shendu (use as a
    decorator). Only registered classes and shendu's own are ever looked up by name."""
    _registry[_class_path(cls)] = cls
    return cls


def _is_shendu_class(cls: type) -> bool:
    mod = getattr(cls, "__module__", "") or ""
    return mod == "shendu" or mod.startswith("shendu.") or _class_path(cls) in _registry


def _is_plain_object(v) -> bool:
    """A shendu object (not a module, optimizer, tensor or container) stored by its
    attributes, e.g. a callback or a seed-API model."""
    return (hasattr(v, "__dict__") and not isinstance(v, (type, list, tuple, dict))
            and _is_shendu_class(type(v)))


def _resolve_class(path, name, base: type) -> type:
    """The class stored as ``name``: registered, or a class inside the ``shendu`` package."""
    if isinstance(name, str) and name in _registry:
        cls = _registry[name]
    else:
        parts = name.split(".") if isinstance(name, str) and len(name) <= 300 else []
        if len(parts) < 2 or parts[0] != "shendu" or not all(_PART_RE.match(p) for p in parts):
            raise FileFormatError(path, f"unknown class {str(name)[:100]!r} (only shendu classes, "
                                        "or classes passed to shendu.io.register, can be loaded)")
        mod_name, cls_name = ".".join(parts[:-1]), parts[-1]
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            raise FileFormatError(path, f"unknown class {name!r}") from None
        cls = getattr(mod, cls_name, None)
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise FileFormatError(path, f"unknown class {str(name)[:100]!r} (not a {base.__name__})")
    return cls
