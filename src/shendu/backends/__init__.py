"""``shendu.backends``: torch's backend switches, answered for NumPy on the CPU."""

from shendu.backends import cudnn, mps

__all__ = ["mps", "cudnn"]
