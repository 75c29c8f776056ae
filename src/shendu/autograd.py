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
import functools
import threading
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

class _GradState(threading.local):
    """Grad mode, one per thread (as torch's): ``no_grad()`` in one thread leaves a training
    loop in another recording its graph."""

    enabled = True


_state = _GradState()


def is_grad_enabled() -> bool:
    """Whether operations are being recorded for backpropagation (in this thread)."""
    return _state.enabled


class _GradMode(contextlib.ContextDecorator):
    """Base of :class:`no_grad` and :class:`enable_grad`: set a mode on enter, restore on exit.

    The previous modes live on a stack, so one instance can be entered re-entrantly (a
    decorated function that calls itself) and still restore the right mode at each exit.
    """

    mode: bool

    def __init__(self) -> None:
        self._prev: list[bool] = []

    def __enter__(self) -> None:
        self._prev.append(_state.enabled)
        _state.enabled = self.mode

    def __exit__(self, *exc) -> None:
        _state.enabled = self._prev.pop()


class no_grad(_GradMode):
    """Context manager (and decorator): operations inside record no graph."""

    mode = False


class enable_grad(_GradMode):
    """Context manager (and decorator): record the graph even inside ``no_grad``."""

    mode = True


class set_grad_enabled:
    """Turn graph recording on or off, as torch's ``set_grad_enabled``.

    Called as a function it sets the mode at once (``set_grad_enabled(False)``); as a
    context manager it restores the previous mode on exit; as a decorator it leaves the
    mode alone until the decorated function runs.
    """

    def __init__(self, mode: bool) -> None:
        self.prev = _state.enabled
        self.mode = bool(mode)
        _state.enabled = self.mode

    def __call__(self, func: Callable) -> Callable:
        _state.enabled = self.prev  # decorating must not change the mode
        mode = self.mode

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(mode):
                return func(*args, **kwargs)

        return wrapper

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc) -> None:
        _state.enabled = self.prev


#: ``Tensor._wrap``, bound by :mod:`shendu.tensor` when it is imported (tensor.py imports
#: this module, so the reference cannot be taken at import time here)
_tensor_wrap: Callable = None  # type: ignore[assignment]


#: called as ``_tracer(cls, inputs, params, outputs)`` after every op while
#: :func:`shendu.onnx.export` records a forward pass; None otherwise
_tracer: Callable | None = None


def _bind_tensor(wrap: Callable) -> None:
    global _tensor_wrap
    _tensor_wrap = wrap


class Function:
    """One differentiable operation: ``forward`` and ``backward`` side by side.

    Subclasses implement ``forward(self, *arrays, **params)`` returning an array (or a
    tuple of arrays) and ``backward(self, *grads)`` returning one gradient per input
    array (``None`` where an input needs none). ``self.needs_input_grad`` tells which
    inputs want a gradient. Anything ``backward`` needs is saved on ``self``.

    ``backward`` must not modify its incoming gradients in place, and each gradient it
    returns must have exactly its input's shape (the engine checks; a float gradient of
    another precision is cast to the input's dtype).

    **Saved tensors and versions.** A subclass declares which of its inputs and outputs
    ``backward`` reads (``saved_inputs``, ``saved_outputs``). When the graph is recorded,
    the engine notes their versions; an in-place change to one of them before backward
    (``b.mul_(10)``, ``b[0] = 1``, an optimizer step) bumps its version, and backward
    raises instead of using the changed values — torch's rule. The declaration follows
    torch's (``mul`` saves ``a`` only when ``b`` needs a gradient), and it must cover
    every array ``backward`` reads that shares memory with an input or output.
    """

    freed = False
    #: set by :meth:`apply`: the input tensors and which of them need gradients
    parents: tuple
    needs_input_grad: tuple
    #: set by :meth:`apply`: for each input, the node that made it and which of its
    #: outputs it was, taken when this op ran (a later in-place op may move the tensor on)
    edges: tuple
    n_out: int = 1
    #: inputs that backward reads: ``None`` (all of them, the safe default), or a tuple
    #: whose entries are an index ``i`` (always saved) or a pair ``(i, j)`` (saved when
    #: input ``j`` needs a gradient)
    saved_inputs: tuple | None = None
    #: indices of the outputs that backward reads
    saved_outputs: tuple = ()
    #: the outputs are views of input 0 (they share its memory, its version counter, and
    #: an in-place change to one of them changes the input)
    is_view: bool = False
    #: the views can't be changed in place while a graph is recorded (an op that returns
    #: several views, or one whose view overlaps itself)
    n_out_views: bool = False
    #: (version counter, version when saved, input index or -1 - output index)
    _sv: tuple | list = ()

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        si = cls.__dict__.get("saved_inputs", cls.saved_inputs)
        if si is not None:
            cls.saved_inputs = tuple(e if isinstance(e, tuple) else (e, None) for e in si)

    def forward(self, *arrays, **params):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, *grads):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        """Run the op on tensors ``inputs`` and record it in the graph if needed."""
        wrap = _tensor_wrap
        requires = False
        enabled = _state.enabled
        for t in inputs:
            if t._base is not None and t._base._ctx is not t._base_ctx:
                _refresh_view(t)
            if t._rg:
                requires = enabled
        fn = cls.__new__(cls)
        n = len(inputs)
        if requires:
            need = fn.needs_input_grad = tuple([t._rg for t in inputs])
        else:
            fn.needs_input_grad = (False,) * n
        out = fn.forward(*[t.data for t in inputs], **params)
        multi = type(out) is tuple
        if multi:
            fn.n_out = len(out)
        if not requires:
            res = tuple([wrap(o, None, 0) for o in out]) if multi else wrap(out, None, 0)
            if cls.is_view:
                _mark_views(inputs[0], res, cls, params)
            if _tracer is not None:
                _tracer(cls, inputs, params, res)
            return res
        fn.parents = inputs
        if n == 1:
            t = inputs[0]
            fn.edges = ((t._ctx, t._out_index),)
        elif n == 2:
            t, u = inputs
            fn.edges = ((t._ctx, t._out_index), (u._ctx, u._out_index))
        else:
            fn.edges = tuple([(t._ctx, t._out_index) for t in inputs])
        si = cls.saved_inputs
        sv = None
        if si is None:
            sv = [(t._version, t._version[0], i) for i, t in enumerate(inputs)]
        elif si:
            for i, j in si:
                if i < n and (j is None or need[j]):
                    v = inputs[i]._version
                    if sv is None:
                        sv = [(v, v[0], i)]
                    else:
                        sv.append((v, v[0], i))
        if multi:
            fn.out_meta = tuple([(o.shape, o.dtype) for o in out])
            res = tuple([wrap(o, fn, i) for i, o in enumerate(out)])
            for k in cls.saved_outputs:
                if sv is None:
                    sv = []
                sv.append((res[k]._version, 0, -1 - k))
        else:
            res = wrap(out, fn, 0)
            if cls.saved_outputs:
                if sv is None:
                    sv = []
                sv.append((res._version, 0, -1))
        if sv:
            fn._sv = sv
        if cls.is_view:
            _mark_views(inputs[0], res, cls, params)
        if _tracer is not None:
            _tracer(cls, inputs, params, res)
        return res

    def _check_saved(self) -> None:
        """Raise if a tensor this node saved was changed in place after it was saved."""
        for ver, saved, i in self._sv:
            if ver[0] != saved:
                if i >= 0:
                    t = self.parents[i]
                    what = f"input {i} of {self!r} ({_describe(t.data.shape, t.data.dtype)})"
                else:
                    k = -1 - i
                    meta = self.out_meta[k] if self.n_out > 1 else None
                    what = f"output {k} of {self!r}" + (
                        f" ({_describe(*meta)})" if meta else "")
                raise RuntimeError(
                    "backward: one of the variables needed for gradient computation has been "
                    f"modified by an inplace operation: {what} is at version {ver[0]}; "
                    f"expected version {saved} instead. Hint: the tensor was changed in place "
                    "(an in-place method, an assignment into it, or an optimizer step) after "
                    "it was used; clone() it before changing it, or change it after backward."
                )

    def _free(self) -> None:
        """Drop everything saved for backward, and the edges to the inputs.

        Releasing the inputs lets their arrays go as soon as the last node that needs
        them has run (torch frees saved tensors the same way); a later backward that
        reaches this node raises the "second time" error.
        """
        self.__dict__.clear()
        self.freed = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__}Backward>"


def _describe(shape, dtype) -> str:
    return f"a {np.dtype(dtype).name} tensor of shape {tuple(shape)}"


def _mark_views(src, res, cls, params) -> None:
    """Make the outputs of a view op views of ``src``'s base: they share its version
    counter, and remember how to re-derive themselves from the base (the chain of view
    ops), so that an in-place change through a view can update the base's graph."""
    root = src._base
    chain = src._view_chain if root is not None else ()
    if root is None:
        root = src
    sd = src.data
    outs = res if type(res) is tuple else (res,)
    multi = type(res) is tuple
    for k, o in enumerate(outs):
        if not np.may_share_memory(o.data, sd):
            continue  # e.g. a reshape that had to copy
        o._version = src._version
        o._base = root
        o._view_chain = (*chain, (cls, params, k if multi else -1))
        o._base_ctx = root._ctx


def _replay_view(base, chain):
    """The view that ``chain`` (view ops, in order) takes of tensor ``base``."""
    x = base
    for cls, params, k in chain:
        x = cls.apply(x, **params)
        if k >= 0:
            x = x[k]
    return x


def _refresh_view(t) -> None:
    """Re-derive view ``t``'s place in the graph from its base, whose graph was changed by
    an in-place op since ``t`` was made (torch regenerates a view's ``grad_fn`` the same
    way)."""
    base = t._base
    prev, _state.enabled = _state.enabled, True  # the view's place does not depend on mode
    try:
        r = _replay_view(base, t._view_chain)
    finally:
        _state.enabled = prev
    t._ctx, t._out_index = r._ctx, r._out_index
    t._rg = r._rg
    t._base_ctx = base._ctx


class CopySlices(Function):
    """The base of a view after an in-place change through the view: the base's old value
    everywhere but in the view, ``value`` inside it.

    ``dbase = g`` with the view's part zeroed; ``dvalue = g`` in the view's part. The
    forward has nothing to compute: the change was already written through the view into
    the base's memory.
    """

    saved_inputs = ()

    def forward(self, base, value, chain=()):
        self.chain = chain
        return base

    def backward(self, g):
        gb = gv = None
        if self.needs_input_grad[0]:
            gb = g.copy()
            _replay_view(_tensor_wrap(gb, None, 0), self.chain).data[...] = 0
        if self.needs_input_grad[1]:
            gv = np.array(_replay_view(_tensor_wrap(g, None, 0), self.chain).data)
        return gb, gv


def _count_consumers(roots: list[Function], hooked: dict | None = None) -> dict[int, int]:
    """For every node reachable from ``roots``, how many edges lead into it.

    An explicit stack, never recursion. Meets a node freed by an earlier backward: raise
    before any gradient is delivered. Leaves with hooks get their count in ``hooked``
    (``id -> [edges left, tensor, gradient so far]``), so that their hooks run once, on the
    whole gradient.
    """
    consumers: dict[int, int] = {id(r): 0 for r in roots}
    stack = list(roots)
    while stack:
        fn = stack.pop()
        for t, (p, _), need in zip(fn.parents, fn.edges, fn.needs_input_grad):
            if not need:
                continue
            if p is None:
                if t._hooks is not None and hooked is not None:
                    h = hooked.get(id(t))
                    if h is None:
                        hooked[id(t)] = [1, t, None]
                    else:
                        h[0] += 1
                continue
            key = id(p)
            if key in consumers:
                consumers[key] += 1
            else:
                if p.freed:
                    raise _freed_error(p)
                consumers[key] = 1
                stack.append(p)
    return consumers


def _check_grad(fn: Function, t, g) -> np.ndarray:
    """The gradient ``fn.backward`` returned for input ``t``: its shape must be exact."""
    if type(g) is not np.ndarray:
        g = np.asarray(g)
    if g.shape != t.data.shape:
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

    The engine is Kahn's algorithm run backwards: one pass with an explicit stack counts
    how many consumers each reachable node has; a node runs when all of its consumers
    have delivered their gradient, so every node runs once, with the full sum of its
    output gradients, and no Python recursion is involved (a 100,000-node chain is fine).
    """
    _run_backward(tensors, grad_tensors, retain_graph, inputs=None)


def _run_backward(tensors, grad_tensors, retain_graph, inputs):
    from shendu.tensor import Tensor

    if isinstance(tensors, Tensor):
        tensors = [tensors]
        grad_tensors = [grad_tensors]
    else:
        tensors = list(tensors)
        if grad_tensors is None:
            grad_tensors = [None] * len(tensors)
        elif isinstance(grad_tensors, (Tensor, np.ndarray)):
            grad_tensors = [grad_tensors]
        if len(grad_tensors) != len(tensors):
            raise RuntimeError(
                f"backward: got {len(grad_tensors)} gradients for {len(tensors)} tensors"
            )

    # Seed gradients, grouped per output slot of each root node.
    out_grads: dict[int, list] = {}
    roots: list[Function] = []
    captured: dict[int, np.ndarray] = {}
    capture_ids = None if inputs is None else {id(t) for t in inputs}
    # ids of arrays handed to a leaf's .grad without a copy in this pass: they may still
    # sit in another node's pending gradient, so they are never added to in place.
    borrowed: set[int] = set()
    for k, (t, g) in enumerate(zip(tensors, grad_tensors)):
        b = t._base
        if b is not None and b._ctx is not t._base_ctx:
            _refresh_view(t)
        if not t.requires_grad:
            raise RuntimeError(
                f"backward: element {k} of tensors does not require grad and does not have "
                "a grad_fn (did you call it on the result of an op under no_grad, or on a "
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
            # a copy: the caller's array must never become (or be added into) a .grad
            g = np.array(g.data if isinstance(g, Tensor) else g, dtype=t.data.dtype)
            if g.shape != t.data.shape:
                raise RuntimeError(
                    f"backward: gradient {k} has shape {g.shape}, expected {t.data.shape} "
                    "(the shape of the tensor)"
                )
        fn = t._ctx
        if fn is None:
            (_run_leaf_hooks if t._hooks is not None and capture_ids is None
             else _deliver_leaf)(t, g, capture_ids, captured, borrowed)
            continue
        if fn.freed:
            raise _freed_error(fn)
        slot = out_grads.get(id(fn))
        if slot is None:
            roots.append(fn)
            slot = out_grads[id(fn)] = [None] * fn.n_out
        i = t._out_index
        slot[i] = g if slot[i] is None else slot[i] + g

    if not roots:
        return captured

    hooked: dict = {}
    consumers = _count_consumers(roots, hooked)
    if hooked and capture_ids is None:
        deliver = functools.partial(_deliver_hooked, hooked)
    else:
        deliver = _deliver_leaf
    ready = [r for r in roots if consumers[id(r)] == 0]
    # sums of pending gradients made here, by id (held, so no id is reused meanwhile): no
    # one else has them, so a further gradient for the same output is added in place
    sums: dict[int, np.ndarray] = {}
    while ready:
        fn = ready.pop()
        grads = out_grads.pop(id(fn))
        if sums:
            for g in grads:
                if g is not None:
                    sums.pop(id(g), None)
        d = fn.__dict__
        if "hooks" in d:  # tensor hooks of this node's outputs, on their whole gradient
            for i, hs in d["hooks"].items():
                if grads[i] is not None:
                    for h in list(hs):
                        r = h(_tensor_wrap(grads[i], None, 0))
                        if r is not None:
                            grads[i] = np.asarray(r.data if hasattr(r, "_ctx") else r)
        if "retained" in d:
            for i, t in d["retained"].items():
                if grads[i] is not None:
                    t.grad = Tensor(grads[i].copy() if t.grad is None else t.grad.data + grads[i])
        if capture_ids is not None and "outputs_for_capture" in d:
            for i, t in d["outputs_for_capture"].items():
                if id(t) in capture_ids and grads[i] is not None:
                    captured[id(t)] = grads[i]
        if fn.n_out > 1:
            for i, (shape, dtype) in enumerate(fn.out_meta):
                if grads[i] is None:
                    grads[i] = np.zeros(shape, dtype)
        if fn._sv:
            fn._check_saved()
        in_grads = fn.backward(*grads)
        if type(in_grads) is not tuple:
            in_grads = (in_grads,)
        for t, (p, i), need, g in zip(fn.parents, fn.edges, fn.needs_input_grad, in_grads):
            if not need:
                continue
            if g is None:
                g = np.zeros_like(t.data)
            else:
                g = _check_grad(fn, t, g)
            if p is None:
                deliver(t, g, capture_ids, captured, borrowed)
            else:
                key = id(p)
                slot = out_grads.get(key)
                if slot is None:
                    slot = out_grads[key] = [None] * p.n_out
                prev = slot[i]
                if prev is None:
                    slot[i] = g
                elif id(prev) in sums:
                    prev += g
                else:
                    prev = slot[i] = prev + g
                    sums[id(prev)] = prev
                consumers[key] -= 1
                if consumers[key] == 0:
                    ready.append(p)
        if not retain_graph:
            fn._free()
    return captured


def _deliver_leaf(t, g, capture_ids, captured, borrowed: set[int]) -> None:
    """Accumulate ``g`` into leaf ``t`` (or into ``captured`` when computing ``grad()``).

    A leaf's first gradient is stored without a copy when it is a fresh array; views,
    read-only arrays and arrays already given to another leaf are copied, so no two
    leaves ever share a ``.grad`` array (clipping one in place must not touch another).
    """
    from shendu.tensor import Tensor

    if capture_ids is not None:
        if id(t) in capture_ids:
            prev = captured.get(id(t))
            captured[id(t)] = g if prev is None else prev + g
        return
    if not t.requires_grad:  # e.g. requires_grad_(False) after the graph was built
        return
    if t.grad is None:
        if g.base is not None or not g.flags.writeable or id(g) in borrowed:
            g = g.copy()
        else:
            borrowed.add(id(g))
        t.grad = Tensor(g)
        return
    gd = t.grad.data
    if id(gd) in borrowed or gd.shape != g.shape or not gd.flags.writeable:
        t.grad = Tensor(gd + g)  # a fresh array, owned by this leaf alone
    else:
        np.add(gd, g, out=gd)


def _deliver_hooked(hooked, t, g, capture_ids, captured, borrowed) -> None:
    """Deliver to a leaf, holding the gradient of a hooked leaf until its last edge has
    delivered; then its ``register_hook`` hooks see (and may replace) the whole gradient,
    it is accumulated, and its ``register_post_accumulate_grad_hook`` hooks run."""
    h = hooked.get(id(t))
    if h is None:
        _deliver_leaf(t, g, capture_ids, captured, borrowed)
        return
    h[2] = g if h[2] is None else h[2] + g
    h[0] -= 1
    if h[0] > 0:
        return
    del hooked[id(t)]
    _run_leaf_hooks(t, h[2], capture_ids, captured, borrowed)


def _run_leaf_hooks(t, g, capture_ids, captured, borrowed) -> None:
    hooks = t._hooks
    for hook in list(hooks.get("pre", ())):
        r = hook(_tensor_wrap(g, None, 0))
        if r is not None:
            g = np.asarray(r.data if hasattr(r, "_ctx") else r, dtype=t.data.dtype)
    _deliver_leaf(t, g, capture_ids, captured, borrowed)
    for hook in list(hooks.get("post", ())):
        hook(t)


class RemovableHandle:
    """What ``register_hook`` returns: ``handle.remove()`` takes the hook away."""

    def __init__(self, hooks: list, hook) -> None:
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _freed_error(fn: Function) -> RuntimeError:
    return RuntimeError(
        f"backward: trying to backward through the graph a second time ({fn!r} was freed "
        "after the first backward). Pass retain_graph=True to the first backward() if you "
        "need to back-propagate through the same graph twice."
    )


def grad(outputs, inputs, grad_outputs=None, retain_graph: bool = False,
         allow_unused: bool = False):
    """Gradients of ``outputs`` with respect to ``inputs``, without touching any ``.grad``.

    Returns a tuple of tensors, one per input (a single tensor in, a 1-tuple out, as
    torch). An input the outputs do not depend on raises unless ``allow_unused=True``,
    in which case its entry is ``None``.
    """
    from shendu.tensor import Tensor

    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    for k, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError(f"grad: input {k} does not require grad")
    # mark non-leaf inputs so the engine can capture their gradient
    marked = []
    for t in inputs:
        if t._ctx is not None:
            d = t._ctx.__dict__.setdefault("outputs_for_capture", {})
            d[t._out_index] = t
            marked.append(t._ctx)
    try:
        captured = _run_backward(outputs, grad_outputs, retain_graph, inputs=inputs)
    finally:
        for fn in marked:
            fn.__dict__.pop("outputs_for_capture", None)
    res = []
    seen: set[int] = set()
    for k, t in enumerate(inputs):
        g = captured.get(id(t))
        if g is None:
            if not allow_unused:
                raise RuntimeError(
                    f"grad: input {k} was not used in the graph of the outputs; pass "
                    "allow_unused=True if that is intended"
                )
            res.append(None)
            continue
        if id(g) in seen or g.base is not None or not g.flags.writeable:
            g = g.copy()  # results never share memory with each other
        seen.add(id(g))
        res.append(Tensor(g))
    return tuple(res)


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
    r"""Compare the autograd gradient of ``fn(*inputs)`` with central differences.

    Every input that requires a gradient must be a contiguous float64 tensor. The outputs
    are projected onto fixed random directions ``v`` (one per output), so the check is of
    the scalar ``L(x) = sum_k <v_k, f_k(x)>`` and covers every output element at once:

    ``dL/dx_j  ~  (L(x + eps e_j) - L(x - eps e_j)) / (2 eps)``   (error O(eps^2)).

    Element ``j`` passes when ``|analytic - numeric| <= atol + rtol |numeric|``. On a
    disagreement a :class:`GradcheckError` names the input, the index and both values.
    ``.grad`` of the inputs is left untouched.
    """
    from shendu.tensor import Tensor

    inputs = list(inputs)
    diff_inputs = []
    for i, t in enumerate(inputs):
        if isinstance(t, Tensor) and t.requires_grad:
            if t.data.dtype != np.float64:
                raise TypeError(
                    f"gradcheck: input {i} must be float64 for a central-difference check, "
                    f"got {t.data.dtype}"
                )
            if not t.data.flags.c_contiguous or not t.data.flags.writeable:
                raise ValueError(f"gradcheck: input {i} must be a contiguous, writeable array")
            diff_inputs.append(t)

    def outputs():
        out = fn(*inputs)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    outs = outputs()
    proj_rng = np.random.Generator(np.random.PCG64(1234))
    projs = [proj_rng.standard_normal(o.data.shape) for o in outs]

    def scalar_numeric() -> float:
        with no_grad():
            return float(sum((o.data * p).sum() for o, p in zip(outputs(), projs)))

    diff_outs = [(o, p) for o, p in zip(outs, projs) if o.requires_grad]
    captured: dict[int, np.ndarray] = {}
    if diff_outs and diff_inputs:
        captured = grad([o for o, _ in diff_outs], diff_inputs,
                        [p for _, p in diff_outs], allow_unused=True)
        captured = {id(t): (None if g is None else g.data) for t, g in zip(diff_inputs, captured)}
    for i, t in enumerate(inputs):
        if not (isinstance(t, Tensor) and t.requires_grad):
            continue
        analytic = captured.get(id(t))
        if analytic is None:
            analytic = np.zeros_like(t.data)
        numeric = np.zeros_like(t.data)
        flat = t.data.reshape(-1)  # a view: writes go into t.data
        nflat = numeric.reshape(-1)
        for j in range(flat.size):
            orig = flat[j]
            flat[j] = orig + eps
            fp = scalar_numeric()
            flat[j] = orig - eps
            fm = scalar_numeric()
            flat[j] = orig
            nflat[j] = (fp - fm) / (2 * eps)
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
