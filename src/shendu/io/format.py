"""The file layer: a safetensors file (written and parsed by the ``safetensors`` package)
sealed with a whole-file checksum, opened and checked so that no file — a pipe, a device, a
sparse giant, a hostile header — can hang, exhaust memory or escape as a raw ``OSError``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import struct
import tempfile
import zlib
from collections import OrderedDict

import numpy as np

#: Version of the shendu description inside the file; a reader refuses other versions.
FORMAT_VERSION = 1
#: A header larger than this is not a shendu file (the weights themselves have no limit).
MAX_HEADER_BYTES = 16 * 2**20
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
_ORDER_KEY = "shendu.order"           # the arrays' names in the order they were given


class FileFormatError(ValueError):
    """A file shendu cannot or will not read: truncated, corrupted, wrongly typed or hostile.

    ``path`` is the file, ``problem`` what is wrong with it."""

    def __init__(self, path, problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


class _UsageError(TypeError):
    """``load`` was called without what the file's kind needs (not a problem of the file)."""


# --------------------------------------------------------------------- writing
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
    """The bytes of a safetensors file (``safetensors.numpy.save``) holding ``arrays`` and
    string ``metadata``, sealed with the whole-file checksum."""
    from safetensors.numpy import save as st_save

    meta = {str(k): str(v) for k, v in (metadata or {}).items()
            if k not in (_SUM_KEY, _ORDER_KEY)}
    meta[_SUM_KEY] = _SUM_ZERO
    out = {}
    for name, arr in arrays.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"save: tensor name {name!r} is not allowed (1 to 512 letters, "
                             "digits, '_', '.', '-', ':')")
        out[name] = _as_saveable(name, arr)
    meta[_ORDER_KEY] = json.dumps(list(out), separators=(",", ":"))
    raw = st_save(out, metadata=meta)
    (n,) = struct.unpack("<Q", raw[:8])
    field = f'"{_SUM_KEY}":"{_SUM_ZERO}"'.encode()
    at = raw.find(field, 8, 8 + n)
    if at < 0 or raw.find(field, at + 1, 8 + n) >= 0:  # pragma: no cover - safetensors' JSON
        raise RuntimeError("save: the checksum field is not where shendu expects it")
    crc = zlib.crc32(raw)
    value = f'"{_SUM_KEY}":"crc32:{crc:08x}"'.encode()
    return b"".join((raw[:at], value, raw[at + len(field):]))


def save_arrays(arrays: dict, path, metadata: dict | None = None) -> None:
    """Write named arrays (and string metadata) as a safetensors file, atomically."""
    atomic_write(path, _serialize(arrays, metadata))


# --------------------------------------------------------------------- reading
def _json_loads(path, text, what: str):
    try:
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        # (ValueError also covers integers of thousands of digits)
        raise FileFormatError(path, f"{what} is not valid JSON ({e.__class__.__name__})") from None


def _read_file(path) -> tuple[bytes, bytes, bytes]:
    """``(length field, header, data section)`` of the file at ``path``, read only once the
    header has said how long the file must be. Pipes, sockets, devices, ``/proc`` files and
    symlink loops are refused before a byte is read; a file longer or shorter than its
    header says is refused before its data is read."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FileFormatError(path, "is a directory, not a file") from None
    except OSError as e:
        raise FileFormatError(path, f"cannot be opened as a file ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FileFormatError(path, "is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise FileFormatError(path, "is not a regular file (a pipe, socket or device)")
        size = st.st_size
        with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
            head = _read_exact(path, f, 8)
            if len(head) < 8:
                raise FileFormatError(path, f"truncated: {size} bytes is too short for a "
                                            "safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                raise FileFormatError(path, f"header length {n} exceeds the {MAX_HEADER_BYTES} "
                                            "byte limit (not a shendu file, or corrupted)")
            if 8 + n > size:
                raise FileFormatError(path, f"truncated: header says {n} bytes but the file has "
                                            f"only {max(size - 8, 0)} after the length field")
            hb = _read_exact(path, f, n)
            if len(hb) < n:
                raise FileFormatError(path, "truncated: the header ends early")
            header = _parse_header(path, hb)
            need = _data_length(path, header)
            if size - 8 - n != need:
                word = "truncated" if size - 8 - n < need else "corrupted"
                raise FileFormatError(path, f"{word}: the header describes {need} bytes of "
                                            f"data but the file has {size - 8 - n}")
            data = _read_exact(path, f, need)
            if len(data) < need:
                raise FileFormatError(path, "truncated: the file ended while being read")
    finally:
        os.close(fd)
    return head, hb, data


def _read_exact(path, f, n: int) -> bytes:
    try:
        out = f.read(n)
    except OSError as e:
        raise FileFormatError(path, f"cannot be read ({e.strerror or e})") from None
    return out or b""


def _parse_header(path, hb: bytes) -> dict:
    try:
        text = hb.decode("utf-8")
    except UnicodeDecodeError:
        raise FileFormatError(path, "header is not UTF-8 text") from None
    header = _json_loads(path, text, "header")
    if not isinstance(header, dict):
        raise FileFormatError(path, "header is not a JSON object")
    return header


def _data_length(path, header: dict) -> int:
    """The data section's length the header implies (the end of its last tensor)."""
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offs = info.get("data_offsets") if isinstance(info, dict) else None
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(type(o) is int and 0 <= o < 2**62 for o in offs)):
            raise FileFormatError(path, f"tensor {str(name)[:80]!r}: bad data_offsets "
                                        f"{str(offs)[:80]}")
        end = max(end, offs[1])
    return end


def load_arrays(path) -> tuple[OrderedDict, dict]:
    """Read a safetensors file: ``(arrays, metadata)``. Everything is validated (and the
    checksum, when there is one, verified) before an array is made."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    path = os.fspath(path)
    head, hb, data = _read_file(path)
    header = _parse_header(path, hb)
    meta = header.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise FileFormatError(path, "__metadata__ must map strings to strings")
    _verify_checksum(path, meta, head, hb, data)
    _check_entries(path, header, len(data))
    try:
        loaded = st_load(head + hb + data)
    except (SafetensorError, ValueError, TypeError, OverflowError) as e:
        raise FileFormatError(path, f"not a valid safetensors file ({str(e)[:200]})") from None
    names = list(header)
    if _ORDER_KEY in meta:  # safetensors sorts the header; give the arrays back in order
        order = _json_loads(path, meta.pop(_ORDER_KEY), "tensor order")
        if not isinstance(order, list) or sorted(map(str, order)) != sorted(names) \
                or not all(isinstance(n, str) for n in order):
            raise FileFormatError(path, "the tensor order does not list the file's tensors")
        names = order
    arrays: OrderedDict = OrderedDict()
    for name in names:
        a = loaded[name]
        dt = a.dtype.newbyteorder("=")
        arrays[name] = a if a.dtype == dt and a.flags.writeable else a.astype(dt, copy=True)
    return arrays, meta


def _check_entries(path, header: dict, data_len: int) -> None:
    """Every tensor entry well-formed, inside the data section, none overlapping."""
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
        if not offs[0] <= offs[1]:
            raise FileFormatError(path, f"tensor {name!r}: bad data_offsets {str(offs)[:80]}")
        nbytes = int(np.prod(shape, dtype=object)) * dt.itemsize
        if offs[1] - offs[0] != nbytes:
            raise FileFormatError(path, f"tensor {name!r}: shape {shape} of {info['dtype']} "
                                        f"needs {nbytes} bytes but data_offsets span "
                                        f"{offs[1] - offs[0]}")
        if offs[1] > data_len:
            raise FileFormatError(path, f"truncated: tensor {name!r} ends at byte {offs[1]} of a "
                                        f"{data_len}-byte data section")
        entries.append((offs[0], offs[1], name))
    pos = 0
    for b, e, name in sorted(entries):
        if b != pos:
            raise FileFormatError(path, f"tensor {name!r} overlaps the previous tensor"
                                  if b < pos else f"tensor {name!r}: gap in the data section")
        pos = e


def _verify_checksum(path, meta: dict, head: bytes, hb: bytes, data: bytes) -> None:
    value = meta.pop(_SUM_KEY, None)
    if value is None:
        if any(k == "shendu" or k.startswith("shendu.") for k in meta):
            # shendu seals every file it writes: its own keys without the seal mean the
            # checksum field itself was damaged
            raise FileFormatError(path, "corrupted: shendu's metadata without its checksum")
        return  # a safetensors file written by another program
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
