"""The compiled loops (``shendu.functional._numba``) against the NumPy passes they replace:
the same values and gradients, bit for bit, for any kernel thread count; NaN, ties and
partial tiles included. (The torch-parity tests of the ops run on whichever path is
installed; ``tests/test_gemm.py`` runs them on the NumPy path too.)"""

from __future__ import annotations

import numpy as np
import pytest

import shendu
import shendu.functional as F
from shendu.functional import _numba, conv

needs_numba = pytest.mark.skipif(_numba.kernels() is None,
                                 reason="numba is not installed (or SHENDU_NUMBA=0)")


def _pool_run(x, g, k, chwn):
    xt = shendu.tensor(x.transpose(3, 0, 1, 2) if chwn else x, requires_grad=True)
    y = F.max_pool2d(xt, k)
    y.backward(g)
    return y.data.copy(), xt.grad.data.copy()


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k,hw", [(2, 8), (2, 9), (3, 9), (3, 11)])
@pytest.mark.parametrize("chwn", [True, False])
def test_max_pool_tiles_as_numpy(monkeypatch, dtype, k, hw, chwn):
    rng = np.random.default_rng(k * hw)
    shape = (6, hw, hw, 5) if chwn else (5, 6, hw, hw)
    x = rng.integers(-3, 4, shape).astype(dtype)            # many ties
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, 7, replace=False)] = np.nan  # and a few NaN windows
    ho = hw // k
    g = rng.standard_normal((5, 6, ho, ho)).astype(dtype)
    before = conv._N_THREADS
    try:
        runs = []
        for threads in (1, 3):
            conv.set_kernel_threads(threads)
            runs.append(_pool_run(x, g, k, chwn))
        with monkeypatch.context() as m:
            m.setattr(_numba, "_loaded", [None])           # NumPy's passes
            numpy = _pool_run(x, g, k, chwn)
    finally:
        conv.set_kernel_threads(before)
    for got in runs:
        for a, b in zip(got, numpy):
            np.testing.assert_array_equal(a, b)
    assert np.isnan(numpy[0]).any()


@needs_numba
def test_max_pool_without_nan_routes_by_code(monkeypatch):
    """Without NaN the backward takes the recorded winners (the other path recomputes)."""
    rng = np.random.default_rng(5)
    x = rng.integers(-2, 3, (4, 8, 8, 3)).astype(np.float32)
    g = rng.standard_normal((3, 4, 4, 4)).astype(np.float32)
    got = _pool_run(x, g, 2, True)
    monkeypatch.setattr(_numba, "_loaded", [None])
    want = _pool_run(x, g, 2, True)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_switched_off_from_the_environment():
    import os
    import subprocess
    import sys

    code = "from shendu.functional import _numba; print(_numba.kernels() is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, SHENDU_NUMBA="0"), check=True)
    assert out.stdout.strip() == "True"
