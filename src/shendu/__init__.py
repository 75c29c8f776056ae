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
    get_num_threads,
    get_rng_state,
    manual_seed,
    set_default_dtype,
    set_num_threads,
    set_rng_state,
)
from shendu.tensor import (
    Tensor,
    arange,
    empty,
    empty_like,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    tensor,
    zeros,
    zeros_like,
)
from shendu.device import device, get_default_device, set_default_device  # noqa: E402
from shendu.generator import Generator  # noqa: E402
from shendu import accelerator, backends, cuda  # noqa: E402
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
from shendu.functional import cos, norm, pow, sin, softmax, log_softmax  # noqa: E402
from shendu.functional.torch_ops import (  # noqa: E402
    argsort,
    baddbmm,
    bmm,
    cumsum,
    einsum,
    multinomial,
    narrow,
    outer,
    randperm,
    rsqrt,
    sort,
    topk,
    tril,
    triu,
)
from shendu.functional.torch_ops import divide as div  # noqa: E402
from shendu import data, nn, optim  # noqa: E402
from shendu.io import load, save  # noqa: E402
from shendu import models, train  # noqa: E402

# dtype names, as torch spells them (NumPy dtype names underneath: t.dtype == shendu.long)
float32 = "float32"
float64 = "float64"
int64 = "int64"
float16 = half = "float16"
float = float32  # noqa: A001  (torch's names shadow the builtins inside this namespace)
double = float64
long = int64
int32 = "int32"
int = int32  # noqa: A001
int16 = short = "int16"
int8 = "int8"
uint8 = "uint8"
bool = "bool"  # noqa: A001
complex64 = cfloat = "complex64"
complex128 = cdouble = "complex128"


def __getattr__(name: str):
    if name == "bfloat16":  # through ml_dtypes when it is installed
        try:
            import ml_dtypes
        except ImportError:
            raise AttributeError("shendu.bfloat16 needs the ml_dtypes package (pip install "
                                 "ml_dtypes); NumPy has no bfloat16 of its own") from None
        return ml_dtypes.bfloat16
    raise AttributeError(f"module 'shendu' has no attribute {name!r}")


# torch's module layout: shendu.utils.data is shendu.data (import shendu.utils.data works too)
import sys as _sys  # noqa: E402

from shendu import utils as _utils  # noqa: E402

_utils.data = data
_sys.modules.setdefault("shendu.utils.data", data)
del _sys

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "from_numpy", "zeros", "ones", "empty", "full", "zeros_like", "ones_like",
    "arange", "linspace", "eye", "randn", "rand", "randint",
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "grad", "gradcheck",
    "manual_seed", "get_default_dtype", "set_default_dtype", "get_rng_state", "set_rng_state",
    "set_num_threads", "get_num_threads",
    "functional", "nn", "optim", "data", "models", "train",
    "abs", "cat", "concat", "chunk", "clamp", "clip", "exp", "flatten", "gather", "log",
    "logsumexp", "matmul", "maximum", "minimum", "mean", "pad", "permute", "reshape", "sigmoid",
    "split", "sqrt", "squeeze", "stack", "std", "sum", "tanh", "transpose", "unsqueeze", "var",
    "where", "max", "min", "float32", "float64", "int64", "__version__",
    "save", "load",
    "float16", "half", "float", "double", "long", "int32", "int", "int16", "short", "int8",
    "uint8", "bool", "complex64", "cfloat", "complex128", "cdouble",
    "device", "get_default_device", "set_default_device", "Generator", "accelerator",
    "backends", "cuda", "empty_like", "full_like", "rand_like", "randn_like",
    "cos", "norm", "pow", "sin", "softmax", "log_softmax", "argsort", "baddbmm", "bmm",
    "cumsum", "einsum", "multinomial", "narrow", "outer", "randperm", "rsqrt", "sort",
    "topk", "tril", "triu", "div",
]

from shendu import _malloc  # noqa: E402 - the allocator's policy (glibc; see its docstring)

_malloc._on_import()
