"""Exact resume: a run stopped and resumed from a checkpoint ends bit-identical to one that
never stopped — between epochs and inside one, for an MLP, a CNN and an LSTM."""

import numpy as np
import pytest

import shendu
from shendu import nn, optim
from shendu.checkpoint import ModelCheckpoint, latest_checkpoint, list_checkpoints
from shendu.data import DataLoader, TensorDataset
from shendu.io import load_checkpoint
from shendu.train import EarlyStopping, LambdaCallback, fit


class LastStep(nn.Module):
    """LSTM over the sequence, linear head on the last step."""

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_in, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def _data(kind):
    g = np.random.default_rng(1)
    if kind == "mlp":
        X = g.normal(size=(40, 6)).astype(np.float32)
        y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    elif kind == "cnn":
        X = g.normal(size=(40, 1, 8, 8)).astype(np.float32)
        y = (X[:, 0, :4].mean((1, 2)) > 0).astype(np.int64)
    else:
        X = g.normal(size=(40, 7, 3)).astype(np.float32)
        y = (X[:, :, 0].sum(1) > 0).astype(np.int64)
    return X, y


def _model(kind):
    if kind == "mlp":
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    if kind == "cnn":
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Dropout2d(0.1), nn.Flatten(),
                             nn.Linear(4 * 4 * 4, 2))
    return LastStep(3, 8, 2)


def run(kind, epochs, ckdir=None, resume=None, stop_at_step=None, every_n_steps=None,
        scheduler="epoch", early=False, list_loader=False):
    """Build everything from the seed (as a fresh process would), then fit."""
    shendu.manual_seed(0)
    X, y = _data(kind)
    model = _model(kind)
    opt = (optim.Adam(model.parameters(), lr=0.01) if kind != "cnn"
           else optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True))
    train = DataLoader(TensorDataset(X, y), batch_size=8, shuffle=True)
    val = DataLoader(TensorDataset(X[:16], y[:16]), batch_size=8)
    if list_loader:  # a plain list of batches: resumed by skipping the ones done
        train = [(shendu.tensor(X[i:i + 8]), shendu.tensor(y[i:i + 8]))
                 for i in range(0, len(X), 8)]
    if scheduler == "epoch":
        sched, interval = optim.lr_scheduler.StepLR(opt, 1, gamma=0.8), "epoch"
    else:
        sched, interval = optim.lr_scheduler.OneCycleLR(
            opt, max_lr=0.02, total_steps=epochs * len(train) + 1), "batch"
    callbacks = []
    if early:
        callbacks.append(EarlyStopping("val_loss", patience=1, min_delta=0.05,
                                       restore_best_weights=True))
    if ckdir is not None:
        callbacks.append(ModelCheckpoint(ckdir, every_n_steps=every_n_steps, keep_last=2))
    if stop_at_step is not None:
        def stop(batch, logs):
            if trainer_steps[0] + 1 == stop_at_step:
                raise KeyboardInterrupt  # as Ctrl-C: finish this batch, checkpoint, return
            trainer_steps[0] += 1
        trainer_steps = [0]
        callbacks.append(LambdaCallback(on_batch_end=stop))
    hist = fit(model, nn.CrossEntropyLoss(), opt, train, epochs, val_loader=val,
               metrics=["accuracy"], callbacks=callbacks, scheduler=sched,
               scheduler_interval=interval, verbose=0, resume=resume)
    return model, opt, hist


def _assert_same(a, b):
    (ma, oa, ha), (mb, ob, hb) = a, b
    sa, sb = ma.state_dict(), mb.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k
    assert ha == hb and ha.epochs == hb.epochs
    st_a, st_b = oa.state_dict()["state"], ob.state_dict()["state"]
    for i in st_a:
        for k, v in st_a[i].items():
            assert np.array_equal(v, st_b[i][k]), (i, k)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "lstm"])
def test_four_epochs_equal_two_plus_resumed_two(kind, tmp_path):
    straight = run(kind, 4)
    rng_after = shendu.get_rng_state()
    first = run(kind, 2, ckdir=tmp_path)
    assert first[2].epochs == [0, 1]
    assert latest_checkpoint(tmp_path).name == "epoch0002-step00000010.ckpt"  # 5 per epoch
    resumed = run(kind, 4, ckdir=tmp_path, resume=tmp_path)
    _assert_same(straight, resumed)
    assert shendu.get_rng_state() == rng_after  # the random stream went on identically


@pytest.mark.parametrize("kind", ["mlp", "cnn", "lstm"])
def test_resume_inside_an_epoch(kind, tmp_path):
    straight = run(kind, 3)
    # stop at step 8 (the 3rd batch of epoch 2): Ctrl-C finishes it and checkpoints
    stopped = run(kind, 3, ckdir=tmp_path, stop_at_step=8)
    assert stopped[2].epochs == [0]  # the history of completed epochs only
    last = latest_checkpoint(tmp_path)
    assert last.name == "epoch0002-step00000008-mid.ckpt"
    t = load_checkpoint(last)["trainer"]
    assert (t["epoch"], t["batch"], t["in_epoch"], t["global_step"]) == (1, 3, True, 8)
    _assert_same(straight, run(kind, 3, ckdir=tmp_path, resume=last))


def test_periodic_mid_epoch_checkpoints_each_resume_exactly(tmp_path):
    straight = run("mlp", 3, scheduler="batch")   # 5 batches per epoch; OneCycle per batch
    run("mlp", 3, ckdir=tmp_path, every_n_steps=3, scheduler="batch")
    ckpts = list_checkpoints(tmp_path)            # keep_last=2 pruned the older ones
    assert [p.name for p in ckpts] == ["epoch0003-step00000015-mid.ckpt",
                                       "epoch0003-step00000015.ckpt"]
    for p in ckpts:
        _assert_same(straight, run("mlp", 3, resume=p, scheduler="batch"))
    run("mlp", 3, ckdir=tmp_path / "b", every_n_steps=7, stop_at_step=9, scheduler="batch")
    names = [p.name for p in list_checkpoints(tmp_path / "b")]
    assert names == ["epoch0002-step00000007-mid.ckpt", "epoch0002-step00000009-mid.ckpt"]
    _assert_same(straight, run("mlp", 3, resume=tmp_path / "b" / names[0], scheduler="batch"))


def test_resume_a_list_of_batches_mid_epoch(tmp_path):
    straight = run("mlp", 2, list_loader=True)
    run("mlp", 2, ckdir=tmp_path, stop_at_step=7, list_loader=True)
    assert load_checkpoint(latest_checkpoint(tmp_path))["train_loader"] is None
    _assert_same(straight, run("mlp", 2, resume=tmp_path, list_loader=True))


def test_early_stopped_run_stays_stopped(tmp_path):
    straight = run("mlp", 12, early=True)
    assert len(straight[2].epochs) < 12  # EarlyStopping ended it
    n = len(straight[2].epochs)
    run("mlp", n - 1, ckdir=tmp_path, early=True)
    _assert_same(straight, run("mlp", 12, ckdir=tmp_path, resume=tmp_path, early=True))
    # resuming the finished run trains nothing more
    again = run("mlp", 12, ckdir=tmp_path, resume=tmp_path, early=True)
    assert again[2].epochs == straight[2].epochs


def test_resume_from_an_empty_folder_starts_fresh(tmp_path):
    _assert_same(run("mlp", 2), run("mlp", 2, ckdir=tmp_path, resume=tmp_path))


def test_resume_errors_name_the_problem(tmp_path):
    run("mlp", 1, ckdir=tmp_path)
    shendu.manual_seed(0)
    X, y = _data("mlp")
    wrong = nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Dropout(0.2), nn.Linear(9, 2))
    with pytest.raises(ValueError, match=r"(?s)do not fit this model.*0\.weight.*\(16, 6\)"
                                         r".*\(9, 6\)"):
        fit(wrong, nn.CrossEntropyLoss(), optim.Adam(wrong.parameters()),
            DataLoader(TensorDataset(X, y), batch_size=8), 2, verbose=0, resume=tmp_path)
    with pytest.raises(FileNotFoundError, match="nope"):
        run("mlp", 2, resume=tmp_path / "nope.ckpt")
