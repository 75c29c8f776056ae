"""The training loop: same trajectory as a hand-written torch loop, eval/no_grad during
validation, exact metrics, callbacks (early stopping, schedulers, hooks), NaN guard."""

import numpy as np
import pytest
import torch

import shendu
from shendu import functional as F
from shendu import nn, optim
from shendu.autograd import is_grad_enabled
from shendu.data import DataLoader, TensorDataset
from shendu.train import (
    Callback,
    EarlyStopping,
    LambdaCallback,
    LRSchedulerCallback,
    NonFiniteError,
    Trainer,
    fit,
)


def _data(n=96, d=4, c=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(dtype)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    return X, y % c


def _mlp(d=4, h=8, c=3, dtype=None):
    return nn.Sequential(nn.Linear(d, h, dtype=dtype), nn.Tanh(), nn.Linear(h, c, dtype=dtype))


def test_same_trajectory_as_torch_loop():
    """fit = zero_grad, forward, loss, backward, step per batch, in loader order: the
    parameters after 3 epochs equal a plain torch loop's (float64, to rounding)."""
    X, y = _data(dtype=np.float64)
    model = _mlp(dtype="float64")
    tmodel = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
                                 torch.nn.Linear(8, 3)).double()
    tmodel.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9)
    h = fit(model, nn.CrossEntropyLoss(), opt, DataLoader(TensorDataset(X, y), batch_size=32),
            epochs=3, verbose=0)
    losses = []
    for _ in range(3):
        tot = 0.0
        for i in range(0, len(X), 32):
            topt.zero_grad()
            loss = torch.nn.functional.cross_entropy(tmodel(torch.tensor(X[i:i + 32])),
                                                     torch.tensor(y[i:i + 32]))
            loss.backward()
            topt.step()
            tot += loss.item() * len(X[i:i + 32])
        losses.append(tot / len(X))
    for k, v in tmodel.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[k], v.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h["loss"], losses, rtol=1e-10)


class Probe(nn.Module):
    """Records the mode and grad state of each call."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.calls = []

    def forward(self, x):
        self.calls.append((self.training, is_grad_enabled()))
        return self.lin(x)


def test_validation_runs_in_eval_mode_without_grad_and_metrics_are_exact():
    X, y = _data()
    model = Probe()
    val = DataLoader(TensorDataset(X[:50], y[:50]), batch_size=16)  # uneven batches
    seen = {}

    def check(epoch, logs):
        with shendu.no_grad():
            out = model.lin(shendu.tensor(X[:50])).data
        logp = out - np.log(np.exp(out - out.max(1, keepdims=True)).sum(1, keepdims=True)) \
            - out.max(1, keepdims=True)
        seen[epoch] = (float(-logp[np.arange(50), y[:50]].mean()),
                       float((out.argmax(1) == y[:50]).mean()))
        assert logs["val_loss"] == pytest.approx(seen[epoch][0], rel=1e-5)
        assert logs["val_accuracy"] == pytest.approx(seen[epoch][1], abs=1e-12)

    model.train()
    h = fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1),
            DataLoader(TensorDataset(X, y), batch_size=32), epochs=2, val_loader=val,
            metrics=["accuracy"], callbacks=[LambdaCallback(on_epoch_end=check)], verbose=0)
    assert len(seen) == 2
    train_calls = [c for c in model.calls if c[0]]
    val_calls = [c for c in model.calls if not c[0]]
    assert len(train_calls) == 2 * 3 and all(g for _, g in train_calls)
    assert len(val_calls) == 2 * 4 and not any(g for _, g in val_calls)
    assert model.training  # mode restored
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert h.epochs == [0, 1] and h["lr"] == [0.1, 0.1]


def test_mse_and_custom_metric():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 2)).astype(np.float32)
    y = (X @ np.array([[1.0], [-2.0]], np.float32))
    model = nn.Linear(2, 1)

    def max_err(out, target):  # a (sum, count) pair is exact across batches
        return float(np.abs(out.data - target.data).max()), 1

    trainer = Trainer(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.0),
                      DataLoader(TensorDataset(X, y), batch_size=7), metrics=["mse", "mae"],
                      verbose=0)
    logs = trainer.evaluate(DataLoader(TensorDataset(X, y), batch_size=7))
    with shendu.no_grad():
        pred = model(shendu.tensor(X)).data
    assert logs["mse"] == pytest.approx(float(((pred - y) ** 2).mean()), rel=1e-6)
    assert logs["loss"] == pytest.approx(logs["mse"], rel=1e-5)
    assert logs["mae"] == pytest.approx(float(np.abs(pred - y).mean()), rel=1e-6)
    h = fit(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.0),
            DataLoader(TensorDataset(X, y), batch_size=7), epochs=1, metrics=[max_err],
            verbose=0)
    assert h["max_err"][0] == pytest.approx(
        np.mean([np.abs(pred[i:i + 7] - y[i:i + 7]).max() for i in range(0, 40, 7)]), rel=1e-6)


def test_callback_hooks_in_order_and_stop_training():
    X, y = _data(n=20)
    events = []

    class Rec(Callback):
        def on_train_begin(self, logs):
            events.append("train_begin")

        def on_epoch_begin(self, epoch, logs):
            events.append(f"epoch_begin {epoch}")

        def on_batch_begin(self, batch, logs):
            events.append(f"batch_begin {batch}")

        def on_after_backward(self, batch, logs):
            # gradients exist here, before the step
            assert all(p.grad is not None for p in self.trainer.model.parameters())
            events.append(f"after_backward {batch}")

        def on_batch_end(self, batch, logs):
            events.append(f"batch_end {batch} {logs['batch_size']}")

        def on_epoch_end(self, epoch, logs):
            events.append(f"epoch_end {epoch}")
            if epoch == 1:
                self.trainer.stop_training = True

        def on_train_end(self, logs):
            events.append("train_end")

    model = _mlp()
    h = fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1),
            DataLoader(TensorDataset(X, y), batch_size=12), epochs=10, callbacks=[Rec()],
            verbose=0)
    one_epoch = lambda e: [f"epoch_begin {e}", "batch_begin 0", "after_backward 0",
                           "batch_end 0 12", "batch_begin 1", "after_backward 1",
                           "batch_end 1 8", f"epoch_end {e}"]
    assert events == ["train_begin", *one_epoch(0), *one_epoch(1), "train_end"]
    assert h.epochs == [0, 1]


def test_early_stopping_patience_and_restore_best_weights():
    X, y = _data()
    model = _mlp()
    scores = [5.0, 3.0, 2.0, 2.5, 2.2, 2.1, 1.0]   # best at epoch 2, then 3 without gain
    snapshots = {}

    def inject(epoch, logs):
        logs["score"] = scores[epoch]
        snapshots[epoch] = {k: v.copy() for k, v in model.state_dict().items()}

    es = EarlyStopping(monitor="score", patience=3, restore_best_weights=True)
    h = fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.5),
            DataLoader(TensorDataset(X, y), batch_size=32), epochs=20,
            callbacks=[LambdaCallback(on_epoch_end=inject), es], verbose=0)
    assert h.epochs == [0, 1, 2, 3, 4, 5]
    assert es.best == 2.0 and es.best_epoch == 2 and es.stopped_epoch == 5
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, snapshots[2][k])
    assert not np.array_equal(snapshots[2]["0.weight"], snapshots[5]["0.weight"])


def test_early_stopping_min_delta_and_max_mode():
    X, y = _data(n=16)
    model = _mlp()
    acc = [0.5, 0.6, 0.61, 0.605, 0.7]

    def inject(epoch, logs):
        logs["val_acc"] = acc[epoch]

    es = EarlyStopping(monitor="val_acc", patience=2, min_delta=0.05)
    assert es.mode == "max"
    h = fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1),
            DataLoader(TensorDataset(X, y), batch_size=16), epochs=5,
            callbacks=[LambdaCallback(on_epoch_end=inject), es], verbose=0)
    assert h.epochs == [0, 1, 2, 3] and es.best == 0.6


def test_schedulers_step_per_epoch_per_batch_and_on_plateau():
    X, y = _data(n=64)
    loader = DataLoader(TensorDataset(X, y), batch_size=16)
    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=1.0)
    h = fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=4, verbose=0,
            scheduler=optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1))
    np.testing.assert_allclose(h["lr"], [1.0, 1.0, 0.1, 0.1])  # the lr each epoch used
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)

    opt = optim.SGD(model.parameters(), lr=0.1)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=3 * 4)
    fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=3, verbose=0, scheduler=sched,
        scheduler_interval="batch")
    assert sched.last_epoch == 12

    opt = optim.SGD(model.parameters(), lr=1.0)
    plateau = optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=0)
    fake = iter([1.0, 1.0, 0.5, 0.5])
    h = fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=4, verbose=0,
            callbacks=[LambdaCallback(on_epoch_end=lambda e, logs: logs.update(m=next(fake))),
                       LRSchedulerCallback(plateau, monitor="m")])
    assert h["lr"] == [1.0, 1.0, 0.5, 0.5]
    assert opt.param_groups[0]["lr"] == 0.25
    with pytest.raises(ValueError, match="interval"):
        LRSchedulerCallback(plateau, interval="batch")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's own overflow notes
def test_nan_guard_names_epoch_and_batch():
    X, y = _data()
    X_bad = X.copy()
    X_bad[70] = np.nan  # batch 3 (1-based) of 32
    model = _mlp()

    def loader(Xs):
        return DataLoader(TensorDataset(Xs, y), batch_size=32)

    opt = optim.SGD(model.parameters(), lr=0.1)
    fit(model, nn.CrossEntropyLoss(), opt, loader(X), epochs=1, verbose=0)
    with pytest.raises(NonFiniteError, match=r"loss is nan at epoch 1, batch 3/3.*inputs of "
                                             r"this batch contain NaN"):
        fit(model, nn.CrossEntropyLoss(), opt, loader(X_bad), epochs=2, verbose=0)

    # a loss that is finite but whose gradient is not: sqrt at 0
    def bad_loss(out, target):
        return F.sqrt((out * 0.0).sum())

    with pytest.raises(NonFiniteError, match=r"gradient of parameter '0.weight' is NaN or inf "
                                             r"at epoch 1, batch 1"):
        fit(model, bad_loss, opt, loader(X), epochs=1, verbose=0)
    # a learning rate that blows up: stopped at the first non-finite loss, weights not stepped
    big = _mlp()
    with pytest.raises(NonFiniteError, match=r"at epoch \d+, batch \d+/3.*lower learning rate"):
        fit(big, nn.MSELoss(), optim.SGD(big.parameters(), lr=1e6),
            DataLoader(TensorDataset(X, np.ones((len(X), 3), np.float32) * 1e3),
                       batch_size=32), epochs=50, verbose=0)


def test_same_seed_same_history():
    X, y = _data()

    def run():
        shendu.manual_seed(7)
        model = _mlp()
        opt = optim.Adam(model.parameters(), lr=0.01)
        return fit(model, nn.CrossEntropyLoss(), opt,
                   DataLoader(TensorDataset(X, y), batch_size=10, shuffle=True), epochs=3,
                   verbose=0)

    a, b = run(), run()
    assert a["loss"] == b["loss"]


def test_verbose_levels(capsys):
    X, y = _data(n=20)
    model = _mlp()
    args = (model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1),
            DataLoader(TensorDataset(X, y), batch_size=10))
    fit(*args, epochs=2, verbose=0)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    fit(*args, epochs=2, verbose=2, metrics=["accuracy"])
    out = capsys.readouterr()
    assert out.out.count("\n") == 2 and "epoch 2/2: loss=" in out.out and "accuracy=" in out.out
    fit(*args, epochs=1, verbose=1)
    out = capsys.readouterr()
    assert "epoch 1/1" in out.err and "loss=" in out.err and out.out == ""


def test_bad_arguments():
    X, y = _data(n=8)
    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="unknown metric 'acuracy'"):
        fit(model, nn.CrossEntropyLoss(), opt, [], epochs=1, metrics=["acuracy"])
    with pytest.raises(TypeError, match=r"\(inputs\.\.\., target\)"):
        fit(model, nn.CrossEntropyLoss(), opt, [shendu.tensor(X)], epochs=1, verbose=0)
    with pytest.raises(KeyError, match="'val_loss' is not among.*pass val_loader"):
        fit(model, nn.CrossEntropyLoss(), opt, DataLoader(TensorDataset(X, y), batch_size=4),
            epochs=1, callbacks=[EarlyStopping()], verbose=0)
    with pytest.raises(TypeError, match="Callback instances"):
        fit(model, nn.CrossEntropyLoss(), opt, [], epochs=1, callbacks=[print])
    with pytest.raises(TypeError, match="unknown hook 'on_epoch'"):
        LambdaCallback(on_epoch=print)
