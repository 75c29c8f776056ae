"""Same seed ⇒ bit-identical run, end to end: parameter init, dropout masks and the
DataLoader's shuffling all draw from the one generator that ``shendu.manual_seed`` seeds.
A run interrupted mid-epoch and resumed from (weights, optimizer, loader position, RNG
state) continues bit for bit."""

import copy
import json

import numpy as np
import pytest

import shendu
from shendu import nn
from shendu.data import DataLoader, Subset, TensorDataset, random_split
from shendu.optim import SGD


def make_optimizer(params, lr=0.05, momentum=0.9):
    return SGD(params, lr=lr, momentum=momentum)


def data(dtype=np.float32):
    """Fixed data (independent of shendu's seed): 3 classes of noisy 8-d points."""
    rng = np.random.default_rng(1234)
    y = rng.integers(0, 3, 120)
    x = rng.normal(size=(120, 8)) + np.eye(3, 8)[y] * 2.0
    return TensorDataset(x.astype(dtype), y)


def make_model(dtype=None):
    return nn.Sequential(nn.Linear(8, 16, dtype=dtype), nn.ReLU(), nn.Dropout(0.3),
                         nn.Linear(16, 3, dtype=dtype))


def train_steps(model, opt, loader, epochs, stop_after=None):
    """Train; return the per-batch losses. ``stop_after`` interrupts after that many batches
    (mid-epoch) to simulate a crash."""
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if stop_after is not None and len(losses) == stop_after:
                return losses
    return losses


def run(seed, dtype=np.float32, epochs=3):
    shendu.manual_seed(seed)
    ds = data(dtype)
    train, _ = random_split(ds, [0.8, 0.2])  # the split draws from the seeded generator too
    model = make_model(dtype)
    opt = make_optimizer(model.parameters())
    loader = DataLoader(train, batch_size=16, shuffle=True)
    losses = train_steps(model, opt, loader, epochs)
    return losses, snapshot(model)


def snapshot(model):
    """Copies of the model's state_dict entries as arrays."""
    return {k: np.array(v, copy=True) for k, v in model.state_dict().items()}


def weights_equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_seed_gives_bit_identical_run(dtype):
    losses_a, w_a = run(7, dtype)
    losses_b, w_b = run(7, dtype)
    assert len(losses_a) == 3 * 6
    assert losses_a == losses_b  # exact float equality, not closeness
    assert weights_equal(w_a, w_b)
    assert all(v.dtype == dtype for v in w_a.values())
    assert losses_a[-1] < losses_a[0]  # it did learn something


def test_different_seed_gives_different_run():
    losses_a, w_a = run(7)
    losses_c, w_c = run(8)
    assert losses_a != losses_c
    assert not any(np.array_equal(w_a[k], w_c[k]) for k in w_a)


def test_each_source_of_randomness_is_seeded():
    """Init, dropout and shuffling each follow the seed (a change in any one changes the run)."""
    base, _ = run(3, epochs=1)
    # same init and split, but shuffling from a differently seeded generator of its own
    shendu.manual_seed(3)
    train, _ = random_split(data(), [0.8, 0.2])
    model = make_model()
    loader = DataLoader(train, batch_size=16, shuffle=True, generator=99)
    other = train_steps(model, make_optimizer(model.parameters()), loader, 1)
    assert other != base
    # same init, split and order, but dropout off
    shendu.manual_seed(3)
    train, _ = random_split(data(), [0.8, 0.2])
    model = make_model()
    model[2].p = 0.0
    loader = DataLoader(train, batch_size=16, shuffle=True)
    no_drop = train_steps(model, make_optimizer(model.parameters()), loader, 1)
    assert no_drop != base and no_drop[0] != base[0]


def test_interrupted_run_resumes_bit_identically():
    """Checkpoint mid-epoch (weights, optimizer, loader position, global RNG), throw
    everything away, rebuild from the checkpoint: the rest of the run is identical."""
    epochs, crash_at = 3, 8  # 6 batches per epoch: the crash is inside epoch 1

    shendu.manual_seed(21)
    train, _ = random_split(data(), [0.8, 0.2])
    model = make_model()
    opt = make_optimizer(model.parameters())
    loader = DataLoader(train, batch_size=16, shuffle=True)
    reference = train_steps(model, opt, loader, epochs)
    ref_w = snapshot(model)

    shendu.manual_seed(21)
    train, _ = random_split(data(), [0.8, 0.2])
    model = make_model()
    opt = make_optimizer(model.parameters())
    loader = DataLoader(train, batch_size=16, shuffle=True)
    before = train_steps(model, opt, loader, epochs, stop_after=crash_at)
    ckpt = {
        "model": snapshot(model),
        "optim": copy.deepcopy(opt.state_dict()),
        "loader": json.loads(json.dumps(loader.state_dict())),
        "rng": json.loads(json.dumps(shendu.get_rng_state())),
        "split": train.indices.tolist(),
    }
    assert ckpt["loader"]["epoch"] == 1 and ckpt["loader"]["batch"] == crash_at - 6

    shendu.manual_seed(5)  # a new process: different state everywhere until restored
    model = make_model()
    model.load_state_dict(ckpt["model"])
    opt = make_optimizer(model.parameters())
    opt.load_state_dict(ckpt["optim"])
    loader = DataLoader(Subset(data(), ckpt["split"]), batch_size=16, shuffle=True)
    loader.load_state_dict(ckpt["loader"])
    shendu.set_rng_state(ckpt["rng"])
    after = train_steps(model, opt, loader, epochs - ckpt["loader"]["epoch"])

    assert before + after == reference
    assert weights_equal(snapshot(model), ref_w)
