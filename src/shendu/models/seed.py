r"""The seed's own API for neural networks: ``NeuralNetwork(input_dim, hidden_dim,
output_dim)`` and ``MultiLayerPerceptron``, with ``forward``, ``backward(y,
learning_rate)`` and ``train(X, y, epochs, learning_rate)``.

Where the seed wrote each layer's backward pass by hand, here ``forward`` records the
computation in shendu's graph and ``backward`` lets the autograd engine run the chain rule
(Rumelhart, Hinton & Williams 1986) through it. For the network
``h = act(x W1^T + b1)``, ``out = h W2^T + b2`` and the loss
``L = mean((out - y)^2)`` over all ``n * output_dim`` elements, that is::

    dL/dout = 2 (out - y) / (n * output_dim)
    dL/dW2  = dL/dout^T h,                  dL/db2 = sum over rows of dL/dout
    dL/dh   = dL/dout W2,                   dL/da  = dL/dh * act'(a)    (a: pre-activation)
    dL/dW1  = dL/da^T x,                    dL/db1 = sum over rows of dL/da

followed by one step of gradient descent, ``p -= learning_rate * dL/dp``, on every weight.

The network itself is an ``nn.Sequential`` (``self.net``), so everything else in shendu
— optimizers, :func:`shendu.train.fit`, ``state_dict`` — works on it too.
"""

from __future__ import annotations

import numpy as np

from shendu import functional as F
from shendu.autograd import no_grad
from shendu.backend import as_dtype
from shendu.models._base import seeded
from shendu.models.mlp import make_mlp
from shendu.tensor import Tensor
from shendu.train import NonFiniteError

__all__ = ["MultiLayerPerceptron", "NeuralNetwork"]


class MultiLayerPerceptron:
    """A fully connected network trained by full-batch gradient descent on the mean
    squared error, the seed's way.

    ``MultiLayerPerceptron(input_dim, hidden_dim, output_dim)``; ``hidden_dim`` is one width
    or a sequence of widths (one per hidden layer). ``activation`` is ``"tanh"``
    (default), ``"logistic"``/``"sigmoid"`` or ``"relu"``; the output layer is linear.
    Weights start as ``nn.Linear``'s (torch's) initialisation, drawn from shendu's
    generator (seeded by ``random_state`` when given).
    """

    def __init__(self, input_dim: int, hidden_dim, output_dim: int,
                 activation: str = "tanh", random_state: int | None = None,
                 dtype=None) -> None:
        hidden = [hidden_dim] if isinstance(hidden_dim, (int, np.integer)) else list(hidden_dim)
        self.input_dim, self.hidden_dim, self.output_dim = input_dim, hidden_dim, output_dim
        self.activation = activation
        self.dtype = as_dtype(dtype)
        with seeded(random_state):
            self.net = make_mlp([input_dim, *hidden, output_dim], activation, self.dtype,
                                where=type(self).__name__)
        self._out: Tensor | None = None

    def _as_input(self, x, where: str) -> tuple[Tensor, bool]:
        x = np.asarray(x.data if isinstance(x, Tensor) else x, dtype=self.dtype)
        single = x.ndim == 1
        if single:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"{type(self).__name__}.{where}: expected input (n, "
                             f"{self.input_dim}), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"{type(self).__name__}.{where}: the input contains NaN or inf")
        return Tensor(x), single

    def forward(self, x) -> np.ndarray:
        """The network's outputs (n, output_dim) for a batch ``x`` (n, input_dim) — or
        (output_dim,) for one sample (input_dim,). The graph is kept for :meth:`backward`."""
        xt, single = self._as_input(x, "forward")
        self._out = self.net(xt)
        out = self._out.data
        return out[0] if single else out

    __call__ = forward

    def backward(self, y, learning_rate: float) -> float:
        """Gradient of ``mean((out - y)^2)`` for the last :meth:`forward`, then one step of
        gradient descent on every weight. Returns that loss (before the step)."""
        if self._out is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward(x) first (each "
                               f"forward allows one backward)")
        out = self._out
        y = np.asarray(y.data if isinstance(y, Tensor) else y, dtype=out.dtype)
        if y.shape != out.shape and y.size == out.data.size:
            y = y.reshape(out.shape)  # (n,) targets for one output, or one sample
        if y.shape != out.shape:
            raise ValueError(f"{type(self).__name__}.backward: expected y of shape "
                             f"{out.shape} (like the last forward's output), got {y.shape}")
        if not learning_rate > 0:
            raise ValueError(f"{type(self).__name__}.backward: learning_rate must be > 0, "
                             f"got {learning_rate}")
        loss = F.mse_loss(out, Tensor(y))
        value = float(loss.item())
        if not np.isfinite(value):
            raise NonFiniteError(f"{type(self).__name__}.backward: the loss is {value}; no "
                                 f"step taken (lower learning_rate, or check X and y)")
        for p in self.net.parameters():
            p.grad = None
        loss.backward()
        with no_grad():
            for p in self.net.parameters():
                p.data -= learning_rate * p.grad.data
        self._out = None
        return value

    def train(self, X, y, epochs: int = 1000, learning_rate: float = 0.1) -> list[float]:
        """Full-batch gradient descent: ``epochs`` times forward on all of ``X``, then
        backward. Returns the loss of each epoch."""
        if not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"{type(self).__name__}.train: epochs must be a non-negative "
                             f"int, got {epochs!r}")
        X = self._as_input(X, "train")[0].data
        y = np.asarray(y, dtype=self.dtype)
        if len(y) != len(X):
            raise ValueError(f"{type(self).__name__}.train: X has {len(X)} samples but y "
                             f"has {len(y)}")
        history = []
        for epoch in range(epochs):
            self.forward(X)
            try:
                history.append(self.backward(y, learning_rate))
            except NonFiniteError as e:
                seen = (f"; the loss went from {history[0]:.4g} to {history[-1]:.4g}"
                        if history else "")
                raise NonFiniteError(f"{e}, at epoch {epoch + 1} of train{seen}") from None
        return history

    def predict(self, x) -> np.ndarray:
        """Outputs without recording a graph."""
        with no_grad():
            xt, single = self._as_input(x, "predict")
            out = self.net(xt).data
        return out[0] if single else out

    def parameters(self):
        return self.net.parameters()

    def state_dict(self):
        return self.net.state_dict()

    def load_state_dict(self, state_dict, strict: bool = True):
        return self.net.load_state_dict(state_dict, strict)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(input_dim={self.input_dim}, hidden_dim="
                f"{self.hidden_dim}, output_dim={self.output_dim}, "
                f"activation={self.activation!r})")


class NeuralNetwork(MultiLayerPerceptron):
    """The seed's ``NeuralNetwork(input_dim, hidden_dim, output_dim)``: one hidden layer
    of ``hidden_dim`` units. See :class:`MultiLayerPerceptron`."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int,
                 activation: str = "tanh", random_state: int | None = None,
                 dtype=None) -> None:
        if not isinstance(hidden_dim, (int, np.integer)):
            raise TypeError(f"NeuralNetwork: hidden_dim is one layer's width (an int), got "
                            f"{hidden_dim!r}; use MultiLayerPerceptron for several layers")
        super().__init__(input_dim, hidden_dim, output_dim, activation, random_state, dtype)
