"""The seed's API: NeuralNetwork / MultiLayerPerceptron with forward, backward(y,
learning_rate), train(X, y, epochs, learning_rate); the backward step checked against
torch's gradients."""

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from shendu.models import MultiLayerPerceptron, NeuralNetwork
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
    with pytest.raises(TypeError, match="MultiLayerPerceptron"):
        NeuralNetwork(2, (4, 4), 1)
    X = np.linspace(-3, 3, 20)[:, None]
    with pytest.raises(NonFiniteError, match="at epoch \\d+ of train"):
        with np.errstate(all="ignore"):
            NeuralNetwork(1, 8, 1, random_state=0).train(X, 100 * X, epochs=100,
                                                          learning_rate=10.0)
