"""Where the CLI's data comes from: built-in data sets, CSV, NPZ, NPY, IDX (through
:func:`shendu.data.mnist.read_idx`, the one capped IDX reader) and text files."""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shendu.cli.errors import CLIError


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


def read_idx(path: str) -> np.ndarray:
    """An IDX file (the MNIST format, gzipped or not), read by :func:`shendu.data.mnist.read_idx`
    (the one IDX reader: it refuses headers that announce more than it accepts before
    reading, trailing bytes and damaged gzip streams)."""
    from shendu.data.mnist import read_idx as _read

    try:
        return _read(path)
    except (OSError, ValueError) as e:
        msg = str(e).removeprefix("read_idx: ")
        raise CLIError(msg if path in msg or os.path.basename(path) in msg
                       else f"{path}: {msg}") from None


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
