"""Layers (``shendu.nn``): torch's names, parameter shapes and default init."""

from shendu.nn import init, utils
from shendu.nn.activation import *  # noqa: F403
from shendu.nn.activation import __all__ as _act
from shendu.nn.attention import *  # noqa: F403
from shendu.nn.attention import __all__ as _attn
from shendu.nn.container import *  # noqa: F403
from shendu.nn.container import __all__ as _con
from shendu.nn.conv import *  # noqa: F403
from shendu.nn.conv import __all__ as _conv
from shendu.nn.dropout import *  # noqa: F403
from shendu.nn.dropout import __all__ as _drop
from shendu.nn.linear import *  # noqa: F403
from shendu.nn.linear import __all__ as _lin
from shendu.nn.loss import *  # noqa: F403
from shendu.nn.loss import __all__ as _loss
from shendu.nn.module import Module, Parameter
from shendu.nn.normalization import *  # noqa: F403
from shendu.nn.normalization import __all__ as _norm
from shendu.nn.pooling import *  # noqa: F403
from shendu.nn.pooling import __all__ as _pool
from shendu.nn.recurrent import *  # noqa: F403
from shendu.nn.recurrent import __all__ as _rec
from shendu.nn.sparse import *  # noqa: F403
from shendu.nn.sparse import __all__ as _sparse
from shendu.nn.transformer import *  # noqa: F403
from shendu.nn.transformer import __all__ as _tf

__all__ = ["Module", "Parameter", "init", "utils", *_act, *_attn, *_con, *_conv, *_drop, *_lin,
           *_loss, *_norm, *_pool, *_rec, *_sparse, *_tf]
from shendu.nn import (
           functional,  # noqa: E402,F401  (torch: import torch.nn.functional as F)
           parallel,  # noqa: E402,F401  (DistributedDataParallel)
)
