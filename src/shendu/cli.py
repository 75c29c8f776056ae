"""The ``shendu`` command: ``tour``, ``train``, ``eval``, ``predict``, ``gradcheck``, ``bench``.

Every subcommand has ``--help`` with examples (``shendu train --help``). A problem the user
can fix — a bad argument, a missing or malformed file, data of the wrong shape — ends in one
line on stderr naming it, and a non-zero exit status (2 for a bad command line, 1 otherwise);
``--debug`` shows the full traceback instead.

Checkpoints are shendu files (``shendu.io.save_checkpoint``: safetensors weights and a JSON
description; see shendu.io) holding the model, the epoch, the training history and where the
data came from, so ``shendu eval`` and ``shendu predict`` need nothing else.
"""

from __future__ import annotations

import argparse
import csv
import gzip
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
    """Training data, split into train and test halves. ``kind`` says what it is:
    ``arrays`` (features and targets), ``seq2seq`` (token sequences, padded with
    ``pad_id``, and their target sequences) or ``text`` (a :class:`CharCorpus`)."""

    name: str
    X_train: np.ndarray | None
    y_train: np.ndarray | None
    X_test: np.ndarray | None
    y_test: np.ndarray | None
    kind: str = "arrays"
    pad_id: int | None = None
    corpus: object = None


BUILTIN_DATA = {
    "xor": "the four XOR points (train = test)",
    "blobs": "linearly separable 2-D blobs, 2 classes, 160/40",
    "digits": "scikit-learn's 8x8 handwritten digits, 1,438/359",
    "iris": "Fisher's iris, 3 classes, 120/30",
    "mnist": "MNIST IDX files from --data-root or $SHENDU_DATA (train/t10k, or 8,000/2,000 "
             "of t10k)",
    "adding": "the adding problem of Hochreiter & Schmidhuber (1997), T=50, 4,000/1,000",
    "sequential-digits": "the 8x8 digits read row by row: 8 steps of 8 pixels",
    "reverse": "reverse digit sequences of length 5-10, 4,000/500",
    "copy": "copy digit sequences of length 5-10, 4,000/500",
    "sort": "sort digit sequences of length 5-10, 4,000/500",
    "shakespeare": "tiny-shakespeare (tinyshakespeare.txt under --data-root or "
                   "$SHENDU_DATA), for the character language models",
}


def _data_root(given: str | None) -> Path | None:
    """``--data-root``, else ``$SHENDU_DATA``, else ``../shared/data`` beside a clone."""
    if given:
        return Path(given)
    if os.environ.get("SHENDU_DATA"):
        return Path(os.environ["SHENDU_DATA"])
    import shendu

    cand = Path(shendu.__file__).resolve().parents[3] / "shared" / "data"
    return cand if cand.is_dir() else None


def _find_file(root: Path | None, names: tuple[str, ...]) -> Path | None:
    if root is None:
        return None
    for sub in ("", "text", "mnist", "MNIST/raw"):
        for n in names:
            p = root / sub / n if sub else root / n
            if p.is_file():
                return p
    return None


def _builtin(name: str, root: str | None = None) -> Data:
    from shendu.data import datasets as ds

    if name == "xor":
        X, _, y, _ = ds.xor()
        return Data(name, X, y, X, y)
    if name == "adding":
        from shendu.data.sequences import adding_problem

        Xtr, ytr = adding_problem(4000, 50, seed=0)
        Xte, yte = adding_problem(1000, 50, seed=1)
        return Data(name, Xtr, ytr, Xte, yte)
    if name in ("reverse", "copy", "sort"):
        from shendu.data.tasks import sequence_task

        tr = sequence_task(name, 4000, (5, 10), 10, seed=0)
        te = sequence_task(name, 500, (5, 10), 10, seed=1)
        return Data(name, tr.src, tr.tgt, te.src, te.tgt, kind="seq2seq", pad_id=tr.pad_id)
    if name == "shakespeare":
        path = _find_file(_data_root(root), ("tinyshakespeare.txt", "input.txt"))
        if path is None:
            raise CLIError("shakespeare: tinyshakespeare.txt not found; pass --data-root DIR "
                           "(or set SHENDU_DATA), or give the text file's path to --data")
        return _text_data(str(path))
    if name == "mnist":
        from shendu.data import mnist, mnist_split

        base = _data_root(root)
        if base is None:
            raise CLIError("mnist: no data folder; pass --data-root DIR (or set SHENDU_DATA) "
                           "holding the MNIST IDX files")
        try:
            try:
                Xtr, ytr = mnist(base, train=True)
                Xte, yte = mnist(base, train=False)
            except FileNotFoundError:
                Xtr, Xte, ytr, yte = mnist_split(base)
        except (FileNotFoundError, ValueError) as e:
            raise CLIError(f"mnist: {e}") from None
        return Data(name, Xtr, ytr, Xte, yte)
    try:
        if name == "sequential-digits":
            from shendu.data.sequences import sequential_digits

            s = sequential_digits()
        else:
            s = getattr(ds, name)()
    except ImportError as e:
        raise CLIError(str(e)) from None
    return Data(name, s.X_train, s.y_train, s.X_test, s.y_test)


def _text_data(path: str) -> Data:
    from shendu.data.sequences import CharCorpus

    try:
        corpus = CharCorpus(Path(path))
    except UnicodeDecodeError as e:
        raise CLIError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") \
            from None
    except ValueError as e:
        raise CLIError(f"{path}: {e}") from None
    if len(corpus.val) < 2 or len(corpus.train) < 2:
        raise CLIError(f"{path}: the text is too short to train a language model "
                       f"({len(corpus.train) + len(corpus.val)} characters)")
    return Data(os.path.basename(path), None, None, None, None, kind="text", corpus=corpus)


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
    refused (loading them would run code; see shendu.io)."""
    try:
        with np.load(path) as z:  # NumPy refuses object arrays by default
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
            return np.load(path)  # NumPy refuses object arrays by default
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
    if low.endswith((".txt", ".text", ".md")):
        return "text"
    return "unknown"


def _must_exist(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise CLIError(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise CLIError(f"{what} {path!r} is a directory, expected a file")


def load_data(spec: str, target: str | None = None, labels: str | None = None,
              test_size: float = 0.2, seed: int = 0, root: str | None = None) -> Data:
    """A built-in data set by name, or a user's file (CSV, NPZ, IDX images + labels, or a
    text file for the character language models)."""
    if spec in BUILTIN_DATA:
        return _builtin(spec, root)
    if not any(sep in spec for sep in "/\\.") and not os.path.exists(spec):
        raise CLIError(f"unknown data set {spec!r}: use one of {', '.join(BUILTIN_DATA)} "
                       "or a path to a .csv, .npz, IDX or .txt file")
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
        return _text_data(spec)
    raise CLIError(f"{spec}: unknown data format (use .csv, .npz, an IDX file or a .txt "
                   "file)")


# ========================================================================== models
@dataclass(frozen=True)
class ModelSpec:
    """How the CLI drives a ready model: its class in ``shendu.models``, the input it
    takes (``flat`` (N, F), ``image`` (N, C, H, W), ``sequence`` (N, T, F), ``seq2seq``
    token sequences, ``text`` a character corpus), its task and how it trains
    (``epochs``: one ``partial_fit`` per epoch, resumable; ``fit``: one ``fit`` of all the
    epochs; ``steps``: a language model's ``fit(corpus, steps)``; ``seed``: the seed's
    ``train(X, y, epochs, learning_rate)``)."""

    cls: str
    input: str
    task: str
    doc: str
    how: str = "epochs"


MODELS: dict[str, ModelSpec] = {s.cls.lower(): s for s in [
    ModelSpec("Perceptron", "flat", "classify", "Rosenblatt's perceptron (1958), one-vs-rest"),
    ModelSpec("MLPClassifier", "flat", "classify", "multi-layer perceptron, backpropagation"),
    ModelSpec("MLPRegressor", "flat", "regress", "multi-layer perceptron for regression"),
    ModelSpec("NeuralNetwork", "flat", "regress", "the seed's one-hidden-layer network "
              "(sigmoid, squared error, plain gradient descent)", "seed"),
    ModelSpec("ConvolutionalNeuralNetwork", "image", "classify", "LeNet-style CNN"),
    ModelSpec("RecurrentNeuralNetwork", "sequence", "auto", "Elman RNN (1990)", "fit"),
    ModelSpec("LongShortTermMemory", "sequence", "auto", "LSTM (1997)", "fit"),
    ModelSpec("GatedRecurrentUnit", "sequence", "auto", "GRU (2014)", "fit"),
    ModelSpec("TransformerClassifier", "sequence", "classify", "transformer encoder (2017)",
              "fit"),
    ModelSpec("AttentionMechanism", "seq2seq", "seq2seq", "RNN encoder-decoder with "
              "additive attention (2014)", "fit"),
    ModelSpec("CharLM", "text", "lm", "character LSTM language model", "steps"),
    ModelSpec("CharTransformerLM", "text", "lm", "character transformer language model",
              "steps"),
]}
_ALIASES = {"mlp": "mlpclassifier", "cnn": "convolutionalneuralnetwork",
            "rnn": "recurrentneuralnetwork", "lstm": "longshorttermmemory",
            "gru": "gatedrecurrentunit", "transformer": "transformerclassifier",
            "attention": "attentionmechanism", "seq2seq": "attentionmechanism",
            "char-lm": "charlm", "char-transformer": "chartransformerlm",
            "seed": "neuralnetwork"}

_HYPER = {"epochs": ("epochs", "max_epochs", "max_iter", "n_epochs"),
          "lr": ("learning_rate", "lr", "learning_rate_init", "eta0"),
          "batch_size": ("batch_size",),
          "seed": ("random_state", "seed")}


def _model_spec(name: str) -> tuple[ModelSpec, type]:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in MODELS:
        known = ", ".join(s.cls for s in MODELS.values())
        raise CLIError(f"unknown model {name!r}; models: {known} (aliases: "
                       f"{', '.join(_ALIASES)})")
    spec = MODELS[key]
    import shendu.models as sm

    cls = getattr(sm, spec.cls, None)
    if cls is None:
        have = [s.cls for s in MODELS.values() if hasattr(sm, s.cls)]
        raise CLIError(f"model {spec.cls} is not available in this build of shendu yet; "
                       f"available: {', '.join(have)}")
    return spec, cls


def _construct(cls: type, args, extra: dict | None = None) -> object:
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
    hidden = getattr(args, "hidden", None)
    if hidden and "hidden_layer_sizes" in params:
        kw["hidden_layer_sizes"] = tuple(hidden)
    elif hidden and "hidden_size" in params:
        kw["hidden_size"] = int(hidden[0])
    elif hidden and "d_model" in params:
        kw["d_model"] = int(hidden[0])
    kw.update({k: v for k, v in (extra or {}).items() if k in params})
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise CLIError(f"{cls.__name__}: {e}") from None


def _check_fits(spec: ModelSpec, data: Data, where: str) -> None:
    """One clear line when the model and the data do not go together."""
    if spec.input == "text" and data.kind != "text":
        raise CLIError(f"{where}: {spec.cls} is a character language model and trains on "
                       f"text (--data shakespeare or a .txt file), not on "
                       f"{'token sequence pairs' if data.kind == 'seq2seq' else 'features'}")
    if spec.input == "seq2seq" and data.kind != "seq2seq":
        raise CLIError(f"{where}: {spec.cls} maps token sequences to token sequences "
                       f"(--data reverse, copy or sort), not "
                       f"{'text' if data.kind == 'text' else 'features and labels'}")
    if spec.input not in ("text", "seq2seq") and data.kind != "arrays":
        raise CLIError(f"{where}: {spec.cls} needs features and labels, but this is "
                       + ("text (train char-lm or char-transformer on it)"
                          if data.kind == "text" else
                          "a sequence-to-sequence task (train attention on it)"))


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
    if "exact" in m:
        return f"exact sequences {m['exact']:.4f} ({int(round(m['exact'] * m['n']))}/{m['n']})"
    if "accuracy" in m:
        s = f"accuracy {m['accuracy']:.4f} ({m['correct']}/{m['n']})"
        if "log_loss" in m:
            s += f"  log-loss {m['log_loss']:.4f}"
        return s
    return f"MSE {m['mse']:.6g}  MAE {m['mae']:.6g}  R^2 {m['r2']:.4f}  (n={m['n']})"


# ---------------------------------------------------------------- checkpoints
def save_model_checkpoint(path: str, model, info: dict) -> None:
    """A checkpoint of ``shendu train``: the whole model (ready models save their weights,
    optimizer state and fitted attributes through ``_shendu_state``; modules their
    configuration and ``state_dict``) and ``info`` (data, epoch, history, RNG state)."""
    from shendu.io import save_checkpoint

    save_checkpoint(path, cli=info, model=model)


def load_model_checkpoint(path: str):
    """``(model, info)`` from a checkpoint written by ``shendu train``."""
    from shendu.io import FileFormatError, load_checkpoint

    _must_exist(path, "checkpoint")
    try:
        state = load_checkpoint(path)
    except FileFormatError as e:
        raise CLIError(str(e)) from None
    if "cli" not in state or "model" not in state or not isinstance(state["cli"], dict):
        raise CLIError(f"{path}: not a checkpoint written by `shendu train`")
    info = state["cli"]
    if str(info.get("model", "")).lower() not in MODELS:
        raise CLIError(f"{path}: the checkpoint names an unknown model "
                       f"{str(info.get('model'))[:60]!r}")
    return state["model"], info


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
    import shendu

    if args.model.lower() in ("audio", "audioclassifier"):   # speech: shendu.audio.cli
        from shendu.audio.cli import train_audio

        return train_audio(args)
    spec, cls = _model_spec(args.model)
    for name in ("epochs", "batch_size", "steps"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.lr is not None and not args.lr > 0:
        raise CLIError(f"--lr must be > 0, got {args.lr}")
    data = load_data(args.data, args.target, args.labels, args.test_size, args.seed or 0,
                     args.data_root)
    _check_fits(spec, data, args.data)
    shendu.manual_seed(args.seed or 0)
    os.makedirs(args.out, exist_ok=True)
    info = {"model": spec.cls, "data": args.data, "data_root": args.data_root,
            "input": spec.input, "seed": args.seed or 0, "target": args.target,
            "labels": args.labels, "test_size": args.test_size}
    if spec.how == "steps":
        return _train_lm(args, spec, cls, data, info)
    if spec.how == "fit" and args.resume:
        raise CLIError(f"{spec.cls} trains all its epochs in one fit and cannot resume; "
                       "resuming works for Perceptron, MLPClassifier, MLPRegressor and "
                       "ConvolutionalNeuralNetwork")
    if spec.input == "seq2seq":
        Xtr, Xte, ytr, yte = data.X_train, data.X_test, data.y_train, data.y_test
        info.update(pad_id=data.pad_id, n_features=[])
        key = "exact"
    else:
        if data.y_train is None:
            raise CLIError(f"{args.data}: no labels to train on")
        Xtr = _shape_for(spec, data.X_train, args.data)
        Xte = _shape_for(spec, data.X_test, args.data)
        ytr, yte = data.y_train, data.y_test
        integer = np.issubdtype(np.asarray(ytr).dtype, np.integer)
        if spec.task == "classify" and not integer:
            raise CLIError(f"{args.data}: {spec.cls} is a classifier and needs whole-number "
                           f"class labels, got {np.asarray(ytr).dtype} targets (use "
                           "MLPRegressor)")
        info["n_features"] = list(Xtr.shape[1:])
        key = "accuracy" if spec.task == "classify" or (spec.task == "auto" and integer) \
            else "mse"
    last, best = os.path.join(args.out, "last.ckpt"), os.path.join(args.out, "best.ckpt")
    t0 = time.perf_counter()
    if spec.how in ("epochs", "seed"):
        model, start_epoch, history, best_val = _train_epochs(args, spec, cls, Xtr, ytr, Xte,
                                                              yte, key, info, last, best)
    else:
        start_epoch = 0
        model = _train_once(args, spec, cls, Xtr, ytr, key, data)
        te = _scores(model, spec, Xte, yte)
        history = [{"epoch": args.epochs or 20, key: _scores(model, spec, Xtr, ytr)[key],
                    f"val_{key}": te[key]}]
        best_val = te[key]
        info.update(epoch=history[-1]["epoch"], history=history, rng=shendu.get_rng_state())
        save_model_checkpoint(last, model, info)
        save_model_checkpoint(best, model, info)
    seconds = time.perf_counter() - t0
    print(f"{spec.cls} on {data.name}: {len(Xtr)} train / {len(Xte)} test, "
          f"epochs {start_epoch + 1}-{history[-1]['epoch']}, {seconds:.1f} s")
    print(f"train: {_format_metrics(_scores(model, spec, Xtr, ytr))}")
    print(f"test:  {_format_metrics(_scores(model, spec, Xte, yte))}")
    print(f"checkpoints: {last} (last), {best} (best {key} {best_val:.4g})")
    return 0


def _train_epochs(args, spec, cls, Xtr, ytr, Xte, yte, key, info, last, best):
    """One ``partial_fit`` (or the seed's ``train``) per epoch; a checkpoint after each."""
    import warnings

    import shendu
    from shendu.utils import progress

    epochs = args.epochs
    start_epoch, history = 0, []
    if args.resume:
        model, old = load_model_checkpoint(args.resume)
        if old.get("model") != spec.cls:
            raise CLIError(f"{args.resume}: the checkpoint holds a {old.get('model')}, not a "
                           f"{spec.cls}")
        start_epoch, history = int(old.get("epoch", 0)), list(old.get("history", []))
        if isinstance(old.get("rng"), dict):
            shendu.set_rng_state(old["rng"])
        if epochs is None:
            epochs = start_epoch + 1
        if epochs <= start_epoch:
            raise CLIError(f"{args.resume} is at epoch {start_epoch}; ask for --epochs > "
                           f"{start_epoch} to train further")
    elif spec.how == "seed":
        if args.hidden and len(args.hidden) > 1:
            raise CLIError("NeuralNetwork has one hidden layer: give one --hidden size")
        ycols = 1 if np.ndim(ytr) == 1 else int(np.shape(ytr)[1])
        model = cls(Xtr.shape[1], (args.hidden or [16])[0], ycols)
        epochs = epochs or 20
    else:
        model = _construct(cls, args)
        epochs = epochs or 20
    better = (lambda a, b: a > b) if key == "accuracy" else (lambda a, b: a < b)
    best_val = None
    for h in history:
        v = h.get(f"val_{key}")
        if v is not None and (best_val is None or better(v, best_val)):
            best_val = v
    classes = np.unique(ytr) if spec.task == "classify" else None
    every = max(1, (epochs - start_epoch) // 50)     # at most ~50 checkpoints per run
    bar = progress(range(start_epoch, epochs), desc=f"{spec.cls} on {info['data']}",
                   total=epochs - start_epoch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in bar:
            try:
                if spec.how == "seed":
                    model.train(Xtr, np.asarray(ytr, np.float64).reshape(len(ytr), -1), 1,
                                args.lr or 0.1)
                elif classes is not None and epoch == 0:
                    model.partial_fit(Xtr, ytr, classes=classes)
                else:
                    model.partial_fit(Xtr, ytr)
            except (ValueError, TypeError, FloatingPointError) as e:
                raise CLIError(f"{spec.cls} on {info['data']}: {e}") from None
            if (epoch + 1) % every and epoch + 1 != epochs:
                continue
            tr, te = _scores(model, spec, Xtr, ytr), _scores(model, spec, Xte, yte)
            row = {"epoch": epoch + 1, key: tr[key], f"val_{key}": te[key]}
            history.append(row)
            bar.set_postfix({key: f"{tr[key]:.4g}", f"val_{key}": f"{te[key]:.4g}"})
            info.update(epoch=epoch + 1, history=history, rng=shendu.get_rng_state())
            save_model_checkpoint(last, model, info)
            if best_val is None or better(te[key], best_val):
                best_val = te[key]
                save_model_checkpoint(best, model, info)
    return model, start_epoch, history, best_val


def _train_once(args, spec, cls, Xtr, ytr, key, data):
    """Recurrent, transformer and seq2seq estimators: one ``fit`` of all the epochs (one
    line per epoch)."""
    extra = {"verbose": 2, "epochs": args.epochs or 20}
    if spec.task == "auto":
        extra["task"] = "classification" if key == "accuracy" else "regression"
    if spec.input == "seq2seq":
        extra.update(pad_id=data.pad_id, vocab_size=int(data.pad_id))
    model = _construct(cls, args)
    for k, v in extra.items():
        if hasattr(model, k):
            setattr(model, k, v)
    try:
        model.fit(Xtr, ytr)
    except (ValueError, TypeError) as e:
        raise CLIError(f"{spec.cls} on {data.name}: {e}") from None
    model.verbose = 0
    return model


def _scores(model, spec: ModelSpec, X, y) -> dict:
    if spec.input == "seq2seq":
        return {"exact": float(model.score(X, y)), "n": len(X)}
    if spec.how == "seed":
        pred = np.asarray(model.predict(X), np.float64).reshape(len(X), -1)
        err = pred - np.asarray(y, np.float64).reshape(pred.shape)
        var = float(np.var(y))
        return {"mse": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err))),
                "r2": 1.0 - float(np.mean(err ** 2)) / var if var > 0 else float("nan"),
                "n": len(y)}
    return _metrics(model, X, y)


def _train_lm(args, spec, cls, data, info) -> int:
    """A character language model: ``--steps`` Adam steps on random windows of the text."""
    if args.resume:
        raise CLIError(f"{spec.cls} cannot resume (each fit starts a fresh optimizer); "
                       "train again with more --steps")
    corpus = data.corpus
    steps = args.steps or 300
    hidden = (args.hidden or [128])[0]
    kw = {"learning_rate": args.lr or (2e-3 if spec.cls == "CharLM" else 3e-3),
          "batch_size": args.batch_size or 32, "eval_every": max(steps // 5, 1),
          "eval_chars": 20000, "verbose": 1}
    if spec.cls == "CharLM":
        model = cls(corpus.vocab, hidden_size=hidden, num_layers=1)
    else:
        model = cls(corpus.vocab_size, d_model=hidden if args.hidden else 64, nhead=4,
                    num_layers=2, dim_feedforward=4 * (hidden if args.hidden else 64),
                    dropout=0.0, block_size=64)
    t0 = time.perf_counter()
    log = model.fit(corpus, steps=steps, **kw)
    val = model.evaluate(corpus, "val")
    info.update(epoch=0, steps=steps, vocab=corpus.vocab, history=log,
                rng=__import__("shendu").get_rng_state())
    last, best = os.path.join(args.out, "last.ckpt"), os.path.join(args.out, "best.ckpt")
    save_model_checkpoint(last, model, info)
    save_model_checkpoint(best, model, info)
    print(f"{spec.cls} on {data.name}: {len(corpus.train):,} train / {len(corpus.val):,} "
          f"validation characters, vocabulary {corpus.vocab_size}, {steps} steps, "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"validation: {val:.4f} nats/char ({val / math.log(2):.3f} bits/char); unigram "
          f"baseline {corpus.unigram_nats():.4f} nats/char")
    print(f"checkpoints: {last} (last), {best} (best = last)")
    return 0


def _load_for(args):
    """Model, info, spec and (unless ``--data`` is not needed) the data of a checkpoint."""
    model, info = load_model_checkpoint(args.checkpoint)
    return model, info, MODELS[info["model"].lower()]


def _cmd_eval(args) -> int:
    from shendu.audio.cli import eval_audio, is_audio_checkpoint

    if is_audio_checkpoint(args.checkpoint):                  # speech: shendu.audio.cli
        return eval_audio(args)
    model, info, spec = _load_for(args)
    data_spec = args.data or info.get("data")
    if not data_spec:
        raise CLIError("no data: pass --data NAME|PATH")
    data = load_data(data_spec, args.target if args.target is not None else info.get("target"),
                     args.labels or info.get("labels"), info.get("test_size", 0.2),
                     info.get("seed", 0), args.data_root or info.get("data_root"))
    _check_fits(spec, data, data_spec)
    split = args.split
    if spec.input == "text":
        if data.corpus.vocab != info.get("vocab"):
            missing = sorted(set(data.corpus.vocab) - set(info.get("vocab", "")))
            if missing:
                raise CLIError(f"{data_spec}: the text has characters the model never saw: "
                               f"{''.join(missing[:20])!r}")
            from shendu.data.sequences import CharCorpus

            corpus = CharCorpus.__new__(CharCorpus)
            corpus.vocab = info["vocab"]
            corpus._index = {c: i for i, c in enumerate(corpus.vocab)}
            corpus.train = corpus.encode(data.corpus.decode(data.corpus.train))
            corpus.val = corpus.encode(data.corpus.decode(data.corpus.val))
        else:
            corpus = data.corpus
        nats = model.evaluate(corpus, "val" if split == "test" else "train")
        print(f"{info['model']} ({info.get('steps')} steps) on {data.name} "
              f"[{'validation' if split == 'test' else 'train'}]")
        print(f"{nats:.4f} nats/char ({nats / math.log(2):.3f} bits/char); unigram baseline "
              f"{corpus.unigram_nats():.4f} nats/char")
        return 0
    X, y = (data.X_test, data.y_test) if split == "test" else (data.X_train, data.y_train)
    if y is None:
        raise CLIError(f"{data_spec}: no labels to evaluate against")
    if spec.input != "seq2seq":
        X = _shape_for(spec, X, data_spec)
        want = tuple(info.get("n_features", X.shape[1:]))
        if tuple(X.shape[1:]) != want:
            raise CLIError(f"{data_spec}: the model was trained on inputs of shape (N, "
                           f"{', '.join(map(str, want))}), got {X.shape}")
    try:
        m = _scores(model, spec, X, y)
    except ValueError as e:
        raise CLIError(f"{data_spec}: {e}") from None
    print(f"{info['model']} (epoch {info.get('epoch')}) on {data.name} [{split}, "
          f"{len(X)} samples]")
    print(_format_metrics(m))
    return 0


def _cmd_predict(args) -> int:
    from shendu.audio.cli import is_audio_predict, predict_audio

    if is_audio_predict(args):                                # speech: shendu.audio.cli
        return predict_audio(args)
    model, info, spec = _load_for(args)
    if spec.input == "text":
        return _generate(args, model, info)
    if spec.input == "seq2seq":
        return _predict_sequences(args, model, info)
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
    _write_predictions(args, out)
    return 0


def _write_predictions(args, out: np.ndarray) -> None:
    if args.output:
        if args.output.endswith(".npy"):
            arr = np.asarray(out)
            # labels of mixed Python types would be an object array: store them as text
            np.save(args.output, arr.astype(str) if arr.dtype.kind == "O" else arr)
        else:
            np.savetxt(args.output, out.reshape(len(out), -1), delimiter=",",
                       fmt="%d" if np.issubdtype(out.dtype, np.integer) else "%.6g")
        print(f"wrote {len(out)} predictions to {args.output}")
    else:
        for row in out.reshape(len(out), -1):
            print(",".join(str(int(v)) if np.issubdtype(out.dtype, np.integer) else f"{v:.6g}"
                           for v in row))


def _generate(args, model, info) -> int:
    """``shendu predict CKPT "prompt" --length N``: text from a character language model."""
    import shendu

    vocab = info.get("vocab") or getattr(model, "vocab", None)
    if not vocab:
        raise CLIError(f"{args.checkpoint}: the checkpoint has no vocabulary")
    prompt = args.input
    bad = sorted(set(prompt) - set(vocab))
    if not prompt or bad:
        raise CLIError("the prompt needs at least one character" if not prompt else
                       f"the prompt has characters the model never saw: {''.join(bad)!r}")
    if args.length < 0 or args.temperature < 0:
        raise CLIError("--length and --temperature must be >= 0")
    shendu.manual_seed(args.seed)
    if hasattr(model, "vocab"):                                  # CharLM
        text = model.generate(prompt, args.length, temperature=args.temperature,
                              top_k=args.top_k)
    else:                                                        # CharTransformerLM
        index = {c: i for i, c in enumerate(vocab)}
        ids = model.generate(np.array([[index[c] for c in prompt]]), args.length,
                             temperature=args.temperature, top_k=args.top_k)
        text = "".join(vocab[int(i)] for i in ids[0])
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {len(text)} characters to {args.output}")
    else:
        print(text)
    return 0


def _predict_sequences(args, model, info) -> int:
    """Token sequences from a file (rows padded with the pad id) or the command line
    (``"3 1 4 1 5"``, one sequence; ``;`` separates several)."""
    if os.path.exists(args.input):
        X = np.asarray(read_features(args.input))
        if X.ndim == 1:
            X = X[None]
        if X.ndim != 2 or not np.all(X == np.round(X)):
            raise CLIError(f"{args.input}: expected rows of integer tokens, got shape "
                           f"{X.shape}")
        seqs = X.astype(np.int64)
    else:
        try:
            seqs = [np.array([int(t) for t in re.split(r"[\s,]+", part.strip()) if t],
                             np.int64) for part in args.input.split(";") if part.strip()]
        except ValueError:
            raise CLIError(f"{args.input!r} is neither a file nor integer tokens such as "
                           "'3 1 4 1 5'") from None
        if not seqs:
            raise CLIError("no tokens to predict from")
    try:
        out = model.predict(seqs)
    except ValueError as e:
        raise CLIError(f"{args.input}: {e}") from None
    rows = [np.asarray(r) for r in out]
    pad = info.get("pad_id")
    lines = [" ".join(str(int(v)) for v in r if pad is None or v != pad) for r in rows]
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"wrote {len(lines)} predictions to {args.output}")
    else:
        print("\n".join(lines))
    return 0


# -------------------------------------------------------------------- gradcheck
def _gc_models():
    """Small float64 versions of the networks the ready models build, one per family:
    ``name -> (what it is, build, input, target)``. Each network's forward returns
    class scores (N, K) (sequence models: one row per output position)."""
    import shendu
    from shendu import nn
    from shendu.models.attention import CharTransformerLM, SequenceEncoderNet
    from shendu.models.cnn import make_cnn
    from shendu.models.mlp import make_mlp
    from shendu.models.recurrent import CharLM, RecurrentHeadNet
    from shendu.models.seq2seq import Seq2SeqNet

    rng = np.random.Generator(np.random.PCG64(0))

    def seq(n, T=5, F=3):
        return rng.standard_normal((n, T, F))

    class SelfAttn(nn.Module):
        def __init__(self, d, k):
            super().__init__()
            self.attn, self.head = nn.MultiheadAttention(d, 2, batch_first=True), nn.Linear(d, k)

        def forward(self, x):
            out, _ = self.attn(x, x, x, need_weights=False)
            return self.head(out.mean(dim=1))

    class Flat(nn.Module):
        """Token-sequence models: (N, T) ids -> (N*T, V) scores for a cross-entropy."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            out = self.net(x.data.astype(np.int64))
            out = out[0] if isinstance(out, tuple) else out
            return out.reshape(-1, out.shape[-1])

    class Seq2Seq(nn.Module):
        """Seq2SeqNet under teacher forcing on fixed sources and decoder inputs."""

        def __init__(self, net, lengths, dec_in):
            super().__init__()
            self.net, self.lengths, self.dec_in = net, lengths, dec_in

        def forward(self, x):
            out = self.net(x.data.astype(np.int64), self.lengths, self.dec_in)
            return out.reshape(-1, out.shape[-1])

    y3 = rng.integers(0, 3, 4)
    V = 5
    ids = rng.integers(0, V, (3, 6)).astype(np.float64)
    src = rng.integers(0, 4, (3, 4)).astype(np.float64)
    lengths = np.array([4, 3, 2])
    src[1, 3:] = 4                                            # padding (end id)
    src[2, 2:] = 4
    dec_in = np.concatenate([np.full((3, 1), 5), src[:, ::-1][:, :3]], 1).astype(np.int64)
    dec_in[dec_in == 4] = 0
    return {
        "mlp": ("MLPClassifier's make_mlp 4-6-3, tanh",
                lambda: make_mlp([4, 6, 3], "tanh"), rng.standard_normal((4, 4)), y3),
        "cnn": ("ConvolutionalNeuralNetwork's make_cnn: conv 3@3x3, pool, 3",
                lambda: make_cnn((1, 6, 6), 3, conv_channels=(3,), kernel_size=3,
                                 hidden_layer_sizes=(), activation="tanh"),
                rng.standard_normal((4, 1, 6, 6)), y3),
        "rnn": ("RecurrentNeuralNetwork's RecurrentHeadNet (tanh RNN, head on the last step)",
                lambda: RecurrentHeadNet("rnn", 3, 4, 1, 3), seq(4), y3),
        "lstm": ("LongShortTermMemory's RecurrentHeadNet (2 layers)",
                 lambda: RecurrentHeadNet("lstm", 3, 4, 2, 3), seq(4), y3),
        "gru": ("GatedRecurrentUnit's RecurrentHeadNet (bidirectional)",
                lambda: RecurrentHeadNet("gru", 3, 4, 1, 3, bidirectional=True), seq(4), y3),
        "transformer": ("TransformerClassifier's SequenceEncoderNet (pre-norm, GELU)",
                        lambda: SequenceEncoderNet(3, d_model=4, nhead=2, num_layers=1,
                                                   dim_feedforward=8, dropout=0.0,
                                                   n_features=4, max_len=5),
                        seq(4, 5, 4), y3),
        # location_aware=False: the location term reads the previous step's weights as a
        # constant input (no gradient flows back through it, by design), which central
        # differences would see
        "attention": ("AttentionMechanism's Seq2SeqNet (GRU encoder-decoder, additive "
                      "attention; without the location term, whose input is detached)",
                      lambda: Seq2Seq(Seq2SeqNet(4, embed_dim=3, hidden_size=4,
                                                 location_aware=False), lengths, dec_in),
                      src, rng.integers(0, 5, 12)),
        "self-attention": ("nn.MultiheadAttention, 2 heads, mean-pooled",
                           lambda: SelfAttn(4, 3), seq(4, 5, 4), y3),
        "char-lm": ("CharLM (embedding, LSTM, readout)",
                    lambda: Flat(CharLM("abcde", hidden_size=4, num_layers=1,
                                        embedding_dim=3)), ids, rng.integers(0, V, 18)),
        "char-transformer": ("CharTransformerLM (causal, pre-norm)",
                             lambda: Flat(CharTransformerLM(V, d_model=4, nhead=2,
                                                            num_layers=1, dim_feedforward=8,
                                                            dropout=0.0, block_size=6)),
                             ids, rng.integers(0, V, 18)),
    }, shendu


GRADCHECK_MODELS = ("mlp", "cnn", "rnn", "lstm", "gru", "transformer", "attention",
                    "self-attention", "char-lm", "char-transformer")
_GC_ALIASES = {"mlpclassifier": "mlp", "mlpregressor": "mlp", "neuralnetwork": "mlp",
               "multilayerperceptron": "mlp", "seed": "mlp",
               "convolutionalneuralnetwork": "cnn", "recurrentneuralnetwork": "rnn",
               "longshorttermmemory": "lstm", "gatedrecurrentunit": "gru",
               "attentionmechanism": "attention", "seq2seq": "attention",
               "transformerclassifier": "transformer", "charlm": "char-lm",
               "chartransformerlm": "char-transformer"}


def gradcheck_model(model, x: np.ndarray, y: np.ndarray, eps: float = 1e-6,
                    max_elements: int | None = None, seed: int = 0,
                    floor: float = 1e-4) -> list[tuple]:
    """Central differences against backpropagation for every parameter of ``model``
    (float64): ``[(name, shape, worst relative error, elements checked)]``.

    The relative error of one element is ``|a - n| / max(|a|, |n|, floor)`` where ``a`` is
    the analytic and ``n = (L(p + eps) - L(p - eps)) / (2 eps)`` the numerical derivative
    of the cross-entropy loss ``L``. The numerical one is only good to about
    ``u |L| / eps`` (rounding, ``u = 2.2e-16``: about 2e-10 for ``L ~ 1``, ``eps = 1e-6``)
    plus ``eps^2 / 6`` times the third derivative (truncation); the floor keeps a
    derivative that small (deep in a recurrent stack, say) from counting as a large
    relative error: below ``floor`` the error is measured against ``floor``, i.e.
    absolutely.
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
            worst = max(worst, abs(g[i] - n) / max(abs(g[i]), abs(n), floor))
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
    what, build, x, y = models[name]
    shendu.manual_seed(args.seed)
    model = build().double()
    model.eval()
    t0 = time.perf_counter()
    rows = gradcheck_model(model, x, y, eps=args.eps, max_elements=args.max_elements,
                           seed=args.seed, floor=args.floor)
    worst = max((r[2] for r in rows if not math.isnan(r[2])), default=0.0)
    width = max(len(r[0]) for r in rows)
    print(f"gradcheck {name}: {what}")
    print(f"float64, central differences (eps={args.eps:g}) vs backpropagation, "
          f"cross-entropy loss on a batch of {len(x)}")
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
        text = s.read_text(encoding="utf-8", errors="replace")
        wanted = [("--steps", str(steps)), ("--repeats", str(repeats)), ("--no-memory",),
                  ("--no-scaling",)] + ([] if have_torch else [("--no-torch",)])
        # pass each script only the options it declares
        cmd = [sys.executable, str(s)] + [w for opt in wanted if f'"{opt[0]}"' in text
                                          for w in opt]
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
  shendu tour                       # every chapter (about 1.5 CPU minutes)
  shendu tour --quick               # small budgets (about 15 CPU seconds)
  shendu tour --only lstm --out tour-lstm
chapters: {chapters}""",
    "train": """examples:
  shendu train mlp --data digits --epochs 20 --out runs/mlp
  shendu train Perceptron --data blobs --epochs 5
  shendu train MLPRegressor --data my.csv --target price --lr 1e-3 --out runs/price
  shendu train mlp --data digits --epochs 30 --resume runs/mlp/last.ckpt --out runs/mlp
  shendu train mlp --data train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz
  shendu train cnn --data mnist --data-root /path/to/data --epochs 3
  shendu train lstm --data adding --epochs 10
  shendu train gru --data sequential-digits
  shendu train attention --data reverse --epochs 8
  shendu train char-lm --data shakespeare --steps 500
  shendu train char-transformer --data my_text.txt --steps 300
  shendu train NeuralNetwork --data xor --epochs 2000 --lr 2 --hidden 4
models: {models}
built-in data: {data}
files: .csv (numeric; target = last column or --target), .npz (X, y or
X_train/y_train/X_test/y_test), IDX images (+ labels file), .txt (text for the
character language models)""",
    "eval": """examples:
  shendu eval runs/mlp/best.ckpt                  # the data it was trained on, test split
  shendu eval runs/mlp/best.ckpt --data digits --split train
  shendu eval runs/price/last.ckpt --data holdout.csv --target price""",
    "predict": """examples:
  shendu predict runs/mlp/best.ckpt new.csv                # one prediction per line
  shendu predict runs/mlp/best.ckpt new.npy --output pred.csv
  shendu predict runs/mlp/best.ckpt new.npz --proba --output proba.npy
  shendu predict runs/charlm/last.ckpt "ROMEO:" --length 300
  shendu predict runs/reverse/last.ckpt "3 1 4 1 5 9"      # -> 9 5 1 4 1 3""",
    "gradcheck": """examples:
  shendu gradcheck mlp
  shendu gradcheck lstm --max-elements 50
  shendu gradcheck transformer --tol 1e-6
  shendu gradcheck attention --max-elements 20
models: {gc}""",
    "bench": """examples:
  shendu bench                 # every workload in benchmarks/
  shendu bench --only mlp --steps 100
  shendu bench --quick --no-torch
  shendu bench --list""",
}


def build_parser() -> argparse.ArgumentParser:
    from shendu import __version__
    from shendu.rl import cli as rl_cli
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
    tr.add_argument("--steps", type=int, help="training steps of a character language "
                    "model (default 300)")
    tr.add_argument("--data-root", metavar="DIR", help="folder of mnist / tinyshakespeare "
                    "files (default: $SHENDU_DATA)")
    tr.add_argument("--out", metavar="DIR", default="shendu-run",
                    help="folder for checkpoints (default: %(default)s)")
    tr.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint")
    tr.set_defaults(func=_cmd_train)
    rl_cli.add_train_options(tr)  # train cartpole | rl --env ID | tictactoe

    e = add("eval", "print a checkpoint's metrics on data",
            "Evaluate a checkpoint written by `shendu train`: accuracy (and log-loss) for "
            "classifiers, MSE/MAE/R^2 for regressors.")
    e.add_argument("checkpoint", metavar="CKPT")
    e.add_argument("--data", metavar="NAME|PATH", help="default: the data it was trained on")
    e.add_argument("--split", choices=["test", "train"], default="test",
                   help="which half of the data (default: test)")
    e.add_argument("--target", metavar="COL", help="CSV target column")
    e.add_argument("--labels", metavar="PATH", help="IDX labels file")
    e.add_argument("--data-root", metavar="DIR", help="folder of mnist / tinyshakespeare "
                   "files (default: as when trained, else $SHENDU_DATA)")
    e.set_defaults(func=_cmd_eval)
    rl_cli.add_eval_dispatch(e)  # eval of a saved game-AI agent
    rl_cli.add_play(sub, [common])  # play tictactoe

    pr = add("predict", "predict with a checkpoint", "Predict for every row of INPUT "
             "(.csv, .npz, .npy or IDX features) with a checkpoint written by `shendu train`; "
             "for a character language model INPUT is the prompt to continue, for a "
             "sequence-to-sequence model token sequences ('3 1 4 1 5') or a file of them.")
    pr.add_argument("checkpoint", metavar="CKPT")
    pr.add_argument("input", metavar="INPUT")
    pr.add_argument("more_inputs", nargs="*", metavar="FILE",
                    help="more audio files (an AudioClassifier answers each .wav)")
    pr.add_argument("--output", metavar="FILE", help=".csv/.txt or .npy (default: stdout)")
    pr.add_argument("--proba", action="store_true", help="class probabilities")
    pr.add_argument("--length", type=int, default=200,
                    help="characters to generate (language models; default 200)")
    pr.add_argument("--temperature", type=float, default=0.8,
                    help="sampling temperature (language models; 0 = greedy; default 0.8)")
    pr.add_argument("--top-k", type=int, help="sample among the k likeliest characters")
    pr.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    pr.set_defaults(func=_cmd_predict)

    g = add("gradcheck", "gradcheck a whole model in float64",
            "Compare backpropagation with central differences for every parameter of a small "
            "float64 model and print the worst relative error per parameter; exit 1 if any "
            "exceeds --tol.", gc=", ".join(GRADCHECK_MODELS))
    g.add_argument("model", metavar="MODEL", help=", ".join(GRADCHECK_MODELS))
    g.add_argument("--eps", type=float, default=1e-6, help="finite-difference step")
    g.add_argument("--tol", type=float, default=1e-5, help="largest relative error allowed")
    g.add_argument("--floor", type=float, default=1e-4,
                   help="derivatives smaller than this are compared absolutely (default "
                        "1e-4: an absolute error of at most tol * floor)")
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
