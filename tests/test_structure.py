"""Issue 19: the shape of the code — packages with no file over ~500 lines, a one-way
dependency between the training loop and checkpoints, state_dict on the trainer and the
built-in callbacks, one gradient-clipping callback."""

import ast
import pathlib

import numpy as np
import pytest

import shendu
from shendu import nn, optim
from shendu.data import DataLoader, TensorDataset
from shendu.train import EarlyStopping, GradientClipping, LRSchedulerCallback, Trainer, fit

SRC = pathlib.Path(shendu.__file__).parent


@pytest.mark.parametrize("package", ["io", "cli"])
def test_packages_have_no_file_over_500_lines(package):
    files = sorted((SRC / package).glob("*.py"))
    assert files, f"shendu/{package} is not a package"
    assert not (SRC / f"{package}.py").exists()
    for f in files:
        n = len(f.read_text().splitlines())
        assert n <= 520, f"{f.name}: {n} lines"


def _imports(path: pathlib.Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_train_never_imports_checkpoint():
    assert "shendu.checkpoint" not in _imports(SRC / "train.py")
    assert "shendu.train" in _imports(SRC / "checkpoint.py")


def _setup():
    shendu.manual_seed(0)
    g = np.random.default_rng(1)
    X = g.normal(size=(40, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, opt, DataLoader(TensorDataset(X, y), batch_size=8, shuffle=True)


def test_trainer_state_round_trip_continues_bit_for_bit():
    model, opt, loader = _setup()
    straight = Trainer(model, nn.CrossEntropyLoss(), opt, loader, verbose=0)
    straight.fit(3)
    ref = {k: v.copy() for k, v in model.state_dict().items()}

    model, opt, loader = _setup()
    first = Trainer(model, nn.CrossEntropyLoss(), opt, loader, verbose=0)
    first.fit(1)
    state = first.state_dict()
    model2, opt2, loader2 = _setup()
    second = Trainer(model2, nn.CrossEntropyLoss(), opt2, loader2, verbose=0)
    assert second.load_state_dict(state) == (1, 0)
    second.fit(3, initial_epoch=1)
    for k, v in model2.state_dict().items():
        np.testing.assert_array_equal(v, ref[k])


def test_built_in_callbacks_have_state_dicts():
    model, opt, _ = _setup()
    es = EarlyStopping(patience=2)
    es.on_train_begin({})
    es.wait, es.best, es.best_epoch = 1, 0.5, 3
    es2 = EarlyStopping(patience=2)
    es2.on_train_begin({})
    es2.load_state_dict(es.state_dict())
    assert (es2.wait, es2.best, es2.best_epoch) == (1, 0.5, 3)
    sched = optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    cb = LRSchedulerCallback(sched)
    opt.step()
    sched.step()
    other = LRSchedulerCallback(optim.lr_scheduler.StepLR(
        optim.SGD(model.parameters(), lr=0.1), 1, gamma=0.5))
    other.load_state_dict(cb.state_dict())
    assert other.scheduler.last_epoch == sched.last_epoch == 1


def test_gradient_clipping_callback_clips_as_clip_grad_norm():
    model, opt, loader = _setup()
    clip = GradientClipping(max_norm=1e-3)
    seen = []

    class Spy(shendu.train.Callback):
        def on_after_backward(self, batch, logs):
            g = [p.grad.data for p in model.parameters()]
            seen.append(float(np.sqrt(sum((x.astype(np.float64) ** 2).sum() for x in g))))

    fit(model, nn.CrossEntropyLoss(), opt, loader, 1, callbacks=[clip, Spy()], verbose=0)
    assert len(seen) == 5 and max(seen) <= 1e-3 * (1 + 1e-5)
    assert clip.last_norm is not None and clip.last_norm > 1e-3
    with pytest.raises(ValueError, match="max_norm"):
        GradientClipping()


def test_channel_dropout_is_dropouts_op():
    import shendu.functional as F
    from shendu.functional.dropout import Dropout

    x = shendu.randn(2, 3, 4, 4, requires_grad=True)
    for y in (F.dropout2d(x, 0.5), F.dropout1d(x[:, :, 0], 0.5), F.dropout(x, 0.5)):
        assert type(y.grad_fn) is Dropout
    assert not hasattr(F.conv, "_ChannelDropout")
