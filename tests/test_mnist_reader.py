"""The IDX/MNIST reader: real files from the shared data folder (skipped with a reason when
absent) and small IDX files written here, including truncated and corrupt ones."""

import gzip
import hashlib
import io
import sys
import urllib.error

import numpy as np
import pytest
from conftest import data_dir

import shendu.data
from shendu.data.mnist import MNIST_MIRRORS, mnist, mnist_split, read_idx

mnist_mod = sys.modules["shendu.data.mnist"]   # the attribute shendu.data.mnist is the function


def real_root():
    d = data_dir()
    if d is None or not (d / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("the shared MNIST files (../shared/data/mnist or $SHENDU_DATA) are absent")
    return d / "mnist"


def idx_bytes(arr: np.ndarray, code: int | None = None) -> bytes:
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
             np.float64: 0x0E}
    code = codes[arr.dtype.type] if code is None else code
    head = bytes([0, 0, code, arr.ndim]) + b"".join(int(n).to_bytes(4, "big")
                                                    for n in arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path, blob: bytes, gz: bool = False):
    path.write_bytes(gzip.compress(blob) if gz else blob)
    return path


# ----------------------------------------------------------------------- real files
def test_real_mnist_test_set():
    X, y = mnist(real_root(), train=False)
    assert X.shape == (10000, 28, 28) and X.dtype == np.uint8
    assert y.shape == (10000,) and y.dtype == np.int64
    # facts of the published t10k set: its class counts and its first digits
    np.testing.assert_array_equal(np.bincount(y), [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                                   974, 1009])
    np.testing.assert_array_equal(y[:8], [7, 2, 1, 0, 4, 1, 4, 9])
    assert X.min() == 0 and X.max() == 255
    assert (X[:, :2, :] == 0).mean() > 0.99         # a blank margin, digits centred


def test_real_mnist_split_and_train_hint():
    root = real_root()
    X_tr, X_te, y_tr, y_te = mnist_split(root)
    X, y = shendu.data.mnist(root, train=False)
    assert len(X_tr) == 8000 and len(X_te) == 2000
    np.testing.assert_array_equal(X_tr, X[:8000])
    np.testing.assert_array_equal(y_te, y[8000:])
    with pytest.raises(FileNotFoundError, match="holds only the test set.*mnist_split"):
        mnist(root, train=True)


# ----------------------------------------------------------------- written IDX files
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
def test_read_idx_roundtrip(tmp_path, gz, dtype):
    arr = (np.arange(60).reshape(3, 4, 5) - 20).astype(dtype)
    if dtype == np.uint8:
        arr = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    p = write(tmp_path / "a.idx", idx_bytes(arr), gz)
    out = read_idx(p)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_mnist_on_small_written_files(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    write(tmp_path / "t10k-images-idx3-ubyte.gz", idx_bytes(imgs), gz=True)
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(labels))   # uncompressed is fine
    X, y = mnist(tmp_path, train=False)
    np.testing.assert_array_equal(X, imgs)
    np.testing.assert_array_equal(y, labels)
    with pytest.raises(ValueError, match=r"n_train must be in 1\.\.6"):
        mnist_split(tmp_path, n_train=7)


@pytest.mark.parametrize("blob,msg", [
    (b"\x00\x00", "fewer than the 4-byte magic"),
    (b"\x12\x34\x08\x01" + b"\0" * 8, "not an IDX file: magic number 0x12340801"),
    (b"\x00\x00\x07\x01" + b"\0" * 8, "not an IDX file"),                   # unknown type
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated inside its header"),
    (idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-100], r"truncated: .* 4x28x28 uint8 = "
                                                          r"3,136 bytes of data, the file "
                                                          r"holds 3,036"),
    (idx_bytes(np.zeros((4, 28, 28), np.uint8)) + b"\0" * 5, "5 bytes after the 4x28x28"),
])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_bad_files(tmp_path, blob, msg, gz):
    p = write(tmp_path / "bad.idx", blob, gz)
    with pytest.raises(ValueError, match=msg):
        read_idx(p)


def test_damaged_gzip_and_missing_file(tmp_path):
    blob = gzip.compress(idx_bytes(np.arange(5000, dtype=np.uint8) % 7))
    p = write(tmp_path / "cut.gz", blob[: len(blob) // 2])       # a download cut short
    with pytest.raises(ValueError, match="cut.gz is a damaged gzip file"):
        read_idx(p)
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0xFF
    p = write(tmp_path / "flip.gz", bytes(flipped))
    with pytest.raises(ValueError, match="flip.gz is"):
        read_idx(p)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_idx(tmp_path / "nothing")


def test_hostile_header_is_refused_without_allocating(tmp_path):
    head = bytes([0, 0, 0x0E, 3]) + b"".join((60000).to_bytes(4, "big") for _ in range(3))
    with pytest.raises(ValueError, match="more than this reader accepts"):
        read_idx(write(tmp_path / "bomb.idx", head))


@pytest.mark.parametrize("case,msg", [
    ("swapped", "has magic number 2049, expected 2051"),
    ("count", "holds 5 images but t10k-labels-idx1-ubyte 4 labels"),
    ("label", "holds label 12, expected digits 0..9"),
    ("size", "holds images of size 8x8, expected 28x28"),
])
def test_mnist_validates_the_pair(tmp_path, case, msg):
    imgs = np.zeros((5, 28, 28), np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    if case == "swapped":
        imgs = labels
    elif case == "count":
        labels = labels[:4]
    elif case == "label":
        labels[2] = 12
    elif case == "size":
        imgs = np.zeros((5, 8, 8), np.uint8)
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(imgs))
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(labels))
    with pytest.raises(ValueError, match=msg):
        mnist(tmp_path, train=False)


def test_missing_files_and_no_network(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="not found in .*download=True"):
        mnist(tmp_path, train=False)

    def offline(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(RuntimeError, match="could not download t10k-images-idx3-ubyte.gz "
                                           r"\(is there a network\?\).*Name or service"):
        mnist(tmp_path / "cache", train=False, download=True)


def test_download_checks_md5_and_caches(tmp_path, monkeypatch):
    """A fake mirror serves small files: a wrong checksum is refused, a right one cached."""
    imgs = np.full((3, 28, 28), 9, np.uint8)
    labels = np.array([1, 2, 3], np.uint8)
    served = {"t10k-images-idx3-ubyte.gz": gzip.compress(idx_bytes(imgs)),
              "t10k-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(labels))}
    calls = []

    def fake(url, timeout=None):
        calls.append(url)
        return io.BytesIO(served[url.rsplit("/", 1)[1]])
    monkeypatch.setattr("urllib.request.urlopen", fake)
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        mnist(tmp_path, train=False, download=True)
    assert len(calls) == len(MNIST_MIRRORS)                 # every mirror was tried
    monkeypatch.setitem(mnist_mod._MD5, "t10k-images-idx3-ubyte.gz",
                        hashlib.md5(served["t10k-images-idx3-ubyte.gz"]).hexdigest())
    monkeypatch.setitem(mnist_mod._MD5, "t10k-labels-idx1-ubyte.gz",
                        hashlib.md5(served["t10k-labels-idx1-ubyte.gz"]).hexdigest())
    X, y = mnist(tmp_path, train=False, download=True)
    np.testing.assert_array_equal(X, imgs)
    assert (tmp_path / "t10k-images-idx3-ubyte.gz").is_file()
    n = len(calls)
    mnist(tmp_path, train=False, download=True)             # cached: no new request
    assert len(calls) == n
