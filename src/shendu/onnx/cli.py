"""``shendu export MODEL OUT.onnx``: a model saved by ``shendu.save`` or ``shendu train``
written as an ONNX file (the logic; the command line registers it with
:func:`add_export`). Importing this module does not import ``onnx``."""

from __future__ import annotations

import argparse
import os

import numpy as np

__all__ = ["add_export", "export_file", "cmd_export"]

_DESCRIPTION = """\
Write a saved model as an ONNX file (opset 18) and check it: with onnx.checker and, when
onnxruntime is installed, by running it against shendu on two inputs.

MODEL is a file of shendu.save or a checkpoint of `shendu train`:
  - a ready model (shendu.models: MLPClassifier, ConvolutionalNeuralNetwork, the recurrent
    models, TransformerClassifier, Perceptron, AttentionMechanism...) is exported with its
    preprocessing: the file takes what predict takes (X, float64; int64 tokens) and gives
    `label` and `probabilities` (classifiers) or `predictions` (regressors); an
    AudioClassifier (`shendu train audio`) takes waveforms X float32 (N, W), zero-padded,
    and their `lengths` int64 (N,); a model built the seed's way gives forward's `output`;
  - a network (nn.Module) is traced on an example input: its shape comes from the first
    layer (Linear, Embedding, RNN/LSTM/GRU) or from --input-shape; axis 0 (and the
    sequence axis of token and recurrent inputs) may change size in the ONNX file.

examples:
  shendu export mlp.safetensors mlp.onnx
  shendu export lenet.shendu lenet.onnx --input-shape 1,1,28,28
  shendu export charlm.shendu charlm.onnx --dynamic 0,1
  shendu export run/best.ckpt speech.onnx        # after `shendu train audio`"""


def add_export(sub, parents) -> None:
    """Register the ``export`` subcommand on an argparse subparsers object."""
    p = sub.add_parser("export", help="export a saved model to ONNX",
                       description=_DESCRIPTION, parents=parents,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a file of shendu.save or `shendu train`")
    p.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--input-shape", metavar="D0,D1,...",
                   help="example input shape for a network (default: from its first layer)")
    p.add_argument("--input-dtype", choices=["float32", "float64", "int64"],
                   help="example input dtype for a network (default: int64 for an Embedding "
                        "first, else the network's dtype)")
    p.add_argument("--dynamic", metavar="AXES",
                   help="input axes that may change size, comma-separated (default: 0, and "
                        "1 for token and recurrent inputs)")
    p.add_argument("--opset", type=int, help="opset to declare (18-21; default 18)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip running the file in ONNX Runtime")
    p.set_defaults(func=cmd_export)


def _error(msg: str) -> Exception:
    try:
        from shendu.cli import CLIError
    except ImportError:  # pragma: no cover - the CLI package is being reorganised
        return ValueError(msg)
    return CLIError(msg)


def _ints(text: str, what: str) -> list[int]:
    try:
        vals = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise _error(f"{what} must be comma-separated integers, got {text!r}") from None
    if not vals:
        raise _error(f"{what} is empty")
    return vals


def _example_for(net, input_shape, input_dtype, dynamic):
    """The example input and dynamic axes of a network: given, or from its first layer."""
    from shendu import nn

    first = next((m for m in net.modules() if isinstance(
        m, (nn.Linear, nn.Embedding, nn.RNN, nn.LSTM, nn.GRU, nn.Conv1d, nn.Conv2d))), None)
    net_dtype = next((np.dtype(p.data.dtype) for p in net.parameters()),
                     np.dtype(np.float32))
    tokens = isinstance(first, nn.Embedding)
    dyn = [0]
    if input_shape is None:
        if isinstance(first, nn.Linear):
            shape = [2, first.in_features]
        elif tokens:
            shape, dyn = [2, 8], [0, 1]
        elif isinstance(first, (nn.RNN, nn.LSTM, nn.GRU)):
            shape = [2, 5, first.input_size] if first.batch_first else [5, 2, first.input_size]
            dyn = [0, 1]
        else:
            kind = type(first).__name__ if first is not None else type(net).__name__
            raise _error(f"can't tell the input shape of this network (its first layer is "
                         f"{kind}); give --input-shape, e.g. 1,1,28,28")
    else:
        shape = input_shape
        if tokens or isinstance(first, (nn.RNN, nn.LSTM, nn.GRU)):
            dyn = [0, 1] if len(shape) >= 2 else [0]
    dtype = np.dtype(input_dtype) if input_dtype else (np.dtype(np.int64) if tokens
                                                       else net_dtype)
    rng = np.random.default_rng(0)
    if dtype.kind in "iu":
        high = first.num_embeddings if tokens else 2
        x = rng.integers(0, high, shape).astype(dtype)
    else:
        x = rng.standard_normal(shape).astype(dtype)
    axes = dynamic if dynamic is not None else dyn
    for a in axes:
        if not -len(shape) <= a < len(shape):
            raise _error(f"--dynamic axis {a} is out of range for an input of shape "
                         f"{tuple(shape)}")
    return x, {"input": {a % len(shape): f"input_dim{a % len(shape)}" for a in axes}}


def export_file(model_path, out_path, *, input_shape=None, input_dtype=None, dynamic=None,
                opset=None, verify: bool = True) -> str:
    """Load ``model_path`` (``shendu.load``; a ``shendu train`` checkpoint's model), export
    it to ``out_path`` and return a one-line summary."""
    import shendu
    from shendu import nn
    from shendu.io import FileFormatError
    from shendu.models._base import BaseEstimator

    if not os.path.isfile(model_path):
        raise _error(f"{model_path}: no such file")
    try:
        obj = shendu.load(model_path)
    except FileFormatError as e:
        raise _error(str(e)) from None
    if isinstance(obj, dict) and "model" in obj:          # a checkpoint (shendu train)
        obj = obj["model"]
    import shendu.onnx as sonnx

    if isinstance(obj, BaseEstimator) and not isinstance(obj, nn.Module):   # ready models
        if input_shape or input_dtype or dynamic is not None:
            raise _error("--input-shape, --input-dtype and --dynamic are for networks; a ready "
                         "model's input is what its predict takes")
        if opset not in (None, sonnx.OPSET):
            raise _error(f"a ready model is exported at opset {sonnx.OPSET} only")
        proto = sonnx.export_estimator(obj, out_path, verify=verify)
    elif isinstance(obj, nn.Module):
        x, dyn = _example_for(obj, input_shape, input_dtype, dynamic)
        proto = sonnx.export(obj, (shendu.Tensor(x),), out_path, input_names=["input"],
                             dynamic_axes=dyn, opset_version=opset, verify=verify)
    else:
        kind = type(obj).__name__
        raise _error(f"{model_path} holds a {kind}; expected a network (nn.Module) or a fitted "
                     "ready model (shendu.models)")

    def sig(vi):
        dims = [d.dim_param or str(d.dim_value) for d in vi.type.tensor_type.shape.dim]
        return f"{vi.name}[{','.join(dims)}]"

    ins = " ".join(sig(v) for v in proto.graph.input)
    outs = " ".join(sig(v) for v in proto.graph.output)
    checked = "checked" if not verify else "checked and run in ONNX Runtime"
    return (f"wrote {out_path}: {type(obj).__name__}, opset {proto.opset_import[0].version}, "
            f"{len(proto.graph.node)} nodes, {ins} -> {outs} ({checked})")


def cmd_export(args) -> int:
    """``shendu export``: the handler of the parsed arguments."""
    from shendu.onnx._graph import UnsupportedOperatorError

    shape = _ints(args.input_shape, "--input-shape") if args.input_shape else None
    dynamic = _ints(args.dynamic, "--dynamic") if args.dynamic else None
    try:
        print(export_file(args.model, args.output, input_shape=shape,
                          input_dtype=args.input_dtype, dynamic=dynamic, opset=args.opset,
                          verify=not args.no_verify))
    except (UnsupportedOperatorError, ValueError, TypeError, ImportError) as e:
        if type(e).__name__ == "CLIError":
            raise
        raise _error(str(e)) from None
    return 0
