"""``shendu.nn.functional``: torch's name for the differentiable ops
(``import shendu.nn.functional as F``); the same functions as :mod:`shendu.functional`."""

from shendu.functional import *  # noqa: F403
from shendu.functional import __all__  # noqa: F401
