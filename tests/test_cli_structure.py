"""Issue 19: the CLI as a package — one IDX reader (the capped one), one registry."""

import gzip
import struct

import numpy as np
import pytest

from shendu.cli import MODELS, CLIError, load_data
from shendu.cli.data import read_idx
from shendu.cli.gradcheck import GRADCHECK_MODELS, _gc_name
from shendu.cli.registry import _ALIASES, _model_spec


def test_cli_idx_reader_refuses_a_header_announcing_too_much(tmp_path):
    p = tmp_path / "giant-images-idx3-ubyte.gz"
    # 4,000,000 images of 4,000 x 4,000 bytes announced by a 16-byte header, gzipped
    with gzip.open(p, "wb") as f:
        f.write(b"\0\0\x08\x03" + struct.pack(">3I", 4_000_000, 4_000, 4_000))
    with pytest.raises(CLIError, match="more than this reader accepts"):
        read_idx(str(p))


def test_cli_idx_reader_names_the_file(tmp_path):
    p = tmp_path / "x-images-idx3-ubyte"
    p.write_bytes(b"\0\0\x08\x01" + struct.pack(">I", 10) + b"\0" * 12)  # 2 trailing bytes
    with pytest.raises(CLIError, match="x-images-idx3-ubyte"):
        read_idx(str(p))


def test_cli_reads_idx_pairs_with_the_shared_reader(tmp_path):
    imgs = np.arange(6 * 2 * 2, dtype=np.uint8).reshape(6, 2, 2)
    labels = np.array([0, 1, 0, 1, 0, 1], np.uint8)
    (tmp_path / "t-images-idx3-ubyte").write_bytes(
        b"\0\0\x08\x03" + struct.pack(">3I", 6, 2, 2) + imgs.tobytes())
    (tmp_path / "t-labels-idx1-ubyte").write_bytes(
        b"\0\0\x08\x01" + struct.pack(">I", 6) + labels.tobytes())
    data = load_data(str(tmp_path / "t-images-idx3-ubyte"))
    n = len(data.X_train) + len(data.X_test)
    assert n == 6 and set(np.concatenate([data.y_train, data.y_test])) == {0, 1}


def test_one_registration_per_model():
    for key, spec in MODELS.items():
        assert _model_spec(spec.cls)[0] is spec
        for a in spec.aliases:
            assert _ALIASES[a] == key and _model_spec(a)[0] is spec
        if spec.gradcheck is not None:
            assert spec.gradcheck in GRADCHECK_MODELS
            assert _gc_name(spec.cls) == spec.gradcheck
