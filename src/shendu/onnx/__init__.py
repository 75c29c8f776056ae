"""Export shendu models to ONNX (opset 18), checked with ``onnx.checker`` and, when
onnxruntime is installed, run against shendu's own outputs.

``import shendu`` does not import this package; importing it needs the ``onnx`` package
(``pip install 'shendu[onnx]'``). See docs/onnx.md for the supported ops.
"""

from __future__ import annotations

try:
    import onnx as _onnx  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("shendu.onnx needs the onnx package: pip install 'shendu[onnx]'") from e

from shendu.onnx._estimator import export_estimator
from shendu.onnx._export import export
from shendu.onnx._graph import OPSET, UnsupportedOperatorError

__all__ = ["export", "export_estimator", "OPSET", "UnsupportedOperatorError"]
