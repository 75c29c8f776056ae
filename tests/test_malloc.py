"""The allocator's policy (``shendu._malloc``, glibc only): on import shendu has glibc serve
arrays up to 32 MiB from its heap and keep freed memory for the next step; the environment
can opt out (``SHENDU_MALLOC=system``) or set glibc's own variables, which shendu leaves in
force. Each case runs in a fresh process, since the policy is process-wide."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(not (hasattr(os, "confstr") and os.confstr("CS_GNU_LIBC_VERSION")),
                           reason="the policy is glibc's mallopt")

# glibc marks a chunk it got from mmap with bit 1 of the size word just before the block
PROBE = """
import ctypes, numpy as np
import shendu, shendu._malloc as m
a = np.ones(4 << 20, np.float32)                   # 16 MiB
mapped = ctypes.c_size_t.from_address(a.ctypes.data - 8).value & 2
print(m.policy(), int(bool(mapped)))
"""


def _probe(**env) -> list[str]:
    e = {k: v for k, v in os.environ.items()
         if k not in ("SHENDU_MALLOC", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
                      "GLIBC_TUNABLES")}
    e.update(env)
    r = subprocess.run([sys.executable, "-c", PROBE], env=e, capture_output=True, text=True,
                       check=True)
    return r.stdout.split() + [r.stderr]


@glibc
def test_large_arrays_come_from_the_heap():
    policy, mapped, _ = _probe()
    assert (policy, mapped) == ("keep", "0")


@glibc
def test_the_environment_opts_out():
    assert _probe(SHENDU_MALLOC="system")[:2] == ["system", "1"]
    # glibc's own variable wins: 64 KiB, so the 16 MiB array is mapped
    assert _probe(MALLOC_MMAP_THRESHOLD_="65536")[:2] == ["system", "1"]
    policy, mapped, err = _probe(SHENDU_MALLOC="always")
    assert (policy, mapped) == ("system", "1") and "SHENDU_MALLOC should be" in err


def test_empty_cache_hands_the_kept_memory_back(monkeypatch):
    import shendu
    from shendu import _malloc

    calls = []
    monkeypatch.setattr(_malloc, "release", lambda: calls.append(1))
    shendu.backend.empty_cache()
    assert calls == [1]
