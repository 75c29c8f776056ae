"""The seed's API on all eight of its classes: Model(input_dim, hidden_dim, output_dim),
forward(x), backward(y, learning_rate), train(X, y, epochs, learning_rate) — each on its
classic task, in float32 and float64; the backward step checked against torch's gradients;
the scikit-learn API of the same classes still working."""

import warnings

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from shendu.data.datasets import blobs, digits
from shendu.models import (
    AttentionMechanism,
    ConvolutionalNeuralNetwork,
    LongShortTermMemory,
    MultiLayerPerceptron,
    NeuralNetwork,
    Perceptron,
    RecurrentNeuralNetwork,
)
from shendu.train import NonFiniteError


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):  # small matmuls: threads only add contention
        yield


def test_fits_sin_to_mse_below_001():
    X = np.linspace(-np.pi, np.pi, 200)[:, None]
    y = np.sin(X)
    net = NeuralNetwork(1, 32, 1, random_state=0)
    before = float(np.mean((net.predict(X) - y) ** 2))
    history = net.train(X, y, epochs=600, learning_rate=0.1)
    after = float(np.mean((net.predict(X) - y) ** 2))
    assert len(history) == 600 and history[0] == pytest.approx(before, rel=1e-5)
    assert after < 0.01 and history[-1] < 0.01
    assert after < before


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_train_descends_on_any_regression_data(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(50, 3))
    y = np.c_[X[:, 0] * X[:, 1], np.cos(X[:, 2])] + 0.1 * rng.normal(size=(50, 2))
    net = MultiLayerPerceptron(3, (16, 8), 2, activation="sigmoid", random_state=seed)
    h = net.train(X, y, epochs=50, learning_rate=0.05)
    assert h[-1] < h[0]
    assert all(b <= a + 1e-6 for a, b in zip(h, h[1:]))  # a small step never goes up here


def test_backward_is_mse_gradient_step_as_torch():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    net = NeuralNetwork(3, 5, 2, random_state=0, dtype="float64")
    tnet = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(),
                               torch.nn.Linear(5, 2)).double()
    tnet.load_state_dict({k: torch.tensor(v) for k, v in net.state_dict().items()})
    out = net.forward(X)
    tout = tnet(torch.tensor(X))
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-12)
    loss = net.backward(y, learning_rate=0.3)
    tloss = torch.nn.functional.mse_loss(tout, torch.tensor(y))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    with torch.no_grad():
        for p in tnet.parameters():
            p -= 0.3 * p.grad
    for k, v in tnet.state_dict().items():
        np.testing.assert_allclose(net.state_dict()[k], v.numpy(), rtol=1e-12, atol=1e-14)


def test_single_sample_and_shapes():
    net = NeuralNetwork(2, 4, 1, random_state=0)
    assert net.forward([0.5, -0.5]).shape == (1,)
    net.backward([0.2], learning_rate=0.1)
    assert net.forward(np.zeros((3, 2))).shape == (3, 1)
    net.backward(np.zeros(3), 0.1)  # (n,) targets for one output
    assert "NeuralNetwork(input_dim=2, hidden_dim=4" in repr(net)


def test_same_seed_same_network():
    a, b = NeuralNetwork(2, 4, 1, random_state=5), NeuralNetwork(2, 4, 1, random_state=5)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])


def test_errors():
    net = NeuralNetwork(2, 4, 1)
    with pytest.raises(RuntimeError, match="call forward"):
        net.backward([1.0], 0.1)
    with pytest.raises(ValueError, match=r"expected input \(N, 2\), got \(3, 3\)"):
        net.forward(np.zeros((3, 3)))
    net.forward(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"expected y of shape \(3, 1\)"):
        net.backward(np.zeros((4, 1)), 0.1)
    with pytest.raises(ValueError, match="contains NaN"):
        net.train(np.full((3, 2), np.nan), np.zeros(3), epochs=1)
    with pytest.raises(ValueError, match="X has 3 samples but y has 2"):
        net.train(np.zeros((3, 2)), np.zeros(2), epochs=1)
    wide = NeuralNetwork(2, (4, 4), 1)          # __init__ never raises (scikit-learn's rule)
    with pytest.raises(TypeError, match="MultiLayerPerceptron"):
        wide.forward(np.zeros((3, 2)))         # the first use of the network does
    X = np.linspace(-3, 3, 20)[:, None]
    with pytest.raises(NonFiniteError, match="at epoch \\d+ of train"):
        with np.errstate(all="ignore"):
            NeuralNetwork(1, 8, 1, random_state=0).train(X, 100 * X, epochs=100,
                                                          learning_rate=10.0)


# ------------------------------------------------- the eight classes, the seed's calls
def _sin(n=64):
    X = np.linspace(-np.pi, np.pi, n)[:, None]
    return X, np.sin(X)


def _running_sum(n=64, T=8, seed=0):
    """x (n, T, 1) uniform in [0, 1); y (n, T, 1): the sum so far, divided by T."""
    X = np.random.default_rng(seed).uniform(0, 1, (n, T, 1))
    return X, np.cumsum(X, 1) / T


def _digit_images(n=100):
    """The first n training digits as standardised (n, 8, 8) images, one-hot targets."""
    Xtr, _, ytr, _ = digits()
    X = Xtr[:n].reshape(-1, 8, 8)
    return (X - X.mean()) / X.std(), np.eye(10)[ytr[:n]]


def copy_first_token(n=64, T=6, V=4, seed=0):
    """x (n, T, V + 1): one-hot tokens plus a flag that marks step 0; y (n, T, V): the
    first token, at every step."""
    tok = np.random.default_rng(seed).integers(0, V, (n, T))
    X = np.zeros((n, T, V + 1))
    X[np.arange(n)[:, None], np.arange(T), tok] = 1.0
    X[:, 0, V] = 1.0
    return X, np.repeat(np.eye(V)[tok[:, 0]][:, None], T, 1)


def _task(name, dtype):
    """(model built the seed's way, X, y, epochs, learning_rate, forward's shape)."""
    if name == "NeuralNetwork":
        X, y = _sin()
        return NeuralNetwork(1, 16, 1, random_state=0, dtype=dtype), X, y, 300, 0.1, (64, 1)
    if name == "MultiLayerPerceptron":
        X, y = _sin()
        return (MultiLayerPerceptron(1, 16, 1, random_state=0, dtype=dtype), X, y, 300, 0.1,
                (64, 1))
    if name == "Perceptron":
        X, _, y, _ = blobs(n_samples=60, dtype=dtype)
        return Perceptron(2, 1), X, np.where(y == 1, 1, -1), 100, 1.0, (len(X), 1)
    if name == "RecurrentNeuralNetwork":          # the running sum, every step
        X, y = _running_sum()
        return (RecurrentNeuralNetwork(1, 16, 1, random_state=0, dtype=dtype), X, y, 300, 0.1,
                (64, 8, 1))
    if name == "LongShortTermMemory":             # the sum at the last step: y (N, 1)
        X, y = _running_sum()
        return (LongShortTermMemory(1, 16, 1, random_state=0, dtype=dtype), X, y[:, -1], 300,
                0.5, (64, 8, 1))
    if name == "ConvolutionalNeuralNetwork":      # 8x8 digits, (N, H, W) as input_dim is 1
        X, y = _digit_images()
        return (ConvolutionalNeuralNetwork(1, 16, 10, random_state=0, dtype=dtype), X, y, 500,
                2.0, (100, 10))
    X, y = copy_first_token()
    return AttentionMechanism(5, 16, 4, random_state=0, dtype=dtype), X, y, 300, 1.0, (64, 6, 4)


# the seed's classes (its eighth concept, backpropagation, is every backward below)
SEED_CLASSES = ["NeuralNetwork", "MultiLayerPerceptron", "Perceptron", "RecurrentNeuralNetwork",
         "LongShortTermMemory", "ConvolutionalNeuralNetwork", "AttentionMechanism"]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", SEED_CLASSES)
def test_the_seeds_calls_learn_the_classic_task(name, dtype):
    model, X, y, epochs, lr, shape = _task(name, dtype)
    X = X.astype(dtype)
    out = model.forward(X)
    assert out.shape == shape
    # the Perceptron keeps float64 weights (it counts mistakes, not a loss of that dtype)
    assert out.dtype == (np.float64 if name == "Perceptron" else np.dtype(dtype))
    model.backward(y, lr)
    history = model.train(X, y, epochs, lr)
    # a loss per epoch (the Perceptron: its mistakes, stopping at the first clean epoch)
    assert len(history) == epochs or (name == "Perceptron" and history[-1] == 0)
    assert history[-1] <= 0.1 * history[0], (history[0], history[-1])
    assert model.forward(X).shape == shape


def test_the_seeds_calls_on_the_perceptron_with_two_outputs():
    X, _, y, _ = blobs(n_samples=60)
    Y = np.where(np.c_[y == 1, y == 0], 1, -1)
    p = Perceptron(2, 2)
    assert p.forward(X).shape == (len(X), 2)
    history = p.train(X, Y, 100, 1.0)
    assert history[0] > 0 and history[-1] == 0


def test_sequence_targets_every_step_or_last_step():
    X, y = _running_sum(n=8, T=5)
    m = RecurrentNeuralNetwork(1, 4, 1, random_state=0, dtype="float64")
    m.forward(X)
    every = m.backward(y, 0.1)
    m2 = RecurrentNeuralNetwork(1, 4, 1, random_state=0, dtype="float64")
    out = m2.forward(X)
    assert every == pytest.approx(np.mean((out - y) ** 2), rel=1e-12)
    last = m2.backward(y[:, -1], 0.1)                       # (N, 1): the last step only
    assert last == pytest.approx(np.mean((out[:, -1] - y[:, -1]) ** 2), rel=1e-12)
    m2.forward(X)
    m2.backward(y[:, :, 0], 0.1)                            # (N, T) when output_dim is 1


def test_same_seed_same_training():
    for name in ("LongShortTermMemory", "ConvolutionalNeuralNetwork", "AttentionMechanism"):
        a, X, y, _, lr, _ = _task(name, "float32")
        b = _task(name, "float32")[0]
        np.testing.assert_array_equal(a.train(X[:16], y[:16], 3, lr),
                                      b.train(X[:16], y[:16], 3, lr))


def test_lstm_backward_is_the_mse_gradient_step_as_torch():
    X, y = _running_sum(n=5, T=4)
    m = LongShortTermMemory(1, 3, 2, random_state=0, dtype="float64")
    Y = np.concatenate([y, -y], 2)                                       # (5, 4, 2)
    lstm = torch.nn.LSTM(1, 3, batch_first=True).double()
    head = torch.nn.Linear(3, 2).double()
    sd = {k: torch.tensor(v) for k, v in m.net.state_dict().items()}
    lstm.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("rnn.")})
    head.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("head.")})
    out = m.forward(X)
    tout = head(lstm(torch.tensor(X))[0])
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-12)
    loss = m.backward(Y, learning_rate=0.3)
    tloss = torch.nn.functional.mse_loss(tout, torch.tensor(Y))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    after = m.net.state_dict()
    for prefix, mod in (("rnn.", lstm), ("head.", head)):
        for k, p in mod.named_parameters():
            np.testing.assert_allclose(after[prefix + k], (p - 0.3 * p.grad).detach().numpy(),
                                       rtol=1e-10, atol=1e-13)


def test_attention_backward_is_the_mse_gradient_step_as_torch():
    X, y = copy_first_token(n=4, T=3)
    m = AttentionMechanism(5, 6, 4, random_state=0, dtype="float64")
    P = {k: torch.tensor(v, requires_grad=True) for k, v in m.net.state_dict().items()}
    x = torch.tensor(X)

    def lin(name, z):
        return z @ P[name + ".weight"].T + P[name + ".bias"]

    q, k, v = lin("query", x), lin("key", x), lin("value", x)
    a = torch.softmax(q @ k.transpose(1, 2) / np.sqrt(6), -1) @ v
    tout = lin("out", a)
    out = m.forward(X)
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-12, atol=1e-15)
    loss = m.backward(y[:, -1], learning_rate=0.5)                       # the last step
    tloss = torch.mean((tout[:, -1] - torch.tensor(y[:, -1])) ** 2)
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    for name, p in P.items():
        np.testing.assert_allclose(m.net.state_dict()[name],
                                   (p - 0.5 * p.grad).detach().numpy(), rtol=1e-10, atol=1e-13)


def test_cnn_forward_as_torch():
    X, _ = _digit_images(n=3)
    m = ConvolutionalNeuralNetwork(1, 4, 10, random_state=0, dtype="float64")
    tnet = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16, 10)).double()
    tnet.load_state_dict({k: torch.tensor(v) for k, v in m.net.state_dict().items()})
    X = X.astype(np.float64)
    np.testing.assert_allclose(m.forward(X), tnet(torch.tensor(X[:, None])).detach().numpy(),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [RecurrentNeuralNetwork, LongShortTermMemory,
                                 AttentionMechanism])
def test_sequence_models_name_expected_and_received_shapes(cls):
    m = cls(3, 4, 2, random_state=0)
    with pytest.raises(ValueError, match=r"expected input \(N, T, 3\) .*got \(5, 3\)$"):
        m.forward(np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"expected input \(N, T, 3\) .*got \(2, 5, 4\)$"):
        m.forward(np.zeros((2, 5, 4)))
    m.forward(np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match=r"expected y of shape \(2, 5, 2\) \(every step\) "
                                         r"or \(2, 2\) \(the last step\), got \(2, 5\)"):
        m.backward(np.zeros((2, 5)), 0.1)
    with pytest.raises(ValueError, match="X has 2 samples but y has 3"):
        m.train(np.zeros((2, 5, 3)), np.zeros((3, 2)), 1, 0.1)


def test_cnn_names_expected_and_received_shapes():
    m = ConvolutionalNeuralNetwork(1, 4, 10, random_state=0)
    with pytest.raises(ValueError, match=r"expected images \(N, 1, H, W\) or \(N, H, W\) "
                                         r"with H, W >= 2, got \(64,\)"):
        m.forward(np.zeros(64))
    m3 = ConvolutionalNeuralNetwork(3, 4, 10, random_state=0)
    with pytest.raises(ValueError, match=r"expected images \(N, 3, H, W\) with H, W >= 2, "
                                         r"got \(2, 8, 8\)"):
        m3.forward(np.zeros((2, 8, 8)))
    m.forward(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"expected y of shape \(2, 10\)"):
        m.backward(np.zeros((2, 3)), 0.1)


def test_estimator_settings_are_keywords_and_the_old_positional_call_is_an_error():
    old = RecurrentNeuralNetwork(64)    # once hidden_size=64; now it would be ambiguous
    X = np.zeros((4, 3, 2))
    for call in (lambda: old.fit(X, np.arange(4) % 2), lambda: old.forward(X)):
        with pytest.raises(ValueError, match=r"RecurrentNeuralNetwork\(input_dim, hidden_dim, "
                                             r"output_dim\) expects three positive ints"):
            call()
    with pytest.raises(TypeError):
        LongShortTermMemory(4, 8, 3, 2)  # no fourth positional argument
    m = ConvolutionalNeuralNetwork()
    with pytest.raises(RuntimeError, match="has no seed network"):
        m.forward(np.zeros((2, 8, 8)))


def test_seed_built_models_keep_the_estimator_api():
    sklearn_base = pytest.importorskip("sklearn.base")
    m = RecurrentNeuralNetwork(2, 5, 1, random_state=3, hidden_size=6, max_iter=2,
                               task="regression", dtype="float64")
    params = m.get_params()
    assert (params["input_dim"], params["hidden_dim"], params["output_dim"]) == (2, 5, 1)
    assert params["hidden_size"] == 6
    c = sklearn_base.clone(m)
    for k, v in m.net.state_dict().items():                # same seed, same seed network
        np.testing.assert_array_equal(v, c.net.state_dict()[k])
    X = np.random.default_rng(0).normal(size=(16, 4, 2))
    y = X.sum((1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert c.fit(X, y).predict(X).shape == (16,)
    with pytest.raises(ValueError, match="built with input_dim=2"):
        RecurrentNeuralNetwork(2, 5, 1).fit(np.zeros((4, 3, 3)), np.zeros(4))
