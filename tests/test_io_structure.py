"""Issue 19: saves that always load, loads that touch nothing process-wide, and hostile or
odd files refused with a FileFormatError naming the file."""

import gc
import json
import os
import resource
import socket
import threading
import weakref

import numpy as np
import pytest

import shendu
from shendu import nn, optim
from shendu.io import FileFormatError, _serialize, load, save


def _same_module(a, b):
    assert type(a) is type(b) and repr(a) == repr(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k].data, sb[k].data)


def _hostile(p, desc: dict, arrays: dict | None = None):
    p.write_bytes(_serialize(arrays or {}, {"shendu": json.dumps(
        {"format": "shendu", "format_version": 1, **desc})}))


# ------------------------------------------------------------- saves that always load
def test_sequential_appended_to_round_trips(tmp_path):
    m = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
    m.append(nn.Linear(8, 2))
    save(m, tmp_path / "m.sd")
    _same_module(m, load(tmp_path / "m.sd"))


def test_sequential_with_a_replaced_layer_round_trips(tmp_path):
    m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    m[2] = nn.Linear(8, 5)
    m[1] = nn.ReLU()
    save(m, tmp_path / "m.sd")
    back = load(tmp_path / "m.sd")
    _same_module(m, back)
    assert back(shendu.tensor(np.ones((3, 4), np.float32))).shape == (3, 5)


def test_module_list_and_dict_describe_their_children(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(3, 3)])
            self.heads = nn.ModuleDict({"a": nn.Linear(3, 1)})

    ml = nn.ModuleList([nn.Linear(2, 2)])
    ml.append(nn.Linear(2, 3))
    md = nn.ModuleDict({"x": nn.Linear(2, 2)})
    md["y"] = nn.Conv2d(1, 2, 3)
    for i, m in enumerate([ml, md]):
        save(m, tmp_path / f"{i}.sd")
        _same_module(m, load(tmp_path / f"{i}.sd"))


class _Custom(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.fc = nn.Linear(n, 2)


shendu.io.register(_Custom)


def test_a_module_changed_after_construction_is_refused_at_save(tmp_path):
    m = _Custom(4)
    m.fc = nn.Linear(4, 7)  # the constructor's arguments no longer describe it
    with pytest.raises(TypeError, match=r"changed after it was built.*'fc\.(weight|bias)'"):
        save(m, tmp_path / "m.sd")
    assert not (tmp_path / "m.sd").exists()
    save(m.state_dict(), tmp_path / "sd.sd")  # what the message suggests works
    fresh = _Custom(4)
    fresh.fc = nn.Linear(4, 7)
    load(tmp_path / "sd.sd", into=fresh)


def test_saving_does_not_advance_the_seeded_generator(tmp_path):
    m = nn.Sequential(nn.Linear(50, 50), nn.LSTM(8, 16))
    shendu.manual_seed(3)
    ref = shendu.backend.rng().random(4)
    shendu.manual_seed(3)
    save(m, tmp_path / "m.sd")
    load(tmp_path / "m.sd")
    np.testing.assert_array_equal(shendu.backend.rng().random(4), ref)


@pytest.mark.slow
def test_transformer_encoder_does_not_keep_its_template_layer(tmp_path):
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0)
    alive = weakref.ref(layer)
    enc = nn.TransformerEncoder(layer, 2)
    del layer
    gc.collect()
    assert alive() is None, "the template layer is kept alive by the encoder"
    save(enc, tmp_path / "e.sd")
    _same_module(enc, load(tmp_path / "e.sd"))


def test_embedding_from_large_pretrained_weights_saves(tmp_path):
    w = np.random.default_rng(0).normal(size=(1000, 8)).astype(np.float32)  # 8,000 > 4,096
    emb = nn.Embedding.from_pretrained(w)
    alive = weakref.ref(w)
    del w
    gc.collect()
    assert alive() is None, "the pretrained array is kept alive by the module"
    save(emb, tmp_path / "e.sd")
    back = load(tmp_path / "e.sd")
    _same_module(emb, back)
    assert back.weight.requires_grad is False


# --------------------------------------------------------- nothing process-wide
def test_load_never_changes_process_limits(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(resource, "setrlimit", lambda *a: calls.append(a))
    save(nn.Linear(30, 30), tmp_path / "m.sd")
    load(tmp_path / "m.sd")
    assert calls == []
    p = tmp_path / "big.sd"
    _hostile(p, {"kind": "module", "config": {"__module__": "shendu.nn.linear.Linear",
                                              "args": [40_000, 40_000], "kwargs": {}}})
    with pytest.raises(FileFormatError, match="memory"):
        load(p)
    assert calls == []


def test_other_threads_allocate_freely_during_a_load(tmp_path):
    save(nn.Sequential(*[nn.Linear(64, 64) for _ in range(20)]), tmp_path / "m.sd")
    errors, stop = [], threading.Event()

    def allocate():
        while not stop.is_set():
            try:
                np.ones(200 * 2**20 // 8).sum()
            except MemoryError as e:  # pragma: no cover - what the process limit caused
                errors.append(e)

    t = threading.Thread(target=allocate)
    t.start()
    try:
        for _ in range(5):
            load(tmp_path / "m.sd")
    finally:
        stop.set()
        t.join()
    assert errors == []


# ---------------------------------------------------------- odd and hostile files
def _load_in_thread(p):
    out = {}

    def run():
        try:
            out["value"] = load(p)
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), f"load({p}) hangs"
    return out.get("error")


def test_named_pipe_is_refused_not_waited_on(tmp_path):
    p = tmp_path / "fifo"
    os.mkfifo(p)
    e = _load_in_thread(p)
    assert isinstance(e, FileFormatError) and str(p) in str(e) and "regular file" in str(e)


def test_proc_self_mem_is_a_file_format_error():
    e = _load_in_thread("/proc/self/mem")
    assert isinstance(e, FileFormatError) and "/proc/self/mem" in str(e)


def test_socket_is_a_file_format_error(tmp_path):
    p = tmp_path / "sock"
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(p))
        e = _load_in_thread(p)
    finally:
        s.close()
    assert isinstance(e, FileFormatError) and str(p) in str(e)


def test_symlink_loop_is_a_file_format_error(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    os.symlink(b, a)
    os.symlink(a, b)
    e = _load_in_thread(a)
    assert isinstance(e, FileFormatError) and str(a) in str(e)


def test_sparse_giant_file_is_not_read(tmp_path):
    p = tmp_path / "sparse.sd"
    p.write_bytes(_serialize({"x": np.zeros(1, np.float32)}, {}))
    with open(p, "r+b") as f:
        f.truncate(3 * 2**30)  # 3 GiB, nearly all a hole; the header declares 4 bytes
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FileFormatError, match=str(p)):
        load(p)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024 < 256


def test_huge_integer_in_a_header_is_a_file_format_error(tmp_path):
    p = tmp_path / "int.sd"
    text = '{"x":{"dtype":"F32","shape":[' + "9" * 5000 + '],"data_offsets":[0,4]}}'
    hb = text.encode() + b" " * (-len(text) % 8)
    p.write_bytes(len(hb).to_bytes(8, "little") + hb + b"\0" * 4)
    with pytest.raises(FileFormatError, match=str(p)):
        load(p)
    q = tmp_path / "desc.sd"
    q.write_bytes(_serialize({}, {"shendu": '{"format":"shendu","format_version":'
                                           + "7" * 5000 + "}"}))
    with pytest.raises(FileFormatError, match=str(q)):
        load(q)


@pytest.mark.slow
def test_a_file_of_countless_tiny_modules_is_refused(tmp_path):
    p = tmp_path / "many.sd"
    tiny = {"__module__": "shendu.nn.activation.ReLU", "args": [], "kwargs": {}}
    _hostile(p, {"kind": "module", "config": {"__module__": "shendu.nn.container.Sequential",
                                              "args": [tiny] * 25_000, "kwargs": {}}})
    with pytest.raises(FileFormatError, match="modules"):
        load(p)


def test_a_header_larger_than_the_limit_is_refused_unread(tmp_path):
    p = tmp_path / "big-header.sd"
    n = 55 * 2**20
    with open(p, "wb") as f:
        f.write(n.to_bytes(8, "little"))
        f.truncate(8 + n)
    with pytest.raises(FileFormatError, match="header length"):
        load(p)


def test_scheduler_state_cannot_replace_methods(tmp_path):
    opt = optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    sched = optim.lr_scheduler.StepLR(opt, 2)
    p = tmp_path / "s.sd"
    save(sched, p)
    from shendu.io import load_arrays

    arrays, meta = load_arrays(p)
    desc = json.loads(meta["shendu"])
    desc["state"]["__dict__"].append(["step", "not a method"])
    p.write_bytes(_serialize(arrays, {"shendu": json.dumps(desc)}))
    with pytest.raises(FileFormatError, match="step"):
        load(p, optimizer=opt)


def test_tensors_go_through_the_safetensors_package(tmp_path, monkeypatch):
    import safetensors.numpy as stn

    calls = []
    real_save, real_load = stn.save, stn.load
    monkeypatch.setattr(stn, "save", lambda *a, **k: calls.append("save") or real_save(*a, **k))
    monkeypatch.setattr(stn, "load", lambda *a, **k: calls.append("load") or real_load(*a, **k))
    m = nn.Linear(3, 2)
    save(m, tmp_path / "m.sd")
    _same_module(m, load(tmp_path / "m.sd"))
    assert calls == ["save", "load"]
    # and any safetensors reader gets the weights and shendu's metadata out
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m.sd"), framework="numpy") as f:
        assert sorted(f.keys()) == ["bias", "weight"]
        assert json.loads(f.metadata()["shendu"])["kind"] == "module"
