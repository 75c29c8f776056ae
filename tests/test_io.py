"""Saving and loading: safetensors + JSON, never pickle; hostile files give one clear error."""

import json
import os
import struct

import numpy as np
import pytest

import shendu
from shendu import nn
from shendu.io import FileFormatError, load, load_arrays, save, save_arrays


def _mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def test_module_roundtrip_rebuilds_architecture(tmp_path):
    m = _mlp()
    p = tmp_path / "m.safetensors"
    save(m, p)
    m2 = load(p)
    assert type(m2) is nn.Sequential and repr(m2) == repr(m)
    x = shendu.randn(5, 4)
    np.testing.assert_array_equal(m(x).data, m2(x).data)


def test_file_is_plain_safetensors(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    m = _mlp()
    p = tmp_path / "m.safetensors"
    save(m, p)
    arrs = safetensors_numpy.load_file(str(p))
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(arrs[k], v)
    # and we read files written by the reference implementation
    q = tmp_path / "ref.safetensors"
    safetensors_numpy.save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(q))
    arrays, meta = load_arrays(q)
    np.testing.assert_array_equal(arrays["a"], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_arrays_roundtrip_dtypes(tmp_path):
    arrs = {"f64": np.random.rand(3, 2), "i64": np.arange(5), "b": np.array([True, False]),
            "scalar": np.float32(3.5) * np.ones(()), "empty": np.zeros((0, 3), np.float32)}
    p = tmp_path / "a.safetensors"
    save_arrays(arrs, p, {"k": "v"})
    back, meta = load_arrays(p)
    assert meta == {"k": "v"}
    for k, v in arrs.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)


def test_wrong_architecture_names_key_and_shapes(tmp_path):
    m = _mlp()
    p = tmp_path / "m.safetensors"
    save(m, p)
    other = nn.Sequential(nn.Linear(4, 9), nn.Tanh(), nn.Linear(9, 3))
    with pytest.raises(FileFormatError, match=r"0\.weight.*\(8, 4\).*\(9, 4\)"):
        load(p, model=other)


def _write(p, header: dict | bytes, data: bytes = b"", length=None):
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(hb) if length is None else length
    p.write_bytes(struct.pack("<Q", n) + hb + data)


@pytest.mark.parametrize("case", ["short", "huge_header", "header_past_end", "bad_json",
                                  "not_object", "bad_dtype", "shape_mismatch", "past_end",
                                  "overlap", "bad_name", "neg_shape", "extra_key",
                                  "unknown_class", "outside_class", "bad_meta"])
def test_hostile_files_give_one_clear_error(tmp_path, case):
    p = tmp_path / f"{case}.safetensors"
    ok = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    if case == "short":
        p.write_bytes(b"\x01\x02")
    elif case == "huge_header":
        _write(p, b"{}", length=2**62)
    elif case == "header_past_end":
        _write(p, b"{}", length=100)
    elif case == "bad_json":
        _write(p, b"{not json")
    elif case == "not_object":
        _write(p, b"[1, 2]")
    elif case == "bad_dtype":
        _write(p, {"a": dict(ok, dtype="OBJ")}, b"\0" * 8)
    elif case == "shape_mismatch":
        _write(p, {"a": dict(ok, shape=[1000, 1000])}, b"\0" * 8)
    elif case == "past_end":
        _write(p, {"a": ok}, b"\0" * 4)
    elif case == "overlap":
        _write(p, {"a": ok, "b": dict(ok, data_offsets=[4, 12])}, b"\0" * 12)
    elif case == "bad_name":
        _write(p, {"../../etc/passwd": ok}, b"\0" * 8)
    elif case == "neg_shape":
        _write(p, {"a": dict(ok, shape=[-2])}, b"\0" * 8)
    elif case == "extra_key":
        _write(p, {"a": dict(ok, code="import os")}, b"\0" * 8)
    elif case in ("unknown_class", "outside_class"):
        cls = "shendu.nn.NoSuchLayer" if case == "unknown_class" else "os.system"
        desc = {"format": "shendu", "format_version": 1, "kind": "module",
                "config": {"__module__": cls, "args": ["echo hi"], "kwargs": {}}}
        _write(p, {"__metadata__": {"shendu": json.dumps(desc)}})
    elif case == "bad_meta":
        _write(p, {"__metadata__": {"shendu": 5}})
    with pytest.raises(FileFormatError) as e:
        load(p)
    assert str(p) in str(e.value)


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load(tmp_path / "nope.safetensors")


def test_atomic_write_leaves_no_temporaries(tmp_path):
    p = tmp_path / "m.safetensors"
    save(_mlp(), p)
    save(_mlp(), p)
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_fuzz_mutated_and_truncated_files(tmp_path):
    """Thousands of damaged files: each either loads unchanged or raises FileFormatError."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    m = _mlp()
    good = tmp_path / "good.safetensors"
    save(m, good)
    raw = good.read_bytes()
    ref = {k: v.copy() for k, v in m.state_dict().items()}
    p = tmp_path / "bad.safetensors"

    @settings(max_examples=2500, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(0, len(raw)), st.lists(st.tuples(st.integers(0, len(raw) - 1),
                                                        st.integers(0, 255)), max_size=4),
           st.booleans())
    def run(cut, flips, insert):
        b = bytearray(raw[:cut] if cut < len(raw) else raw)
        for i, v in flips:
            if i < len(b):
                b[i] = v
        if insert and flips:
            b[flips[0][0] % max(len(b), 1):flips[0][0] % max(len(b), 1)] = b"\x00\xff"
        p.write_bytes(bytes(b))
        try:
            out = load(p)
        except FileFormatError:
            return
        sd = out.state_dict()
        assert set(sd) == set(ref)
        for k in ref:
            np.testing.assert_array_equal(sd[k], ref[k])

    run()


def test_checkpoint_state_tree_roundtrip(tmp_path):
    from shendu.io import load_checkpoint, save_checkpoint

    state = {"model": _mlp().state_dict(), "epoch": 3, "step": 120,
             "optimizer": {"state": {0: {"momentum_buffer": np.ones(3)}, 1: {"step": 4.0}},
                           "param_groups": [{"lr": 0.1, "params": [0, 1], "betas": (0.9, 0.99)}]},
             "rng": shendu.get_rng_state(), "history": {"loss": [1.5, float("nan")]}}
    p = tmp_path / "c.ckpt"
    save_checkpoint(p, **state)
    back = load_checkpoint(p)
    assert back["epoch"] == 3 and back["step"] == 120
    assert back["rng"] == state["rng"]
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.99)
    assert list(back["optimizer"]["state"]) == [0, 1]
    np.testing.assert_array_equal(back["optimizer"]["state"][0]["momentum_buffer"], np.ones(3))
    assert np.isnan(back["history"]["loss"][1])
    for k, v in state["model"].items():
        np.testing.assert_array_equal(back["model"][k], v)
