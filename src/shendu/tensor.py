"""``Tensor``: an array plus what backpropagation needs (``grad``, ``requires_grad`` and
the :class:`~shendu.autograd.Function` that made it)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from shendu import autograd
from shendu.backend import as_dtype, get_default_dtype

__all__ = ["Tensor", "tensor", "from_numpy", "zeros", "ones", "full", "arange", "randn", "rand",
           "empty", "zeros_like", "ones_like", "randint", "eye", "linspace", "full_like",
           "rand_like", "randn_like", "empty_like"]


def _to_array(data, dtype=None) -> np.ndarray:
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.array(data, dtype=as_dtype(dtype))
    arr = np.array(data)
    if isinstance(data, (np.ndarray, np.generic)):
        # NumPy data keeps its dtype (torch.tensor(float64 array) is float64); only Python
        # floats take the default dtype
        if arr.dtype.kind == "O":
            raise TypeError("tensor: cannot make a tensor from an array of objects")
        return arr
    if arr.dtype.kind == "f":
        arr = arr.astype(get_default_dtype(), copy=False)
    elif arr.dtype.kind == "O":
        raise TypeError(f"tensor: cannot make a tensor from {type(data).__name__} of objects")
    return arr


class Tensor:
    """A multi-dimensional array that records the operations applied to it.

    ``Tensor(data, requires_grad=False, dtype=None)``. Floating data becomes the default
    dtype (float32) unless ``dtype`` says otherwise; integer and bool data keep their kind.
    """

    __slots__ = ("data", "grad", "_rg", "_ctx", "_out_index", "_version", "_base",
                 "_view_chain", "_base_ctx", "_hooks", "__weakref__")
    __array_ufunc__ = None  # make numpy defer to our reflected operators (a * t)
    __array_priority__ = 1000

    def __init__(self, data, requires_grad: bool = False, dtype=None) -> None:
        arr = data if (isinstance(data, np.ndarray) and dtype is None) else _to_array(data, dtype)
        self.data: np.ndarray = arr
        self.grad: Tensor | None = None
        self._ctx = None
        self._out_index = 0
        #: the version counter, shared by every tensor on this memory (views, detach());
        #: each in-place change bumps it (see :class:`~shendu.autograd.Function`)
        self._version = [0]
        self._base = None
        self._hooks = None
        if requires_grad and arr.dtype.kind not in "fc":
            raise RuntimeError(
                f"Tensor: only floating point tensors can require gradients, got {arr.dtype}"
            )
        self.requires_grad = bool(requires_grad)

    def __setstate__(self, state) -> None:
        """The state Python's ``copy`` and other programs' serialisers restore (scikit-learn
        clones estimators, joblib ships them to workers; shendu's own files never hold
        one): the slots as given, but data that comes back read-only or memory-mapped
        (joblib maps large arrays from its files) becomes an array of its own, as NumPy
        itself restores arrays, so that the same kernels take it and in-place updates
        work."""
        d, slots = state if isinstance(state, tuple) else (state, None)
        for part in (d, slots):
            for k, v in (part or {}).items():
                setattr(self, k, v)
        data = getattr(self, "data", None)
        if isinstance(data, np.ndarray) and (type(data) is not np.ndarray
                                             or not data.flags.writeable):
            self.data = np.array(data)

    @classmethod
    def _wrap(cls, arr: np.ndarray, ctx, index: int) -> Tensor:
        t = cls.__new__(cls)
        t.data = arr if isinstance(arr, np.ndarray) else np.asarray(arr)
        t.grad = None
        t._ctx = ctx
        t._out_index = index
        t._version = [0]
        t._base = None
        t._hooks = None
        t._rg = ctx is not None
        return t

    @property
    def requires_grad(self) -> bool:
        """Whether gradients flow into this tensor (a view follows its base's changes)."""
        b = self._base
        if b is not None and b._ctx is not self._base_ctx:
            autograd._refresh_view(self)
        return self._rg

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        self._rg = bool(value)

    # ------------------------------------------------------------------ basics
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def dim(self) -> int:
        return self.data.ndim

    def size(self, dim: int | None = None) -> tuple | int:
        return self.data.shape if dim is None else self.data.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    @property
    def is_leaf(self) -> bool:
        self._fresh()
        return self._ctx is None

    @property
    def grad_fn(self):
        self._fresh()
        return self._ctx

    @property
    def _version_value(self) -> int:
        """How many in-place changes this tensor's memory has seen (torch's ``_version``)."""
        return self._version[0]

    def _fresh(self) -> None:
        """A view whose base's graph changed in place takes its place in the new graph."""
        b = self._base
        if b is not None and b._ctx is not self._base_ctx:
            autograd._refresh_view(self)

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        if self.data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        for i in range(self.data.shape[0]):
            yield self[i]

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="tensor(")
        extra = ""
        if self.data.dtype != get_default_dtype() and self.data.dtype.kind == "f":
            extra += f", dtype={self.data.dtype}"
        if self._ctx is not None:
            extra += f", grad_fn={self._ctx!r}"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """``np.asarray(t)`` shares memory; ``np.array(t)`` (``copy=True``) copies."""
        if dtype is not None:
            return self.data.astype(dtype, copy=bool(copy))
        return self.data.copy() if copy else self.data

    def numpy(self) -> np.ndarray:
        """The underlying array (shares memory). Fails if the tensor requires grad, as in torch."""
        if self.requires_grad:
            raise RuntimeError(
                "numpy: can't call numpy() on a tensor that requires grad; use "
                "tensor.detach().numpy()"
            )
        return self.data

    def item(self) -> float | int | bool:
        if self.data.size != 1:
            raise ValueError(
                f"item: only a one-element tensor can be converted to a Python scalar, "
                f"got shape {self.data.shape}"
            )
        return self.data.reshape(()).item()

    def tolist(self) -> list | float | int | bool:
        return self.data.tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise RuntimeError(
                f"bool: the truth value of a tensor with {self.data.size} elements is ambiguous"
            )
        return bool(self.data.reshape(()))

    def __hash__(self) -> int:
        return id(self)

    # ------------------------------------------------------------ autograd
    def backward(self, gradient=None, retain_graph: bool = False) -> None:
        """Back-propagate from this tensor; leaves accumulate into ``.grad``."""
        autograd.backward(self, gradient, retain_graph=retain_graph)

    def detach(self) -> Tensor:
        """The same data, cut from the graph (shares memory and the version counter, so an
        in-place change through it is still seen by the graph that saved this tensor)."""
        t = Tensor._wrap(self.data, None, 0)
        t._version = self._version
        return t

    def detach_(self) -> Tensor:
        """Cut this tensor from the graph in place. Nodes already built on it keep their
        gradient path (they recorded where their inputs came from when they ran)."""
        if self._base is not None:
            raise RuntimeError("detach_: can't detach views in-place; use detach() instead")
        self._ctx = None
        self.requires_grad = False
        return self

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if self._ctx is not None and not requires_grad:
            raise RuntimeError("requires_grad_: can only change requires_grad of leaf tensors")
        if requires_grad and self.data.dtype.kind not in "fc":
            raise RuntimeError(
                f"requires_grad_: only floating point tensors can require gradients, "
                f"got {self.data.dtype}"
            )
        self.requires_grad = bool(requires_grad)
        return self

    def register_hook(self, hook):
        """Call ``hook(grad)`` with this tensor's gradient each time it is computed, before
        it is used (a leaf: before it is accumulated into ``.grad``); a tensor the hook
        returns replaces the gradient. Returns a handle with ``remove()``."""
        if not self.requires_grad:
            raise RuntimeError("register_hook: cannot register a hook on a tensor that "
                               "doesn't require gradient")
        if self._ctx is None:
            if self._hooks is None:
                self._hooks = {}
            hooks = self._hooks.setdefault("pre", [])
        else:
            hooks = self._ctx.__dict__.setdefault("hooks", {}).setdefault(self._out_index, [])
        hooks.append(hook)
        return autograd.RemovableHandle(hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(tensor)`` after a backward pass has accumulated this leaf's whole
        gradient into ``.grad`` (what data-parallel training uses to start averaging a
        gradient while the rest of backward runs). Leaves only."""
        if self._ctx is not None:
            raise RuntimeError("register_post_accumulate_grad_hook: post accumulate grad hooks "
                               "cannot be registered on non-leaf tensors")
        if not self.requires_grad:
            raise RuntimeError("register_post_accumulate_grad_hook: cannot register a hook on "
                               "a tensor that doesn't require gradient")
        if self._hooks is None:
            self._hooks = {}
        hooks = self._hooks.setdefault("post", [])
        hooks.append(hook)
        return autograd.RemovableHandle(hooks, hook)

    def retain_grad(self) -> None:
        """Keep ``.grad`` for this non-leaf tensor after backward."""
        if self._ctx is None:
            if not self.requires_grad:
                raise RuntimeError("retain_grad: can't retain_grad on a tensor that has "
                                   "requires_grad=False")
            return
        self._ctx.__dict__.setdefault("retained", {})[self._out_index] = self

    # --------------------------------------------------------- conversions
    def to(self, *args, dtype=None, device=None, **kwargs) -> Tensor:
        """``t.to(dtype)``; a device (``"cpu"``) is accepted and ignored, as is
        ``non_blocking``/``copy`` — NumPy arrays live in host memory."""
        from shendu.device import _KNOWN, check_device
        from shendu.device import device as _device

        for a in args:
            if isinstance(a, Tensor):
                dtype = a.data.dtype
            elif isinstance(a, _device) or (isinstance(a, str)
                                            and a.split(":")[0] in _KNOWN):
                device = a
            else:
                dtype = a
        check_device(device, "to")
        unknown = set(kwargs) - {"non_blocking", "copy"}
        if unknown:
            raise TypeError(f"to() got unexpected keyword arguments {sorted(unknown)}")
        if dtype is None:
            return self
        return F.cast(self, as_dtype(dtype))

    def cpu(self) -> Tensor:
        return self

    def cuda(self, device=None, non_blocking: bool = False) -> Tensor:
        from shendu.device import check_device

        check_device("cuda" if device is None else device, "cuda")
        return self

    @property
    def device(self):
        """Always ``device(type='cpu')``: shendu's arrays are NumPy arrays."""
        from shendu.device import CPU

        return CPU

    is_cuda = False

    def is_floating_point(self) -> bool:
        return self.data.dtype.kind == "f"

    def type_as(self, other) -> Tensor:
        return self.to(other.data.dtype)

    def element_size(self) -> int:
        return self.data.dtype.itemsize

    def __index__(self) -> int:
        """An integer 0-d (or one-element) tensor as a list index or slice bound."""
        if self.data.dtype.kind not in "iub" or self.data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an "
                            "index")
        return int(self.data.reshape(()))

    def __format__(self, spec: str) -> str:
        """``f"{loss:.4f}"`` formats a 0-d tensor as its number, as torch (a tensor with
        dimensions takes no format spec)."""
        if self.data.ndim == 0:
            return format(self.data.item(), spec)
        if spec:
            raise TypeError("unsupported format string passed to Tensor.__format__")
        return repr(self)

    # torch's new_* factories: same dtype (unless given), the CPU
    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False) -> Tensor:
        return zeros(*size, dtype=self.data.dtype if dtype is None else dtype, device=device,
                     requires_grad=requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False) -> Tensor:
        return ones(*size, dtype=self.data.dtype if dtype is None else dtype, device=device,
                    requires_grad=requires_grad)

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False) -> Tensor:
        return empty(*size, dtype=self.data.dtype if dtype is None else dtype, device=device,
                     requires_grad=requires_grad)

    def new_full(self, size, fill_value, dtype=None, device=None,
                 requires_grad=False) -> Tensor:
        return full(size, fill_value, dtype=self.data.dtype if dtype is None else dtype,
                    device=device, requires_grad=requires_grad)

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False) -> Tensor:
        return tensor(data, dtype=self.data.dtype if dtype is None else dtype, device=device,
                      requires_grad=requires_grad)

    def float(self) -> Tensor:
        return self.to(np.float32)

    def double(self) -> Tensor:
        return self.to(np.float64)

    def long(self) -> Tensor:
        return self.to(np.int64)

    def int(self) -> Tensor:
        return self.to(np.int32)

    def bool(self) -> Tensor:
        return self.to(np.bool_)

    def type(self, dtype) -> Tensor:
        return self.to(dtype)

    astype = to

    def clone(self) -> Tensor:
        return F.clone(self)

    def contiguous(self) -> Tensor:
        """This tensor when its memory is in row-major (C) order, else a row-major copy in
        the graph (as torch's)."""
        return self if self.data.flags.c_contiguous else F.clone(self)

    def is_contiguous(self) -> bool:
        """Whether the memory is in row-major (C) order (as torch's)."""
        return bool(self.data.flags.c_contiguous)

    # ------------------------------------------------------------- in-place
    # An in-place op writes into this tensor's memory (so views and detach()ed aliases see
    # the change) and bumps its version (so a graph that saved the old values refuses to
    # back-propagate through them). When a graph is being recorded and this tensor or the
    # operand requires grad, the op is also differentiable, as in torch: the tensor joins
    # the graph as the op's output, and a view passes the change on to its base.
    def _inplace(self, op: str, compute, write, operands=(), saves_self: bool = True):
        """Run in-place op ``op``.

        ``write(array)`` changes the memory when no graph is recorded; ``compute(t)`` is
        the same op out of place on tensors (used when one is), with ``t`` standing for
        this tensor's current value. ``saves_self``: the out-of-place op reads ``t`` in
        its backward, so it gets a copy of the old value.
        """
        self._fresh()
        record = autograd.is_grad_enabled() and (
            self.requires_grad or any(isinstance(o, Tensor) and o.requires_grad
                                      for o in operands))
        if not record:
            try:
                write(self.data)
            except ValueError as e:  # read-only memory (expand) or bad shapes
                raise RuntimeError(f"{op}: {e}") from None
            self._version[0] += 1
            return self
        base = self._base
        if self._ctx is None and self.requires_grad:
            raise RuntimeError(
                f"{op}: a leaf Variable that requires grad is being used in an in-place "
                "operation; wrap it in shendu.no_grad() or work on a clone()")
        if base is not None:
            if base._ctx is None and base.requires_grad:
                raise RuntimeError(
                    f"{op}: a view of a leaf Variable that requires grad is being used in an "
                    "in-place operation; wrap it in shendu.no_grad() or work on a clone()")
            if any(cls.n_out_views for cls, _, _ in self._view_chain):
                raise RuntimeError(
                    f"{op}: this tensor is a view made by an op that returns several views "
                    "(split, chunk, unbind) or one that overlaps itself (expand); such views "
                    "can't be modified in place while a graph is recorded; clone() it first")
        old = Tensor._wrap(self.data.copy() if saves_self else self.data, self._ctx,
                           self._out_index)
        old.requires_grad = self.requires_grad
        new = compute(old)
        self._commit(op, new)
        return self

    def _commit(self, op: str, new: Tensor) -> None:
        """Make this tensor (in place) the value and the graph position of ``new``."""
        if new.data is not self.data:
            if new.data.shape != self.data.shape:
                raise RuntimeError(f"{op}: the result's shape {new.data.shape} doesn't match "
                                   f"the tensor's shape {self.data.shape} (in-place ops "
                                   "can't change shapes)")
            np.copyto(self.data, new.data, casting="same_kind")
        ver = self._version
        ver[0] += 1
        fn = new._ctx
        if fn is not None and fn._sv:
            # an output the node saved now lives in this tensor's memory: watch that
            fn._sv = [(ver, ver[0], i) if v is new._version else (v, n, i)
                      for v, n, i in fn._sv]
        base = self._base
        if base is None:
            self._ctx, self._out_index = new._ctx, new._out_index
            self.requires_grad = new.requires_grad
            return
        r = autograd.CopySlices.apply(base, new, chain=self._view_chain)
        base._ctx, base._out_index = r._ctx, r._out_index
        base.requires_grad = r.requires_grad
        autograd._refresh_view(self)

    def zero_(self) -> Tensor:
        return self._inplace("zero_", lambda t: F.fill(t, 0), _writer(0), saves_self=False)

    def fill_(self, value) -> Tensor:
        v = value
        return self._inplace("fill_", lambda t: F.fill(t, v), _writer(v), (v,),
                             saves_self=False)

    def copy_(self, src, non_blocking: bool = False) -> Tensor:
        if not isinstance(src, Tensor):
            src = Tensor(np.asarray(src))
        try:
            if np.broadcast_shapes(src.data.shape, self.data.shape) != self.data.shape:
                raise ValueError
        except ValueError:
            raise RuntimeError(
                f"copy_: cannot copy a tensor of shape {src.data.shape} into shape "
                f"{self.data.shape}") from None

        def write(a):
            np.copyto(a, np.broadcast_to(src.data, a.shape), casting="unsafe")

        return self._inplace("copy_", lambda t: F.fill(t, src), write, (src,),
                             saves_self=False)

    def add_(self, other, alpha=1) -> Tensor:
        o = other if alpha == 1 else other * alpha
        return self._inplace("add_", lambda t: F.add(t, o), _ufunc_writer(np.add, o), (o,),
                             saves_self=False)

    def sub_(self, other, alpha=1) -> Tensor:
        o = other if alpha == 1 else other * alpha
        return self._inplace("sub_", lambda t: F.sub(t, o), _ufunc_writer(np.subtract, o),
                             (o,), saves_self=False)

    def mul_(self, other) -> Tensor:
        need = isinstance(other, Tensor) and other.requires_grad
        return self._inplace("mul_", lambda t: F.mul(t, other),
                             _ufunc_writer(np.multiply, other), (other,), saves_self=need)

    def div_(self, other) -> Tensor:
        need = isinstance(other, Tensor) and other.requires_grad
        return self._inplace("div_", lambda t: F.div(t, other),
                             _ufunc_writer(np.true_divide, other), (other,), saves_self=need)

    def pow_(self, exponent) -> Tensor:
        return self._inplace("pow_", lambda t: F.pow(t, exponent),
                             _ufunc_writer(np.power, exponent), (exponent,))

    def neg_(self) -> Tensor:
        return self._inplace("neg_", F.neg, lambda a: np.negative(a, out=a), saves_self=False)

    def clamp_(self, min=None, max=None) -> Tensor:
        if min is None and max is None:
            raise ValueError("clamp_: at least one of min and max must be given")
        lo, hi = _raw(min), _raw(max)

        def write(a):
            np.clip(a, lo, hi, out=a)

        return self._inplace("clamp_", lambda t: F.clamp(t, min, max), write, (min, max))

    clip_ = clamp_

    def masked_fill_(self, mask, value) -> Tensor:
        m = np.asarray(_raw(mask)).astype(bool, copy=False)

        def write(a):
            np.copyto(a, _raw(value), where=np.broadcast_to(m, a.shape), casting="unsafe")

        return self._inplace("masked_fill_", lambda t: F.masked_fill(t, m, value), write,
                             (value,), saves_self=False)

    def exp_(self) -> Tensor:
        return self._inplace("exp_", F.exp, lambda a: np.exp(a, out=a), saves_self=False)

    def sigmoid_(self) -> Tensor:
        def write(a):
            a[...] = F.sigmoid(Tensor(a)).data

        return self._inplace("sigmoid_", F.sigmoid, write, saves_self=False)

    def tanh_(self) -> Tensor:
        return self._inplace("tanh_", F.tanh, lambda a: np.tanh(a, out=a), saves_self=False)

    def relu_(self) -> Tensor:
        return self._inplace("relu_", F.relu, lambda a: np.maximum(a, 0, out=a),
                             saves_self=False)

    def abs_(self) -> Tensor:
        return self._inplace("abs_", F.abs, lambda a: np.abs(a, out=a))

    def sqrt_(self) -> Tensor:
        return self._inplace("sqrt_", F.sqrt, lambda a: np.sqrt(a, out=a), saves_self=False)

    def normal_(self, mean=0.0, std=1.0) -> Tensor:
        from shendu.nn import init

        return init.normal_(self, mean, std)

    def uniform_(self, a=0.0, b=1.0) -> Tensor:
        from shendu.nn import init

        return init.uniform_(self, a, b)

    # ----------------------------------------------------------- operators
    def __add__(self, o) -> Tensor:
        return F.add(self, o)

    def __radd__(self, o) -> Tensor:
        return F.add(o, self)

    def __sub__(self, o) -> Tensor:
        return F.sub(self, o)

    def __rsub__(self, o) -> Tensor:
        return F.sub(o, self)

    def __mul__(self, o) -> Tensor:
        return F.mul(self, o)

    def __rmul__(self, o) -> Tensor:
        return F.mul(o, self)

    def __truediv__(self, o) -> Tensor:
        return F.div(self, o)

    def __rtruediv__(self, o) -> Tensor:
        return F.div(o, self)

    def __pow__(self, o) -> Tensor:
        return F.pow(self, o)

    def __rpow__(self, o) -> Tensor:
        return F.pow(o, self)

    def __matmul__(self, o) -> Tensor:
        return F.matmul(self, o)

    def __rmatmul__(self, o) -> Tensor:
        return F.matmul(o, self)

    def __neg__(self) -> Tensor:
        return F.neg(self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return F.abs(self)

    def __getitem__(self, idx) -> Tensor:
        return F.getitem(self, idx)

    def __setitem__(self, idx, value) -> None:
        """``t[idx] = value``: in place, and differentiable as torch's (``value``'s gradient
        is the gradient of the positions it was written to; ``t``'s old values there get
        none)."""
        idx = _raw_index(idx)

        def write(a):
            a[idx] = value.data if isinstance(value, Tensor) else value

        self._inplace("__setitem__", lambda t: F.setitem(t, idx, value), write, (value,),
                      saves_self=False)

    # comparisons give bool tensors (no gradient)
    def __eq__(self, o):  # type: ignore[override]
        return Tensor(self.data == _raw(o))

    def __ne__(self, o):  # type: ignore[override]
        return Tensor(self.data != _raw(o))

    def __lt__(self, o) -> Tensor:
        return Tensor(self.data < _raw(o))

    def __le__(self, o) -> Tensor:
        return Tensor(self.data <= _raw(o))

    def __gt__(self, o) -> Tensor:
        return Tensor(self.data > _raw(o))

    def __ge__(self, o) -> Tensor:
        return Tensor(self.data >= _raw(o))

    def __invert__(self) -> Tensor:
        return Tensor(~self.data)

    def __and__(self, o) -> Tensor:
        return Tensor(self.data & _raw(o))

    def __or__(self, o) -> Tensor:
        return Tensor(self.data | _raw(o))

    def eq(self, o) -> Tensor:
        return self == o

    def equal(self, o) -> bool:
        return bool(np.array_equal(self.data, _raw(o)))

    # ------------------------------------------------------------- methods
    def exp(self) -> Tensor:
        return F.exp(self)

    def log(self) -> Tensor:
        return F.log(self)

    def sqrt(self) -> Tensor:
        return F.sqrt(self)

    def abs(self) -> Tensor:
        return F.abs(self)

    def neg(self) -> Tensor:
        return F.neg(self)

    def tanh(self) -> Tensor:
        return F.tanh(self)

    def sigmoid(self) -> Tensor:
        return F.sigmoid(self)

    def relu(self) -> Tensor:
        return F.relu(self)

    def square(self) -> Tensor:
        return F.square(self)

    def log1p(self) -> Tensor:
        return F.log1p(self)

    def sign(self) -> Tensor:
        return F.sign(self)

    def prod(self, dim=None, keepdim=False, **kw) -> Tensor:
        return F.prod(self, dim, keepdim, **kw)

    def norm(self, p=2, dim=None, keepdim=False) -> Tensor:
        return F.norm(self, p, dim, keepdim)

    def index_select(self, dim, index) -> Tensor:
        return F.index_select(self, dim, index)

    def pow(self, e) -> Tensor:
        return F.pow(self, e)

    def clamp(self, min=None, max=None) -> Tensor:
        return F.clamp(self, min, max)

    clip = clamp

    def maximum(self, o) -> Tensor:
        return F.maximum(self, o)

    def minimum(self, o) -> Tensor:
        return F.minimum(self, o)

    def matmul(self, o) -> Tensor:
        return F.matmul(self, o)

    def softmax(self, dim=-1) -> Tensor:
        return F.softmax(self, dim)

    def log_softmax(self, dim=-1) -> Tensor:
        return F.log_softmax(self, dim)

    def logsumexp(self, dim=None, keepdim=False, **kw) -> Tensor:
        return F.logsumexp(self, dim, keepdim, **kw)

    def sum(self, dim=None, keepdim=False, **kw) -> Tensor:
        return F.sum(self, dim, keepdim, **kw)

    def mean(self, dim=None, keepdim=False, **kw) -> Tensor:
        return F.mean(self, dim, keepdim, **kw)

    def var(self, dim=None, keepdim=False, correction=1, **kw) -> Tensor:
        return F.var(self, dim, keepdim, correction=correction, **kw)

    def std(self, dim=None, keepdim=False, correction=1, **kw) -> Tensor:
        return F.std(self, dim, keepdim, correction=correction, **kw)

    def max(self, dim=None, keepdim=False, **kw) -> Tensor | tuple[Tensor, Tensor]:
        return F.max(self, dim, keepdim, **kw)

    def min(self, dim=None, keepdim=False, **kw) -> Tensor | tuple[Tensor, Tensor]:
        return F.min(self, dim, keepdim, **kw)

    def amax(self, dim=None, keepdim=False, **kw) -> Tensor:
        return F.amax(self, dim, keepdim, **kw)

    def amin(self, dim=None, keepdim=False, **kw) -> Tensor:
        return F.amin(self, dim, keepdim, **kw)

    def argmax(self, dim=None, keepdim=False) -> Tensor:
        return F.argmax(self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False) -> Tensor:
        return F.argmin(self, dim, keepdim)

    def reshape(self, *shape) -> Tensor:
        return F.reshape(self, *shape)

    def view(self, *shape) -> Tensor:
        return F.reshape(self, *shape)

    def view_as(self, other) -> Tensor:
        return F.reshape(self, other.shape)

    def reshape_as(self, other) -> Tensor:
        return F.reshape(self, other.shape)

    def flatten(self, start_dim=0, end_dim=-1) -> Tensor:
        return F.flatten(self, start_dim, end_dim)

    def transpose(self, dim0=-2, dim1=-1) -> Tensor:
        return F.transpose(self, dim0, dim1)

    def t(self) -> Tensor:
        if self.data.ndim > 2:
            raise RuntimeError(f"t: expects a tensor with <= 2 dimensions, got {self.data.ndim}")
        return F.transpose(self, 0, -1) if self.data.ndim == 2 else self

    @property
    def T(self) -> Tensor:
        return F.permute(self, *reversed(range(self.data.ndim)))

    @property
    def mT(self) -> Tensor:
        return F.transpose(self, -2, -1)

    def permute(self, *dims) -> Tensor:
        return F.permute(self, *dims)

    def expand(self, *shape) -> Tensor:
        return F.expand(self, *shape)

    def expand_as(self, other) -> Tensor:
        return F.expand(self, other.shape)

    def squeeze(self, dim=None) -> Tensor:
        return F.squeeze(self, dim)

    def unsqueeze(self, dim) -> Tensor:
        return F.unsqueeze(self, dim)

    def split(self, split_size_or_sections, dim=0) -> tuple[Tensor, ...]:
        return F.split(self, split_size_or_sections, dim)

    def chunk(self, chunks, dim=0) -> tuple[Tensor, ...]:
        return F.chunk(self, chunks, dim)

    def gather(self, dim, index) -> Tensor:
        return F.gather(self, dim, index)

    def where(self, condition, other) -> Tensor:
        return F.where(condition, self, other)

    def masked_fill(self, mask, value) -> Tensor:
        return F.masked_fill(self, mask, value)

    def repeat(self, *sizes) -> Tensor:
        return F.repeat(self, *sizes)

    # torch's method forms of the arithmetic operators and the ops in torch_ops
    def add(self, other, alpha=1) -> Tensor:
        return F.add(self, other if alpha == 1 else other * alpha)

    def sub(self, other, alpha=1) -> Tensor:
        return F.sub(self, other if alpha == 1 else other * alpha)

    def mul(self, other) -> Tensor:
        return F.mul(self, other)

    def div(self, other, rounding_mode=None) -> Tensor:
        return _tops.divide(self, other, rounding_mode=rounding_mode)

    def sin(self) -> Tensor:
        return F.sin(self)

    def cos(self) -> Tensor:
        return F.cos(self)

    def rsqrt(self) -> Tensor:
        return _tops.rsqrt(self)

    def cumsum(self, dim, dtype=None) -> Tensor:
        return _tops.cumsum(self, dim, dtype=dtype)

    def topk(self, k, dim=-1, largest=True, sorted=True):  # noqa: A002
        return _tops.topk(self, k, dim, largest, sorted)

    def sort(self, dim=-1, descending=False, stable=False):
        return _tops.sort(self, dim, descending, stable)

    def argsort(self, dim=-1, descending=False, stable=False) -> Tensor:
        return _tops.argsort(self, dim, descending, stable)

    def tril(self, diagonal=0) -> Tensor:
        return _tops.tril(self, diagonal)

    def triu(self, diagonal=0) -> Tensor:
        return _tops.triu(self, diagonal)

    def narrow(self, dim, start, length) -> Tensor:
        return _tops.narrow(self, dim, start, length)

    def bmm(self, other) -> Tensor:
        return _tops.bmm(self, other)

    def outer(self, other) -> Tensor:
        return _tops.outer(self, other)

    def multinomial(self, num_samples, replacement=False, *, generator=None) -> Tensor:
        return _tops.multinomial(self, num_samples, replacement, generator=generator)


autograd._bind_tensor(Tensor._wrap)


def _raw(o):
    return o.data if isinstance(o, Tensor) else o


def _writer(value):
    def write(a):
        a[...] = _raw(value)

    return write


def _ufunc_writer(ufunc, other):
    o = _raw(other)

    def write(a):
        ufunc(a, o, out=a, casting="same_kind")

    return write


def _raw_index(idx):
    if isinstance(idx, Tensor):
        return idx.data
    if isinstance(idx, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in idx)
    return idx


# ------------------------------------------------------------------ factories
def tensor(data, dtype=None, device=None, requires_grad: bool = False,
           pin_memory: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data``. Python floats get the default dtype; NumPy
    arrays and tensors keep theirs (torch's rule)."""
    _check_device(device, "tensor")
    arr = _to_array(data, dtype)
    if isinstance(data, np.ndarray) and arr is data:
        arr = arr.copy()
    return Tensor(arr, requires_grad=requires_grad)


def from_numpy(arr: np.ndarray) -> Tensor:
    """A tensor that shares memory with ``arr`` (its dtype is kept)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"from_numpy: expected np.ndarray, got {type(arr).__name__}")
    return Tensor._wrap(arr, None, 0)


def _shape(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def _check_device(device, op: str) -> None:
    if device is not None:
        from shendu.device import check_device

        check_device(device, op)


def _new(arr: np.ndarray, device, requires_grad: bool, op: str) -> Tensor:
    _check_device(device, op)
    return Tensor(arr, requires_grad=requires_grad)


def _dt(dtype, like: np.ndarray | None = None) -> np.dtype:
    return like.dtype if (dtype is None and like is not None) else as_dtype(dtype)


def zeros(*shape, dtype=None, device=None, requires_grad=False, out=None) -> Tensor:
    return _new(np.zeros(_shape(shape), _dt(dtype)), device, requires_grad, "zeros")


def ones(*shape, dtype=None, device=None, requires_grad=False, out=None) -> Tensor:
    return _new(np.ones(_shape(shape), _dt(dtype)), device, requires_grad, "ones")


def empty(*shape, dtype=None, device=None, requires_grad=False, out=None) -> Tensor:
    return _new(np.empty(_shape(shape), _dt(dtype)), device, requires_grad, "empty")


def full(shape, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    if dtype is None:  # torch infers it from the fill value: bool, int64 or the default
        v = _raw(fill_value)
        dtype = (np.bool_ if isinstance(v, (bool, np.bool_)) else np.int64
                 if isinstance(v, (int, np.integer)) else None)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    return _new(np.full(shape, _raw(fill_value), as_dtype(dtype)), device, requires_grad,
                "full")


def zeros_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    d = _raw(t)
    return _new(np.zeros(d.shape, _dt(dtype, d)), device, requires_grad, "zeros_like")


def ones_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    d = _raw(t)
    return _new(np.ones(d.shape, _dt(dtype, d)), device, requires_grad, "ones_like")


def empty_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    d = _raw(t)
    return _new(np.empty(d.shape, _dt(dtype, d)), device, requires_grad, "empty_like")


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    d = _raw(t)
    return _new(np.full(d.shape, _raw(fill_value), _dt(dtype, d)), device, requires_grad,
                "full_like")


def eye(n, m=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _new(np.eye(n, m, dtype=as_dtype(dtype)), device, requires_grad, "eye")


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False) -> Tensor:
    start, end, step = (_raw(v) for v in (start, end, step))
    if end is None:
        start, end = 0, start
    arr = np.arange(start, end, step)
    if dtype is not None:
        arr = arr.astype(as_dtype(dtype))
    elif arr.dtype.kind == "f":
        arr = arr.astype(get_default_dtype())
    return _new(arr, device, requires_grad, "arange")


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _new(np.linspace(start, end, steps).astype(as_dtype(dtype)), device,
                requires_grad, "linspace")


def _gen(generator) -> np.random.Generator:
    from shendu.generator import as_numpy_generator

    return as_numpy_generator(generator)


def randn(*shape, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    arr = _gen(generator).standard_normal(_shape(shape)).astype(as_dtype(dtype))
    return _new(arr, device, requires_grad, "randn")


def rand(*shape, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    arr = _gen(generator).random(_shape(shape)).astype(as_dtype(dtype))
    return _new(arr, device, requires_grad, "rand")


def randn_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    d = _raw(t)
    return randn(d.shape, dtype=_dt(dtype, d), device=device, requires_grad=requires_grad)


def rand_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    d = _raw(t)
    return rand(d.shape, dtype=_dt(dtype, d), device=device, requires_grad=requires_grad)


def randint(low, high=None, size=None, *, generator=None, dtype=None, device=None,
            requires_grad=False) -> Tensor:
    """``randint(high, size)`` or ``randint(low, high, size)`` (torch's signatures; ``size``
    a tuple, required), uniform integers in ``[low, high)``, int64 unless ``dtype``."""
    if size is None and isinstance(high, (tuple, list)):  # randint(high, size)
        low, high, size = 0, low, high
    if size is None:
        raise TypeError("randint() missing required argument 'size' (a tuple)")
    if high is None:
        low, high = 0, low
    size = (size,) if isinstance(size, (int, np.integer)) else tuple(size)
    arr = _gen(generator).integers(int(_raw(low)), int(_raw(high)), size=size)
    return _new(arr.astype(np.int64 if dtype is None else as_dtype(dtype)), device,
                requires_grad, "randint")


from shendu import functional as F  # noqa: E402  (the ops need Tensor defined first)
from shendu.functional import torch_ops as _tops  # noqa: E402
