"""The C allocator's policy for the large arrays of a training step (glibc only).

NumPy takes every activation and gradient from ``malloc``. glibc serves blocks above its mmap
threshold (128 KiB, rising to the largest block freed) with fresh pages from the operating
system and gives freed memory at the top of its heap back once more than twice that
threshold is free. A training step frees what the previous one allocated, so each step
faults its arrays in again, page by page, zeroed by the kernel: a transformer step at
T = 256 on two threads took 116 ms so, and 92 ms with the policy below (BENCHMARKS.md).

On import, shendu asks glibc to keep up to 1 GiB of freed heap (``M_TRIM_THRESHOLD``) and to
serve blocks up to 32 MiB from the heap (``M_MMAP_THRESHOLD``, glibc's largest), which is
what ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` in the environment do. This is
process-wide (torch on the CPU leaves the allocator alone; docs/torch.md). It is skipped
where the C library is not glibc, where the environment already sets either of those
variables or ``GLIBC_TUNABLES``, and under ``SHENDU_MALLOC=system``;
:func:`shendu.backend.empty_cache` hands the kept memory back (``malloc_trim``).
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["keep_freed_memory", "release", "policy"]

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BYTES = 1 << 30        # freed heap kept for reuse
MMAP_BYTES = 1 << 25        # blocks below this come from the heap (glibc's maximum)

_state: dict = {"policy": "system"}


def _libc():
    """glibc's ``mallopt`` and ``malloc_trim`` (the process's own C library), or None."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (ValueError, OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Set the policy above (glibc only). Returns whether it is in force."""
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)
              and libc.mallopt(M_MMAP_THRESHOLD, MMAP_BYTES))
    if ok:
        _state["policy"] = "keep"
    return ok


def release() -> None:
    """Hand the freed memory glibc keeps back to the operating system (``malloc_trim``)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def policy() -> str:
    """``"keep"`` when shendu set the policy above, ``"system"`` when it left it alone."""
    return _state["policy"]


def _on_import() -> None:
    choice = os.environ.get("SHENDU_MALLOC", "keep").lower()
    if choice not in ("keep", "system"):
        import warnings

        warnings.warn(f"SHENDU_MALLOC should be 'keep' or 'system', got {choice!r}: the "
                      "allocator is left as it is", RuntimeWarning, stacklevel=3)
        return
    if choice == "system" or any(v in os.environ for v in (
            "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")):
        return
    keep_freed_memory()
