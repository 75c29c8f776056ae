"""ONNX forms of shendu's elementwise, shape, reduction and layer ops (opset 18).

Each mapping reads one traced op through a :class:`~shendu.onnx._graph.Ctx` and returns
the ONNX names of its outputs. Anything it can't express exactly calls ``ctx.fail``.
"""

from __future__ import annotations

import importlib
import math

import numpy as np

from shendu.onnx import _trace
from shendu.onnx._graph import Ctx, dtype_code

# the modules themselves (``shendu.functional.linear`` etc. are also function names there)
A, AT, C, D, LI, M, N, P, R, S, SP, TO = (
    importlib.import_module(f"shendu.functional.{m}") for m in (
        "activation", "attention", "conv", "dropout", "linear", "math", "normalization",
        "pooling", "reduction", "shape", "sparse", "torch_ops"))
#: Function class -> mapping
MAP: dict = {}

INT_MAX = np.iinfo(np.int64).max
INT_MIN = np.iinfo(np.int64).min


def maps(*classes):
    def deco(fn):
        for c in classes:
            MAP[c] = fn
        return fn
    return deco


def _dt(c: Ctx, j: int = 0):
    return c.a(j).dtype


# ------------------------------------------------------------------ elementwise
_BINARY = {M.Add: "Add", M.Sub: "Sub", M.Mul: "Mul", M.Div: "Div", M.Pow: "Pow",
           M.Maximum: "Max", M.Minimum: "Min"}
_UNARY = {M.Neg: "Neg", M.Exp: "Exp", M.Log: "Log", M.Sqrt: "Sqrt", M.Abs: "Abs",
          M.Sign: "Sign", M.Sin: "Sin", M.Cos: "Cos", A.ReLU: "Relu", A.Sigmoid: "Sigmoid",
          A.Tanh: "Tanh", M.Clone: "Identity"}


@maps(*_BINARY)
def _binary(c: Ctx):
    return c.node(_BINARY[c.r1.cls], [c.x(0), c.x(1)])


@maps(*_UNARY)
def _unary(c: Ctx):
    return c.node(_UNARY[c.r1.cls], [c.x(0)])


@maps(M.Log1p)
def _log1p(c: Ctx):
    return c.node("Log", [c.node("Add", [c.x(0), c.scalar(1, _dt(c))])])


@maps(M.PowScalar)
def _pow_scalar(c: Ctx):
    e = c.static("exponent")
    x = c.x(0)
    if e == 2:
        return c.node("Mul", [x, x])
    if e == 1:
        return c.node("Identity", [x])
    return c.node("Pow", [x, c.scalar(e, _dt(c))])


@maps(M.Clamp, A.Hardtanh)
def _clip(c: Ctx):
    lo_key, hi_key = ("lo", "hi")
    lo, hi = c.static(lo_key), c.static(hi_key)
    dt = _dt(c)
    ins = [c.x(0), "" if lo is None else c.scalar(lo, dt), "" if hi is None else c.scalar(hi, dt)]
    while ins[-1] == "":
        ins.pop()
    return c.node("Clip", ins)


@maps(M.ClampTensor)
def _clamp_tensor(c: Ctx):
    return c.node("Min", [c.node("Max", [c.x(0), c.x(1)]), c.x(2)])


@maps(M.Where)
def _where(c: Ctx):
    cond = c.arr("cond")
    return c.node("Where", [c.g.name(cond), c.x(0), c.x(1)])


@maps(M.MatMul)
def _matmul(c: Ctx):
    return c.node("MatMul", [c.x(0), c.x(1)])


@maps(TO.Cumsum)
def _cumsum(c: Ctx):
    x = c.x(0)
    if c.a(0).dtype != c.o1[0].dtype:                 # integers and bools sum as int64
        x = c.node("Cast", [x], to=dtype_code(c.o1[0].dtype))
    return c.node("CumSum", [x, c.i64(int(c.static("dim")))])


@maps(TO.Einsum)
def _einsum(c: Ctx):
    return c.node("Einsum", [c.x(j) for j in range(len(c.ins))],
                  equation=str(c.static("spec")))


@maps(M.Cast)
def _cast(c: Ctx):
    return c.node("Cast", [c.x(0)], to=dtype_code(c.o1[0].dtype))


@maps(A.LeakyReLU)
def _leaky(c: Ctx):
    return c.node("LeakyRelu", [c.x(0)], alpha=float(c.static("slope")))


@maps(A.ELU)
def _elu(c: Ctx):
    return c.node("Elu", [c.x(0)], alpha=float(c.static("alpha")))


@maps(A.SiLU)
def _silu(c: Ctx):
    x = c.x(0)
    return c.node("Mul", [x, c.node("Sigmoid", [x])])


@maps(A.Softplus)
def _softplus(c: Ctx):
    beta, thr = float(c.static("beta")), float(c.static("threshold"))
    dt = _dt(c)
    x = c.x(0)
    bx = c.node("Mul", [x, c.scalar(beta, dt)])
    sp = c.node("Div", [c.node("Softplus", [bx]), c.scalar(beta, dt)])
    return c.node("Where", [c.node("Greater", [bx, c.scalar(thr, dt)]), x, sp])


@maps(A.GELU)
def _gelu(c: Ctx):
    dt = _dt(c)
    x = c.x(0)
    half = c.node("Mul", [x, c.scalar(0.5, dt)])
    if c.static("approximate") == "tanh":
        x3 = c.node("Mul", [c.node("Mul", [x, x]), x])
        inner = c.node("Add", [x, c.node("Mul", [x3, c.scalar(0.044715, dt)])])
        t = c.node("Tanh", [c.node("Mul", [inner, c.scalar(math.sqrt(2 / math.pi), dt)])])
    else:
        t = c.node("Erf", [c.node("Mul", [x, c.scalar(1 / math.sqrt(2), dt)])])
    return c.node("Mul", [half, c.node("Add", [t, c.scalar(1.0, dt)])])


@maps(A.Softmax, A.LogSoftmax)
def _softmax(c: Ctx):
    dim = c.static("dim")
    op = "Softmax" if c.r1.cls is A.Softmax else "LogSoftmax"
    if dim is None:  # a 0-d tensor: softmax is 1, log-softmax 0
        one = c.node("Reshape", [c.x(0), c.i64([1])])
        return c.node("Reshape", [c.node(op, [one], axis=0), c.i64([])])
    return c.node(op, [c.x(0)], axis=int(dim))


@maps(D.Dropout)
def _dropout(c: Ctx):
    c.fail("dropout in training mode (random masks) has no deterministic graph; export "
           "calls model.eval() — call F.dropout with training=self.training")


# ------------------------------------------------------------------ linear, conv
@maps(LI.Linear)
def _linear(c: Ctx):
    x, w = c.x(0), c.x(1)
    b = c.x(2) if len(c.ins) > 2 else None
    if c.a(0).ndim == 2:
        return c.node("Gemm", [x, w] + ([b] if b else []), transB=1)
    y = c.node("MatMul", [x, c.node("Transpose", [w], perm=[1, 0])])
    return c.node("Add", [y, b]) if b else y


@maps(C.Conv2d, C.Conv1d)
def _conv(c: Ctx):
    ins = [c.x(j) for j in range(len(c.ins))]
    groups = int(c.static("groups"))
    if c.r1.cls is C.Conv2d:
        pt, pb, pl, pr = c.static("pads")
        return c.node("Conv", ins, strides=list(c.static("stride")), pads=[pt, pl, pb, pr],
                      dilations=list(c.static("dilation")), group=groups)
    pl, pr = c.static("pads")
    return c.node("Conv", ins, strides=[int(c.static("stride"))], pads=[pl, pr],
                  dilations=[int(c.static("dilation"))], group=groups)


def _batched(c: Ctx, fn):
    """Run ``fn`` on the 4-D input (adding and removing the batch dim of an unbatched one)."""
    x = c.x(0)
    if c.static("unbatched"):
        x = c.node("Unsqueeze", [x, c.i64([0])])
        return c.node("Squeeze", [fn(x), c.i64([0])])
    return fn(x)


def _pool_attrs(c: Ctx):
    """ONNX pooling attributes; the window is fixed, the input's H and W may change
    between the runs (then ``ceil_mode`` must explain both runs' output sizes)."""
    g1, g2 = c.p["geom"], c.p2["geom"]
    if tuple(g1[4:]) != tuple(g2[4:]):
        c.fail(f"its window changes with the input's size (kernel, stride, padding, "
               f"dilation {g1[4:]} vs {g2[4:]}); the graph can't follow it")
    h, w, ho, wo, k, s, p, d = g1
    modes = set()
    for hh, ww, hho, wwo in (g1[:4], g2[:4]):
        fits = set()
        for ceil in (0, 1):
            sizes = []
            for n, kk, ss, pp, dd in zip((hh, ww), k, s, p, d):
                span = n + 2 * pp - dd * (kk - 1) - 1
                o = (-(-span // ss) if ceil else span // ss) + 1
                if ceil and (o - 1) * ss >= n + pp:    # the last window must start inside
                    o -= 1
                sizes.append(o)
            if tuple(sizes) == (hho, wwo):
                fits.add(ceil)
        modes = fits if not modes else modes & fits
        if not modes:
            c.fail(f"its output sizes {(hho, wwo)} for input {(hh, ww)} follow neither "
                   "ceil_mode of ONNX's pooling")
    return dict(kernel_shape=list(k), strides=list(s), pads=[p[0], p[1], p[0], p[1]],
                ceil_mode=min(modes)), (h, w, ho, wo, k, s, p, d)


@maps(P.MaxPool2d)
def _maxpool(c: Ctx):
    attrs, geom = _pool_attrs(c)
    attrs["dilations"] = list(geom[7])
    return _batched(c, lambda x: c.node("MaxPool", [x], **attrs))


@maps(P.AvgPool2d)
def _avgpool(c: Ctx):
    attrs, _ = _pool_attrs(c)
    dt = _dt(c)

    def correction(geom, div):
        # ONNX averages over the window's elements inside the explicitly padded input
        # (count_include_pad=0 and no implicit pads); shendu's divisor is fixed up after
        h, w, ho, wo, k, s, p, _ = geom
        counts = [np.array([min(u * ss + kk, n + 2 * pp) - u * ss for u in range(no)])
                  for n, no, kk, ss, pp in zip((h, w), (ho, wo), k, s, p)]
        onnx_div = (counts[0][:, None] * counts[1][None, :]).astype(np.float64)
        return onnx_div / np.broadcast_to(np.asarray(div, np.float64), onnx_div.shape)

    def real_counts(geom):
        # elements of the unpadded input in each window (count_include_pad=False)
        h, w, ho, wo, k, s, p, _ = geom
        counts = [np.array([min(u * ss - pp + kk, n) - max(u * ss - pp, 0) for u in range(no)])
                  for n, no, kk, ss, pp in zip((h, w), (ho, wo), k, s, p)]
        return (counts[0][:, None] * counts[1][None, :]).astype(np.float64)

    if all(np.array_equal(real_counts(g), np.broadcast_to(np.asarray(dv, np.float64),
                                                          real_counts(g).shape))
           for g, dv in ((c.p["geom"], c.p["div"]), (c.p2["geom"], c.p2["div"]))):
        # the divisor is the number of real elements: ONNX's own count_include_pad=0
        return _batched(c, lambda x: c.node("AveragePool", [x], count_include_pad=0, **attrs))
    fix = correction(c.p["geom"], c.p["div"])
    fix2 = correction(c.p2["geom"], c.p2["div"])
    p = c.p["geom"][6]
    attrs.pop("pads")
    if fix.shape != fix2.shape or not np.array_equal(fix, fix2):
        if not (np.allclose(fix, 1.0, rtol=0, atol=1e-12) and
                np.allclose(fix2, 1.0, rtol=0, atol=1e-12)):
            c.fail("average pooling along an axis whose size changes, with a divisor other "
                   "than the number of input elements in each window (padding counted, "
                   "ceil_mode or divisor_override), has no ONNX form that follows the size")

    def fn(x):
        if any(p):
            x = c.node("Pad", [x, c.i64([0, 0, p[0], p[1], 0, 0, p[0], p[1]])])
        y = c.node("AveragePool", [x], count_include_pad=0, **attrs)
        if not np.allclose(fix, 1.0, rtol=0, atol=1e-12):
            y = c.node("Mul", [y, c.const(fix.astype(dt))])
        return y

    return _batched(c, fn)


@maps(P.AdaptiveAvgPool2d)
def _adaptive_avgpool(c: Ctx):
    """``P_h x P_w^T``; along an axis whose size changes the averaging matrix is built in
    the graph: row ``o`` is ``1 / (b - a)`` on ``[a, b)``, ``a = floor(o n / n_o)``,
    ``b = ceil((o + 1) n / n_o)``."""
    (h, w), (h2, w2) = c.a(0).shape[-2:], c.ins[0].a2.shape[-2:]
    ho, wo = c.static("out_size")
    dt = _dt(c)
    x = c.x(0)

    def matrix(size, size2, n_out, axis):
        if size == size2:
            return c.const(P._adaptive_matrix(size, n_out, dt))
        n = c.node("Shape", [x], start=axis) if axis == -1 else \
            c.node("Shape", [x], start=axis, end=axis + 1)                          # [n]
        o = c.const(np.arange(n_out, dtype=np.int64)[:, None])                     # (n_o, 1)
        no = c.i64(n_out)
        a = c.node("Div", [c.node("Mul", [o, n]), no])
        b = c.node("Div", [c.node("Add", [c.node("Mul", [c.node("Add", [o, c.i64(1)]), n]),
                                          c.i64(n_out - 1)]), no])
        pos = c.node("Range", [c.const(np.asarray(0, np.int64)),
                               c.node("Squeeze", [n, c.i64([0])]),
                               c.const(np.asarray(1, np.int64))])                  # (n,)
        inside = c.node("And", [c.node("GreaterOrEqual", [pos, a]), c.node("Less", [pos, b])])
        inv = c.node("Div", [c.scalar(1.0, dt), c.node("Cast", [c.node("Sub", [b, a])],
                                                        to=dtype_code(dt))])
        return c.node("Where", [inside, inv, c.scalar(0.0, dt)])                   # (n_o, n)

    ph = matrix(h, h2, ho, -2)
    pw = matrix(w, w2, wo, -1)
    y = c.node("MatMul", [x, c.node("Transpose", [pw], perm=[1, 0])])
    return c.node("MatMul", [ph, y])


# --------------------------------------------------------------- normalization
@maps(N.LayerNorm)
def _layer_norm(c: Ctx):
    d, eps = int(c.static("d")), float(c.static("eps"))
    shape = c.a(0).shape
    k, prod = 0, 1
    while prod < d and k < len(shape):
        k += 1
        prod *= shape[-k]
    if prod != d:
        c.fail(f"normalising the last {d} elements of shape {shape} is not a whole set of "
               "trailing dims")
    dt = _dt(c)
    norm_shape = shape[len(shape) - k:]
    w = c.x(1) if len(c.ins) > 1 else c.const(np.ones(norm_shape, dt))
    ins = [c.x(0), w] + ([c.x(2)] if len(c.ins) > 2 else [])
    if len(c.ins) > 1 and c.a(1).shape != norm_shape:
        ins[1] = c.node("Reshape", [w, c.i64(norm_shape)])
        if len(ins) > 2:
            ins[2] = c.node("Reshape", [ins[2], c.i64(norm_shape)])
    return c.node("LayerNormalization", ins, axis=-k, epsilon=eps)


@maps(N.BatchNorm)
def _batch_norm(c: Ctx):
    if c.static("training"):
        c.fail("batch normalisation with batch statistics (training mode) is not exported; "
               "export calls model.eval() — use training=self.training")
    rm, rv = c.arr("rm"), c.arr("rv")
    if rm is None or rv is None:
        c.fail("batch normalisation in evaluation mode needs running statistics")
    ch = c.a(0).shape[1]
    dt = _dt(c)
    w = c.x(1) if len(c.ins) > 1 else c.const(np.ones(ch, dt))
    b = c.x(2) if len(c.ins) > 2 else c.const(np.zeros(ch, dt))
    mean, var = c.g.name(rm), c.g.name(rv)
    if rm.a1.dtype != dt:
        mean = c.node("Cast", [mean], to=dtype_code(dt))
    if rv.a1.dtype != dt:
        var = c.node("Cast", [var], to=dtype_code(dt))
    return c.node("BatchNormalization", [c.x(0), w, b, mean, var],
                  epsilon=float(c.static("eps")))


# ------------------------------------------------------------------- sparse
@maps(SP.Embedding)
def _embedding(c: Ctx):
    idx = c.arr("idx")
    return c.node("Gather", [c.x(0), c.g.name(idx)], axis=0)


# -------------------------------------------------------------------- shape
@maps(S.Reshape)
def _reshape(c: Ctx):
    sh = c.shape_of(c.p["shape"], c.p2["shape"], minus_one=True)
    return c.node("Reshape", [c.x(0), sh])


@maps(S.Permute)
def _permute(c: Ctx):
    return c.node("Transpose", [c.x(0)], perm=[int(d) for d in c.static("dims")])


@maps(S.Expand)
def _expand(c: Ctx):
    return c.node("Expand", [c.x(0), c.shape_of(c.p["shape"], c.p2["shape"])])


@maps(S.Cat)
def _cat(c: Ctx):
    return c.node("Concat", [c.x(j) for j in range(len(c.ins))], axis=int(c.static("axis")))


@maps(S.Stack)
def _stack(c: Ctx):
    ax = int(c.static("axis"))
    parts = [c.node("Unsqueeze", [c.x(j), c.i64([ax])]) for j in range(len(c.ins))]
    return parts[0] if len(parts) == 1 else c.node("Concat", parts, axis=ax)


@maps(S.Split)
def _split(c: Ctx):
    ax = int(c.static("axis"))
    bounds = c.static("bounds")
    n = c.a(0).shape[ax]
    edges = [0, *bounds, n]
    sizes = [b - a for a, b in zip(edges[:-1], edges[1:])]
    if c.a(0).shape[ax] != c.ins[0].a2.shape[ax]:
        c.fail("splitting along a dynamic axis into fixed pieces can't follow the axis' size")
    if len(sizes) == 1:
        return [c.node("Identity", [c.x(0)])]
    out = c.node("Split", [c.x(0), c.i64(sizes)], n_out=len(sizes), axis=ax)
    return list(out)


@maps(S.Repeat)
def _repeat(c: Ctx):
    reps = [int(r) for r in c.static("reps")]
    x = c.x(0)
    nd = c.a(0).ndim
    if len(reps) > nd:
        x = c.node("Unsqueeze", [x, c.i64(list(range(len(reps) - nd)))])
    return c.node("Tile", [x, c.i64(reps)])


@maps(S.Pad)
def _pad(c: Ctx):
    widths = c.static("widths")
    value = c.static("value")
    pads = [lo for lo, _ in widths] + [hi for _, hi in widths]
    return c.node("Pad", [c.x(0), c.i64(pads), c.scalar(value, _dt(c))], mode="constant")


@maps(S.Fill)
def _fill(c: Ctx):
    shape = c.node("Shape", [c.x(0)])
    dt = _dt(c)
    if len(c.ins) > 1:
        v = c.x(1)
        if c.a(1).dtype != dt:
            v = c.node("Cast", [v], to=dtype_code(dt))
    else:
        v = c.scalar(c.static("value"), dt)
    return c.node("Expand", [v, shape])


@maps(S.Gather)
def _gather(c: Ctx):
    idx = c.arr("index")
    return c.node("GatherElements", [c.x(0), c.g.name(idx)], axis=int(c.static("dim")))


@maps(S.GetItem)
def _getitem(c: Ctx):
    idx, idx2 = c.p["idx"], c.p2["idx"]
    items = idx if isinstance(idx, tuple) else (idx,)
    items2 = idx2 if isinstance(idx2, tuple) else (idx2,)
    if len(items) != len(items2):
        c.fail("the index changes between the traced runs")
    nd = c.a(0).ndim
    x = c.x(0)
    if not c.static("basic"):
        arrays = [i for i, it in enumerate(items) if isinstance(it, np.ndarray)]
        rest_ok = all(isinstance(it, slice) and it == slice(None) for i, it in enumerate(items)
                      if i not in arrays)
        if len(arrays) != 1 or not rest_ok or items[arrays[0]].dtype.kind not in "iu":
            c.fail(f"advanced indexing {idx!r} is exported only as one integer array on one "
                   "axis (the others ':')")
        k = arrays[0]
        v = c.g.lookup_array(items[k], items2[k])
        return c.node("Gather", [x, c.g.name(v)], axis=k)
    # expand the Ellipsis
    n_real = sum(1 for it in items if it is not None and it is not Ellipsis)
    full, full2 = [], []
    for it, it2 in zip(items, items2):
        if it is Ellipsis:
            full += [slice(None)] * (nd - n_real)
            full2 += [slice(None)] * (nd - n_real)
        else:
            full.append(it)
            full2.append(it2)
    if Ellipsis not in items:
        full += [slice(None)] * (nd - n_real)
        full2 += [slice(None)] * (nd - n_real)
    if any(not _same_item(a, b) for a, b in zip(full, full2)):
        c.fail(f"the index {idx!r} changes with the inputs' sizes (another run used "
               f"{idx2!r}); index with numbers fixed by the model or negative from the end")
    starts, ends, axes, steps, ints, nones = [], [], [], [], [], []
    ax = out_pos = 0
    for it in full:
        if it is None:
            nones.append(out_pos)
            out_pos += 1
            continue
        if isinstance(it, slice):
            if it != slice(None):
                step = 1 if it.step is None else int(it.step)
                st = it.start if it.start is not None else (0 if step > 0 else INT_MAX)
                en = it.stop if it.stop is not None else (INT_MAX if step > 0 else INT_MIN)
                starts.append(int(st))
                ends.append(int(en))
                axes.append(ax)
                steps.append(step)
            out_pos += 1
        else:
            ints.append((ax, int(it)))
        ax += 1
    if axes:
        x = c.node("Slice", [x, c.i64(starts), c.i64(ends), c.i64(axes), c.i64(steps)])
    for a, i in sorted(ints, reverse=True):
        x = c.node("Gather", [x, c.const(np.asarray(i, np.int64))], axis=a)
    if nones:
        x = c.node("Unsqueeze", [x, c.i64(nones)])
    if x == c.x(0):
        x = c.node("Identity", [x])
    return x


def _same_item(a, b) -> bool:
    if isinstance(a, slice) and isinstance(b, slice):
        return (a.start, a.stop, a.step) == (b.start, b.stop, b.step)
    return type(a) is type(b) and a == b


# --------------------------------------------------------------- reductions
def _axes_args(c: Ctx):
    axes = c.static("axes")
    if axes is None:
        return [], None
    axes = (axes,) if isinstance(axes, (int, np.integer)) else tuple(axes)
    return [int(a) for a in axes], axes


_REDUCE = {R.Sum: "ReduceSum", R.Mean: "ReduceMean", R.LogSumExp: "ReduceLogSumExp",
           R.Prod: "ReduceProd", R.Norm2: "ReduceL2"}


@maps(*_REDUCE)
def _reduce(c: Ctx):
    axes, _ = _axes_args(c)
    ins = [c.x(0)] + ([c.i64(axes)] if axes else [])
    return c.node(_REDUCE[c.r1.cls], ins, keepdims=int(bool(c.static("keepdim"))))


@maps(R.AMax)
def _amax(c: Ctx):
    axes, _ = _axes_args(c)
    op = "ReduceMin" if c.static("is_min") else "ReduceMax"
    ins = [c.x(0)] + ([c.i64(axes)] if axes else [])
    return c.node(op, ins, keepdims=int(bool(c.static("keepdim"))))


@maps(R.MaxDim)
def _maxdim(c: Ctx):
    dim = int(c.static("dim"))
    a, idx = c.a(0), c.p["idx"]
    if np.array_equal(idx, np.argmax(a, axis=dim, keepdims=True)):
        op = "ReduceMax"
    elif np.array_equal(idx, np.argmin(a, axis=dim, keepdims=True)):
        op = "ReduceMin"
    else:
        c.fail("values picked along a dim by indices other than the arg-max/arg-min")
    return c.node(op, [c.x(0), c.i64([dim])], keepdims=int(bool(c.static("keepdim"))))


@maps(R.Var, R.Std)
def _var(c: Ctx):
    axes, _ = _axes_args(c)
    corr = c.static("correction")
    keep = int(bool(c.static("keepdim")))
    dt = _dt(c)
    x = c.x(0)
    ax = [c.i64(axes)] if axes else []
    m = c.node("ReduceMean", [x] + ax, keepdims=1)
    d = c.node("Sub", [x, m])
    msq = c.node("ReduceMean", [c.node("Mul", [d, d])] + ax, keepdims=keep)
    sh1, sh2 = c.a(0).shape, c.ins[0].a2.shape
    sel = axes if axes else list(range(len(sh1)))
    n1 = int(np.prod([sh1[a] for a in sel]))
    n2 = int(np.prod([sh2[a] for a in sel]))
    if corr:
        if n1 == n2:
            f = c.scalar(n1 / max(n1 - corr, 0) if n1 > corr else np.inf, dt)
        else:
            shape = c.node("Shape", [x])
            n = c.node("Cast", [c.node("ReduceProd", [c.node("Gather", [shape, c.i64(sel)],
                                                              axis=0)], keepdims=0)],
                       to=dtype_code(dt))
            f = c.node("Div", [n, c.node("Sub", [n, c.scalar(corr, dt)])])
        msq = c.node("Mul", [msq, f])
    return c.node("Sqrt", [msq]) if c.r1.cls is R.Std else msq


# ---------------------------------------------------------------- attention
def _causal(v1: np.ndarray, v2: np.ndarray, kind: str):
    """Whether the mask arrays of both runs are a top-left causal pattern (leading dims 1):
    bool True on and below the diagonal, or float 0 there and -inf above."""
    for a in (v1, v2):
        if a.ndim < 2 or any(s != 1 for s in a.shape[:-2]):
            return False
        t = np.tril(np.ones(a.shape[-2:], bool))
        m = a.reshape(a.shape[-2:])
        if kind == "bool":
            if a.dtype != np.bool_ or not np.array_equal(m, t):
                return False
        elif a.dtype.kind != "f" or not (np.all(m[t] == 0) and np.all(m[~t] == -np.inf)):
            return False
    return True


def _dynamic_causal(c: Ctx, q: str, k: str) -> str:
    """A bool (L, S) mask, True on and below the diagonal, L and S read from q and k."""
    shape = c.node("Concat", [c.node("Shape", [q], start=-2, end=-1),
                              c.node("Shape", [k], start=-2, end=-1)], axis=0)
    ones = c.node("ConstantOfShape", [shape],
                  value=__import__("onnx").numpy_helper.from_array(np.ones(1, np.float32)))
    return c.node("Cast", [c.node("Trilu", [ones], upper=0)], to=dtype_code(np.bool_))


def _mask_name(c: Ctx, v, q: str, k: str, kind: str) -> str:
    """The ONNX name of a keep (bool) mask or an additive (float) mask. A mask that changes
    with the inputs must be a causal mask, a boolean key-padding-mask input (True = padding,
    as MultiheadAttention takes it), or both combined: then it is rebuilt in the graph."""
    if v.dyn or v.same or v.name is not None:
        return c.g.name(v)
    if _causal(v.a1, v.a2, kind):
        keep = _dynamic_causal(c, q, k)
        return keep if kind == "bool" else _additive_mask(c, keep, v.a1.dtype)
    found = c.g.rediscover(v)
    if found is not None:
        return found
    for m in c.g.masks[::-1] + c.g.inputs:      # keep = ~padding, (N, S) or (N, 1, S)
        if m.a1.dtype != np.bool_ or m.a1.ndim != 2 or m.a2.ndim != 2:
            continue
        if all(a.shape in (p.shape, (p.shape[0], 1, p.shape[1])) and
               np.array_equal(a.reshape(p.shape), ~p) for a, p in ((v.a1, m.a1), (v.a2, m.a2))
               ) and v.a1.ndim == v.a2.ndim and kind == "bool" and v.a1.dtype == np.bool_:
            keep = c.node("Not", [m.name])
            return keep if v.a1.ndim == 2 else c.node("Unsqueeze", [keep, c.i64([1])])
    for m in c.g.masks[::-1] + c.g.inputs:
        if m.a1.dtype != np.bool_ or m.a1.ndim != 2 or m.a2.ndim != 2:
            continue
        for causal in (False, True):
            if all(_synth(a, pad, causal, kind) for a, pad in ((v.a1, m.a1), (v.a2, m.a2))):
                keep = c.node("Not", [c.node("Unsqueeze", [m.name, c.i64([1, 2])])])
                if causal:
                    keep = c.node("And", [_dynamic_causal(c, q, k), keep])
                return keep if kind == "bool" else _additive_mask(c, keep, v.a1.dtype)
    return c.g.name(v)  # fails, naming the op


def _additive_mask(c: Ctx, keep: str, dt) -> str:
    return c.node("Where", [keep, c.scalar(0, dt), c.scalar(-np.inf, dt)])


def _synth(a: np.ndarray, pad: np.ndarray, causal: bool, kind: str) -> bool:
    """Whether ``a`` is the mask MultiheadAttention builds from ``pad`` (N, S) (and a causal
    mask): keep (N, 1, L, S) bool, or 0 / -inf floats."""
    if a.ndim != 4 or a.shape[0] != pad.shape[0] or a.shape[-1] != pad.shape[1]:
        return False
    keep = ~pad[:, None, None, :]
    if causal:
        keep = keep & np.tril(np.ones(a.shape[-2:], bool))
    if a.shape != np.broadcast_shapes(a.shape, keep.shape):
        return False
    keep = np.broadcast_to(keep, a.shape)
    if kind == "bool":
        return a.dtype == np.bool_ and np.array_equal(keep, a)
    return a.dtype.kind == "f" and np.array_equal(np.where(keep, 0, -np.inf), a)


def _masked_softmax(c: Ctx, s: str, keep, q: str, k: str, masked: bool) -> str:
    dt = c.o1[0].dtype
    if keep is not None:
        s = c.node("Where", [_mask_name(c, keep, q, k, "bool"), s, c.scalar(-np.inf, dt)])
    p = c.node("Softmax", [s], axis=-1)
    if masked or keep is not None:  # a row with no key left gives 0, not NaN (as shendu)
        p = c.node("Where", [c.node("IsNaN", [p]), c.scalar(0, dt), p])
    return p


@maps(AT.ScaledDotProductAttention)
def _sdpa(c: Ctx):
    if c.static("dropout_p") > 0.0:
        c.fail("attention dropout (dropout_p > 0) is random; export calls model.eval() — "
               "pass dropout_p only in training")
    q, k, v = c.x(0), c.x(1), c.x(2)
    nd = c.a(1).ndim
    perm = list(range(nd - 2)) + [nd - 1, nd - 2]
    s = c.node("MatMul", [q, c.node("Transpose", [k], perm=perm)])
    s = c.node("Mul", [s, c.scalar(c.static("scale"), c.o1[0].dtype)])
    has_bias = len(c.ins) > 3
    if has_bias:
        s = c.node("Add", [s, _mask_name(c, c.ins[3], q, k, "float")])
    p = _masked_softmax(c, s, c.arr("keep"), q, k, has_bias)
    out = c.node("MatMul", [p, v])
    return [out, p] if c.static("need_weights") else out


@maps(AT.AdditiveAttention)
def _additive(c: Ctx):
    qp, kp, w, vals = (c.x(j) for j in range(4))
    t = c.node("Tanh", [c.node("Add", [c.node("Unsqueeze", [qp, c.i64([-2])]),
                                       c.node("Unsqueeze", [kp, c.i64([-3])])])])
    e = c.node("MatMul", [t, w])
    p = _masked_softmax(c, e, c.arr("keep"), qp, kp, False)
    return [c.node("MatMul", [p, vals]), p]


# ------------------------------------------------------------- comparisons
@maps(_trace.InPlace)
def _inplace(c: Ctx):
    c.fail(f"the in-place op {c.static('op')} changes a tensor that depends on the inputs "
           "(or writes values that do); the graph has no in-place form — write it out of "
           "place (where, cat, masked_fill)")


@maps(_trace.Compare)
def _compare(c: Ctx):
    op = c.static("op")
    if op == "Not":
        return c.node("Not", [c.x(0)])
    a, b = c.x(0), c.x(1)
    if c.a(0).dtype != c.a(1).dtype:
        b = c.node("Cast", [b], to=dtype_code(c.a(0).dtype))
    if op == "NotEqual":
        return c.node("Not", [c.node("Equal", [a, b])])
    return c.node(op, [a, b])
