"""The exporter's core: two traced forward passes turned into one ONNX graph.

The model runs twice: on the caller's ``args`` and on a second set of inputs with other
values and, along every dynamic axis, another size. Both runs must execute the same ops;
comparing them tells which numbers are fixed (weights, sizes of static axes) and which
follow the inputs (a reshape's batch size, a causal mask's length), so that the graph is
the same function for every input — or the export stops with an error naming the op and
the module, never writing a graph that computes something else.
"""

from __future__ import annotations

import numpy as np

from shendu.onnx._trace import Record

#: the one opset the exporter writes (LayerNormalization needs 17; reductions take their
#: axes as an input from 18)
OPSET = 18


class UnsupportedOperatorError(RuntimeError):
    """An op of the traced forward pass has no faithful ONNX form."""


class Value:
    """A tensor of the graph: its ONNX name (``None`` for a constant not written yet),
    whether it depends on the graph's inputs, and its arrays in the two traced runs."""

    __slots__ = ("name", "dyn", "a1", "a2", "param")

    def __init__(self, name, dyn, a1, a2, param=False) -> None:
        self.name, self.dyn, self.a1, self.a2, self.param = name, dyn, a1, a2, param

    @property
    def same(self) -> bool:
        a, b = self.a1, self.a2
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


def _onnx():
    import onnx

    return onnx


class Graph:
    """Nodes, initializers and the maps from traced arrays to graph values."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.init_names: set = set()
        self.used: set = set()
        self.maps = ({}, {})  # per run: id(tensor or array) -> Value
        self.consts: dict = {}
        self.inputs: list[Value] = []
        self.masks: list[Value] = []  # outputs of comparisons, newest last
        self.params: list[Value] = []  # parameters and buffers of the model
        self.n = 0
        self.rec = None  # the record being converted (for error messages)

    # ------------------------------------------------------------------- names
    def fresh(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def bind(self, v: Value, t1, t2) -> None:
        for m, t in zip(self.maps, (t1, t2)):
            m[id(t)] = v
            m.setdefault(id(t.data), v)

    def const(self, arr, base: str = "const") -> str:
        """A new initializer holding ``arr``."""
        onnx = _onnx()
        arr = np.asarray(arr)
        name = self.fresh(base)
        self.inits.append(onnx.numpy_helper.from_array(_contig(arr), name))
        self.init_names.add(name)
        return name

    def i64(self, values) -> str:
        return self.const(np.asarray(values, np.int64), "shape")

    def node(self, op: str, inputs, n_out: int = 1, **attrs):
        onnx = _onnx()
        outs = [self.fresh(op) for _ in range(n_out)]
        self.nodes.append(onnx.helper.make_node(op, list(inputs), outs, **attrs))
        return outs[0] if n_out == 1 else outs

    # --------------------------------------------------------------- values
    def fail(self, why: str):
        rec = self.rec
        what = rec.cls.__name__ if rec is not None else "export"
        where = f" in module {rec.path}" if rec is not None else ""
        raise UnsupportedOperatorError(f"onnx.export: {what}{where}: {why}")

    def lookup(self, t1, t2) -> Value:
        """The value of one input (a tensor of each run)."""
        v1, v2 = self.maps[0].get(id(t1)), self.maps[1].get(id(t2))
        if v1 is not None or v2 is not None:
            if v1 is not v2:
                self.fail("the two traced runs fed this op from different tensors (the forward "
                          "pass depends on the input's values or sizes)")
            return v1
        a1 = t1.data if hasattr(t1, "data") and not isinstance(t1, np.ndarray) else t1
        a2 = t2.data if hasattr(t2, "data") and not isinstance(t2, np.ndarray) else t2
        key = (id(a1), id(a2))
        v = self.consts.get(key)
        if v is None:
            v = self.consts[key] = Value(None, False, np.asarray(a1), np.asarray(a2))
        return v

    def lookup_array(self, a1, a2) -> Value | None:
        """The value of an array parameter of an op (an index, a mask), or None."""
        if a1 is None and a2 is None:
            return None
        if (a1 is None) != (a2 is None):
            self.fail("an optional array argument is given in one traced run and not in the "
                      "other (the forward pass depends on the input's values or sizes)")
        return self.lookup(a1, a2)

    def name(self, v: Value) -> str:
        """The ONNX name of ``v``, writing a constant as an initializer on first use."""
        if v.name is not None:
            if v.param and v.name not in self.used:
                self.used.add(v.name)
                onnx = _onnx()
                self.inits.append(onnx.numpy_helper.from_array(_contig(v.a1), v.name))
            return v.name
        if v.same:
            v.name = self.const(v.a1)
            return v.name
        found = self.rediscover(v)
        if found is None:
            found = self.param_prefix(v)
        if found is None:
            self.fail(f"a constant input of shape {v.a1.shape} changes with the inputs' values "
                      "or sizes: it was computed outside shendu's ops (with NumPy, .numpy(), "
                      "a comparison, argmax, a shape read into Python...), so the graph can't "
                      "follow it")
        return found

    def rediscover(self, v: Value) -> str | None:
        """A graph input whose values (cast) equal ``v``'s in both runs: a lengths or index
        array taken from an input tensor outside shendu's ops."""
        for inp in self.masks[::-1] + self.inputs:
            b1, b2 = inp.a1, inp.a2
            if b1.shape == v.a1.shape and b2.shape == v.a2.shape and \
                    np.array_equal(b1.astype(v.a1.dtype), v.a1) and \
                    np.array_equal(b2.astype(v.a2.dtype), v.a2):
                if b1.dtype == v.a1.dtype:
                    return inp.name
                return self.node("Cast", [inp.name], to=dtype_code(v.a1.dtype))
        return None


    def param_prefix(self, v: Value) -> str | None:
        """A parameter or buffer ``B`` read outside shendu's ops as ``B[:t]`` (optionally
        with a new axis of size 1 in front or second), ``t`` the size of a dynamic input
        axis — a positional-encoding table cut to the sequence length. Rebuilt as a
        ``Slice`` of ``B`` up to that input's size, then ``Unsqueeze``."""
        a1, a2 = v.a1, v.a2
        if a1.ndim != a2.ndim or a1.ndim == 0:
            return None
        for p in self.params:
            B = p.a1
            if B.ndim not in (a1.ndim, a1.ndim - 1) or B.dtype != a1.dtype:
                continue
            if B.ndim == a1.ndim:
                ax_new, t1, t2 = None, a1.shape[0], a2.shape[0]
                r1, r2 = a1, a2
            elif a1.shape[0] == 1 and a2.shape[0] == 1:
                ax_new, t1, t2 = 0, a1.shape[1], a2.shape[1]
                r1, r2 = a1[0], a2[0]
            elif a1.ndim >= 2 and a1.shape[1] == 1 and a2.shape[1] == 1:
                ax_new, t1, t2 = 1, a1.shape[0], a2.shape[0]
                r1, r2 = a1[:, 0], a2[:, 0]
            else:
                continue
            if t1 == t2 or max(t1, t2) > B.shape[0] or r1.shape[1:] != B.shape[1:] or \
                    r2.shape[1:] != B.shape[1:]:
                continue
            if not (np.array_equal(r1, B[:t1]) and np.array_equal(r2, B[:t2])):
                continue
            src = self.dim_source(t1, t2)
            if src is None:
                continue
            inp, j = src
            end = self.node("Shape", [self.name(inp)], start=j, end=j + 1)
            x = self.node("Slice", [self.name(p), self.i64([0]), end, self.i64([0])])
            if ax_new is not None:
                x = self.node("Unsqueeze", [x, self.i64([ax_new])])
            return x
        return None

    def dim_source(self, s1: int, s2: int):
        """A (graph input, axis) whose size is ``s1`` in run 1 and ``s2`` in run 2."""
        for v in self.inputs:
            for j, (a, b) in enumerate(zip(v.a1.shape, v.a2.shape)):
                if a == s1 and b == s2 and v.a1.ndim == v.a2.ndim:
                    return v, j
        return None


def _contig(a: np.ndarray) -> np.ndarray:
    """C-contiguous ``a``, 0-d kept 0-d (``np.ascontiguousarray`` makes it 1-d)."""
    return a if a.flags.c_contiguous else a.copy()


def dtype_code(dt) -> int:
    onnx = _onnx()
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dt))


class Ctx:
    """What a mapping function sees of one op: its inputs, params and outputs in both runs."""

    def __init__(self, g: Graph, r1: Record, r2: Record, ins: list[Value]) -> None:
        self.g, self.r1, self.r2, self.ins = g, r1, r2, ins
        self.p, self.p2 = r1.params, r2.params
        self.o1 = [t.data for t in r1.outputs]
        self.o2 = [t.data for t in r2.outputs]

    def x(self, j: int) -> str:
        return self.g.name(self.ins[j])

    def a(self, j: int) -> np.ndarray:
        return self.ins[j].a1

    def arr(self, key: str) -> Value | None:
        return self.g.lookup_array(self.p.get(key), self.p2.get(key))

    def static(self, key: str):
        """A parameter that must be the same in both runs."""
        a, b = self.p.get(key), self.p2.get(key)
        if not _same_param(a, b):
            self.fail(f"its argument {key!r} changes with the inputs' sizes ({a!r} vs {b!r}); "
                      "the graph can't follow it")
        return a

    def node(self, op: str, inputs, n_out: int = 1, **attrs):
        return self.g.node(op, inputs, n_out, **attrs)

    def const(self, arr, base: str = "const") -> str:
        return self.g.const(arr, base)

    def scalar(self, value, dtype) -> str:
        return self.g.const(np.asarray(value, dtype), "scalar")

    def i64(self, values) -> str:
        return self.g.i64(values)

    def fail(self, why: str):
        self.g.fail(why)

    # ----------------------------------------------------------- shapes
    def find_dim(self, s1: int, s2: int):
        """An (ONNX name, axis) whose size is ``s1`` in run 1 and ``s2`` in run 2."""
        for v in list(self.ins) + self.g.inputs:
            if not v.dyn:
                continue
            for j, (a, b) in enumerate(zip(v.a1.shape, v.a2.shape)):
                if a == s1 and b == s2 and v.a1.ndim == v.a2.ndim:
                    return v, j
        return None

    def shape_of(self, t1, t2, minus_one: bool = False) -> str:
        """An int64 shape tensor equal to ``t1`` in run 1 and ``t2`` in run 2; sizes that
        differ are read from the inputs' shapes (one may be -1 for Reshape)."""
        t1, t2 = tuple(int(s) for s in t1), tuple(int(s) for s in t2)
        if len(t1) != len(t2):
            self.fail(f"its target shape has {len(t1)} dims in one run and {len(t2)} in the "
                      "other")
        if t1 == t2:
            return self.i64(t1)
        parts, unresolved = [], []
        for i, (a, b) in enumerate(zip(t1, t2)):
            if a == b:
                parts.append(a)
                continue
            src = self.find_dim(a, b)
            if src is None:
                unresolved.append(i)
                parts.append(None)
            else:
                parts.append(src)
        if unresolved:
            if not (minus_one and len(unresolved) == 1 and -1 not in t1):
                self.fail(f"its target shape {t1} (and {t2} for the other size) has sizes "
                          "that no input dim gives; the graph can't follow them")
            parts[unresolved[0]] = -1
        pieces, run = [], []
        for p in parts:
            if isinstance(p, int):
                run.append(p)
                continue
            if run:
                pieces.append(self.i64(run))
                run = []
            v, j = p
            pieces.append(self.node("Shape", [self.g.name(v)], start=j, end=j + 1))
        if run:
            pieces.append(self.i64(run))
        return pieces[0] if len(pieces) == 1 else self.node("Concat", pieces, axis=0)


def _same_param(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and \
            a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same_param(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable objects are different
        return False
