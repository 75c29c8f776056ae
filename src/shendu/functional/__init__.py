"""Every differentiable op of shendu (``import shendu.functional as F``)."""

from shendu.functional.activation import *  # noqa: F403
from shendu.functional.activation import __all__ as _a
from shendu.functional.attention import *  # noqa: F403
from shendu.functional.attention import __all__ as _att
from shendu.functional.conv import *  # noqa: F403
from shendu.functional.conv import __all__ as _conv
from shendu.functional.dropout import *  # noqa: F403
from shendu.functional.dropout import __all__ as _d
from shendu.functional.linear import *  # noqa: F403
from shendu.functional.linear import __all__ as _l
from shendu.functional.loss import *  # noqa: F403
from shendu.functional.loss import __all__ as _lo
from shendu.functional.math import *  # noqa: F403
from shendu.functional.math import __all__ as _m
from shendu.functional.normalization import *  # noqa: F403
from shendu.functional.normalization import __all__ as _norm
from shendu.functional.pooling import *  # noqa: F403
from shendu.functional.pooling import __all__ as _pool
from shendu.functional.recurrent import *  # noqa: F403
from shendu.functional.recurrent import __all__ as _rec
from shendu.functional.reduction import *  # noqa: F403
from shendu.functional.reduction import __all__ as _r
from shendu.functional.shape import *  # noqa: F403
from shendu.functional.shape import __all__ as _s
from shendu.functional.sparse import *  # noqa: F403
from shendu.functional.sparse import __all__ as _sp

__all__ = [*_a, *_att, *_conv, *_pool, *_d, *_l, *_lo, *_m, *_norm, *_r, *_rec, *_s, *_sp]
