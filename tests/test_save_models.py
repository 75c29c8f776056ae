"""Round trips through shendu.save / shendu.load: every ready model (predictions identical,
training continues identically), every optimizer and scheduler, the layers, and torch
state_dicts loading into the matching shendu modules."""

import warnings

import numpy as np
import pytest

import shendu
from shendu import models, nn, optim
from shendu.io import FileFormatError

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the tiny fits
        yield


def _same(a, b, where="value"):
    """Deep equality: arrays bit for bit, modules by state_dict, objects by attributes."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), where
    elif isinstance(a, nn.Module):
        assert type(a) is type(b) and repr(a) == repr(b), where
        _same(dict(a.state_dict()), dict(b.state_dict()), where)
        assert [m.training for m in a.modules()] == [m.training for m in b.modules()], where
    elif isinstance(a, optim.Optimizer):
        assert type(a) is type(b), where
        _same(a.state_dict(), b.state_dict(), where)
    elif isinstance(a, shendu.Tensor):
        assert type(a) is type(b) and a.requires_grad == b.requires_grad, where
        _same(a.data, b.data, where)
    elif isinstance(a, dict):
        assert type(a) is type(b) and list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
        if hasattr(a, "__dict__"):
            _same(vars(a), vars(b), f"{where}.__dict__")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert type(b) is type(a) and np.isnan(b), where
    elif hasattr(a, "__dict__") and type(a).__module__.startswith("shendu"):
        assert type(a) is type(b), where
        _same(vars(a), vars(b), where)
    else:
        assert type(a) is type(b) and a == b, where


def _roundtrip(obj, tmp_path, **kw):
    p = tmp_path / "obj.shendu"
    shendu.save(obj, p)
    return shendu.load(p, **kw)


# ---------------------------------------------------------------- ready models
def _blobs(n=60, d=4, k=3, seed=0):
    g = np.random.default_rng(seed)
    y = g.integers(0, k, n)
    X = g.normal(size=(n, d)) + 2.0 * np.eye(k, d)[y]
    return X, np.array(["ant", "bee", "cat", "dog"][:k])[y]


def _seqs(n=24, T=5, F=3, seed=0):
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, T, F)).astype(np.float32)
    return X, (X[:, :, 0].sum(1) > 0).astype(np.int64)


def _continue(est, X, y):
    """One more round of training on the same data, from the same random state."""
    shendu.manual_seed(11)
    if hasattr(est, "partial_fit"):
        est.partial_fit(X, y)
    elif "warm_start" in est.get_params():
        key = "max_iter" if "max_iter" in est.get_params() else "epochs"
        est.set_params(warm_start=True, **{key: 1}).fit(X, y)
    return est


CASES = {}


def case(name):
    def deco(fn):
        CASES[name] = fn
        return fn
    return deco


@case("Perceptron")
def _perceptron():
    X, y = _blobs()
    return models.Perceptron(max_iter=4, average=True, shuffle=True, random_state=0), X, y


@case("MLPClassifier")
def _mlpc():
    X, y = _blobs()
    return models.MLPClassifier((8, 6), max_iter=4, random_state=0, early_stopping=True,
                                validation_fraction=0.25, n_iter_no_change=2), X, y


@case("MLPRegressor")
def _mlpr():
    X, _ = _blobs()
    return models.MLPRegressor(hidden_layer_sizes=(7,), solver="sgd", max_iter=3, random_state=0,
                               dtype="float64"), X, np.c_[X[:, 0], X.sum(1)]


@case("ConvolutionalNeuralNetwork")
def _cnn():
    g = np.random.default_rng(2)
    X = g.normal(size=(30, 1, 8, 8))
    y = (X[:, 0, :4].mean((1, 2)) > 0).astype(np.int64)
    return models.ConvolutionalNeuralNetwork(conv_channels=(3,), kernel_size=3,
                                             hidden_layer_sizes=(8,), batch_norm=True,
                                             max_iter=2, random_state=0), X, y


@case("TransformerClassifier")
def _tf():
    X, y = _seqs()
    return models.TransformerClassifier(d_model=8, nhead=2, num_layers=1, dim_feedforward=16,
                                        max_iter=2, batch_size=8, random_state=0), X, y


@case("RecurrentNeuralNetwork")
def _rnn():
    X, y = _seqs()
    return models.RecurrentNeuralNetwork(hidden_size=6, max_iter=2, batch_size=8,
                                         random_state=0), X, y


@case("LongShortTermMemory")
def _lstm():
    X, y = _seqs()
    return models.LongShortTermMemory(hidden_size=6, num_layers=2, max_iter=2, batch_size=8,
                                      random_state=0), X, y


@case("GatedRecurrentUnit")
def _gru():
    X, _ = _seqs()
    return models.GatedRecurrentUnit(hidden_size=5, task="regression", output="sequence",
                                     max_iter=2, batch_size=8, random_state=0), X, X[:, :, 1]


@case("AttentionMechanism")
def _seq2seq():
    g = np.random.default_rng(4)
    X = g.integers(0, 5, (24, 6))
    return models.AttentionMechanism(vocab_size=5, embed_dim=6, hidden_size=8, max_iter=2,
                                     batch_size=8, random_state=0), X, X[:, ::-1].copy()


@case("AudioClassifier")
def _audio():
    pytest.importorskip("librosa")
    g = np.random.default_rng(5)
    t = np.arange(1600) / 8000.0
    y = np.arange(12) % 2
    # two "words": a low and a high tone in noise, 0.2 s at 8 kHz
    X = [(np.sin(2 * np.pi * (300 + 900 * k) * t) + 0.1 * g.normal(size=t.size))
         .astype(np.float32) for k in y]
    return models.AudioClassifier(max_seconds=0.25, n_mels=8, n_fft=128, hop_length=64,
                                  channels=(4,), kernel_size=3, freq_mask=2, time_mask=2,
                                  epochs=1, batch_size=6, random_state=0), X, y


@case("NeuralNetwork")
def _nn():
    return models.NeuralNetwork(4, 6, 2, random_state=0), None, None


@case("MultiLayerPerceptron")
def _mlp_seed():
    return models.MultiLayerPerceptron(4, [6, 5], 2, activation="relu", random_state=0), None, \
        None


@case("CharTransformerLM")
def _charlm_tf():
    shendu.manual_seed(0)
    return models.CharTransformerLM(11, d_model=8, nhead=2, num_layers=1, dim_feedforward=16,
                                    block_size=6), None, None


@case("CharLM")
def _charlm():
    shendu.manual_seed(0)
    return models.CharLM("abcdefg", hidden_size=8, num_layers=2, embedding_dim=4), None, None


def _model_names():
    return [n for n in models.__all__ if isinstance(getattr(models, n), type)
            and not issubclass(getattr(models, n), (Exception, Warning))]


def test_every_model_has_a_round_trip_case():
    missing = sorted(set(_model_names()) - set(CASES))
    assert not missing, f"add a save/load case for {missing} to tests/test_save_models.py"


def _outputs(est, X):
    out = {}
    for m in ("predict", "predict_proba", "decision_function"):
        try:
            out[m] = getattr(est, m)(X)
        except AttributeError:  # not this model, or not this task
            pass
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_round_trip(name, tmp_path):
    if name not in _model_names():
        pytest.skip(f"{name} is not in shendu.models")
    est, X, y = CASES[name]()
    if isinstance(est, nn.Module):
        est.eval()
        back = _roundtrip(est, tmp_path)
        _same(est, back)
        idx = np.random.default_rng(0).integers(0, 5, (2, 6))
        with shendu.no_grad():
            _same(est(idx)[0].data if name == "CharLM" else est(idx).data,
                  back(idx)[0].data if name == "CharLM" else back(idx).data)
        return
    if X is None:  # the seed's API: forward, backward, train
        Xs = np.random.default_rng(1).normal(size=(10, 4))
        ys = np.c_[Xs[:, 0] > 0, Xs[:, 1]].astype(float)
        est.train(Xs, ys, epochs=5, learning_rate=0.05)
        back = _roundtrip(est, tmp_path)
        assert repr(back) == repr(est)
        _same(est.predict(Xs), back.predict(Xs))
        _same(est.train(Xs, ys, 3, 0.05), back.train(Xs, ys, 3, 0.05))
        _same(est.state_dict(), back.state_dict())
        return
    unfitted = _roundtrip(est, tmp_path)  # parameters only
    assert repr(unfitted) == repr(est) and not hasattr(unfitted, "n_features_in_")
    est.fit(X, y)
    back = _roundtrip(est, tmp_path)
    assert type(back) is type(est) and repr(back) == repr(est)
    _same(vars(est), vars(back), name)  # every fitted attribute
    _same(_outputs(est, X), _outputs(back, X))
    assert est.score(X, y) == back.score(X, y)
    _same(_outputs(_continue(est, X, y), X), _outputs(_continue(back, X, y), X))
    _same(vars(est), vars(back), f"{name} after more training")


def test_seed_perceptron_round_trip(tmp_path):
    p = models.Perceptron(2, 1)
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([-1.0, -1.0, -1.0, 1.0])
    p.train(X, y, epochs=3)
    back = _roundtrip(p, tmp_path)
    _same(p.forward(X), back.forward(X))
    _same(p.train(X, y, 20), back.train(X, y, 20))
    _same(vars(p), vars(back))


def test_string_labels_and_hostile_free_json(tmp_path):
    est, X, y = _mlpc()
    est.fit(X, y)
    p = tmp_path / "m.shendu"
    shendu.save(est, p)
    arrays, meta = shendu.io.load_arrays(p)
    assert "attrs.model_.0.weight" in arrays and "classes_" in meta["shendu"]
    assert shendu.load(p).classes_.dtype == est.classes_.dtype


# ------------------------------------------------------------------ optimizers
def _net():
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))


def _steps(model, opt, n, seed):
    g = np.random.default_rng(seed)
    for _ in range(n):
        x = shendu.tensor(g.normal(size=(6, 4)).astype(np.float32))
        opt.zero_grad()
        (model(x) ** 2).mean().backward()
        opt.step()


OPTIMIZERS = [
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    (optim.SGD, dict(lr=0.1)),
    (optim.Adam, dict(lr=0.01, amsgrad=True)),
    (optim.AdamW, dict(lr=0.01, betas=(0.8, 0.95))),
    (optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
    (optim.Adagrad, dict(lr=0.1, lr_decay=0.01)),
]


@pytest.mark.parametrize("cls, kw", OPTIMIZERS, ids=lambda v: getattr(v, "__name__", ""))
def test_optimizer_round_trip_continues_identically(cls, kw, tmp_path):
    shendu.manual_seed(0)
    m = _net()
    groups = [{"params": m[0].parameters()}, {"params": m[2].parameters(), "lr": 0.05}]
    opt = cls(groups, **kw)
    _steps(m, opt, 3, 0)
    p = tmp_path / "opt.shendu"
    shendu.save(opt, p)
    twin = _net()
    twin.load_state_dict(m.state_dict())
    rebuilt = shendu.load(p, params=twin)          # over a twin model's parameters
    assert [len(g["params"]) for g in rebuilt.param_groups] == [2, 2]
    _same(opt.state_dict(), rebuilt.state_dict())
    into = cls(_net().parameters(), lr=1.0)        # or into an existing one
    with pytest.raises(FileFormatError, match="group"):
        shendu.load(p, into=into)                  # one group here, two in the file
    _steps(m, opt, 4, 1)
    _steps(twin, rebuilt, 4, 1)
    _same(dict(m.state_dict()), dict(twin.state_dict()))
    _same(opt.state_dict(), rebuilt.state_dict())


def test_optimizer_load_errors(tmp_path):
    m = _net()
    opt = optim.Adam(m.parameters())
    _steps(m, opt, 1, 0)
    p = tmp_path / "opt.shendu"
    shendu.save(opt, p)
    with pytest.raises(TypeError, match=r"params=model\.parameters\(\)"):
        shendu.load(p)
    with pytest.raises(FileFormatError, match="4 parameters, but params= gave 2"):
        shendu.load(p, params=m[0].parameters())
    other = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    with pytest.raises(FileFormatError, match=r"parameter 2 has shape \(3, 5\).*\(2, 5\)"):
        shendu.load(p, params=other.parameters())
    with pytest.raises(TypeError, match="holds a Adam optimizer; into= is a SGD"):
        shendu.load(p, into=optim.SGD(m.parameters()))
    same = optim.Adam(m.parameters(), lr=5.0)
    assert shendu.load(p, into=same) is same and same.param_groups[0]["lr"] == 1e-3


def test_estimator_optimizer_must_belong_to_saved_modules(tmp_path):
    est, X, y = _mlpc()
    est.fit(X, y)
    est.optimizer_ = optim.SGD(_net().parameters())  # updates parameters of no saved module
    with pytest.raises(TypeError, match="belongs to no module saved with it"):
        shendu.save(est, tmp_path / "x.shendu")


# ------------------------------------------------------------------ schedulers
S = optim.lr_scheduler
SCHEDULERS = [
    (S.StepLR, dict(step_size=2, gamma=0.5)), (S.MultiStepLR, dict(milestones=[2, 5])),
    (S.ExponentialLR, dict(gamma=0.9)), (S.CosineAnnealingLR, dict(T_max=6, eta_min=1e-3)),
    (S.LinearLR, dict(start_factor=0.2, total_iters=4)), (S.ConstantLR, dict(factor=0.5)),
    (S.PolynomialLR, dict(total_iters=6, power=2.0)),
    (S.CosineAnnealingWarmRestarts, dict(T_0=3, T_mult=2)),
    (S.OneCycleLR, dict(max_lr=0.5, total_steps=12)),
    (S.ReduceLROnPlateau, dict(patience=1, factor=0.5)),
]


@pytest.mark.parametrize("cls, kw", SCHEDULERS, ids=lambda v: getattr(v, "__name__", ""))
def test_scheduler_round_trip_continues_identically(cls, kw, tmp_path):
    m = _net()
    opt = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    sched = cls(opt, **kw)
    plateau = cls is S.ReduceLROnPlateau
    losses = [1.0, 0.9, 0.95, 0.97, 0.99, 0.8, 0.85, 0.9, 0.91, 0.92]

    def step(s, o, i):
        o.step()
        s.step(losses[i]) if plateau else s.step()

    for i in range(4):
        step(sched, opt, i)
    shendu.save(opt, tmp_path / "o.shendu")
    shendu.save(sched, tmp_path / "s.shendu")
    opt2 = shendu.load(tmp_path / "o.shendu", params=_net())
    sched2 = shendu.load(tmp_path / "s.shendu", optimizer=opt2)
    assert type(sched2) is cls and sched2.optimizer is opt2
    _same(sched.state_dict(), sched2.state_dict())
    for i in range(4, 10):
        step(sched, opt, i)
        step(sched2, opt2, i)
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in opt2.param_groups]
        assert [g["momentum"] for g in opt.param_groups] == [g["momentum"] for g in
                                                              opt2.param_groups]


def test_lambda_scheduler_needs_into(tmp_path):
    opt = optim.SGD(_net().parameters(), lr=0.1)
    sched = S.LambdaLR(opt, lambda e: 0.5 ** e)
    opt.step()
    sched.step()
    shendu.save(sched, tmp_path / "s.shendu")
    with pytest.raises(TypeError, match="LambdaLR.*into=scheduler"):
        shendu.load(tmp_path / "s.shendu", optimizer=opt)
    again = S.LambdaLR(optim.SGD(_net().parameters(), lr=0.1), lambda e: 0.5 ** e)
    assert shendu.load(tmp_path / "s.shendu", into=again).last_epoch == 1


# ---------------------------------------------------------------------- layers
def _layers():
    enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    return {
        "linear": (nn.Linear(4, 3), (2, 4)),
        "sequential": (nn.Sequential(nn.Linear(4, 6), nn.PReLU(), nn.LayerNorm(6),
                                     nn.Linear(6, 2)), (3, 4)),
        "conv": (nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                               nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 2)), (2, 2, 4, 4)),
        "conv1d": (nn.Conv1d(2, 3, 3, stride=2), (2, 2, 9)),
        "lstm": (nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True), (2, 5, 3)),
        "gru": (nn.GRU(3, 4, batch_first=True), (2, 5, 3)),
        "rnn": (nn.RNN(3, 4, nonlinearity="relu"), (5, 2, 3)),
        "mha": (nn.MultiheadAttention(8, 2, batch_first=True), (2, 5, 8)),
        "encoder": (nn.TransformerEncoder(enc, 2, norm=nn.LayerNorm(8)), (2, 5, 8)),
    }


def _first(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", list(_layers()))
def test_layer_round_trip(name, tmp_path):
    shendu.manual_seed(1)
    layer, shape = _layers()[name]
    x = shendu.tensor(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    args = (x, x, x) if name == "mha" else (x,)
    layer(*args)               # a training step's forward: BatchNorm's running statistics
    layer.eval()
    back = _roundtrip(layer, tmp_path)
    _same(layer, back)
    assert not back.training
    with shendu.no_grad():
        _same(_first(layer(*args)).data, _first(back(*args)).data)
    # a state_dict saved as a dict of arrays loads into a fresh module of the same shape
    shendu.save(dict(layer.state_dict()), tmp_path / "sd.safetensors")
    sd = shendu.load(tmp_path / "sd.safetensors")
    _same(dict(layer.state_dict()), dict(sd))
    fresh = _layers()[name][0]
    shendu.load(tmp_path / "sd.safetensors", into=fresh)
    _same(dict(layer.state_dict()), dict(fresh.state_dict()))


# --------------------------------------------------------- torch state_dicts
def _pairs():
    torch.manual_seed(0)
    return {
        "sequential": (torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(),
                                           torch.nn.Linear(6, 2)),
                       nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)), (3, 4)),
        "conv_bn": (torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1),
                                        torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                                        torch.nn.MaxPool2d(2)),
                    nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                                  nn.MaxPool2d(2)), (2, 2, 6, 6)),
        "lstm": (torch.nn.LSTM(3, 5, num_layers=2, batch_first=True),
                 nn.LSTM(3, 5, num_layers=2, batch_first=True), (2, 7, 3)),
        "gru": (torch.nn.GRU(3, 4, bidirectional=True), nn.GRU(3, 4, bidirectional=True),
                (6, 2, 3)),
        "mha": (torch.nn.MultiheadAttention(8, 2, batch_first=True),
                nn.MultiheadAttention(8, 2, batch_first=True), (2, 5, 8)),
    }


@pytest.mark.parametrize("name", list(_pairs()))
@pytest.mark.parametrize("via", ["arrays", "file"])
def test_torch_state_dict_loads_into_shendu(name, via, tmp_path):
    tm, sm, shape = _pairs()[name]
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    targs = (torch.from_numpy(x),) * (3 if name == "mha" else 1)
    tm(*targs)                  # BatchNorm: running statistics move away from 0 and 1
    tm.eval()
    sm.eval()
    if via == "arrays":
        sm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    else:  # a file written by safetensors' own torch writer
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in tm.state_dict().items()},
                  str(tmp_path / "t.safetensors"))
        assert shendu.load(tmp_path / "t.safetensors", into=sm) is sm
    for k, v in tm.state_dict().items():
        np.testing.assert_array_equal(sm.state_dict()[k], v.numpy())
    with torch.no_grad():
        want = _first(tm(*targs)).numpy()
    with shendu.no_grad():
        got = _first(sm(*(shendu.tensor(x),) * len(targs))).data
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_wrong_architecture_names_the_key_and_both_shapes(tmp_path):
    tm = torch.nn.Linear(4, 3)
    p = tmp_path / "t.safetensors"
    shendu.save({k: v for k, v in tm.state_dict().items()}, p)  # torch tensors converted
    with pytest.raises(FileFormatError, match=r"weight.*\(3, 4\).*\(2, 4\)"):
        shendu.load(p, into=nn.Linear(4, 2))
