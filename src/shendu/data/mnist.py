"""MNIST (LeCun, Bottou, Bengio & Haffner 1998): 70,000 handwritten digits, 28x28 grey
levels, read from the IDX files of its distribution.

IDX is a tiny binary format: a 4-byte magic number (two zero bytes, a type code, the number
of dimensions), one big-endian uint32 per dimension, then the values, big-endian, row-major.
MNIST's images have magic 2051 (``0x00000803``: unsigned bytes, 3 dims) and its labels
2049 (``0x00000801``: unsigned bytes, 1 dim). The reader checks all of it — gzip stream,
magic, type, declared sizes against the bytes present — and says what is wrong with a bad
file instead of returning garbage. It never reads more bytes than the header announces
(a hostile file cannot make it allocate without bound).

>>> from shendu.data import mnist, mnist_split
>>> X, y = mnist(root="data/mnist", train=False)          # (10000, 28, 28) uint8, (10000,)
>>> X_train, X_test, y_train, y_test = mnist_split("data/mnist")   # 8,000 / 2,000
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import zlib

import numpy as np

__all__ = ["read_idx", "mnist", "mnist_split", "MNIST_MIRRORS"]

# IDX type code -> (big-endian dtype, name)
_IDX_TYPES = {
    0x08: (np.dtype(np.uint8), "uint8"),
    0x09: (np.dtype(np.int8), "int8"),
    0x0B: (np.dtype(">i2"), "int16"),
    0x0C: (np.dtype(">i4"), "int32"),
    0x0D: (np.dtype(">f4"), "float32"),
    0x0E: (np.dtype(">f8"), "float64"),
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049
_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: Where ``download=True`` looks, in order (the original site is often rate-limited).
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# MD5 of the published .gz files
_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_MAX_BYTES = 1 << 34  # refuse headers that announce more than 16 GiB of data


class _Reader:
    """Exact reads from a raw or gzipped file, turning stream errors into clear ones."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        with open(path, "rb") as f:
            head = f.read(2)
        self.gz = head == b"\x1f\x8b"
        self.f = gzip.open(path, "rb") if self.gz else open(path, "rb")

    def read(self, n: int) -> bytes:
        try:
            return self.f.read(n)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"read_idx: {self.path.name} is a damaged gzip file ({e})") from None

    def close(self) -> None:
        self.f.close()


def read_idx(path, expect_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or not, told apart by content) into a native array.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and
    the problem for a bad one: too short, wrong magic number, unknown type, truncated data,
    trailing bytes, a damaged gzip stream.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_idx: no such file: {path}")
    r = _Reader(path)
    try:
        head = r.read(4)
        if len(head) < 4:
            raise ValueError(f"read_idx: {path.name} is not an IDX file: it holds {len(head)} "
                             f"bytes, fewer than the 4-byte magic number")
        magic = int.from_bytes(head, "big")
        code, ndim = head[2], head[3]
        if head[:2] != b"\0\0" or code not in _IDX_TYPES or ndim == 0:
            raise ValueError(f"read_idx: {path.name} is not an IDX file: magic number "
                             f"0x{magic:08X} (expected 0x0000TTNN with a type TT in "
                             f"{{08, 09, 0B, 0C, 0D, 0E}} and NN >= 1 dims)")
        if expect_magic is not None and magic != expect_magic:
            raise ValueError(f"read_idx: {path.name} has magic number {magic}, expected "
                             f"{expect_magic}")
        dims_raw = r.read(4 * ndim)
        if len(dims_raw) < 4 * ndim:
            raise ValueError(f"read_idx: {path.name} is truncated inside its header (expected "
                             f"{ndim} dimension sizes)")
        dims = tuple(int.from_bytes(dims_raw[4 * i:4 * i + 4], "big") for i in range(ndim))
        dtype, tname = _IDX_TYPES[code]
        nbytes = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        shape = "x".join(map(str, dims))
        if nbytes > _MAX_BYTES:
            raise ValueError(f"read_idx: {path.name} announces {shape} {tname} = {nbytes:,} "
                             f"bytes, more than this reader accepts")
        data = r.read(nbytes)
        if len(data) < nbytes:
            raise ValueError(f"read_idx: {path.name} is truncated: its header announces "
                             f"{shape} {tname} = {nbytes:,} bytes of data, the file holds "
                             f"{len(data):,}")
        extra = len(r.read(1 << 16))
        if extra:
            raise ValueError(f"read_idx: {path.name} has {'at least ' if extra == 1 << 16 else ''}"
                             f"{extra:,} bytes after the {shape} {tname} data its header "
                             f"announces (wrong header or concatenated files?)")
    finally:
        r.close()
    return np.frombuffer(data, dtype).astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def _default_root() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "shendu" / "mnist"


def _find(root: pathlib.Path, stem: str) -> pathlib.Path | None:
    for folder in (root, root / "mnist", root / "MNIST" / "raw"):
        for name in (stem + ".gz", stem):
            p = folder / name
            if p.is_file():
                return p
    return None


def _download(root: pathlib.Path, stem: str, mirrors) -> pathlib.Path:
    import urllib.error
    import urllib.request

    name = stem + ".gz"
    root.mkdir(parents=True, exist_ok=True)
    errors = []
    for base in mirrors:
        try:
            with urllib.request.urlopen(base + name, timeout=30) as resp:
                blob = resp.read(64 << 20)
        except (urllib.error.URLError, OSError, ValueError) as e:
            errors.append(f"{base}: {getattr(e, 'reason', e)}")
            continue
        md5 = hashlib.md5(blob).hexdigest()
        if md5 != _MD5[name]:
            errors.append(f"{base}: checksum mismatch (md5 {md5}, expected {_MD5[name]})")
            continue
        target = root / name
        tmp = target.with_suffix(".gz.part")
        tmp.write_bytes(blob)
        tmp.replace(target)
        return target
    raise RuntimeError(f"mnist: could not download {name} (is there a network?). Tried: "
                       + "; ".join(errors) + f". You can also put the file in {root} by hand.")


def mnist(root=None, train: bool = True, download: bool = False
          ) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST training (60,000) or test (10,000) set as ``(images, labels)``.

    ``images`` is uint8 (N, 28, 28) (0 = background, 255 = ink), ``labels`` int64 (N,).
    ``root`` is a folder holding the four IDX files (``.gz`` or not; also found in
    ``root/mnist`` or ``root/MNIST/raw``); it defaults to ``~/.cache/shendu/mnist``. With
    ``download=True`` missing files are fetched from :data:`MNIST_MIRRORS` into ``root``
    and checked against their published MD5.

    Divide by 255 for inputs in [0, 1]; add a channel axis (``X[:, None]``) for a CNN.
    """
    root = _default_root() if root is None else pathlib.Path(root)
    img_stem, lbl_stem = _FILES[bool(train)]
    paths = []
    for stem in (img_stem, lbl_stem):
        p = _find(root, stem)
        if p is None and download:
            p = _download(root, stem, MNIST_MIRRORS)
        if p is None:
            hint = ""
            if train and _find(root, _FILES[False][0]) is not None:
                hint = (" The folder holds only the test set (t10k): use "
                        "shendu.data.mnist_split(root) for the conventional split of it into "
                        "8,000 training and 2,000 test images, or download=True for the "
                        "training set.")
            elif not download:
                hint = " Pass download=True to fetch it."
            raise FileNotFoundError(f"mnist: {stem}[.gz] not found in {root}.{hint}")
        paths.append(p)
    images = read_idx(paths[0], _IMAGES_MAGIC)
    labels = read_idx(paths[1], _LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"mnist: {paths[0].name} holds images of size "
                         f"{'x'.join(map(str, images.shape[1:]))}, expected 28x28")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"mnist: {paths[0].name} holds {images.shape[0]:,} images but "
                         f"{paths[1].name} {labels.shape[0]:,} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"mnist: {paths[1].name} holds label {int(labels.max())}, expected "
                         f"digits 0..9")
    return images, labels.astype(np.int64)


def mnist_split(root=None, n_train: int = 8000, download: bool = False):
    """The convention used where only the MNIST test set is at hand: its first ``n_train``
    (8,000) images for training, the remaining 2,000 for testing.

    Returns ``(X_train, X_test, y_train, y_test)`` (the order of scikit-learn's
    ``train_test_split`` and of :mod:`shendu.data.datasets`), images uint8 (N, 28, 28).
    The 2,000 test images all lie in the second half of t10k, which the MNIST authors
    describe as harder than the cleaner first 5,000, so accuracy measured here is a slightly
    pessimistic estimate of accuracy on the whole test set.
    """
    from shendu.data.datasets import Split

    X, y = mnist(root, train=False, download=download)
    if not 0 < n_train < len(X):
        raise ValueError(f"mnist_split: n_train must be in 1..{len(X) - 1}, got {n_train}")
    return Split(X[:n_train], X[n_train:], y[:n_train], y[n_train:])
