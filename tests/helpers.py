"""One helper per op: run the same function on shendu and torch, compare values, dtypes
and gradients; plus a torch-free float64 central-difference check."""

from __future__ import annotations

import numpy as np
import torch

import shendu
from shendu.autograd import gradcheck

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}


def make_inputs(shapes, dtype=np.float64, seed=0, low=-2.0, high=2.0, positive=False):
    rng = np.random.default_rng(seed)
    arrs = []
    for s in shapes:
        a = rng.uniform(low, high, s)
        if positive:
            a = np.abs(a) + 0.1
        arrs.append(a.astype(dtype))
    return arrs


def _flat(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def compare_with_torch(fn, arrays, torch_fn=None, dtype=np.float32, tol=None, grad=True,
                       seed=1):
    """Run ``fn`` on shendu tensors and ``torch_fn`` (default ``fn``) on torch tensors made from
    the same arrays; compare outputs (values and dtype) and input gradients."""
    torch_fn = torch_fn or fn
    tol = tol or TOL[dtype]
    arrays = [np.asarray(a, dtype=dtype) for a in arrays]
    s_in = [shendu.tensor(a, dtype=dtype, requires_grad=grad) for a in arrays]
    t_in = [torch.tensor(a, requires_grad=grad) for a in arrays]
    s_out = _flat(fn(*s_in))
    t_out = _flat(torch_fn(*t_in))
    assert len(s_out) == len(t_out), "different number of outputs"
    for so, to in zip(s_out, t_out):
        tv = to.detach().numpy()
        assert so.shape == tuple(tv.shape), f"shape {so.shape} vs torch {tuple(tv.shape)}"
        assert so.dtype == tv.dtype, f"dtype {so.dtype} vs torch {tv.dtype}"
        np.testing.assert_allclose(so.data, tv, **tol)
    if not grad:
        return
    rng = np.random.default_rng(seed)
    projs = [rng.standard_normal(so.shape).astype(dtype) for so in s_out]
    diff = [(so, to, p) for so, to, p in zip(s_out, t_out, projs) if to.requires_grad]
    if not diff:
        return
    shendu.autograd.backward([d[0] for d in diff], [d[2] for d in diff])
    torch.autograd.backward([d[1] for d in diff], [torch.tensor(d[2]) for d in diff])
    for i, (si, ti) in enumerate(zip(s_in, t_in)):
        if ti.grad is None:
            assert si.grad is None or not np.any(si.grad.data), f"input {i}: torch has no grad"
            continue
        assert si.grad is not None, f"input {i}: shendu has no grad"
        assert si.grad.dtype == ti.grad.numpy().dtype
        np.testing.assert_allclose(si.grad.data, ti.grad.numpy(), **tol,
                                   err_msg=f"gradient of input {i}")


def check_gradcheck(fn, arrays, **kw):
    inputs = [shendu.tensor(np.asarray(a, np.float64), dtype="float64", requires_grad=True)
              for a in arrays]
    assert gradcheck(fn, inputs, **kw)


def check_op(fn, shapes, torch_fn=None, low=-2.0, high=2.0, positive=False, grad=True,
             seed=0, gradcheck_kw=None, tol32=None, tol64=None):
    """The one test helper: float64 gradcheck plus torch parity in float32 and float64."""
    arrays = make_inputs(shapes, np.float64, seed, low, high, positive)
    if grad:
        check_gradcheck(fn, arrays, **(gradcheck_kw or {}))
    compare_with_torch(fn, arrays, torch_fn, np.float64, tol64, grad)
    compare_with_torch(fn, arrays, torch_fn, np.float32, tol32, grad)
