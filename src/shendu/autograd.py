"""Reverse-mode automatic differentiation (backpropagation).

A :class:`Function` is one node of the graph: ``forward`` computes outputs from input
arrays and saves what ``backward`` needs; ``backward`` maps the gradients of the outputs
to the gradients of the inputs (the chain rule, Rumelhart, Hinton & Williams 1986).

The engine (:func:`backward`) never recurses: it finds the nodes reachable from the root
with an explicit stack, counts how many consumers each node has, and then runs the
nodes in reverse topological order (Kahn's algorithm), so a chain of 100,000 ops
back-propagates as easily as a chain of three.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "Function",
    "no_grad",
    "enable_grad",
    "set_grad_enabled",
    "is_grad_enabled",
    "backward",
    "grad",
    "gradcheck",
    "GradcheckError",
]

_grad_enabled = True


def is_grad_enabled() -> bool:
    """Whether operations are being recorded for backpropagation."""
    return _grad_enabled


class set_grad_enabled(contextlib.ContextDecorator):
    """Context manager (and decorator) that turns graph recording on or off."""

    def __init__(self, mode: bool) -> None:
        global _grad_enabled
        self.prev = _grad_enabled
        self.mode = bool(mode)
        _grad_enabled = self.mode

    def __enter__(self) -> None:
        global _grad_enabled
        _grad_enabled = self.mode

    def __exit__(self, *exc) -> None:
        global _grad_enabled
        _grad_enabled = self.prev


class no_grad(contextlib.ContextDecorator):
    """Context manager (and decorator): operations inside record no graph."""

    def __enter__(self) -> None:
        global _grad_enabled
        self.prev = _grad_enabled
        _grad_enabled = False

    def __exit__(self, *exc) -> None:
        global _grad_enabled
        _grad_enabled = self.prev


class enable_grad(contextlib.ContextDecorator):
    """Context manager (and decorator): record the graph even inside ``no_grad``."""

    def __enter__(self) -> None:
        global _grad_enabled
        self.prev = _grad_enabled
        _grad_enabled = True

    def __exit__(self, *exc) -> None:
        global _grad_enabled
        _grad_enabled = self.prev


class Function:
    """One differentiable operation: ``forward`` and ``backward`` side by side.

    Subclasses implement ``forward(self, *arrays, **params)`` returning an array (or a
    tuple of arrays) and ``backward(self, *grads)`` returning one gradient per input
    array (``None`` where an input needs none). ``self.needs_input_grad`` tells which
    inputs want a gradient. Anything ``backward`` needs is saved on ``self``.
    """

    freed = False
    #: set by :meth:`apply`: the input tensors and which of them need gradients
    parents: tuple
    needs_input_grad: tuple
    n_out: int = 1

    def forward(self, *arrays, **params):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, *grads):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        """Run the op on tensors ``inputs`` and record it in the graph if needed."""
        from shendu.tensor import Tensor

        fn = cls.__new__(cls)
        requires = False
        if _grad_enabled:
            for t in inputs:
                if t.requires_grad:
                    requires = True
                    break
        if requires:
            fn.needs_input_grad = tuple(t.requires_grad for t in inputs)
        else:
            fn.needs_input_grad = (False,) * len(inputs)
        out = fn.forward(*[t.data for t in inputs], **params)
        if isinstance(out, tuple):
            fn.n_out = len(out)
            if not requires:
                return tuple(Tensor._wrap(o, None, 0) for o in out)
            fn.parents = inputs
            fn.out_meta = tuple((o.shape, o.dtype) for o in out)
            return tuple(Tensor._wrap(o, fn, i) for i, o in enumerate(out))
        if not requires:
            return Tensor._wrap(out, None, 0)
        fn.parents = inputs
        return Tensor._wrap(out, fn, 0)

    def _free(self) -> None:
        keep = {k: self.__dict__[k] for k in ("parents", "needs_input_grad") if k in self.__dict__}
        self.__dict__.clear()
        self.__dict__.update(keep)
        self.freed = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__}Backward>"


def _count_consumers(roots: list[Function]) -> dict[int, int]:
    """For every node reachable from ``roots``, how many edges lead into it."""
    consumers: dict[int, int] = {id(r): 0 for r in roots}
    stack = list(roots)
    while stack:
        fn = stack.pop()
        for t, need in zip(fn.parents, fn.needs_input_grad):
            if not need:
                continue
            p = t._ctx
            if p is None:
                continue
            key = id(p)
            if key in consumers:
                consumers[key] += 1
            else:
                consumers[key] = 1
                stack.append(p)
    return consumers


def _check_grad(fn: Function, t, g: np.ndarray) -> np.ndarray:
    if g.shape != t.data.shape:
        if g.size == t.data.size:
            g = g.reshape(t.data.shape)
        else:
            raise RuntimeError(
                f"autograd: {type(fn).__name__}.backward returned a gradient of shape "
                f"{g.shape} for an input of shape {t.data.shape}"
            )
    if g.dtype != t.data.dtype:
        g = g.astype(t.data.dtype)
    return g


def backward(tensors, grad_tensors=None, retain_graph: bool = False) -> None:
    """Back-propagate from ``tensors`` into every leaf that requires a gradient.

    Gradients accumulate into ``leaf.grad`` (as in PyTorch). The graph is freed
    afterwards unless ``retain_graph=True``.
    """
    _run_backward(tensors, grad_tensors, retain_graph, inputs=None)


def _run_backward(tensors, grad_tensors, retain_graph, inputs):
    from shendu.tensor import Tensor

    if isinstance(tensors, Tensor):
        tensors = [tensors]
        grad_tensors = [grad_tensors]
    elif grad_tensors is None:
        grad_tensors = [None] * len(tensors)

    # Seed gradients, grouped per output slot of each root node.
    out_grads: dict[int, list] = {}
    roots: list[Function] = []
    fns: dict[int, Function] = {}
    captured: dict[int, np.ndarray] = {}
    capture_ids = None if inputs is None else {id(t) for t in inputs}
    for t, g in zip(tensors, grad_tensors):
        if not t.requires_grad:
            raise RuntimeError(
                "backward: element 0 of tensors does not require grad and does not have a "
                "grad_fn (did you call it on the result of an op under no_grad, or on a "
                "tensor created without requires_grad=True?)"
            )
        if g is None:
            if t.data.size != 1:
                raise RuntimeError(
                    f"backward: grad can be implicitly created only for scalar outputs, "
                    f"got a tensor of shape {t.data.shape}; pass gradient=..."
                )
            g = np.ones_like(t.data)
        else:
            g = np.asarray(g.data if isinstance(g, Tensor) else g, dtype=t.data.dtype)
            if g.shape != t.data.shape:
                raise RuntimeError(
                    f"backward: gradient has shape {g.shape}, expected {t.data.shape}"
                )
        if t._ctx is None:
            _deliver_leaf(t, g, capture_ids, captured, set())
            continue
        fn = t._ctx
        if fn.freed:
            raise _freed_error(fn)
        if id(fn) not in fns:
            fns[id(fn)] = fn
            roots.append(fn)
            out_grads[id(fn)] = [None] * fn.n_out
        slot = out_grads[id(fn)]
        slot[t._out_index] = g if slot[t._out_index] is None else slot[t._out_index] + g

    if not roots:
        return captured

    consumers = _count_consumers(roots)
    ready = [r for r in roots if consumers.get(id(r), 0) == 0]
    owned: set[int] = set()  # ids of arrays now owned by a leaf's .grad
    while ready:
        fn = ready.pop()
        if fn.freed:
            raise _freed_error(fn)
        grads = out_grads.pop(id(fn), None) or [None] * fn.n_out
        if fn.n_out > 1:
            for i, (shape, dtype) in enumerate(fn.out_meta):
                if grads[i] is None:
                    grads[i] = np.zeros(shape, dtype)
        hooks = fn.__dict__.get("retained")
        if hooks:
            for i, t in hooks.items():
                if grads[i] is not None:
                    t.grad = Tensor(np.array(grads[i]))
        if capture_ids is not None:
            outs = fn.__dict__.get("outputs_for_capture")
            if outs:
                for i, t in outs.items():
                    if id(t) in capture_ids and grads[i] is not None:
                        captured[id(t)] = grads[i]
        in_grads = fn.backward(*grads)
        if not isinstance(in_grads, tuple):
            in_grads = (in_grads,)
        for t, need, g in zip(fn.parents, fn.needs_input_grad, in_grads):
            if not need:
                continue
            if g is None:
                g = np.zeros_like(t.data)
            else:
                g = _check_grad(fn, t, g)
            p = t._ctx
            if p is None:
                _deliver_leaf(t, g, capture_ids, captured, owned)
            else:
                key = id(p)
                slot = out_grads.get(key)
                if slot is None:
                    slot = out_grads[key] = [None] * p.n_out
                i = t._out_index
                slot[i] = g if slot[i] is None else slot[i] + g
                consumers[key] -= 1
                if consumers[key] == 0:
                    ready.append(p)
        if not retain_graph:
            fn._free()
    return captured


def _deliver_leaf(t, g, capture_ids, captured, owned) -> None:
    from shendu.tensor import Tensor

    if capture_ids is not None:
        if id(t) in capture_ids:
            prev = captured.get(id(t))
            captured[id(t)] = g if prev is None else prev + g
        return
    if t.grad is None:
        if g.base is not None or id(g) in owned or not g.flags.writeable:
            g = g.copy()
        owned.add(id(g))
        t.grad = Tensor(g)
    else:
        gd = t.grad.data
        if gd.shape == g.shape and gd.flags.writeable:
            np.add(gd, g, out=gd)
        else:
            t.grad = Tensor(gd + g)


def _freed_error(fn: Function) -> RuntimeError:
    return RuntimeError(
        f"backward: trying to backward through the graph a second time ({fn!r} was freed "
        "after the first backward). Pass retain_graph=True to the first backward() if you "
        "need to back-propagate through the same graph twice."
    )


def grad(outputs, inputs, grad_outputs=None, retain_graph: bool = False):
    """Gradients of ``outputs`` with respect to ``inputs`` without touching ``.grad``.

    Returns a tuple of tensors, one per input (``None`` where the input is unreachable).
    """
    from shendu.tensor import Tensor

    single = isinstance(inputs, Tensor)
    if single:
        inputs = [inputs]
    # mark non-leaf inputs so the engine can capture their gradient
    for t in inputs:
        if t._ctx is not None:
            d = t._ctx.__dict__.setdefault("outputs_for_capture", {})
            d[t._out_index] = t
    captured = _run_backward(outputs, grad_outputs, retain_graph, inputs=inputs)
    res = tuple(Tensor(captured[id(t)]) if id(t) in captured else None for t in inputs)
    return res


class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck` when analytic and numeric gradients disagree."""


def gradcheck(
    fn: Callable,
    inputs: Sequence,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
) -> bool:
    """Compare the autograd gradient of ``fn(*inputs)`` with central differences.

    Every input that requires a gradient must be float64. The output's gradient is a
    fixed random projection (so every output element is checked). On disagreement a
    :class:`GradcheckError` names the input, the index and both values.
    """
    from shendu.tensor import Tensor

    inputs = list(inputs)
    for i, t in enumerate(inputs):
        if isinstance(t, Tensor) and t.requires_grad and t.data.dtype != np.float64:
            raise TypeError(
                f"gradcheck: input {i} must be float64 for a central-difference check, "
                f"got {t.data.dtype}"
            )

    def outputs():
        out = fn(*inputs)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    outs = outputs()
    proj_rng = np.random.Generator(np.random.PCG64(1234))
    projs = [proj_rng.standard_normal(o.data.shape) for o in outs]

    def scalar_numeric() -> float:
        with no_grad():
            return float(sum((o.data * p).sum() for o, p in zip(outputs(), projs)))

    for t in inputs:
        if isinstance(t, Tensor):
            t.grad = None
    diff_outs = [(o, p) for o, p in zip(outs, projs) if o.requires_grad]
    if diff_outs:
        backward([o for o, _ in diff_outs], [p for _, p in diff_outs])
    for i, t in enumerate(inputs):
        if not (isinstance(t, Tensor) and t.requires_grad):
            continue
        analytic = np.zeros_like(t.data) if t.grad is None else t.grad.data
        numeric = np.zeros_like(t.data)
        flat = t.data.reshape(-1)  # a view: writes go into t.data
        if not np.shares_memory(flat, t.data):
            raise RuntimeError("gradcheck: inputs must be contiguous")
        for j in range(flat.size):
            orig = flat[j]
            flat[j] = orig + eps
            fp = scalar_numeric()
            flat[j] = orig - eps
            fm = scalar_numeric()
            flat[j] = orig
            numeric.reshape(-1)[j] = (fp - fm) / (2 * eps)
        bad = ~np.isclose(analytic, numeric, rtol=rtol, atol=atol)
        if bad.any():
            idx = tuple(int(k) for k in np.argwhere(bad)[0])
            msg = (
                f"gradcheck: input {i} (shape {t.data.shape}) disagrees at index {idx}: "
                f"analytic {analytic[idx]!r}, numeric {numeric[idx]!r} "
                f"({int(bad.sum())} of {bad.size} elements differ)"
            )
            if raise_exception:
                raise GradcheckError(msg)
            return False
    return True
