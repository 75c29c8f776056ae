"""Devices, as torch names them. shendu computes with NumPy, so the one device that exists is
``cpu``; a ``shendu.device("cuda")`` can be named (as in torch) but using it for a tensor or a
module is one clear error."""

from __future__ import annotations

__all__ = ["device", "get_default_device", "set_default_device", "check_device"]

_KNOWN = ("cpu", "cuda", "mps", "xpu", "meta", "hip", "xla", "mtia", "privateuseone")


class device:  # noqa: N801  (torch's name)
    """``shendu.device("cpu")``, ``device("cuda", 0)``, ``device("cuda:1")`` — as torch."""

    __slots__ = ("type", "index")

    def __init__(self, type, index: int | None = None) -> None:  # noqa: A002
        if isinstance(type, device):
            if index is not None:
                raise ValueError("device(): an index can't be given with a device object")
            self.type, self.index = type.type, type.index
            return
        if isinstance(type, int) and not isinstance(type, bool):
            raise RuntimeError(f"device(): a bare ordinal ({type}) names an accelerator, "
                               "and shendu has none; use 'cpu'")
        if not isinstance(type, str):
            raise TypeError(f"device(): expected a str or a device, got {type!r}")
        name, _, idx = type.partition(":")
        if name not in _KNOWN:
            raise RuntimeError(f"Expected one of {', '.join(_KNOWN)} device type at start of "
                               f"device string: {type}")
        if idx:
            if index is not None:
                raise RuntimeError(f"device(): index given twice ({type!r} and {index})")
            if not idx.isdigit():
                raise RuntimeError(f"Invalid device string: '{type}'")
            index = int(idx)
        if index is not None and index < 0:
            raise RuntimeError(f"Device index must not be negative, got {index}")
        self.type, self.index = name, index

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            try:
                other = device(other)
            except (RuntimeError, TypeError):
                return False
        return isinstance(other, device) and (self.type, self.index) == (other.type,
                                                                        other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"

    def __reduce__(self):  # pragma: no cover - pickling is never used by shendu
        raise TypeError("shendu never pickles")


CPU = device("cpu")


def check_device(dev, op: str = "shendu") -> device:
    """``dev`` as a :class:`device` (``None`` is the default device); anything but the CPU
    is one clear error (shendu runs on NumPy)."""
    if dev is None:
        return CPU
    d = dev if isinstance(dev, device) else device(dev)
    if d.type != "cpu" or (d.index not in (None, 0)):
        raise RuntimeError(f"{op}: device {str(d)!r} is not available: shendu computes with "
                           "NumPy on the CPU, the only device there is ('cpu')")
    return CPU


def get_default_device() -> device:
    """The device new tensors get: always ``cpu``."""
    return CPU


def set_default_device(dev) -> None:
    """Accepts ``"cpu"`` (or ``None``), as torch; any other device is an error."""
    check_device(dev, "set_default_device")
