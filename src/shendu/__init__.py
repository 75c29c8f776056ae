"""shendu (深度, "deep"): the classic algorithms of deep learning on NumPy, correct to the
last gradient.

>>> import shendu
>>> x = shendu.tensor([1.0, 2.0], requires_grad=True)
>>> (x * x).sum().backward()
>>> x.grad
tensor([2., 4.])
"""

from shendu.autograd import enable_grad, grad, gradcheck, is_grad_enabled, no_grad, set_grad_enabled  # noqa: I001
from shendu.backend import (
    get_default_dtype,
    get_rng_state,
    manual_seed,
    set_default_dtype,
    set_rng_state,
)
from shendu.tensor import (
    Tensor,
    arange,
    empty,
    eye,
    from_numpy,
    full,
    linspace,
    ones,
    ones_like,
    rand,
    randint,
    randn,
    tensor,
    zeros,
    zeros_like,
)
from shendu import functional  # noqa: E402,I001
from shendu.functional import (  # noqa: E402
    abs,
    cat,
    chunk,
    clamp,
    clip,
    concat,
    exp,
    flatten,
    gather,
    log,
    logsumexp,
    matmul,
    maximum,
    mean,
    minimum,
    pad,
    permute,
    reshape,
    sigmoid,
    split,
    sqrt,
    squeeze,
    stack,
    std,
    sum,
    tanh,
    transpose,
    unsqueeze,
    var,
    where,
)
from shendu.functional import max, min  # noqa: E402
from shendu import data, nn, optim  # noqa: E402
from shendu.io import load, save  # noqa: E402
from shendu import models, train  # noqa: E402

float32 = "float32"
float64 = "float64"
int64 = "int64"

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "from_numpy", "zeros", "ones", "empty", "full", "zeros_like", "ones_like",
    "arange", "linspace", "eye", "randn", "rand", "randint",
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "grad", "gradcheck",
    "manual_seed", "get_default_dtype", "set_default_dtype", "get_rng_state", "set_rng_state",
    "functional", "nn", "optim", "data", "models", "train",
    "abs", "cat", "concat", "chunk", "clamp", "clip", "exp", "flatten", "gather", "log",
    "logsumexp", "matmul", "maximum", "minimum", "mean", "pad", "permute", "reshape", "sigmoid",
    "split", "sqrt", "squeeze", "stack", "std", "sum", "tanh", "transpose", "unsqueeze", "var",
    "where", "max", "min", "float32", "float64", "int64", "__version__",
    "save", "load",
]
