"""Saving and loading: weights as safetensors, everything else as JSON. Never pickle.

A shendu file is a plain `safetensors <https://github.com/huggingface/safetensors>`_ file: an
8-byte little-endian header length, a JSON header naming each tensor's dtype, shape and byte range,
then the raw bytes. shendu puts its own description of the object (class, constructor config,
version, optimizer hyper-parameters, fitted attributes, ...) as JSON under the header's
``__metadata__["shendu"]`` key, so one file holds the whole object and any safetensors reader can
still read the weights.

Reading is defensive: the header size is bounded, every offset, dtype and shape is checked against
the file before a byte is interpreted, classes are looked up only inside the ``shendu`` package and
only if they are shendu classes, and every problem raises one :class:`FileFormatError` that names
the file and what is wrong. Nothing is ever unpickled (pickle can run arbitrary code).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import struct
import tempfile
import zlib
from collections import OrderedDict

import numpy as np

__all__ = ["FileFormatError", "save", "load", "save_arrays", "load_arrays", "atomic_write",
           "save_checkpoint", "load_checkpoint", "pack_state", "unpack_state", "register",
           "encode_config", "decode_config"]

FORMAT_VERSION = 1
MAX_HEADER_BYTES = 64 * 2**20  # a header larger than this is not a shendu file
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-:]{1,512}$")
_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "U16": np.dtype("<u2"), "U32": np.dtype("<u4"), "U64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}
_CODES = {v: k for k, v in _DTYPES.items()}
_CRC_KEY = "shendu.crc32"  # checksum of the data section: a flipped byte is caught


class FileFormatError(ValueError):
    """A file shendu cannot or will not read: truncated, corrupted, wrongly typed or hostile."""

    def __init__(self, path, problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


# --------------------------------------------------------------------- raw I/O
def atomic_write(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temporary file, flush, fsync, rename.

    A crash at any moment leaves either the old file or the new one, never a torn one.
    """
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass


def _serialize(arrays: dict, metadata: dict | None) -> bytes:
    header: dict = {"__metadata__": {str(k): str(v) for k, v in (metadata or {}).items()}}
    offset = 0
    blobs = []
    for name, arr in arrays.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"save: tensor name {name!r} is not allowed (letters, digits, "
                             "'_', '.', '-', ':' only)")
        a = np.asarray(arr.data if hasattr(arr, "grad") else arr)
        if not a.flags.c_contiguous:
            a = a.copy(order="C")
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        if dt not in _CODES:
            raise TypeError(f"save: tensor {name!r} has dtype {a.dtype}, which safetensors "
                            "cannot hold")
        b = a.astype(dt, copy=False).tobytes()
        header[name] = {"dtype": _CODES[dt], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    body = b"".join(blobs)
    header["__metadata__"][_CRC_KEY] = f"{zlib.crc32(body):08x}"
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)  # align the data section to 8 bytes
    return struct.pack("<Q", len(hb)) + hb + body


def save_arrays(arrays: dict, path, metadata: dict | None = None) -> None:
    """Write named arrays (and string metadata) as a safetensors file, atomically."""
    atomic_write(path, _serialize(arrays, metadata))


def load_arrays(path) -> tuple[OrderedDict, dict]:
    """Read a safetensors file: ``(arrays, metadata)``. Validates everything first."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise FileFormatError(path, f"truncated: {size} bytes is too short for a "
                                            "safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                raise FileFormatError(path, f"header length {n} exceeds the {MAX_HEADER_BYTES} "
                                            "byte limit (not a shendu file, or corrupted)")
            if 8 + n > size:
                raise FileFormatError(path, f"truncated: header says {n} bytes but the file has "
                                            f"only {size - 8} after the length field")
            hb = f.read(n)
            data = f.read(size - 8 - n)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FileFormatError(path, "is a directory, not a file") from None
    try:
        header = json.loads(hb.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FileFormatError(path, f"header is not valid JSON ({e.__class__.__name__})") from None
    if not isinstance(header, dict):
        raise FileFormatError(path, "header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise FileFormatError(path, "__metadata__ must map strings to strings")
    crc = meta.pop(_CRC_KEY, None)
    if crc is not None and crc != f"{zlib.crc32(data):08x}":
        raise FileFormatError(path, "corrupted: the data section does not match its checksum")
    entries = []
    for name, info in header.items():
        if not _NAME_RE.match(name):
            raise FileFormatError(path, f"tensor name {name[:80]!r} is not allowed")
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise FileFormatError(path, f"tensor {name!r}: entry must have exactly dtype, shape "
                                        "and data_offsets")
        dt = _DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dt is None:
            raise FileFormatError(path, f"tensor {name!r}: unknown dtype {info['dtype']!r}")
        shape, offs = info["shape"], info["data_offsets"]
        if (not isinstance(shape, list) or len(shape) > 32
                or not all(type(s) is int and 0 <= s < 2**40 for s in shape)):
            raise FileFormatError(path, f"tensor {name!r}: bad shape {str(shape)[:80]}")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(type(o) is int for o in offs) or not 0 <= offs[0] <= offs[1]):
            raise FileFormatError(path, f"tensor {name!r}: bad data_offsets {str(offs)[:80]}")
        nbytes = int(np.prod(shape, dtype=object)) * dt.itemsize
        if offs[1] - offs[0] != nbytes:
            raise FileFormatError(path, f"tensor {name!r}: shape {shape} of {info['dtype']} "
                                        f"needs {nbytes} bytes but data_offsets span "
                                        f"{offs[1] - offs[0]}")
        if offs[1] > len(data):
            raise FileFormatError(path, f"truncated: tensor {name!r} ends at byte {offs[1]} of a "
                                        f"{len(data)}-byte data section")
        entries.append((offs[0], offs[1], name, dt, shape))
    entries.sort()
    pos = 0
    for b, e, name, _, _ in entries:
        if b < pos:
            raise FileFormatError(path, f"tensor {name!r} overlaps the previous tensor")
        pos = e
    arrays: OrderedDict = OrderedDict()
    order = {k: i for i, k in enumerate(header)}
    for b, e, name, dt, shape in sorted(entries, key=lambda t: order[t[2]]):
        arr = np.frombuffer(data, dtype=dt, count=(e - b) // dt.itemsize, offset=b)
        arrays[name] = arr.reshape(shape).astype(dt.newbyteorder("="), copy=True)
    return arrays, meta


# ------------------------------------------------------------ object configs
def _class_path(obj_or_cls) -> str:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}.{cls.__qualname__}"


_registry: dict[str, type] = {}


def register(cls: type) -> type:
    """Allow :func:`load` to rebuild instances of a class defined outside shendu."""
    _registry[_class_path(cls)] = cls
    return cls


def _resolve_class(path, name: str, base: type) -> type:
    if name in _registry:
        cls = _registry[name]
    else:
        if not isinstance(name, str) or not name.startswith("shendu.") or not re.match(
                r"^[A-Za-z_][A-Za-z0-9_.]*$", name):
            raise FileFormatError(path, f"unknown class {str(name)[:100]!r} (only shendu classes, "
                                        "or classes passed to shendu.io.register, can be loaded)")
        mod_name, _, cls_name = name.rpartition(".")
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            raise FileFormatError(path, f"unknown class {name!r}") from None
        cls = getattr(mod, cls_name, None)
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise FileFormatError(path, f"unknown class {name!r} (not a {base.__name__})")
    return cls


def encode_config(value):
    """A constructor argument as JSON; modules become ``{"__module__": class, args, kwargs}``."""
    from shendu.nn.module import Module

    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, float) and not np.isfinite(value):
            return {"__float__": repr(value)}
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return {"__dtype__": np.dtype(value).name}
    if isinstance(value, (list, tuple)):
        enc = [encode_config(v) for v in value]
        return enc if isinstance(value, list) else {"__tuple__": enc}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("save: dict constructor arguments must have string keys")
        return {"__dict__": {k: encode_config(v) for k, v in value.items()}}
    if isinstance(value, Module):
        init = value.__dict__.get("_init_args")
        if init is None:
            raise TypeError(f"save: cannot record how to build {type(value).__name__}; "
                            "save its state_dict instead")
        args, kwargs = init
        return {"__module__": _class_path(value), "args": [encode_config(a) for a in args],
                "kwargs": {k: encode_config(v) for k, v in kwargs.items()}}
    if isinstance(value, np.ndarray) and value.size <= 4096:
        return {"__array__": value.tolist(), "dtype": value.dtype.name}
    raise TypeError(f"save: constructor argument of type {type(value).__name__} cannot be "
                    "stored as JSON")


def decode_config(value, path="<config>"):
    """Inverse of :func:`encode_config` (classes resolved only inside shendu)."""
    from shendu.nn.module import Module

    if isinstance(value, list):
        return [decode_config(v, path) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tuple__" in value:
        return tuple(decode_config(v, path) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: decode_config(v, path) for k, v in value["__dict__"].items()}
    if "__dtype__" in value:
        return np.dtype(str(value["__dtype__"]))
    if "__float__" in value:
        return float(value["__float__"])
    if "__array__" in value:
        return np.asarray(value["__array__"], dtype=np.dtype(str(value["dtype"])))
    if "__module__" in value:
        cls = _resolve_class(path, value["__module__"], Module)
        args = [decode_config(a, path) for a in value.get("args", [])]
        kwargs = {k: decode_config(v, path) for k, v in value.get("kwargs", {}).items()}
        try:
            return cls(*args, **kwargs)
        except Exception as e:
            raise FileFormatError(path, f"cannot rebuild {value['__module__']}: {e}") from None
    raise FileFormatError(path, "unrecognised entry in the stored config")


# ------------------------------------------------------------------ save/load
def save(obj, path) -> None:
    """Save a module, an optimizer, a ready model, or a dict of arrays to ``path``.

    ``load(path)`` rebuilds it without the caller re-creating the architecture.
    """
    from shendu import __version__
    from shendu.nn.module import Module

    desc: dict = {"format": "shendu", "format_version": FORMAT_VERSION, "version": __version__}
    if isinstance(obj, Module):
        desc["kind"] = "module"
        desc["config"] = encode_config(obj)
        arrays = OrderedDict((k, v) for k, v in obj.state_dict().items())
    elif hasattr(obj, "_shendu_state"):
        tensors, extra = obj._shendu_state()
        desc["kind"] = "object"
        desc["class"] = _class_path(obj)
        desc["state"] = extra
        arrays = OrderedDict(tensors)
    elif isinstance(obj, dict):
        desc["kind"] = "arrays"
        arrays = OrderedDict((k, v.data if hasattr(v, "data") and not isinstance(v, np.ndarray)
                              else v) for k, v in obj.items())
    else:
        raise TypeError(f"save: don't know how to save a {type(obj).__name__} (a Module, an "
                        "optimizer, a shendu model or a dict of arrays)")
    save_arrays(arrays, path, {"shendu": json.dumps(desc)})


def load(path, *, model=None):
    """Load what :func:`save` wrote. With ``model=``, load the weights into that module instead
    of rebuilding it."""
    arrays, meta = load_arrays(path)
    if "shendu" not in meta:
        if model is not None:
            model.load_state_dict(arrays)
            return model
        return arrays  # a plain safetensors file: its arrays
    try:
        desc = json.loads(meta["shendu"])
    except json.JSONDecodeError:
        raise FileFormatError(path, "shendu metadata is not valid JSON") from None
    if not isinstance(desc, dict) or desc.get("format") != "shendu":
        raise FileFormatError(path, "shendu metadata is malformed")
    if desc.get("format_version") != FORMAT_VERSION:
        raise FileFormatError(path, f"format version {desc.get('format_version')!r} is not "
                                    f"supported (this shendu reads {FORMAT_VERSION})")
    kind = desc.get("kind")
    if kind == "arrays":
        return arrays
    if kind == "module":
        from shendu.nn.module import Module

        m = model if model is not None else decode_config(desc.get("config"), path)
        if not isinstance(m, Module):
            raise FileFormatError(path, "stored config does not describe a module")
        try:
            m.load_state_dict(arrays)
        except (KeyError, ValueError) as e:
            raise FileFormatError(path, f"weights do not fit the architecture: {e}") from None
        return m
    if kind == "object":
        name = desc.get("class")
        mod_name = name.rpartition(".")[0] if isinstance(name, str) else ""
        cls = _resolve_class(path, name, object) if mod_name else None
        if cls is None or not hasattr(cls, "_shendu_restore"):
            raise FileFormatError(path, f"unknown class {str(name)[:100]!r}")
        try:
            return cls._shendu_restore(arrays, desc.get("state"))
        except FileFormatError:
            raise
        except Exception as e:
            raise FileFormatError(path, f"cannot rebuild {name}: {e}") from None
    raise FileFormatError(path, f"unknown kind {str(kind)[:40]!r}")


# ----------------------------------------------------------------- state trees
def pack_state(tree, prefix: str = "s") -> tuple[OrderedDict, object]:
    """Split a nested structure (dicts, lists, numbers, strings, arrays, tensors) into named arrays
    and a JSON-able skeleton in which each array is replaced by ``{"__tensor__": name}``."""
    arrays: OrderedDict = OrderedDict()

    def walk(v, path):
        if hasattr(v, "grad") and hasattr(v, "data") and isinstance(v.data, np.ndarray):
            v = v.data
        if isinstance(v, np.ndarray):
            name = f"{prefix}.{len(arrays)}"
            arrays[name] = v
            return {"__tensor__": name}
        if isinstance(v, dict):
            return {"__dict__": [[walk(k, path), walk(x, f"{path}.{k}")] for k, x in v.items()]}
        if isinstance(v, (list, tuple)):
            items = [walk(x, f"{path}.{i}") for i, x in enumerate(v)]
            return items if isinstance(v, list) else {"__tuple__": items}
        if isinstance(v, (np.integer, np.floating, np.bool_)):
            return v.item()
        if isinstance(v, float) and not np.isfinite(v):
            return {"__float__": repr(v)}
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        raise TypeError(f"save: cannot store a {type(v).__name__} at {path}")

    return arrays, walk(tree, prefix)


def unpack_state(skeleton, arrays: dict, path="<state>"):
    """Inverse of :func:`pack_state`."""

    def walk(v):
        if isinstance(v, list):
            return [walk(x) for x in v]
        if not isinstance(v, dict):
            return v
        if "__tensor__" in v:
            name = v["__tensor__"]
            if name not in arrays:
                raise FileFormatError(path, f"state refers to a missing tensor {str(name)[:80]!r}")
            return arrays[name]
        if "__dict__" in v:
            pairs = v["__dict__"]
            if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2
                                                      for p in pairs):
                raise FileFormatError(path, "malformed dict in stored state")
            out = {}
            for k, x in pairs:
                k = walk(k)
                if isinstance(k, list):
                    k = tuple(k)
                out[k] = walk(x)
            return out
        if "__tuple__" in v:
            return tuple(walk(x) for x in v["__tuple__"])
        if "__float__" in v:
            return float(v["__float__"])
        raise FileFormatError(path, "unrecognised entry in stored state")

    return walk(skeleton)


def save_checkpoint(path, **parts) -> None:
    """Write a checkpoint atomically. ``parts`` are named state trees (a model's state_dict,
    an optimizer's, a scheduler's, the epoch, the RNG state, the history, ...)."""
    from shendu import __version__

    arrays, skeleton = pack_state(parts, prefix="ckpt")
    desc = {"format": "shendu", "format_version": FORMAT_VERSION, "version": __version__,
            "kind": "checkpoint", "state": skeleton}
    save_arrays(arrays, path, {"shendu": json.dumps(desc)})


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (a dict of its parts)."""
    arrays, meta = load_arrays(path)
    try:
        desc = json.loads(meta.get("shendu", "null"))
    except json.JSONDecodeError:
        raise FileFormatError(path, "shendu metadata is not valid JSON") from None
    if not isinstance(desc, dict) or desc.get("kind") != "checkpoint":
        raise FileFormatError(path, "not a shendu checkpoint")
    state = unpack_state(desc.get("state"), arrays, path)
    if not isinstance(state, dict):
        raise FileFormatError(path, "malformed checkpoint")
    return state
