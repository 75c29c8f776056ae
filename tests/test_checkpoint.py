"""ModelCheckpoint: what a checkpoint holds, which files are kept, the best epoch, Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import shendu
from shendu import nn, optim
from shendu.checkpoint import ModelCheckpoint, latest_checkpoint, list_checkpoints
from shendu.data import DataLoader, TensorDataset
from shendu.io import load_checkpoint
from shendu.train import LambdaCallback, fit


def _setup(seed=0):
    shendu.manual_seed(seed)
    g = np.random.default_rng(3)
    X = g.normal(size=(48, 5)).astype(np.float32)
    y = (X[:, 0] - X[:, 2] > 0).astype(np.int64)
    model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Dropout(0.1), nn.Linear(12, 2))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train = DataLoader(TensorDataset(X, y), batch_size=8, shuffle=True)   # 6 batches
    val = DataLoader(TensorDataset(X[:24], y[:24]), batch_size=12)
    return model, opt, train, val


def _fit(epochs, callbacks=(), resume=None):
    model, opt, train, val = _setup()
    h = fit(model, nn.CrossEntropyLoss(), opt, train, epochs, val_loader=val,
            metrics=["accuracy"], callbacks=list(callbacks), verbose=0, resume=resume)
    return model, h


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_keeps_the_last_k_and_the_best(tmp_path):
    ck = ModelCheckpoint(tmp_path, keep_last=2, monitor="val_loss")
    model, h = _fit(6, [ck])
    names = sorted(os.listdir(tmp_path))
    assert names == ["best.ckpt", "epoch0005-step00000030.ckpt", "epoch0006-step00000036.ckpt"]
    assert ck.last_path == tmp_path / "epoch0006-step00000036.ckpt"
    best_epoch = int(np.argmin(h["val_loss"]))
    assert ck.best_epoch == best_epoch and ck.best == min(h["val_loss"])
    best = load_checkpoint(tmp_path / "best.ckpt")
    assert best["trainer"]["epoch"] == best_epoch and not best["trainer"]["in_epoch"]
    # the best file holds the weights the run had after that epoch
    at_best, _ = _fit(best_epoch + 1)
    for k, v in at_best.state_dict().items():
        assert np.array_equal(best["model"][k], v), k
    assert best["history"]["values"]["val_loss"] == h["val_loss"][:best_epoch + 1]


def test_best_by_accuracy_is_the_first_maximum(tmp_path):
    ck = ModelCheckpoint(tmp_path, every_n_epochs=None, monitor="val_accuracy")
    _, h = _fit(5, [ck])
    assert os.listdir(tmp_path) == ["best.ckpt"] and ck.mode == "max"
    assert ck.best_epoch == int(np.argmax(h["val_accuracy"]))


def test_a_checkpoint_holds_the_whole_state(tmp_path):
    seen = {}

    def grab(event):  # runs after ModelCheckpoint's on_checkpoint at each point
        if event == "epoch" and cb.trainer.epoch == 1:
            seen["model"] = {k: v.copy() for k, v in cb.trainer.model.state_dict().items()}
            seen["rng"] = shendu.get_rng_state()
            seen["loader"] = cb.trainer.train_loader.state_dict()
            seen["opt"] = cb.trainer.optimizer.state_dict()

    cb = LambdaCallback(on_checkpoint=grab)
    _fit(3, [ModelCheckpoint(tmp_path, keep_last=None), cb])
    st = shendu.load(tmp_path / "epoch0002-step00000012.ckpt")  # load() reads checkpoints too
    assert set(st) == {"trainer", "model", "optimizer", "callbacks", "history", "meter",
                       "train_loader", "val_loader", "rng"}
    assert st["trainer"] == {"version": 1, "epoch": 1, "batch": 0, "in_epoch": False,
                             "global_step": 12, "stop_training": False, "epochs": 3}
    assert st["rng"] == seen["rng"] and st["meter"] is None
    for k, v in seen["model"].items():
        assert np.array_equal(st["model"][k], v)
    assert st["train_loader"]["epoch"] == seen["loader"]["epoch"] == 2
    assert st["optimizer"]["param_groups"][0]["lr"] == 0.1
    for i, s in seen["opt"]["state"].items():
        assert np.array_equal(st["optimizer"]["state"][i]["momentum_buffer"],
                              s["momentum_buffer"])
    assert st["history"]["epochs"] == [0, 1] and len(st["history"]["values"]["loss"]) == 2
    assert [c["class"] for c in st["callbacks"] if c] == ["ModelCheckpoint"]


def test_temporaries_of_a_crashed_save_are_removed(tmp_path):
    (tmp_path / ".tmp-abc123.part").write_bytes(b"half a checkpoint")
    (tmp_path / "notes.txt").write_text("mine")
    _fit(1, [ModelCheckpoint(tmp_path)])
    assert sorted(os.listdir(tmp_path)) == ["epoch0001-step00000006.ckpt", "notes.txt"]


def test_listing_orders_by_step_then_end_of_epoch(tmp_path):
    for n in ["epoch0002-step00000012.ckpt", "epoch0002-step00000012-mid.ckpt",
              "epoch0001-step00000006.ckpt", "epoch0002-step00000009-mid.ckpt", "best.ckpt",
              "epoch2-step3.ckpt", "x.ckpt"]:
        (tmp_path / n).write_bytes(b"")
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "epoch0001-step00000006.ckpt", "epoch0002-step00000009-mid.ckpt",
        "epoch0002-step00000012-mid.ckpt", "epoch0002-step00000012.ckpt"]
    assert latest_checkpoint(tmp_path / "none") is None


@pytest.mark.parametrize("kw, msg", [({"every_n_steps": 0}, "every_n_steps"),
                                     ({"keep_last": -1}, "keep_last"),
                                     ({"monitor": "loss", "mode": "up"}, "mode")])
def test_bad_arguments(tmp_path, kw, msg):
    with pytest.raises(ValueError, match=f"ModelCheckpoint.*{msg}"):
        ModelCheckpoint(tmp_path, **kw)


def test_ctrl_c_finishes_the_batch_checkpoints_and_returns(tmp_path):
    steps = []

    def on_batch_begin(b, logs):
        if len(steps) == 9:  # 4th batch of epoch 2: a real SIGINT to ourselves
            os.kill(os.getpid(), signal.SIGINT)
        steps.append(b)

    ck = ModelCheckpoint(tmp_path)
    model, h = _fit(4, [ck, LambdaCallback(on_batch_begin=on_batch_begin)])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert h.epochs == [0] and len(steps) == 10   # the batch that got Ctrl-C ran to its end
    assert ck.last_path.name == "epoch0002-step00000010-mid.ckpt"
    t = load_checkpoint(ck.last_path)["trainer"]
    assert (t["epoch"], t["batch"], t["in_epoch"]) == (1, 4, True)
    straight, hs = _fit(4)
    resumed, hr = _fit(4, [ModelCheckpoint(tmp_path)], resume=tmp_path)
    assert _same_weights(straight, resumed) and hs == hr


def test_interrupt_at_an_epoch_end_keeps_that_epoch(tmp_path):
    def on_epoch_end(epoch, logs):
        if epoch == 1:
            raise KeyboardInterrupt

    ck = ModelCheckpoint(tmp_path, every_n_epochs=3)
    _, h = _fit(5, [ck, LambdaCallback(on_epoch_end=on_epoch_end)])
    assert h.epochs == [0, 1]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["epoch0002-step00000012.ckpt"]
    straight, hs = _fit(5)
    resumed, hr = _fit(5, resume=tmp_path)
    assert _same_weights(straight, resumed) and hs == hr


def test_a_second_interrupt_aborts(tmp_path):
    def twice(b, logs):
        if b == 2:
            raise KeyboardInterrupt

    ends = []
    cb = LambdaCallback(on_batch_begin=twice, on_after_backward=twice,
                        on_train_end=lambda logs: ends.append(logs))
    with pytest.raises(KeyboardInterrupt):
        _fit(2, [ModelCheckpoint(tmp_path, every_n_steps=1), cb])
    assert ends == [{"interrupted": True}]
    # no checkpoint of the half-done batch: the newest is the one after batch 2
    assert latest_checkpoint(tmp_path).name == "epoch0001-step00000002-mid.ckpt"


CHILD = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {tests!r})
    from test_checkpoint import _setup
    from shendu import nn
    from shendu.checkpoint import ModelCheckpoint
    from shendu.train import LambdaCallback, fit

    def slow(b, logs):
        if b == 2 and cb.trainer.epoch == 1:
            print("READY", flush=True)
            # hold this batch until the parent's SIGINT has been seen: the interrupted step
            # is then this one, however fast or busy the machine is
            while not cb.trainer.interrupted:
                time.sleep(0.005)

    model, opt, train, val = _setup()
    cb = LambdaCallback(on_batch_end=slow)
    h = fit(model, nn.CrossEntropyLoss(), opt, train, 50, val_loader=val, metrics=["accuracy"],
            callbacks=[ModelCheckpoint({ckdir!r}), cb], verbose=0)
    print(json.dumps({{"epochs": h.epochs, "step": cb.trainer.global_step}}), flush=True)
""")


@pytest.mark.slow
def test_sigint_to_a_training_process(tmp_path):
    code = CHILD.format(tests=os.path.dirname(__file__), ckdir=str(tmp_path / "ck"))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "READY"
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["epochs"] == [0] and res["step"] == 9
    assert "interrupted - finishing the current batch" in err
    last = latest_checkpoint(tmp_path / "ck")
    assert last.name == f"epoch0002-step{res['step']:08d}-mid.ckpt"
    straight, hs = _fit(3)
    resumed, hr = _fit(3, resume=last)
    assert _same_weights(straight, resumed) and hs == hr
