"""Export shendu models to ONNX (opset 18), checked with ``onnx.checker`` and, when
onnxruntime is installed, run against shendu's own outputs.

``import shendu`` does not import this package, and importing it does not import the
``onnx`` package either (the command line registers ``shendu export`` from here); the
first use of :func:`export`, :func:`export_estimator` or the other names below needs
``onnx`` (``pip install 'shendu[onnx]'``). See docs/onnx.md for the supported ops.
"""

from __future__ import annotations

import importlib

__all__ = ["export", "export_estimator", "OPSET", "UnsupportedOperatorError"]

_WHERE = {"export": "_export", "export_estimator": "_estimator", "OPSET": "_graph",
          "UnsupportedOperatorError": "_graph"}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'shendu.onnx' has no attribute {name!r}")
    try:
        import onnx  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("shendu.onnx needs the onnx package: pip install 'shendu[onnx]'"
                          ) from e
    value = getattr(importlib.import_module(f"shendu.onnx.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
