r"""Saving and loading: weights as safetensors, everything else as JSON.

``shendu.save(obj, path)`` writes a module, an optimizer, a learning-rate scheduler, a ready
model (estimator) or a dict of arrays; ``shendu.load(path)`` gives it back without the caller
re-creating anything. Training checkpoints (:func:`save_checkpoint`, and the
:class:`~shendu.checkpoint.ModelCheckpoint` callback of the training loop) use the same file
format.

The file
--------
A shendu file is a plain `safetensors <https://github.com/huggingface/safetensors>`_ file, so
any safetensors reader can get the weights out of it::

    8 bytes          little-endian unsigned length n of the header
    n bytes          JSON header: {"name": {"dtype": "F32", "shape": [4, 3],
                                            "data_offsets": [begin, end]}, ...,
                                   "__metadata__": {"shendu": "<JSON>",
                                                    "shendu.checksum": "crc32:<8 hex>"}}
    the rest         the arrays' raw bytes, little-endian, C order, back to back

``__metadata__["shendu"]`` describes the object as JSON: ``format_version``, the shendu
``version`` that wrote it, its ``kind`` (``module``, ``optimizer``, ``scheduler``,
``object``, ``checkpoint`` or ``arrays``) and what the kind needs to rebuild it — a module's
class and constructor arguments (recorded by ``Module.__new__``), an optimizer's class and
hyper-parameters, an estimator's ``get_params()`` and fitted attributes (``classes_``,
``n_features_in_``, its network and optimizer...). Every array of the object lies in the
data section under a readable name (``"0.weight"``, ``"attrs.model_.0.weight"``,
``"optimizer.state.0.exp_avg"``) and the JSON refers to it by that name.

``shendu.checksum`` is the CRC-32 of the whole file with the checksum's own 8 hex digits
read as ``00000000``: a flipped bit or byte anywhere, a truncated or extended file, is
caught before anything is interpreted.

Guarantees
----------
* Writes are atomic (:func:`atomic_write`: temporary file in the same folder, flush, fsync,
  rename, fsync of the folder): after a crash at any moment the path holds the old file or
  the new one, never a mixture.
* Reading is defensive. The header length is bounded (:data:`MAX_HEADER_BYTES`); every
  dtype, shape and byte range is checked against the file before a byte is interpreted;
  tensor names are restricted to ``[A-Za-z0-9_.:-]`` (no paths); nesting is bounded; classes
  are looked up only inside the ``shendu`` package (or among classes passed to
  :func:`register`), never in ``__main__``; rebuilding runs under a memory ceiling
  proportional to the file's size, so a tiny hostile file cannot make shendu allocate
  gigabytes. Whatever is wrong — truncated, corrupted, wrongly typed or hostile — ends in
  one :class:`FileFormatError` that names the file and the problem. A missing file is a
  ``FileNotFoundError``; calling :func:`load` without what a kind needs (an optimizer
  without ``params=``) is a ``TypeError``.
* Nothing is ever unpickled. (Why not: unpickling runs whatever code the file names, so a
  pickled model is a program, not data — and the format could not be checked before use.)
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import re
import struct
import sys
import tempfile
import zlib
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

__all__ = ["FileFormatError", "save", "load", "save_arrays", "load_arrays", "atomic_write",
           "save_checkpoint", "load_checkpoint", "pack_state", "unpack_state", "register",
           "encode_config", "decode_config", "estimator_state", "estimator_restore",
           "MAX_HEADER_BYTES", "FORMAT_VERSION"]

#: Version of the shendu description inside the file; a reader refuses other versions.
FORMAT_VERSION = 1
#: A header larger than this is not a shendu file (the weights themselves have no limit).
MAX_HEADER_BYTES = 64 * 2**20
#: Deepest nesting of stored state (dicts in lists in dicts...) written or read.
MAX_DEPTH = 64

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-:]{1,512}$")
_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "U16": np.dtype("<u2"), "U32": np.dtype("<u4"), "U64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}
_CODES = {v: k for k, v in _DTYPES.items()}
_SUM_KEY = "shendu.checksum"          # CRC-32 of the whole file (this value read as zeros)
_SUM_ZERO = "crc32:00000000"
_OLD_CRC_KEY = "shendu.crc32"         # early files: CRC-32 of the data section only


class FileFormatError(ValueError):
    """A file shendu cannot or will not read: truncated, corrupted, wrongly typed or hostile.

    ``path`` is the file, ``problem`` what is wrong with it."""

    def __init__(self, path, problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


class _UsageError(TypeError):
    """``load`` was called without what the file's kind needs (not a problem of the file)."""


# --------------------------------------------------------------------- raw I/O
def atomic_write(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temporary file, flush, fsync, rename.

    A crash at any moment leaves either the old file or the new one, never a torn one. The
    temporary file (``.tmp-*.part`` beside ``path``) is removed on any error.
    """
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=d)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; a saved file gets the usual mode
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass


def _umask() -> int:
    """The process's umask, read without changing it where the system says it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _as_saveable(name: str, arr) -> np.ndarray:
    a = np.asarray(arr.data if hasattr(arr, "grad") else arr)
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    if dt not in _CODES:
        raise TypeError(f"save: tensor {name!r} has dtype {a.dtype}, which safetensors "
                        "cannot hold")
    a = a.astype(dt, copy=False)
    return a if a.flags.c_contiguous else a.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)


def _serialize(arrays: dict, metadata: dict | None) -> bytes:
    """The bytes of a safetensors file holding ``arrays`` and string ``metadata``, sealed
    with the whole-file checksum."""
    meta = {str(k): str(v) for k, v in (metadata or {}).items()
            if k not in (_SUM_KEY, _OLD_CRC_KEY)}
    meta[_SUM_KEY] = _SUM_ZERO
    header: dict = {"__metadata__": meta}
    offset = 0
    blobs = []
    for name, arr in arrays.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"save: tensor name {name!r} is not allowed (1 to 512 letters, "
                             "digits, '_', '.', '-', ':')")
        a = _as_saveable(name, arr)
        b = a.tobytes()
        header[name] = {"dtype": _CODES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)  # align the data section to 8 bytes
    head = struct.pack("<Q", len(hb))
    crc = 0
    for part in (head, hb, *blobs):
        crc = zlib.crc32(part, crc)
    field = f'"{_SUM_KEY}":"{_SUM_ZERO}"'.encode()
    hb = hb.replace(field, f'"{_SUM_KEY}":"crc32:{crc:08x}"'.encode(), 1)
    return b"".join((head, hb, *blobs))


def save_arrays(arrays: dict, path, metadata: dict | None = None) -> None:
    """Write named arrays (and string metadata) as a safetensors file, atomically."""
    atomic_write(path, _serialize(arrays, metadata))


def _json_loads(path, text, what: str):
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise FileFormatError(path, f"{what} is not valid JSON ({e.__class__.__name__})") from None


def load_arrays(path) -> tuple[OrderedDict, dict]:
    """Read a safetensors file: ``(arrays, metadata)``. Everything is validated (and the
    checksum, when there is one, verified) before an array is made."""
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
        text = hb.decode("utf-8")
    except UnicodeDecodeError:
        raise FileFormatError(path, "header is not UTF-8 text") from None
    header = _json_loads(path, text, "header")
    if not isinstance(header, dict):
        raise FileFormatError(path, "header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise FileFormatError(path, "__metadata__ must map strings to strings")
    _verify_checksum(path, meta, head, hb, data)
    entries = []
    for name, info in header.items():
        if not _NAME_RE.match(name):
            raise FileFormatError(path, f"tensor name {name[:80]!r} is not allowed")
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise FileFormatError(path, f"tensor {name!r}: entry must have exactly dtype, shape "
                                        "and data_offsets")
        dt = _DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dt is None:
            raise FileFormatError(path, f"tensor {name!r}: unknown dtype "
                                        f"{str(info['dtype'])[:40]!r}")
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


def _verify_checksum(path, meta: dict, head: bytes, hb: bytes, data: bytes) -> None:
    value = meta.pop(_SUM_KEY, None)
    if value is not None:
        if not re.fullmatch(r"crc32:[0-9a-f]{8}", value):
            raise FileFormatError(path, f"malformed checksum {value[:40]!r}")
        field = f'"{_SUM_KEY}":"{value}"'.encode()
        if hb.count(field) != 1:
            raise FileFormatError(path, "corrupted: the checksum field is not where shendu "
                                        "writes it")
        zeroed = hb.replace(field, f'"{_SUM_KEY}":"{_SUM_ZERO}"'.encode())
        crc = zlib.crc32(data, zlib.crc32(zeroed, zlib.crc32(head)))
        if f"crc32:{crc:08x}" != value:
            raise FileFormatError(path, "corrupted: the file does not match its checksum")
    old = meta.pop(_OLD_CRC_KEY, None)
    if old is not None and old != f"{zlib.crc32(data):08x}":
        raise FileFormatError(path, "corrupted: the data section does not match its checksum")


# ------------------------------------------------------------ classes by name
def _class_path(obj_or_cls) -> str:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}.{cls.__qualname__}"


_registry: dict[str, type] = {}
_PART_RE = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]*$")


def register(cls: type) -> type:
    """Allow :func:`load` to rebuild instances of a class defined outside shendu (use as a
    decorator). Only registered classes and shendu's own are ever looked up by name."""
    _registry[_class_path(cls)] = cls
    return cls


def _is_shendu_class(cls: type) -> bool:
    mod = getattr(cls, "__module__", "") or ""
    return mod == "shendu" or mod.startswith("shendu.") or _class_path(cls) in _registry


def _resolve_class(path, name, base: type) -> type:
    """The class stored as ``name``: registered, or a class inside the ``shendu`` package
    (never ``__main__`` or a dunder module, whose import could run code)."""
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


# ------------------------------------------------------- memory ceiling on rebuild
def _address_space() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def _memory_ceiling(extra_bytes: int):
    """While rebuilding an object from a file, refuse to grow the process's address space by
    more than ``extra_bytes`` (Linux ``RLIMIT_AS``; elsewhere no limit). A hostile file that
    asks for ``Linear(10**5, 10**5)`` then fails with ``MemoryError`` instead of filling
    the machine's memory."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        yield
        return
    current = _address_space() if sys.platform.startswith("linux") else None
    if current is None:  # pragma: no cover
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = current + int(extra_bytes)
    inf = resource.RLIM_INFINITY
    if (soft != inf and soft <= limit) or (hard != inf and hard < limit):
        yield
        return
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _rebuild_budget(path) -> int:
    """What rebuilding may allocate: the weights twice over (initialisation temporaries,
    non-persistent buffers) plus 1 GiB."""
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    return 8 * size + 2**30


# ------------------------------------------------------------ module configs
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


def encode_config(value, _depth: int = 0):
    """A constructor argument as JSON; modules become ``{"__module__": class, args, kwargs}``
    (rebuilt from the arguments ``Module.__new__`` recorded)."""
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
    if isinstance(value, (list, tuple)):
        enc = [encode_config(v, _depth + 1) for v in value]
        return enc if isinstance(value, list) else {"__tuple__": enc}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("save: dict constructor arguments must have string keys")
        return {"__dict__": {k: encode_config(v, _depth + 1) for k, v in value.items()}}
    if isinstance(value, Module):
        init = value.__dict__.get("_init_args")
        if init is None:
            raise TypeError(f"save: cannot record how to build {type(value).__name__}; "
                            "save its state_dict instead")
        args, kwargs = init
        return {"__module__": _class_path(value),
                "args": [encode_config(a, _depth + 1) for a in args],
                "kwargs": {k: encode_config(v, _depth + 1) for k, v in kwargs.items()}}
    if isinstance(value, np.ndarray) and value.size <= 4096 and value.dtype.kind in "biuf":
        return {"__array__": value.tolist(), "dtype": value.dtype.name}
    raise TypeError(f"save: constructor argument of type {type(value).__name__} cannot be "
                    "stored as JSON")


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
    if "__dtype__" in value:
        return _safe_dtype(path, value["__dtype__"], "biufc")
    if "__float__" in value and value["__float__"] in ("nan", "inf", "-inf"):
        return float(value["__float__"])
    if "__array__" in value:
        dt = _safe_dtype(path, value.get("dtype"))
        try:
            return np.asarray(value["__array__"], dtype=dt)
        except (TypeError, ValueError, OverflowError):
            raise FileFormatError(path, "malformed array in the stored config") from None
    if "__module__" in value:
        cls = _resolve_class(path, value["__module__"], Module)
        args, kwargs = value.get("args", []), value.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise FileFormatError(path, "malformed module config")
        args = [decode_config(a, path, _depth + 1) for a in args]
        kwargs = {k: decode_config(v, path, _depth + 1) for k, v in kwargs.items()}
        try:
            return cls(*args, **kwargs)
        except MemoryError:
            raise
        except Exception as e:
            raise FileFormatError(path, f"cannot rebuild {value['__module__']}: "
                                        f"{type(e).__name__}: {str(e)[:300]}") from None
    raise FileFormatError(path, "unrecognised entry in the stored config")


# ----------------------------------------------------------------- state trees
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


def _is_plain_object(v) -> bool:
    """A shendu object (not a module, optimizer, tensor or container) stored by its
    attributes, e.g. a callback or a seed-API model."""
    return (hasattr(v, "__dict__") and not isinstance(v, (type, list, tuple, dict))
            and _is_shendu_class(type(v)))


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


# ------------------------------------------------------------------ save/load
def _describe(kind: str, **fields) -> str:
    from shendu import __version__

    return json.dumps({"format": "shendu", "format_version": FORMAT_VERSION,
                       "version": __version__, "kind": kind, **fields})


def _to_bytes(obj) -> bytes:
    from shendu.nn.module import Module
    from shendu.optim.lr_scheduler import LRScheduler
    from shendu.optim.optimizer import Optimizer

    if isinstance(obj, Module):
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
            if not isinstance(a, np.ndarray):
                raise TypeError(f"save: a dict is saved as named arrays, but {k!r} is a "
                                f"{type(v).__name__}; use save_checkpoint for other values")
            arrays[k] = a
        desc = _describe("arrays")
    else:
        raise TypeError(f"save: don't know how to save a {type(obj).__name__} (a Module, an "
                        "optimizer, a scheduler, a shendu model or a dict of arrays)")
    return _serialize(arrays, {"shendu": desc})


def save(obj, path) -> None:
    """Save ``obj`` to ``path`` (atomically) so that :func:`load` rebuilds it.

    ``obj`` is a ``Module`` (class, constructor arguments, train/eval mode and weights), an
    optimizer (class, hyper-parameters and state; parameters are matched on load), a
    learning-rate scheduler, a ready model from ``shendu.models`` (constructor parameters,
    fitted attributes, network and optimizer), another shendu object (by its attributes)
    or a dict of arrays (a ``state_dict``; torch tensors are converted).
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
    return _guarded(path, kind, _rebuild, path, kind, arrays, desc, into, params, optimizer)


def _guarded(path, kind, fn, *args):
    """``fn(*args)`` under the memory ceiling; whatever goes wrong rebuilding from the file
    becomes one :class:`FileFormatError` (usage errors stay ``TypeError``)."""
    with _memory_ceiling(_rebuild_budget(path)):
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
    state = _guarded(path, "checkpoint", unpack_state, desc.get("state"), arrays, path)
    if not isinstance(state, dict):
        raise FileFormatError(path, "malformed checkpoint")
    return state


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (the dict of its parts)."""
    arrays, desc = _read_desc(path)
    if desc is None or desc.get("kind") != "checkpoint":
        raise FileFormatError(path, "not a shendu checkpoint")
    return _checkpoint_parts(path, arrays, desc)
