"""``shendu.onnx.export``: trace, convert, check, verify, write."""

from __future__ import annotations

import io
import os
import warnings

import numpy as np

from shendu.nn.module import Module
from shendu.onnx import _audio, _losses, _ops, _overrides, _recurrent  # noqa: F401 - registrations
from shendu.onnx._graph import OPSET, Ctx, Graph, UnsupportedOperatorError, Value, dtype_code
from shendu.onnx._trace import trace
from shendu.tensor import Tensor

#: opsets the exporter may declare: the ops it writes mean the same in each
SUPPORTED_OPSETS = range(OPSET, 22)


def _split_args(args) -> tuple[list, dict]:
    if isinstance(args, (Tensor, np.ndarray)):
        return [args], {}
    args = list(args)
    kwargs = args.pop() if args and isinstance(args[-1], dict) else {}
    return args, dict(kwargs)


def _as_tensor(a):
    if isinstance(a, Tensor):
        return a
    if isinstance(a, np.ndarray):
        return Tensor(a)
    return a


def _dyn_spec(names: list[str], dynamic_axes, shapes: dict) -> dict:
    """{name: {axis: label}} from torch's dynamic_axes forms."""
    out = {}
    for name, spec in (dynamic_axes or {}).items():
        if isinstance(spec, dict):
            out[name] = {int(k): str(v) for k, v in spec.items()}
        else:
            out[name] = {int(k): f"{name}_dynamic_axes_{i + 1}" for i, k in enumerate(spec)}
        if name in shapes:
            nd = len(shapes[name])
            out[name] = {(k % nd if nd else k): v for k, v in out[name].items()}
    return out


def _second_inputs(arrays: list[np.ndarray], names: list[str], dyn: dict,
                   big: bool = False) -> list[np.ndarray]:
    """Inputs for the second traced run: other values, and along every dynamic axis another
    size (labels sharing a size keep sharing one): one, two... more, or with ``big`` about
    twice as many (so that sizes a model divides — STFT frames, strided convolutions,
    pooling — change too)."""
    rng = np.random.default_rng(20240607)
    grow: dict = {}
    step = 1
    for a, name in zip(arrays, names):
        for ax, label in sorted(dyn.get(name, {}).items()):
            if label not in grow:
                grow[label] = step + (a.shape[ax] if big else 0)
                step += 1
    out = []
    for a, name in zip(arrays, names):
        shape = list(a.shape)
        for ax, label in dyn.get(name, {}).items():
            shape[ax] = a.shape[ax] + grow[label]
        shape = tuple(shape)
        if a.dtype == np.bool_:
            b = rng.random(shape) < (a.mean() if a.size else 0.5)
        elif a.dtype.kind in "iu":
            vals = np.unique(a) if a.size else np.zeros(1, a.dtype)
            b = rng.choice(vals, size=shape).astype(a.dtype)
        elif a.dtype.kind == "f":
            scale = float(a.std()) if a.size and np.isfinite(a).all() and a.std() > 0 else 1.0
            center = float(a.mean()) if a.size and np.isfinite(a).all() else 0.0
            b = (center + scale * rng.standard_normal(shape)).astype(a.dtype)
        else:
            raise TypeError(f"onnx.export: inputs of dtype {a.dtype} are not supported")
        out.append(b)
    return out


def _param_follows_input(g: Graph, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether an array argument of an op (a mask, an index) depends on the inputs: it is
    a graph value that does, or a copy of one (equal to a comparison's output or an input
    in both runs: the mapping finds it again)."""
    v = g.maps[0].get(id(a))
    if v is not None and v is g.maps[1].get(id(b)):
        return v.dyn
    if a.shape == b.shape and np.array_equal(a, b):
        return False
    return any(m.a1.shape == a.shape and m.a2.shape == b.shape and
               np.array_equal(m.a1.astype(a.dtype), a) and np.array_equal(m.a2.astype(b.dtype), b)
               for m in g.masks + g.inputs)


def _run_model(model, args, kwargs, tensor_pos, tensors):
    args, kwargs = list(args), dict(kwargs)
    for (where, key), t in zip(tensor_pos, tensors):
        if where == "a":
            args[key] = t
        else:
            kwargs[key] = t
    return trace(model, tuple(args), kwargs)


def build(model: Module, args, input_names=None, output_names=None, dynamic_axes=None,
          opset_version=None, verify: bool = True):
    """The ONNX ModelProto of ``model`` on ``args`` (see :func:`shendu.onnx.export`)."""
    from onnx import helper

    if not isinstance(model, Module):
        raise TypeError(f"onnx.export: expected a shendu nn.Module, got {type(model).__name__}")
    opset = OPSET if opset_version is None else int(opset_version)
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f"onnx.export: opset_version must be in {SUPPORTED_OPSETS.start}.."
                         f"{SUPPORTED_OPSETS.stop - 1}, got {opset_version}")
    args, kwargs = _split_args(args)
    args = [_as_tensor(a) for a in args]
    kwargs = {k: _as_tensor(v) for k, v in kwargs.items()}
    tensor_pos = [("a", i) for i, a in enumerate(args) if isinstance(a, Tensor)] + \
        [("k", k) for k, v in kwargs.items() if isinstance(v, Tensor)]
    t1 = [args[k] if w == "a" else kwargs[k] for w, k in tensor_pos]
    names = list(input_names or [])
    if len(names) > len(t1):
        raise ValueError(f"onnx.export: {len(names)} input_names for {len(t1)} tensor inputs")
    names += [k if w == "k" else f"input_{k}" for w, k in tensor_pos[len(names):]]
    shapes = {n: t.shape for n, t in zip(names, t1)}
    dyn = _dyn_spec(names, dynamic_axes, shapes)
    small = _second_inputs([t.data for t in t1], names, dyn)
    large = _second_inputs([t.data for t in t1], names, dyn, big=True) if dyn else None

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    third = None                      # inputs of a third size, for the check in the runtime
    try:
        recs1, outs1 = _run_model(model, args, kwargs, tensor_pos, t1)
        try:
            if large is None:
                raise LookupError
            a2 = large                # twice the size; a model with a size limit (a
            t2 = [Tensor(a) for a in a2]   # positional table) may refuse it
            recs2, outs2 = _run_model(model, args, kwargs, tensor_pos, t2)
            third = small
        except Exception:  # noqa: BLE001 - then one or two more along each axis
            a2 = small
            t2 = [Tensor(a) for a in a2]
            try:
                recs2, outs2 = _run_model(model, args, kwargs, tensor_pos, t2)
            except Exception as e:  # noqa: BLE001 - the model refuses the other size
                raise ValueError(f"onnx.export: the model fails on inputs of another size "
                                 f"along the dynamic axes {dyn} ({type(e).__name__}: {e}); "
                                 "is every dynamic axis really free?") from e
        if third is not None:
            try:
                _, outs3 = _run_model(model, args, kwargs, tensor_pos,
                                      [Tensor(a) for a in third])
                third = (third, outs3)
            except Exception:  # noqa: BLE001 - checked on the two traced sizes only
                third = None
    finally:
        for m, mode in modes:
            m.training = mode

    g = Graph()
    for n, ta, tb in zip(names, t1, t2):
        v = Value(n, True, ta.data, tb.data)
        g.bind(v, ta, tb)
        g.inputs.append(v)
    for pname, p in list(model.named_parameters()) + list(model.named_buffers()):
        if p is None:
            continue
        v = Value(pname, False, p.data, p.data, param=True)
        g.params.append(v)
        for m in g.maps:
            m.setdefault(id(p), v)
            m.setdefault(id(p.data), v)

    if len(recs1) != len(recs2) or any(a.cls is not b.cls for a, b in zip(recs1, recs2)):
        k = next((i for i, (a, b) in enumerate(zip(recs1, recs2)) if a.cls is not b.cls),
                 min(len(recs1), len(recs2)))
        where = recs1[k].path if k < len(recs1) else recs2[k].path
        raise UnsupportedOperatorError(
            f"onnx.export: the forward pass runs other ops for inputs of another size or other "
            f"values ({len(recs1)} vs {len(recs2)} ops; first difference at op {k}, in module "
            f"{where}): Python control flow over sizes or values (a loop over time steps, an "
            "if on the data) has no single graph")

    for r1, r2 in zip(recs1, recs2):
        g.rec = r1
        ins = [g.lookup(a, b) for a, b in zip(r1.inputs, r2.inputs)]
        if len(r1.outputs) != len(r2.outputs):
            g.fail("it returns a different number of outputs in the two traced runs")
        fn = _ops.MAP.get(r1.cls)
        if fn is None:
            g.fail("this op has no ONNX mapping in shendu.onnx (see docs/onnx.md for the "
                   "supported ops)")
        arrays = [r1.params.get(k) for k in r1.params if isinstance(r1.params.get(k),
                                                                     np.ndarray)]
        arrays2 = [r2.params.get(k) for k in r1.params if isinstance(r1.params.get(k),
                                                                     np.ndarray)]
        dyn_param = any(_param_follows_input(g, a, b) for a, b in zip(arrays, arrays2))
        if not any(v.dyn for v in ins) and not dyn_param:
            for o1, o2 in zip(r1.outputs, r2.outputs):   # constant folding
                g.bind(Value(None, False, o1.data, o2.data), o1, o2)
            continue
        res = fn(Ctx(g, r1, r2, ins))
        res = res if isinstance(res, list) else [res]
        if len(res) != len(r1.outputs):
            g.fail(f"internal: {len(res)} ONNX outputs for {len(r1.outputs)} op outputs")
        for name, o1, o2 in zip(res, r1.outputs, r2.outputs):
            v = Value(name, True, o1.data, o2.data)
            g.bind(v, o1, o2)
            if o1.data.dtype == np.bool_:
                g.masks.append(v)
    g.rec = None

    if len(outs1) != len(outs2):
        raise UnsupportedOperatorError("onnx.export: the model returns a different number of "
                                       "tensors for inputs of another size")
    out_names = list(output_names or [])
    if len(out_names) > len(outs1):
        raise ValueError(f"onnx.export: {len(out_names)} output_names for {len(outs1)} outputs")
    out_names += [f"output_{i}" for i in range(len(out_names), len(outs1))]
    dyn_out = _dyn_spec(out_names, dynamic_axes, {n: o.shape for n, o in zip(out_names, outs1)})
    for i, (o1, o2) in enumerate(zip(outs1, outs2)):
        v = g.lookup(o1, o2)
        if v.name is None and not v.same:
            raise UnsupportedOperatorError(
                f"onnx.export: output {i} ({out_names[i]}) is computed outside shendu's ops "
                "(NumPy, argmax, a comparison...) and changes with the inputs")
        g.nodes.append(helper.make_node("Identity", [g.name(v)], [out_names[i]]))

    def info(name, a1, a2, labels):
        dims = []
        for ax, (s1, s2) in enumerate(zip(a1.shape, a2.shape)):
            if ax in labels:
                dims.append(labels[ax])
            elif s1 != s2:
                dims.append(f"{name}_dim{ax}")
            else:
                dims.append(int(s1))
        return helper.make_tensor_value_info(name, dtype_code(a1.dtype), dims)

    graph = helper.make_graph(
        g.nodes, type(model).__name__,
        [info(v.name, v.a1, v.a2, dyn.get(v.name, {})) for v in g.inputs],
        [info(n, o1.data, o2.data, dyn_out.get(n, {}))
         for n, o1, o2 in zip(out_names, outs1, outs2)],
        g.inits)
    proto = finish_model(graph, opset)
    if verify:
        runs = [([t.data for t in t1], outs1, "the example"), (a2, outs2, "other")]
        if third is not None:
            runs.append((third[0], third[1], "a third size of"))
        _verify(proto, names, runs)
    return proto


def finish_model(graph, opset: int = OPSET, ir_version: int | None = None):
    """The model of ``graph`` at ``opset`` (IR version ``ir_version``, else the newest
    ONNX Runtime reads, 10), validated by ``onnx.checker``."""
    import onnx
    from onnx import helper

    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="shendu")
    proto.ir_version = min(proto.ir_version, 10) if ir_version is None else ir_version
    onnx.checker.check_model(proto, full_check=True)
    return proto


def session_or_warn(proto, where: str, stacklevel: int = 4):
    """An ONNX Runtime session of ``proto`` to check it against shendu, or ``None`` (with
    a warning that the check was skipped) when onnxruntime is not installed."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        warnings.warn(f"{where}: onnxruntime is not installed, so the exported graph was not "
                      f"run against shendu's outputs (pip install 'shendu[onnx]')",
                      stacklevel=stacklevel)
        return None
    return runtime_session(proto, where)


def _verify(proto, names, runs) -> None:
    """Run the graph in ONNX Runtime on both traced inputs; it must give shendu's outputs."""
    sess = session_or_warn(proto, "onnx.export")
    if sess is None:
        return
    for ins, outs, which in runs:
        try:
            got = sess.run(None, dict(zip(names, ins)))
        except Exception as e:  # noqa: BLE001 - the runtime's own exception types
            raise UnsupportedOperatorError(
                f"onnx.export: the exported graph fails in ONNX Runtime on {which} inputs "
                f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}); "
                "a size both traced runs shared was written as a constant — export with an "
                "example input of another size") from None
        for i, (a, b) in enumerate(zip(got, outs)):
            want = b.data
            if a.shape != want.shape or not _close(a, want):
                err = np.nanmax(np.abs(a.astype(np.float64) - want)) if a.shape == want.shape \
                    else f"shape {a.shape} vs {want.shape}"
                raise UnsupportedOperatorError(
                    f"onnx.export: the exported graph does not reproduce output {i} on "
                    f"{which} inputs (ONNX Runtime vs shendu: {err}); an op of the forward "
                    "pass depends on its inputs in a way the trace did not see")


def runtime_session(proto, where: str):
    """An ONNX Runtime (CPU) session of ``proto``; a graph the runtime has no kernel for
    (e.g. a float64 ``Conv``) raises one clear error instead of the runtime's."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(proto.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - the runtime's own exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedOperatorError(
            f"{where}: the graph is valid ONNX (onnx.checker) but ONNX Runtime's CPU provider "
            f"can't run it ({first}); float64 convolutions, for one, have no kernel there — "
            "export a float32 model, or pass verify=False to write the file anyway") from None


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    if b.dtype.kind not in "fc":
        return np.array_equal(a, b)
    b64, a64 = b.astype(np.float64), a.astype(np.float64)
    scale = max(1.0, float(np.nanmax(np.abs(b64))) if b.size and np.isfinite(b64).any() else 1.0)
    tol = 1e-3 if b.dtype == np.float32 else 1e-7
    return bool(np.allclose(a64, b64, rtol=tol, atol=tol * scale, equal_nan=True))


def export(model: Module, args, f, input_names=None, output_names=None, dynamic_axes=None,
           opset_version=None, *, verify: bool = True):
    """Export ``model`` to an ONNX file by tracing ``model(*args)``, as ``torch.onnx.export``.

    ``args`` is a tensor or a tuple of tensors (a trailing dict is passed as keyword
    arguments); ``f`` a path or a binary file object. ``dynamic_axes`` maps an input or
    output name to the axes that may change size (``{"x": {0: "batch"}}`` or
    ``{"x": [0]}``). The graph uses ONNX opset 18 (``opset_version`` 18-21 may be
    declared). The model runs in evaluation mode (dropout off, batch norm on running
    statistics); its training flags are restored afterwards.

    The forward pass runs twice — on ``args`` and on other values with other sizes along
    the dynamic axes — and an op the graph could not reproduce (no ONNX form, a value
    computed outside shendu's ops, control flow over sizes) raises
    :class:`UnsupportedOperatorError` naming the op and its module. With ``verify`` (and
    onnxruntime installed) the written graph is also run on both inputs and must give
    shendu's outputs. Returns the ``onnx.ModelProto``.
    """
    import onnx

    proto = build(model, args, input_names, output_names, dynamic_axes, opset_version, verify)
    if isinstance(f, (str, os.PathLike)):
        onnx.save(proto, os.fspath(f))
    elif isinstance(f, io.IOBase) or hasattr(f, "write"):
        f.write(proto.SerializeToString())
    else:
        raise TypeError(f"onnx.export: f must be a path or a binary file, got {type(f).__name__}")
    return proto
