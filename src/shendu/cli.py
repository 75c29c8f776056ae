"""The ``shendu`` command: ``tour``, ``train``, ``eval``, ``predict``, ``gradcheck``, ``bench``.

Every subcommand has ``--help`` with examples (``shendu train --help``). A problem the user
can fix — a bad argument, a missing or malformed file, data of the wrong shape — ends in one
line on stderr naming it, and a non-zero exit status (2 for a bad command line, 1 otherwise);
``--debug`` shows the full traceback instead.

Checkpoints are shendu files (``shendu.io.save_checkpoint``: safetensors weights and a JSON
description, never pickle) holding the model, the epoch, the training history and where the
data came from, so ``shendu eval`` and ``shendu predict`` need nothing else.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib
import inspect
import math
import os
import re
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser", "CLIError", "load_data", "MODELS", "GRADCHECK_MODELS"]


class CLIError(Exception):
    """A problem the user can fix: reported as one line, without a traceback."""


# ============================================================================ data
@dataclass
class Data:
    """Features and targets, split into train and test halves."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray | None
    X_test: np.ndarray
    y_test: np.ndarray | None


BUILTIN_DATA = {
    "xor": "the four XOR points (train = test)",
    "blobs": "linearly separable 2-D blobs, 2 classes, 160/40",
    "digits": "scikit-learn's 8x8 handwritten digits, 1,438/359",
    "iris": "Fisher's iris, 3 classes, 120/30",
    "adding": "the adding problem of Hochreiter & Schmidhuber (1997), T=30, 2,000/500",
}


def _builtin(name: str) -> Data:
    from shendu.data import datasets as ds

    if name == "xor":
        X, _, y, _ = ds.xor()
        return Data(name, X, y, X, y)
    if name == "adding":
        from shendu.tour import _adding_problem

        Xtr, ytr = _adding_problem(2000, 30, seed=0)
        Xte, yte = _adding_problem(500, 30, seed=1)
        return Data(name, Xtr, ytr, Xte, yte)
    loader = getattr(ds, name)
    try:
        s = loader()
    except ImportError as e:
        raise CLIError(str(e)) from None
    return Data(name, s.X_train, s.y_train, s.X_test, s.y_test)


def _split(name: str, X: np.ndarray, y: np.ndarray, test_size: float, seed: int) -> Data:
    from shendu.data.datasets import stratified_split

    if test_size <= 0:
        return Data(name, X, y, X, y)
    classes = np.unique(y) if y.ndim == 1 and np.issubdtype(y.dtype, np.integer) else None
    if classes is not None and len(classes) <= max(2, len(y) // 2):
        s = stratified_split(X, y, test_size, seed)
        return Data(name, s.X_train, s.y_train, s.X_test, s.y_test)
    rng = np.random.Generator(np.random.PCG64(seed))
    order = rng.permutation(len(X))
    n_test = max(1, int(round(test_size * len(X))))
    te, tr = order[:n_test], order[n_test:]
    return Data(name, X[tr], y[tr], X[te], y[te])


def _labels_as_int(y: np.ndarray, where: str) -> np.ndarray:
    """Whole-number float labels (as CSV gives them) become int64."""
    if y.ndim == 1 and np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) \
            and np.all(y == np.round(y)):
        return y.astype(np.int64)
    return y


def read_csv(path: str, target: str | None, features_only: bool = False):
    """A numeric CSV file (an optional header row): ``(X, y, column names)``. The target is
    the column ``target`` (a name or a 0-based index), by default the last one."""
    with open(path, newline="", encoding="utf-8") as f:
        try:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
        except (csv.Error, UnicodeDecodeError) as e:
            raise CLIError(f"{path}: not a readable CSV file ({e})") from None
    if not rows:
        raise CLIError(f"{path}: the CSV file is empty")

    def numeric(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return False

    header = None
    if not all(numeric(c) for c in rows[0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise CLIError(f"{path}: the CSV file has a header but no data rows")
    width = len(header) if header else len(rows[0])
    data = np.empty((len(rows), width), np.float64)
    for i, r in enumerate(rows):
        line = i + (2 if header else 1)
        if len(r) != width:
            raise CLIError(f"{path}: line {line} has {len(r)} columns, expected {width}")
        for j, c in enumerate(r):
            try:
                data[i, j] = float(c)
            except ValueError:
                raise CLIError(f"{path}: line {line}, column {j + 1}: {c.strip()[:30]!r} is "
                               "not a number") from None
    if features_only:
        return data, None, header
    if width < 2:
        raise CLIError(f"{path}: need at least one feature column and a target column, "
                       f"got {width} column(s)")
    if target is None:
        col = width - 1
    elif target.lstrip("-").isdigit():
        col = int(target) % width if -width <= int(target) < width else -1
        if col < 0:
            raise CLIError(f"{path}: --target {target} is out of range for {width} columns")
    else:
        if not header or target not in header:
            raise CLIError(f"{path}: no column named {target!r}"
                           + (f"; columns are {', '.join(header)}" if header else
                              " (the file has no header row)"))
        col = header.index(target)
    y = _labels_as_int(data[:, col], path)
    X = np.delete(data, col, axis=1)
    return X, y, header


_NPZ_KEYS = [("X", "y"), ("x", "y"), ("features", "labels"), ("data", "target"),
             ("inputs", "targets")]


def read_npz(path: str):
    """An ``.npz`` archive: ``X_train/y_train/X_test/y_test``, or one of the pairs
    ``X/y``, ``features/labels``, ``data/target``, ``inputs/targets``. Object arrays are
    refused (loading them would need pickle)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        raise CLIError(f"{path}: cannot read the .npz archive ({e})") from None
    except (OSError, EOFError) as e:
        raise CLIError(f"{path}: not a valid .npz archive ({e})") from None
    except Exception as e:  # zipfile.BadZipFile and friends
        raise CLIError(f"{path}: not a valid .npz archive ({type(e).__name__}: {e})") from None
    if {"X_train", "y_train", "X_test", "y_test"} <= arrays.keys():
        return arrays["X_train"], arrays["y_train"], arrays["X_test"], arrays["y_test"]
    for xk, yk in _NPZ_KEYS:
        if xk in arrays and yk in arrays:
            return arrays[xk], arrays[yk], None, None
    for xk, _ in _NPZ_KEYS:
        if xk in arrays:
            return arrays[xk], None, None, None
    raise CLIError(f"{path}: expected arrays named X and y (or features/labels, data/target, "
                   f"X_train/y_train/X_test/y_test), found {', '.join(arrays) or 'none'}")


_IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str) -> np.ndarray:
    """An IDX file (the MNIST format, gzipped or not): magic ``00 00 type ndim``, then
    ``ndim`` big-endian uint32 sizes, then the data."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise CLIError(f"{path}: cannot read the IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise CLIError(f"{path}: not an IDX file (bad magic number "
                       f"{raw[:4].hex() if raw else 'empty'})")
    dt, ndim = _IDX_TYPES[raw[2]], raw[3]
    if not 1 <= ndim <= 4 or len(raw) < 4 + 4 * ndim:
        raise CLIError(f"{path}: IDX header is truncated or has {ndim} dimensions")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    need = int(np.prod(dims)) * dt.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != need:
        raise CLIError(f"{path}: IDX header says {'x'.join(map(str, dims))} "
                       f"({need} bytes of data) but the file holds {len(body)} bytes")
    return np.frombuffer(body, dt).reshape(dims).astype(dt.newbyteorder("="))


def _idx_labels_path(path: str) -> str | None:
    for a, b in (("images-idx3", "labels-idx1"), ("images.idx3", "labels.idx1"),
                 ("images", "labels")):
        if a in os.path.basename(path):
            cand = os.path.join(os.path.dirname(path), os.path.basename(path).replace(a, b))
            if os.path.exists(cand):
                return cand
    return None


def read_features(path: str):
    """Features for ``predict``: CSV (all columns), NPZ (X), NPY or IDX."""
    _must_exist(path, "input file")
    kind = _file_kind(path)
    if kind == "csv":
        return read_csv(path, None, features_only=True)[0]
    if kind == "npz":
        return read_npz(path)[0]
    if kind == "npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as e:
            raise CLIError(f"{path}: cannot read the .npy file ({e})") from None
    if kind == "idx":
        return read_idx(path).astype(np.float32) / (255.0 if path.count("images") else 1.0)
    raise CLIError(f"{path}: unknown input format (use .csv, .npz, .npy or IDX)")


def _file_kind(path: str) -> str:
    low = path.lower()
    if low.endswith((".csv", ".csv.gz")):
        return "csv"
    if low.endswith(".npz"):
        return "npz"
    if low.endswith(".npy"):
        return "npy"
    if re.search(r"idx\d(-ubyte)?(\.gz)?$", low) or low.endswith((".idx", ".idx.gz")):
        return "idx"
    if low.endswith((".txt", ".text")):
        return "text"
    return "unknown"


def _must_exist(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise CLIError(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise CLIError(f"{what} {path!r} is a directory, expected a file")


def load_data(spec: str, target: str | None = None, labels: str | None = None,
              test_size: float = 0.2, seed: int = 0) -> Data:
    """A built-in data set by name, or a user's file (CSV, NPZ, IDX images + labels)."""
    if spec in BUILTIN_DATA:
        return _builtin(spec)
    if not any(sep in spec for sep in "/\\.") and not os.path.exists(spec):
        raise CLIError(f"unknown data set {spec!r}: use one of {', '.join(BUILTIN_DATA)} "
                       "or a path to a .csv, .npz or IDX file")
    _must_exist(spec, "data file")
    kind = _file_kind(spec)
    name = os.path.basename(spec)
    if kind == "csv":
        X, y, _ = read_csv(spec, target)
        return _split(name, X, y, test_size, seed)
    if kind == "npz":
        X, y, Xt, yt = read_npz(spec)
        if y is None:
            raise CLIError(f"{spec}: the archive has features but no labels (y)")
        if len(X) != len(y):
            raise CLIError(f"{spec}: X has {len(X)} samples but y has {len(y)}")
        y = _labels_as_int(y, spec)
        if Xt is not None:
            return Data(name, X, y, Xt, _labels_as_int(yt, spec))
        return _split(name, X, y, test_size, seed)
    if kind == "idx":
        X = read_idx(spec)
        lab = labels or _idx_labels_path(spec)
        if lab is None:
            raise CLIError(f"{spec}: no labels file found beside it; name it with --labels")
        _must_exist(lab, "labels file")
        y = read_idx(lab).astype(np.int64)
        if y.ndim != 1 or len(y) != len(X):
            raise CLIError(f"{lab}: expected {len(X)} labels for {spec}, got shape {y.shape}")
        X = X.astype(np.float32) / (255.0 if X.dtype == np.uint8 else 1.0)
        return _split(name, X, y, test_size, seed)
    if kind == "text":
        raise CLIError(f"{spec}: a text file is training data for a character language "
                       "model (CharLM), which this build of shendu does not have yet")
    raise CLIError(f"{spec}: unknown data format (use .csv, .npz or an IDX file)")


# ========================================================================== models
@dataclass(frozen=True)
class ModelSpec:
    """How the CLI drives a ready model: its class in ``shendu.models``, the input it
    takes (``flat`` (N, F), ``image`` (N, C, H, W), ``sequence`` (N, T, F)) and its task."""

    cls: str
    input: str
    task: str
    doc: str


MODELS: dict[str, ModelSpec] = {s.cls.lower(): s for s in [
    ModelSpec("Perceptron", "flat", "classify", "Rosenblatt's perceptron (1958), one-vs-rest"),
    ModelSpec("MLPClassifier", "flat", "classify", "multi-layer perceptron, backpropagation"),
    ModelSpec("MLPRegressor", "flat", "regress", "multi-layer perceptron for regression"),
    ModelSpec("ConvolutionalNeuralNetwork", "image", "classify", "LeNet-style CNN"),
    ModelSpec("RecurrentNeuralNetwork", "sequence", "auto", "Elman RNN (1990)"),
    ModelSpec("LongShortTermMemory", "sequence", "auto", "LSTM (1997)"),
    ModelSpec("GatedRecurrentUnit", "sequence", "auto", "GRU (2014)"),
    ModelSpec("TransformerClassifier", "sequence", "classify", "transformer encoder (2017)"),
]}
_ALIASES = {"mlp": "mlpclassifier", "cnn": "convolutionalneuralnetwork",
            "rnn": "recurrentneuralnetwork", "lstm": "longshorttermmemory",
            "gru": "gatedrecurrentunit", "transformer": "transformerclassifier"}

_HYPER = {"epochs": ("epochs", "max_epochs", "max_iter", "n_epochs"),
          "lr": ("learning_rate", "lr", "learning_rate_init", "eta0"),
          "batch_size": ("batch_size",),
          "seed": ("random_state", "seed")}


def _model_spec(name: str) -> tuple[ModelSpec, type]:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in MODELS:
        known = ", ".join(s.cls for s in MODELS.values())
        raise CLIError(f"unknown model {name!r}; models: {known}")
    spec = MODELS[key]
    import shendu.models as sm

    cls = getattr(sm, spec.cls, None)
    if cls is None:
        have = [s.cls for s in MODELS.values() if hasattr(sm, s.cls)]
        raise CLIError(f"model {spec.cls} is not available in this build of shendu yet; "
                       f"available: {', '.join(have)}")
    return spec, cls


def _construct(cls: type, args) -> object:
    """The model with the command line's hyper-parameters mapped onto its own names."""
    params = inspect.signature(cls.__init__).parameters
    kw: dict = {}
    for ours, theirs in _HYPER.items():
        value = getattr(args, ours, None)
        if value is None:
            continue
        for t in theirs:
            if t in params:
                kw[t] = value
                break
    if "verbose" in params:
        kw["verbose"] = 0
    if "random_state" in params and "random_state" not in kw:
        kw["random_state"] = 0
    if getattr(args, "hidden", None) and "hidden_layer_sizes" in params:
        kw["hidden_layer_sizes"] = tuple(args.hidden)
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise CLIError(f"{cls.__name__}: {e}") from None


def _shape_for(spec: ModelSpec, X: np.ndarray, where: str) -> np.ndarray:
    """Bring ``X`` to the layout the model takes, or say why it cannot be."""
    X = np.asarray(X)
    if X.dtype == object or not np.issubdtype(X.dtype, np.number):
        raise CLIError(f"{where}: features must be numeric, got dtype {X.dtype}")
    if X.ndim == 0 or len(X) == 0:
        raise CLIError(f"{where}: no samples (features of shape {X.shape})")
    if spec.input == "flat":
        if X.ndim == 1:
            raise CLIError(f"{where}: {spec.cls} expects features of shape (n_samples, "
                           f"n_features), got shape {X.shape}")
        return X.reshape(len(X), -1)
    if spec.input == "image":
        if X.ndim == 2:
            side = int(round(math.sqrt(X.shape[1])))
            if side * side != X.shape[1]:
                raise CLIError(f"{where}: {spec.cls} expects images (N, H, W) or (N, C, H, W); "
                               f"got flat features of shape {X.shape} that are not square")
            return X.reshape(len(X), side, side)
        if X.ndim not in (3, 4):
            raise CLIError(f"{where}: {spec.cls} expects images (N, H, W) or (N, C, H, W), "
                           f"got shape {X.shape}")
        return X
    if X.ndim == 2:
        side = int(round(math.sqrt(X.shape[1])))
        if side * side != X.shape[1]:
            raise CLIError(f"{where}: {spec.cls} expects sequences (N, T, F), got shape "
                           f"{X.shape}")
        return X.reshape(len(X), side, side)  # images read row by row
    if X.ndim != 3:
        raise CLIError(f"{where}: {spec.cls} expects sequences (N, T, F), got shape {X.shape}")
    return X


def _is_classifier(model) -> bool:
    return getattr(model, "_estimator_type", None) == "classifier"


def _metrics(model, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    pred = np.asarray(model.predict(X))
    if _is_classifier(model):
        out = {"accuracy": float(np.mean(pred == y)), "correct": int(np.sum(pred == y)),
               "n": len(y)}
        if hasattr(model, "predict_proba"):
            try:
                p = np.asarray(model.predict_proba(X), np.float64)
                idx = np.searchsorted(np.asarray(model.classes_), y)
                ok = (idx < p.shape[1])
                idx = np.minimum(idx, p.shape[1] - 1)
                ok &= np.asarray(model.classes_)[idx] == y
                pr = np.where(ok, p[np.arange(len(y)), idx], 0.0)
                out["log_loss"] = float(-np.mean(np.log(np.clip(pr, 1e-15, 1.0))))
            except (AttributeError, ValueError):
                pass
        return out
    y = np.asarray(y, np.float64).reshape(pred.shape)
    err = pred - y
    var = float(np.var(y))
    return {"mse": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err))),
            "r2": 1.0 - float(np.mean(err ** 2)) / var if var > 0 else float("nan"),
            "n": len(y)}


def _format_metrics(m: dict) -> str:
    if "accuracy" in m:
        s = f"accuracy {m['accuracy']:.4f} ({m['correct']}/{m['n']})"
        if "log_loss" in m:
            s += f"  log-loss {m['log_loss']:.4f}"
        return s
    return f"MSE {m['mse']:.6g}  MAE {m['mae']:.6g}  R^2 {m['r2']:.4f}  (n={m['n']})"


# ---------------------------------------------------------------- checkpoints
def _class_path(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _resolve(path: str, file: str) -> type:
    if not isinstance(path, str) or not re.fullmatch(r"shendu(\.[A-Za-z_]\w*)+", path):
        raise CLIError(f"{file}: checkpoint names an unknown class {str(path)[:80]!r}")
    mod, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError):
        raise CLIError(f"{file}: checkpoint names a class this shendu does not have: "
                       f"{path}") from None
    if not isinstance(cls, type):
        raise CLIError(f"{file}: {path} is not a class")
    return cls


def pack_model(model) -> dict:
    """A fitted model as a state tree for ``shendu.io.save_checkpoint``: through the model's
    own ``_shendu_state`` when it has one, else its constructor parameters and fitted
    attributes (arrays, numbers, strings, lists, dicts, modules and optimizers)."""
    from shendu.io import encode_config
    from shendu.nn.module import Module
    from shendu.optim import Optimizer

    if hasattr(model, "_shendu_state"):
        tensors, extra = model._shendu_state()
        return {"via": "shendu_state", "class": _class_path(model), "tensors": dict(tensors),
                "extra": extra}
    attrs, modules, optimizers = {}, {}, {}
    for k, v in vars(model).items():
        if isinstance(v, Module):
            modules[k] = {"config": encode_config(v), "state": dict(v.state_dict())}
        elif isinstance(v, Optimizer):
            optimizers[k] = {"class": _class_path(v), "defaults": dict(v.defaults),
                             "state": v.state_dict()}
        elif isinstance(v, dict) and type(v) is not dict:
            attrs[k] = {"__mapping__": _class_path(v), "items": dict(v),
                        "epochs": list(getattr(v, "epochs", []))}
        else:
            attrs[k] = v
    if len(optimizers) and len(modules) != 1:
        raise CLIError(f"cannot checkpoint {type(model).__name__}: it has optimizers but "
                       f"{len(modules)} modules")
    return {"via": "vars", "class": _class_path(model), "attrs": attrs, "modules": modules,
            "optimizers": optimizers}


def unpack_model(tree: dict, file: str):
    """Inverse of :func:`pack_model`."""
    from shendu.io import decode_config
    from shendu.nn.module import Module
    from shendu.optim import Optimizer

    if not isinstance(tree, dict) or "class" not in tree:
        raise CLIError(f"{file}: the checkpoint holds no model")
    cls = _resolve(tree["class"], file)
    if tree.get("via") == "shendu_state":
        return cls._shendu_restore(tree["tensors"], tree["extra"])
    obj = cls.__new__(cls)
    for k, v in tree.get("attrs", {}).items():
        if isinstance(v, dict) and "__mapping__" in v:
            m = _resolve(v["__mapping__"], file)()
            m.update(v["items"])
            if hasattr(m, "epochs"):
                m.epochs = list(v.get("epochs", []))
            v = m
        elif isinstance(v, list) and k == "hidden_layer_sizes":
            v = tuple(v)
        setattr(obj, k, v)
    module = None
    for k, m in tree.get("modules", {}).items():
        module = decode_config(m["config"], file)
        if not isinstance(module, Module):
            raise CLIError(f"{file}: {k} is not a module")
        module.load_state_dict({n: np.asarray(a) for n, a in m["state"].items()})
        setattr(obj, k, module)
    for k, o in tree.get("optimizers", {}).items():
        ocls = _resolve(o["class"], file)
        if not issubclass(ocls, Optimizer) or module is None:
            raise CLIError(f"{file}: cannot rebuild the optimizer {k}")
        opt = ocls(module.parameters(), **o["defaults"])
        opt.load_state_dict(o["state"])
        setattr(obj, k, opt)
    return obj


def save_model_checkpoint(path: str, model, info: dict) -> None:
    from shendu.io import save_checkpoint

    save_checkpoint(path, cli=info, model=pack_model(model))


def load_model_checkpoint(path: str):
    """``(model, info)`` from a checkpoint written by ``shendu train``."""
    from shendu.io import FileFormatError, load_checkpoint

    _must_exist(path, "checkpoint")
    try:
        state = load_checkpoint(path)
    except FileFormatError as e:
        raise CLIError(str(e)) from None
    if "cli" not in state or "model" not in state:
        raise CLIError(f"{path}: not a checkpoint written by `shendu train`")
    try:
        model = unpack_model(state["model"], path)
    except CLIError:
        raise
    except Exception as e:
        raise CLIError(f"{path}: cannot rebuild the model ({type(e).__name__}: {e})") from None
    return model, state["cli"]


# ======================================================================= commands
def _cmd_tour(args) -> int:
    from shendu.tour import run_tour

    res = run_tour(quick=args.quick, only=args.only,
                   out=None if args.no_report else args.out, debug=args.debug)
    if res.failed:
        raise CLIError(f"tour: chapter(s) {', '.join(res.failed)} failed (see the table; "
                       "--debug shows the traceback)")
    return 0


def _cmd_train(args) -> int:
    import warnings

    import shendu
    from shendu.utils import progress

    spec, cls = _model_spec(args.model)
    for name in ("epochs", "batch_size"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.lr is not None and not args.lr > 0:
        raise CLIError(f"--lr must be > 0, got {args.lr}")
    data = load_data(args.data, args.target, args.labels, args.test_size, args.seed or 0)
    if data.y_train is None:
        raise CLIError(f"{args.data}: no labels to train on")
    Xtr = _shape_for(spec, data.X_train, args.data)
    Xte = _shape_for(spec, data.X_test, args.data)
    ytr, yte = data.y_train, data.y_test
    if spec.task == "classify" and not np.issubdtype(np.asarray(ytr).dtype, np.integer):
        raise CLIError(f"{args.data}: {spec.cls} is a classifier and needs whole-number class "
                       f"labels, got {np.asarray(ytr).dtype} targets (use MLPRegressor)")
    shendu.manual_seed(args.seed or 0)
    epochs = args.epochs
    start_epoch, history = 0, []
    if args.resume:
        model, info = load_model_checkpoint(args.resume)
        if info.get("model") != spec.cls:
            raise CLIError(f"{args.resume}: the checkpoint holds a {info.get('model')}, not a "
                           f"{spec.cls}")
        start_epoch, history = int(info.get("epoch", 0)), list(info.get("history", []))
        if isinstance(info.get("rng"), dict):
            shendu.set_rng_state(info["rng"])
        if epochs is None:
            epochs = start_epoch + 1
        if epochs <= start_epoch:
            raise CLIError(f"{args.resume} is at epoch {start_epoch}; ask for --epochs > "
                           f"{start_epoch} to train further")
        if not hasattr(model, "partial_fit"):
            raise CLIError(f"{spec.cls} cannot resume training (it has no partial_fit)")
    else:
        model = _construct(cls, args)
        if epochs is None:
            epochs = 20
    os.makedirs(args.out, exist_ok=True)
    info = {"model": spec.cls, "data": args.data, "input": spec.input,
            "n_features": list(Xtr.shape[1:]), "seed": args.seed or 0,
            "target": args.target, "labels": args.labels, "test_size": args.test_size}
    last, best = os.path.join(args.out, "last.ckpt"), os.path.join(args.out, "best.ckpt")
    key = "accuracy" if spec.task == "classify" else "mse"
    best_val = None
    for h in history:
        v = h.get(f"val_{key}")
        if v is not None and (best_val is None or (v > best_val if key == "accuracy"
                                                   else v < best_val)):
            best_val = v
    t0 = time.perf_counter()
    classes = np.unique(ytr) if spec.task == "classify" else None
    bar = progress(range(start_epoch, epochs), desc=f"{spec.cls} on {data.name}",
                   total=epochs - start_epoch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in bar:
            try:
                if hasattr(model, "partial_fit"):
                    if classes is not None and epoch == 0:
                        model.partial_fit(Xtr, ytr, classes=classes)
                    else:
                        model.partial_fit(Xtr, ytr)
                else:
                    model.fit(Xtr, ytr)
            except (ValueError, TypeError) as e:
                raise CLIError(f"{spec.cls} on {args.data}: {e}") from None
            tr, te = _metrics(model, Xtr, ytr), _metrics(model, Xte, yte)
            row = {"epoch": epoch + 1, key: tr[key], f"val_{key}": te[key]}
            history.append(row)
            bar.set_postfix({key: f"{tr[key]:.4g}", f"val_{key}": f"{te[key]:.4g}"})
            info.update(epoch=epoch + 1, history=history, rng=shendu.get_rng_state())
            save_model_checkpoint(last, model, info)
            better = best_val is None or (te[key] > best_val if key == "accuracy"
                                          else te[key] < best_val)
            if better:
                best_val = te[key]
                save_model_checkpoint(best, model, info)
            if not hasattr(model, "partial_fit"):
                break
    seconds = time.perf_counter() - t0
    print(f"{spec.cls} on {data.name}: {len(Xtr)} train / {len(Xte)} test, "
          f"epochs {start_epoch + 1}-{history[-1]['epoch']}, {seconds:.1f} s")
    print(f"train: {_format_metrics(_metrics(model, Xtr, ytr))}")
    print(f"test:  {_format_metrics(_metrics(model, Xte, yte))}")
    print(f"checkpoints: {last} (last), {best} (best {key} {best_val:.4g})")
    return 0


def _cmd_eval(args) -> int:
    model, info = load_model_checkpoint(args.checkpoint)
    spec = MODELS[info["model"].lower()]
    data_spec = args.data or info.get("data")
    if not data_spec:
        raise CLIError("no data: pass --data NAME|PATH")
    data = load_data(data_spec, args.target if args.target is not None else info.get("target"),
                     args.labels or info.get("labels"), info.get("test_size", 0.2),
                     info.get("seed", 0))
    split = args.split
    X, y = (data.X_test, data.y_test) if split == "test" else (data.X_train, data.y_train)
    if y is None:
        raise CLIError(f"{data_spec}: no labels to evaluate against")
    X = _shape_for(spec, X, data_spec)
    want = tuple(info.get("n_features", X.shape[1:]))
    if tuple(X.shape[1:]) != want:
        raise CLIError(f"{data_spec}: the model was trained on inputs of shape (N, "
                       f"{', '.join(map(str, want))}), got {X.shape}")
    try:
        m = _metrics(model, X, y)
    except ValueError as e:
        raise CLIError(f"{data_spec}: {e}") from None
    print(f"{info['model']} (epoch {info.get('epoch')}) on {data.name} [{split}, "
          f"{len(X)} samples]")
    print(_format_metrics(m))
    return 0


def _cmd_predict(args) -> int:
    model, info = load_model_checkpoint(args.checkpoint)
    spec = MODELS[info["model"].lower()]
    X = _shape_for(spec, read_features(args.input), args.input)
    want = tuple(info.get("n_features", X.shape[1:]))
    if tuple(X.shape[1:]) != want:
        if spec.input == "flat" and X.ndim == 2 and X.shape[1] == want[0] + 1:
            X = X[:, :want[0]] if info.get("target") is None else X  # drop a label column
        if tuple(X.shape[1:]) != want:
            raise CLIError(f"{args.input}: the model takes inputs of shape (N, "
                           f"{', '.join(map(str, want))}), got {X.shape}")
    try:
        out = np.asarray(model.predict_proba(X) if args.proba else model.predict(X))
    except (ValueError, AttributeError) as e:
        raise CLIError(f"{args.input}: {e}") from None
    if args.output:
        if args.output.endswith(".npy"):
            np.save(args.output, out, allow_pickle=False)
        else:
            np.savetxt(args.output, out.reshape(len(out), -1), delimiter=",",
                       fmt="%d" if np.issubdtype(out.dtype, np.integer) else "%.6g")
        print(f"wrote {len(out)} predictions to {args.output}")
    else:
        for row in out.reshape(len(out), -1):
            print(",".join(str(int(v)) if np.issubdtype(out.dtype, np.integer) else f"{v:.6g}"
                           for v in row))
    return 0


# -------------------------------------------------------------------- gradcheck
def _gc_models():
    """Small float64 networks, one per family: ``name -> (build, input, target, loss)``."""
    import shendu
    from shendu import nn

    rng = np.random.Generator(np.random.PCG64(0))

    def seq(x, T=5, F=3):
        return rng.standard_normal((x, T, F))

    class LastStep(nn.Module):
        def __init__(self, rnn, h, k):
            super().__init__()
            self.rnn, self.head = rnn, nn.Linear(h, k)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(out[:, -1])

    class MeanHead(nn.Module):
        def __init__(self, body, d, k):
            super().__init__()
            self.body, self.head = body, nn.Linear(d, k)

        def forward(self, x):
            return self.head(self.body(x).mean(dim=1))

    class SelfAttn(nn.Module):
        def __init__(self, d, k):
            super().__init__()
            self.attn, self.head = nn.MultiheadAttention(d, 2, batch_first=True), nn.Linear(d, k)

        def forward(self, x):
            out, _ = self.attn(x, x, x, need_weights=False)
            return self.head(out.mean(dim=1))

    y3 = rng.integers(0, 3, 4)
    return {
        "mlp": ("nn.Linear", lambda: nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)),
                rng.standard_normal((4, 4)), y3),
        "cnn": ("nn.Conv2d", lambda: nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(3 * 3 * 3, 3)), rng.standard_normal((4, 1, 6, 6)), y3),
        "rnn": ("nn.RNN", lambda: LastStep(nn.RNN(3, 4, batch_first=True), 4, 3), seq(4), y3),
        "lstm": ("nn.LSTM", lambda: LastStep(nn.LSTM(3, 4, batch_first=True), 4, 3), seq(4),
                 y3),
        "gru": ("nn.GRU", lambda: LastStep(nn.GRU(3, 4, batch_first=True), 4, 3), seq(4), y3),
        "attention": ("nn.MultiheadAttention", lambda: SelfAttn(4, 3), seq(4, 5, 4), y3),
        "transformer": ("nn.TransformerEncoderLayer", lambda: MeanHead(
            nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, activation="gelu",
                                       batch_first=True), 4, 3), seq(4, 5, 4), y3),
    }, shendu


GRADCHECK_MODELS = ("mlp", "cnn", "rnn", "lstm", "gru", "attention", "transformer")
_GC_ALIASES = {"mlpclassifier": "mlp", "mlpregressor": "mlp", "neuralnetwork": "mlp",
               "multilayerperceptron": "mlp", "convolutionalneuralnetwork": "cnn",
               "recurrentneuralnetwork": "rnn", "longshorttermmemory": "lstm",
               "gatedrecurrentunit": "gru", "attentionmechanism": "attention",
               "transformerclassifier": "transformer"}


def gradcheck_model(model, x: np.ndarray, y: np.ndarray, eps: float = 1e-6,
                    max_elements: int | None = None, seed: int = 0) -> list[tuple]:
    """Central differences against backpropagation for every parameter of ``model``
    (float64): ``[(name, shape, worst relative error, elements checked)]``.

    The relative error of one element is ``|a - n| / max(|a|, |n|, 1e-8)`` where ``a`` is
    the analytic and ``n`` the numerical derivative of the cross-entropy loss (the floor
    keeps derivatives that are zero up to rounding from counting as large relative errors).
    """
    import shendu
    from shendu import nn

    loss_fn = nn.CrossEntropyLoss()
    xt = shendu.from_numpy(np.ascontiguousarray(x, np.float64))

    def loss() -> float:
        with shendu.no_grad():
            return float(loss_fn(model(xt), y).item())

    model.zero_grad()
    loss_fn(model(xt), y).backward()
    rng = np.random.Generator(np.random.PCG64(seed))
    out = []
    for name, p in model.named_parameters():
        if p.grad is None:
            out.append((name, p.data.shape, float("nan"), 0))
            continue
        g = np.asarray(p.grad.data, np.float64).reshape(-1)
        flat = p.data.reshape(-1)
        idx = np.arange(flat.size)
        if max_elements is not None and flat.size > max_elements:
            idx = np.sort(rng.choice(flat.size, max_elements, replace=False))
        worst = 0.0
        for i in idx:
            old = flat[i]
            flat[i] = old + eps
            lp = loss()
            flat[i] = old - eps
            lm = loss()
            flat[i] = old
            n = (lp - lm) / (2 * eps)
            worst = max(worst, abs(g[i] - n) / max(abs(g[i]), abs(n), 1e-8))
        out.append((name, p.data.shape, worst, len(idx)))
    return out


def _cmd_gradcheck(args) -> int:
    name = args.model.lower()
    if name == "perceptron":
        raise CLIError("Perceptron learns by Rosenblatt's mistake-driven rule, not by "
                       "gradients: there is nothing to gradcheck (try mlp)")
    name = _GC_ALIASES.get(name, name)
    models, shendu = _gc_models()
    if name not in models:
        raise CLIError(f"unknown model {args.model!r} for gradcheck; choose one of "
                       f"{', '.join(GRADCHECK_MODELS)}")
    need, build, x, y = models[name]
    from shendu import nn

    if not hasattr(nn, need.split(".")[1]):
        raise CLIError(f"gradcheck {name}: this build of shendu has no shendu.{need} yet")
    shendu.manual_seed(args.seed)
    model = build().double()
    model.eval()
    t0 = time.perf_counter()
    rows = gradcheck_model(model, x, y, eps=args.eps, max_elements=args.max_elements,
                           seed=args.seed)
    worst = max((r[2] for r in rows if not math.isnan(r[2])), default=0.0)
    width = max(len(r[0]) for r in rows)
    print(f"gradcheck {name}: float64, central differences (eps={args.eps:g}) vs "
          f"backpropagation, cross-entropy loss on a batch of {len(x)}")
    print(f"{'parameter'.ljust(width)}  {'shape':<14} {'checked':>7}  worst rel. error")
    for pname, shape, err, n in rows:
        flag = "" if err <= args.tol else "   <-- FAIL" if not math.isnan(err) else "  (no grad)"
        print(f"{pname.ljust(width)}  {str(tuple(shape)):<14} {n:>7}  {err:.2e}{flag}")
    ok = worst <= args.tol and not any(math.isnan(r[2]) for r in rows)
    print(f"{'PASS' if ok else 'FAIL'}: worst relative error {worst:.2e} "
          f"(tolerance {args.tol:g}), {sum(r[3] for r in rows)} derivatives in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0 if ok else 1


# ------------------------------------------------------------------------ bench
def _benchmarks_dir(given: str | None) -> Path:
    if given:
        d = Path(given)
        if not d.is_dir():
            raise CLIError(f"benchmarks folder {given!r} does not exist")
        return d
    import shendu

    for cand in (Path(shendu.__file__).resolve().parents[2] / "benchmarks",
                 Path.cwd() / "benchmarks"):
        if cand.is_dir() and list(cand.glob("bench_*.py")):
            return cand
    raise CLIError("no benchmarks/ folder found (it is in a clone of the shendu repository; "
                   "pass --dir PATH)")


def _cmd_bench(args) -> int:
    import importlib.util

    d = _benchmarks_dir(args.dir)
    scripts = sorted(d.glob("bench_*.py"))
    names = [s.stem[len("bench_"):] for s in scripts]
    if args.list:
        for n, s in zip(names, scripts):
            print(f"{n:<14} {s}")
        return 0
    if args.only:
        unknown = [o for o in args.only if o not in names]
        if unknown:
            raise CLIError(f"unknown benchmark {unknown[0]!r}; available: {', '.join(names)}")
        scripts = [s for n, s in zip(names, scripts) if n in args.only]
    have_torch = importlib.util.find_spec("torch") is not None and not args.no_torch
    if not have_torch:
        print("torch is not installed (or --no-torch): timing shendu alone")
    steps, repeats = (10, 2) if args.quick else (args.steps, args.repeats)
    failed = 0
    summary = []
    for s in scripts:
        cmd = [sys.executable, str(s), "--steps", str(steps), "--repeats", str(repeats),
               "--no-memory"] + ([] if have_torch else ["--no-torch"])
        print(f"== {s.stem[len('bench_'):]}: {' '.join(['python', s.name, *cmd[2:]])}",
              flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(d))
        if r.returncode == 2 and "unrecognized arguments" in r.stderr:
            r = subprocess.run([sys.executable, str(s)], capture_output=True, text=True,
                               cwd=str(d))
        if r.stdout:
            print(r.stdout.rstrip(), flush=True)
        if r.returncode != 0:
            failed += 1
            last = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
            print(f"   failed (exit {r.returncode}): {last}")
            continue
        for line in r.stdout.splitlines():
            m = re.search(r"^(\S+)\s+shendu\s+([\d.]+) steps/s(?:.*?torch\s+([\d.]+) steps/s"
                          r".*?shendu/torch ([\d.]+)x)?", line)
            if m:
                summary.append(m.groups())
    if summary:
        print("\nworkload      shendu steps/s   torch steps/s   shendu/torch")
        for name, s_rate, t_rate, ratio in summary:
            print(f"{name:<13} {float(s_rate):>14.1f}   "
                  f"{float(t_rate) if t_rate else float('nan'):>13.1f}   "
                  f"{(ratio + 'x') if ratio else '-':>12}")
    if failed:
        raise CLIError(f"{failed} of {len(scripts)} benchmark(s) failed")
    return 0


# ========================================================================== parser
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``shendu train: error: ... (see shendu train --help)``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_EPILOGS = {
    "tour": """examples:
  shendu tour                       # every chapter (about 3 minutes on 2 cores)
  shendu tour --quick               # small budgets (under a minute)
  shendu tour --only lstm --out tour-lstm
chapters: {chapters}""",
    "train": """examples:
  shendu train mlp --data digits --epochs 20 --out runs/mlp
  shendu train Perceptron --data blobs --epochs 5
  shendu train MLPRegressor --data my.csv --target price --lr 1e-3 --out runs/price
  shendu train mlp --data digits --epochs 30 --resume runs/mlp/last.ckpt --out runs/mlp
  shendu train mlp --data train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz
models: {models}
built-in data: {data}
files: .csv (numeric; target = last column or --target), .npz (X, y or
X_train/y_train/X_test/y_test), IDX images (+ labels file)""",
    "eval": """examples:
  shendu eval runs/mlp/best.ckpt                  # the data it was trained on, test split
  shendu eval runs/mlp/best.ckpt --data digits --split train
  shendu eval runs/price/last.ckpt --data holdout.csv --target price""",
    "predict": """examples:
  shendu predict runs/mlp/best.ckpt new.csv                # one prediction per line
  shendu predict runs/mlp/best.ckpt new.npy --output pred.csv
  shendu predict runs/mlp/best.ckpt new.npz --proba --output proba.npy""",
    "gradcheck": """examples:
  shendu gradcheck mlp
  shendu gradcheck lstm --max-elements 50
  shendu gradcheck transformer --tol 1e-6
models: {gc}""",
    "bench": """examples:
  shendu bench                 # every workload in benchmarks/
  shendu bench --only mlp --steps 100
  shendu bench --quick --no-torch
  shendu bench --list""",
}


def build_parser() -> argparse.ArgumentParser:
    from shendu import __version__
    from shendu.tour import CHAPTERS

    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog="shendu",
                description="shendu (深度): the classic algorithms of deep learning on NumPy.",
                epilog="examples:\n  shendu tour\n  shendu train mlp --data digits\n"
                       "  shendu gradcheck lstm\n  shendu COMMAND --help",
                formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"shendu {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name, help_, desc, **fmtargs):
        return sub.add_parser(name, help=help_, description=desc, parents=[common],
                              epilog=_EPILOGS[name].format(**fmtargs), formatter_class=fmt)

    t = add("tour", "train the classic algorithms on built-in data, show their famous results",
            "Train each classic algorithm of deep learning on its classic task (built-in data, "
            "no network), print a table of results and write pictures and report.html.",
            chapters=", ".join(CHAPTERS))
    t.add_argument("--quick", action="store_true", help="small budgets (under a minute)")
    t.add_argument("--only", metavar="NAME", choices=list(CHAPTERS),
                   help="run one chapter: %(choices)s")
    t.add_argument("--out", metavar="DIR", default="shendu-tour",
                   help="folder for the pictures and report.html (default: %(default)s)")
    t.add_argument("--no-report", action="store_true", help="print the table only")
    t.set_defaults(func=_cmd_tour)

    tr = add("train", "train a ready model on built-in data or your file",
             "Train a ready model (shendu.models) and write checkpoints into --out: "
             "last.ckpt after every epoch and best.ckpt (best test score).",
             models=", ".join(s.cls for s in MODELS.values()) + " (aliases: "
             + ", ".join(_ALIASES) + ")",
             data=", ".join(BUILTIN_DATA))
    tr.add_argument("model", metavar="MODEL", help="model name, e.g. mlp or Perceptron")
    tr.add_argument("--data", required=True, metavar="NAME|PATH",
                    help="built-in data set name or a .csv/.npz/IDX file")
    tr.add_argument("--target", metavar="COL", help="CSV target column (name or index; "
                    "default: last)")
    tr.add_argument("--labels", metavar="PATH", help="IDX labels file (default: found "
                    "beside the images by the MNIST naming)")
    tr.add_argument("--test-size", type=float, default=0.2, metavar="F",
                    help="held-out fraction of a file without a test split (default 0.2)")
    tr.add_argument("--epochs", type=int, help="epochs in all (default 20; with --resume, "
                    "the total to reach)")
    tr.add_argument("--lr", type=float, help="learning rate (model default if omitted)")
    tr.add_argument("--batch-size", type=int, help="mini-batch size (model default)")
    tr.add_argument("--hidden", type=int, nargs="+", metavar="N",
                    help="hidden layer sizes of an MLP, e.g. --hidden 128 64")
    tr.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tr.add_argument("--out", metavar="DIR", default="shendu-run",
                    help="folder for checkpoints (default: %(default)s)")
    tr.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint")
    tr.set_defaults(func=_cmd_train)

    e = add("eval", "print a checkpoint's metrics on data",
            "Evaluate a checkpoint written by `shendu train`: accuracy (and log-loss) for "
            "classifiers, MSE/MAE/R^2 for regressors.")
    e.add_argument("checkpoint", metavar="CKPT")
    e.add_argument("--data", metavar="NAME|PATH", help="default: the data it was trained on")
    e.add_argument("--split", choices=["test", "train"], default="test",
                   help="which half of the data (default: test)")
    e.add_argument("--target", metavar="COL", help="CSV target column")
    e.add_argument("--labels", metavar="PATH", help="IDX labels file")
    e.set_defaults(func=_cmd_eval)

    pr = add("predict", "predict with a checkpoint", "Predict for every row of INPUT "
             "(.csv, .npz, .npy or IDX features) with a checkpoint written by `shendu train`.")
    pr.add_argument("checkpoint", metavar="CKPT")
    pr.add_argument("input", metavar="INPUT")
    pr.add_argument("--output", metavar="FILE", help=".csv/.txt or .npy (default: stdout)")
    pr.add_argument("--proba", action="store_true", help="class probabilities")
    pr.set_defaults(func=_cmd_predict)

    g = add("gradcheck", "gradcheck a whole model in float64",
            "Compare backpropagation with central differences for every parameter of a small "
            "float64 model and print the worst relative error per parameter; exit 1 if any "
            "exceeds --tol.", gc=", ".join(GRADCHECK_MODELS))
    g.add_argument("model", metavar="MODEL", help=", ".join(GRADCHECK_MODELS))
    g.add_argument("--eps", type=float, default=1e-6, help="finite-difference step")
    g.add_argument("--tol", type=float, default=1e-5, help="largest relative error allowed")
    g.add_argument("--max-elements", type=int, metavar="N",
                   help="check at most N elements of each parameter (default: all)")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=_cmd_gradcheck)

    b = add("bench", "run the benchmark workloads (shendu vs torch)",
            "Run the workloads of benchmarks/ (DESIGN.md) and print steps/s of shendu and "
            "torch and their ratio (shendu alone when torch is absent).")
    b.add_argument("--only", nargs="+", metavar="NAME", help="workloads to run")
    b.add_argument("--steps", type=int, default=50)
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--quick", action="store_true", help="10 steps x 2 repeats")
    b.add_argument("--no-torch", action="store_true", help="time shendu alone")
    b.add_argument("--list", action="store_true", help="list the workloads")
    b.add_argument("--dir", metavar="PATH", help="benchmarks folder (default: the repo's)")
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv=None) -> int:
    """Entry point of the ``shendu`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("shendu: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line unless --debug
        if args.debug:
            raise
        msg = str(e) if isinstance(e, CLIError) else f"{type(e).__name__}: {e}"
        msg = " ".join(msg.split())
        print(f"shendu {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
