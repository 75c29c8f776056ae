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


def check_module(s_mod, t_mod, inputs, dtype=np.float32, tol=None, fn=None, torch_fn=None,
                 seed=1):
    """Layer parity: copy ``t_mod``'s state_dict into ``s_mod`` unchanged (torch's names and
    shapes), run both on the same ``inputs`` (floating arrays get gradients; bool/int arrays
    and None pass through), then compare every output, every input gradient and the
    gradient of every parameter (matched by name). ``fn(mod, *inputs)`` defaults to
    ``mod(*inputs)``; outputs may be tuples (None entries are skipped)."""
    tol = tol or TOL[dtype]
    t_dtype = torch.float32 if dtype == np.float32 else torch.float64
    t_mod = t_mod.to(t_dtype)
    s_mod.to(dtype)
    s_mod.load_state_dict(t_mod.state_dict())
    s_names = {k: tuple(v.shape) for k, v in s_mod.state_dict().items()}
    t_names = {k: tuple(v.shape) for k, v in t_mod.state_dict().items()}
    assert s_names == t_names, f"state_dict differs: {s_names} vs {t_names}"
    s_in, t_in = [], []
    for a in inputs:
        if a is None:
            s_in.append(None)
            t_in.append(None)
        elif np.asarray(a).dtype.kind == "f":
            a = np.asarray(a, dtype)
            s_in.append(shendu.tensor(a, dtype=dtype, requires_grad=True))
            t_in.append(torch.tensor(a, requires_grad=True))
        else:
            s_in.append(shendu.tensor(np.asarray(a)))
            t_in.append(torch.tensor(np.asarray(a)))
    fn = fn or (lambda m, *xs: m(*xs))
    torch_fn = torch_fn or fn
    s_out = [o for o in _flat(fn(s_mod, *s_in)) if o is not None]
    t_out = [o for o in _flat(torch_fn(t_mod, *t_in)) if o is not None]
    assert len(s_out) == len(t_out), "different number of outputs"
    for i, (so, to) in enumerate(zip(s_out, t_out)):
        tv = to.detach().numpy()
        assert so.shape == tuple(tv.shape), f"output {i}: shape {so.shape} vs {tuple(tv.shape)}"
        assert so.dtype == tv.dtype, f"output {i}: dtype {so.dtype} vs torch {tv.dtype}"
        np.testing.assert_allclose(so.data, tv, **tol, err_msg=f"output {i}")
    rng = np.random.default_rng(seed)
    projs = [rng.standard_normal(so.shape).astype(dtype) for so in s_out]
    shendu.autograd.backward(s_out, projs)
    torch.autograd.backward(t_out, [torch.tensor(p) for p in projs])
    for i, (si, ti) in enumerate(zip(s_in, t_in)):
        if ti is None or not ti.requires_grad:
            continue
        tg = np.zeros(ti.shape, dtype) if ti.grad is None else ti.grad.numpy()
        sg = np.zeros(si.shape, dtype) if si.grad is None else si.grad.data
        np.testing.assert_allclose(sg, tg, **tol, err_msg=f"gradient of input {i}")
    t_params = dict(t_mod.named_parameters())
    s_params = dict(s_mod.named_parameters())
    assert set(s_params) == set(t_params), f"parameters {set(s_params) ^ set(t_params)}"
    for name, tp in t_params.items():
        sp = s_params[name]
        tg = np.zeros(tp.shape, dtype) if tp.grad is None else tp.grad.numpy()
        sg = np.zeros(sp.shape, dtype) if sp.grad is None else sp.grad.data
        np.testing.assert_allclose(sg, tg, **tol, err_msg=f"gradient of parameter {name}")
