"""Every bad-input path gives an error that names the op, what it expected and what came."""

import re

import numpy as np
import pytest

import shendu
import shendu.functional as F
from shendu.autograd import gradcheck


def z(*shape, dtype="float32", requires_grad=False):
    return shendu.zeros(*shape, dtype=dtype, requires_grad=requires_grad)


def raises(exc, *fragments):
    """pytest.raises whose message must contain every fragment (literally)."""
    return pytest.raises(exc, match="".join(f"(?=.*{re.escape(f)})" for f in fragments))


@pytest.mark.parametrize("op,fn", [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b), ("pow", lambda a, b: a ** b),
    ("maximum", F.maximum), ("minimum", F.minimum),
])
def test_broadcast_failure_names_op_and_shapes(op, fn):
    with raises(ValueError, f"{op}:", "(3, 4)", "(5,)", "cannot be broadcast"):
        fn(z(3, 4), z(5))


def test_where_and_clamp_broadcast_failures():
    with raises(ValueError, "where:", "(2,)", "(3, 4)", "(5,)"):
        F.where(np.array([True, False]), z(3, 4), z(5))
    with raises(ValueError, "clamp:", "(3, 4)", "(5,)"):
        F.clamp(z(3, 4), z(5))


def test_matmul_mismatch():
    with raises(ValueError, "matmul:", "(32, 28)", "(784, 256)", "28 != 784"):
        z(32, 28) @ z(784, 256)
    with raises(ValueError, "matmul:", "(3,)", "(4,)"):
        F.matmul(z(3), z(4))
    with raises(ValueError, "matmul:", "at least 1-D", "()"):
        F.matmul(shendu.tensor(1.0), z(3))
    with raises(ValueError, "matmul:", "batch dimensions", "(2, 3, 4)", "(5, 4, 2)"):
        z(2, 3, 4) @ z(5, 4, 2)


def test_reshape_view_expand_errors():
    with raises(ValueError, "reshape:", "(4, 5)", "(2, 3, 4)", "24 elements"):
        z(2, 3, 4).reshape(4, 5)
    with raises(ValueError, "reshape:", "(-1, -1)"):
        z(2, 3).view(-1, -1)
    with raises(ValueError, "reshape:", "(5, -1)"):
        z(2, 3).reshape(5, -1)
    with raises(ValueError, "expand:", "(3,)", "(2, 4)"):
        z(3).expand(2, 4)
    with raises(ValueError, "expand:", "-1", "leading"):
        z(3).expand(-1, 3)
    with raises(ValueError, "expand:", "number of sizes"):
        z(2, 3).expand(3)


@pytest.mark.parametrize("op,fn", [
    ("sum", lambda x: x.sum(3)), ("mean", lambda x: x.mean((0, -4))),
    ("var", lambda x: x.var(5)), ("std", lambda x: x.std(3)), ("max", lambda x: x.max(3)),
    ("min", lambda x: x.min(-4)), ("amax", lambda x: x.amax(3)),
    ("logsumexp", lambda x: x.logsumexp(3)), ("prod", lambda x: x.prod(3)),
    ("softmax", lambda x: F.softmax(x, 3)), ("log_softmax", lambda x: F.log_softmax(x, -4)),
    ("transpose", lambda x: x.transpose(0, 3)), ("permute", lambda x: x.permute(0, 1, 3)),
    ("flatten", lambda x: x.flatten(3)), ("unsqueeze", lambda x: x.unsqueeze(5)),
    ("squeeze", lambda x: x.squeeze(3)), ("cat", lambda x: F.cat([x, x], 3)),
    ("stack", lambda x: F.stack([x, x], 5)), ("split", lambda x: x.split(1, 3)),
    ("chunk", lambda x: x.chunk(2, 3)), ("gather", lambda x: x.gather(3, np.zeros((1, 1, 1),
                                                                                 np.int64))),
    ("argmax", lambda x: x.argmax(3)),
])
def test_bad_dim_names_op_and_range(op, fn):
    with raises(IndexError, f"{op}:", "dimension out of range", "but got"):
        fn(z(2, 3, 4))


def test_duplicate_dims_and_non_int_dims():
    with raises(ValueError, "sum:", "more than once"):
        z(2, 3).sum((0, 0))
    with raises(TypeError, "max:", "dim must be an int"):
        z(2, 3).max((0, 1))
    with raises(TypeError, "sum()", "unexpected keyword", "dims"):
        z(2, 3).sum(dims=0)


def test_cat_and_stack_shapes():
    with raises(ValueError, "cat:", "tensor 1", "(2, 5)", "(3, 4)", "except in dim 1"):
        F.cat([z(3, 4), z(2, 5)], 1)
    with raises(ValueError, "cat:", "tensor 1", "(3,)"):
        F.cat([z(3, 4), z(3)])
    with raises(ValueError, "cat:", "non-empty"):
        F.cat([])
    with raises(ValueError, "stack:", "(3, 4)", "(3, 5)", "entry 1"):
        F.stack([z(3, 4), z(3, 5)])


def test_split_chunk_pad_errors():
    with raises(ValueError, "split:", "[1, 2]", "4"):
        z(4, 2).split([1, 2])
    with raises(ValueError, "split:", "positive", "0"):
        z(4).split(0)
    with raises(ValueError, "chunk:", "positive", "0"):
        z(4).chunk(0)
    with raises(ValueError, "pad:", "even number", "(1, 2, 3)"):
        F.pad(z(2, 3), (1, 2, 3))
    with raises(ValueError, "pad:", "negative size", "(-2, -2)"):
        F.pad(z(2, 3), (-2, -2))
    with raises(NotImplementedError, "pad:", "'reflect'"):
        F.pad(z(2, 3), (1, 1), mode="reflect")


def test_gather_and_indexing_errors():
    x = z(2, 3)
    with raises(IndexError, "gather:", "index 3", "dim 1", "size 3"):
        F.gather(x, 1, np.array([[0, 3]]))
    with raises(IndexError, "gather:", "index -1", "size 3"):
        F.gather(x, 1, np.array([[-1, 0]]))
    with raises(TypeError, "gather:", "integer", "float64"):
        F.gather(x, 1, np.array([[0.0]]))
    with raises(ValueError, "gather:", "1 dims", "(2, 3)"):
        F.gather(x, 1, np.array([0, 1]))
    with raises(ValueError, "gather:", "(3, 1)", "larger than", "dim 0"):
        F.gather(x, 1, np.zeros((3, 1), np.int64))
    with raises(IndexError, "getitem:", "(2, 3)"):
        x[5]
    with raises(IndexError, "getitem:", "(2, 3)"):
        x[:, np.array([0, 7])]


def test_backward_errors():
    x = z(3, requires_grad=True)
    with raises(RuntimeError, "backward:", "scalar outputs", "(3,)", "gradient="):
        (x * 2).backward()
    with raises(RuntimeError, "backward:", "gradient 0 has shape (2,)", "expected (3,)"):
        (x * 2).backward(np.ones(2))
    with raises(RuntimeError, "backward:", "element 0", "does not require grad"):
        z(3).sum().backward()
    with raises(RuntimeError, "backward:", "element 1", "does not require grad"):
        shendu.autograd.backward([x.sum(), z(3).sum()])
    y = (x.exp() * 2).sum()
    y.backward()
    with raises(RuntimeError, "backward:", "second time", "retain_graph=True"):
        y.backward()
    with raises(RuntimeError, "grad:", "input 0", "does not require grad"):
        shendu.autograd.grad((x * 2).sum(), [z(3)])


def test_dtype_errors():
    with raises(RuntimeError, "Tensor:", "floating point", "int64"):
        shendu.tensor([1, 2], requires_grad=True)
    with raises(RuntimeError, "requires_grad_:", "floating point", "int64"):
        shendu.tensor([1, 2]).requires_grad_()
    with raises(TypeError, "mean:", "floating point", "int64"):
        shendu.tensor([1, 2]).mean()
    with raises(TypeError, "var:", "floating point", "int64"):
        shendu.tensor([1, 2]).var()
    with raises(TypeError, "gradcheck:", "input 1", "float64", "float32"):
        gradcheck(lambda a, b: a * b, [z(2, dtype="float64", requires_grad=True),
                                       z(2, requires_grad=True)])
    with raises(TypeError, "set_default_dtype", "floating", "int64"):
        shendu.set_default_dtype("int64")
    with raises(TypeError, "unknown dtype", "'float99'"):
        shendu.tensor([1.0], dtype="float99")
    with raises(TypeError, "tensor:", "objects"):
        shendu.tensor([{"a": 1}])


def test_misc_errors():
    with raises(ValueError, "item:", "one-element", "(2,)"):
        z(2).item()
    with raises(ValueError, "clamp:", "min and max"):
        z(2).clamp()
    with raises(ValueError, "gelu:", "approximate", "'exact'"):
        F.gelu(z(2), approximate="exact")
    with raises(ValueError, "dropout:", "between 0 and 1", "1.5"):
        F.dropout(z(2), 1.5)
    with raises(RuntimeError, "max:", "empty"):
        z(0).max()
    with raises(RuntimeError, "amax:", "empty"):
        z(0, 3).amax()
    with raises(RuntimeError, "max:", "empty dimension 0"):
        z(0, 3).max(0)
    with raises(RuntimeError, "t:", "<= 2 dimensions"):
        z(2, 3, 4).t()
    with raises(TypeError, "len()", "0-d"):
        len(shendu.tensor(1.0))
