"""``shendu.cuda``: torch's CUDA queries, answered for a library with no GPU backend (yet)."""

from __future__ import annotations

__all__ = ["is_available", "device_count", "manual_seed", "manual_seed_all", "is_bf16_supported",
           "empty_cache", "synchronize", "current_device"]


def is_available() -> bool:
    """False: shendu has no GPU backend."""
    return False


def device_count() -> int:
    return 0


def is_bf16_supported(including_emulation: bool = True) -> bool:
    return False


def manual_seed(seed: int) -> None:
    """Ignored, as torch ignores it when CUDA is not available."""


def manual_seed_all(seed: int) -> None:
    """Ignored, as torch ignores it when CUDA is not available."""


def empty_cache() -> None:
    """Nothing to free."""


def _no_gpu(op: str):
    raise RuntimeError(f"shendu.cuda.{op}: no CUDA device (shendu computes with NumPy on the "
                       "CPU)")


def synchronize(device=None) -> None:
    _no_gpu("synchronize")


def current_device() -> int:
    _no_gpu("current_device")
