r"""The seed's own API, shared by all eight of its classes: ``Model(input_dim, hidden_dim,
output_dim)`` (``Perceptron(input_dim, output_dim)``), ``forward(x)``, ``backward(y,
learning_rate)`` and ``train(X, y, epochs, learning_rate)``.

:class:`SeedAPI` gives ``forward``/``backward``/``train`` to any class that holds a network
``self.net`` (an ``nn.Module``): ``NeuralNetwork`` and ``MultiLayerPerceptron`` here, and the
ready models ``RecurrentNeuralNetwork``, ``LongShortTermMemory``,
``ConvolutionalNeuralNetwork`` and ``AttentionMechanism`` when they are built the seed's
way. (``Perceptron`` keeps Rosenblatt's rule, which is not a gradient step; see
:mod:`shendu.models.perceptron`.)

Where the seed wrote each layer's backward pass by hand, here ``forward`` records the
computation in shendu's graph — through the real layers: ``nn.Linear``, the fused
``nn.RNN``/``nn.LSTM`` scans, ``nn.Conv2d`` and pooling, ``F.scaled_dot_product_attention``
— and ``backward`` lets the autograd engine run the chain rule (Rumelhart, Hinton & Williams
1986) through it. For the network ``h = act(x W1^T + b1)``, ``out = h W2^T + b2`` and the
loss ``L = mean((out - y)^2)`` over all ``n * output_dim`` elements, that is::

    dL/dout = 2 (out - y) / (n * output_dim)
    dL/dW2  = dL/dout^T h,                  dL/db2 = sum over rows of dL/dout
    dL/dh   = dL/dout W2,                   dL/da  = dL/dh * act'(a)    (a: pre-activation)
    dL/dW1  = dL/da^T x,                    dL/db1 = sum over rows of dL/da

followed by one step of gradient descent, ``p -= learning_rate * dL/dp``, on every weight
(``optim.SGD`` without momentum). The recurrent, convolutional and attention networks get
the same treatment: their derivations are in ``docs/seed.md``.

The networks are ordinary modules (``self.net``), so everything else in shendu —
optimizers, :func:`shendu.train.fit`, ``state_dict`` — works on them too.
"""

from __future__ import annotations

import numpy as np

from shendu import functional as F
from shendu import nn, optim
from shendu.autograd import no_grad
from shendu.backend import as_dtype
from shendu.models._base import seeded
from shendu.models.mlp import make_mlp
from shendu.tensor import Tensor
from shendu.train import NonFiniteError

__all__ = ["MultiLayerPerceptron", "NeuralNetwork", "SeedAPI", "SelfAttentionNet",
           "make_seed_cnn", "check_seed_dims"]


def check_seed_dims(name: str, input_dim, hidden_dim, output_dim) -> bool:
    """True when the seed's three sizes are given (all positive ints), False when none is;
    a ValueError naming the constructor otherwise."""
    dims = (input_dim, hidden_dim, output_dim)
    if all(d is None for d in dims):
        return False
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
               for d in dims):
        raise ValueError(f"{name}(input_dim, hidden_dim, output_dim) expects three positive "
                         f"ints, got input_dim={input_dim!r}, hidden_dim={hidden_dim!r}, "
                         f"output_dim={output_dim!r} (estimator settings are keywords, "
                         f"e.g. {name}(hidden_size=64))")
    return True


def make_seed_cnn(in_channels: int, maps: int, n_out: int, dtype=None) -> nn.Sequential:
    """The seed's convolutional network: two 3x3 convolutions of ``maps`` feature maps each
    ('same' padding), ReLU, a 2x2 max-pool after the first and an adaptive average pool to
    2x2 after the second, then a linear layer: (N, C, H, W) -> (N, n_out) for any H, W >= 2.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, maps, 3, padding=1, dtype=dtype), nn.ReLU(),   # (N, M, H, W)
        nn.MaxPool2d(2),                                                     # (N, M, H/2, W/2)
        nn.Conv2d(maps, maps, 3, padding=1, dtype=dtype), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),                                             # (N, M, 2, 2)
        nn.Flatten(),                                                        # (N, 4M)
        nn.Linear(4 * maps, n_out, dtype=dtype))                             # (N, n_out)


class SelfAttentionNet(nn.Module):
    r"""Self-attention over a sequence (Vaswani et al. 2017), one head, and a linear read-out
    at every step::

        Q = x W_q^T + b_q,  K = x W_k^T + b_k,  V = x W_v^T + b_v     (N, T, H)
        A = softmax(Q K^T / sqrt(H)) V                                (N, T, H)
        out = A W_o^T + b_o                                           (N, T, output_dim)

    ``forward(x)``: x (N, T, input_dim) -> (N, T, output_dim). The attention itself is the
    fused ``F.scaled_dot_product_attention``.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, dtype=None) -> None:
        super().__init__()
        self.query = nn.Linear(input_dim, hidden_dim, dtype=dtype)
        self.key = nn.Linear(input_dim, hidden_dim, dtype=dtype)
        self.value = nn.Linear(input_dim, hidden_dim, dtype=dtype)
        self.out = nn.Linear(hidden_dim, output_dim, dtype=dtype)

    def forward(self, x) -> Tensor:
        q, k, v = self.query(x), self.key(x), self.value(x)                 # (N, T, H)
        return self.out(F.scaled_dot_product_attention(q, k, v))            # (N, T, O)

    def attention_weights(self, x) -> np.ndarray:
        """softmax(Q K^T / sqrt(H)): (N, T, T), row t = where step t looked."""
        if not isinstance(x, Tensor):
            x = Tensor(np.asarray(x, dtype=self.query.weight.dtype))
        with no_grad():
            _, w = F.scaled_dot_product_attention(self.query(x), self.key(x), self.value(x),
                                                  need_weights=True)
        return w.data if isinstance(w, Tensor) else np.asarray(w)


class SeedAPI:
    """``forward``/``backward``/``train`` of the seed on the network ``self.net``.

    A class using it sets ``self.net`` and ``self._seed_dtype`` (with :meth:`_seed_build`)
    and says how its input looks (:meth:`_seed_check`). ``_seed_sequence = True`` lets
    ``y`` be (N, output_dim) for the last step of an (N, T, output_dim) output.
    """

    _seed_sequence = False

    def _seed_build(self, net: nn.Module, dtype) -> None:
        self.net = net
        self._seed_dtype = np.dtype(dtype)
        self._out: Tensor | None = None

    def _seed_net(self, where: str) -> nn.Module:
        net = self.__dict__.get("net")
        if net is None:
            name = type(self).__name__
            raise RuntimeError(f"{name}.{where}: this {name} has no seed network; build it "
                               f"as {name}(input_dim, hidden_dim, output_dim) to use "
                               f"forward/backward/train")
        return net

    def _seed_check(self, x: np.ndarray, where: str) -> tuple[np.ndarray, bool]:
        """The input as a batch of the network's shape, and whether it was one sample."""
        raise NotImplementedError

    def _seed_input(self, x, where: str) -> tuple[Tensor, bool]:
        self._seed_net(where)
        name = type(self).__name__
        x = np.asarray(x.data if isinstance(x, Tensor) else x)
        if x.dtype.kind not in "fiub":
            raise ValueError(f"{name}.{where}: expected a numeric array, got {x.dtype} "
                             f"{x.shape}")
        x, single = self._seed_check(x.astype(self._seed_dtype, copy=False), where)
        if not np.isfinite(x).all():
            raise ValueError(f"{name}.{where}: the input contains NaN or inf")
        return Tensor(x), single

    def forward(self, x) -> np.ndarray:
        """The network's output for the batch ``x`` (shapes in the class docstring). The
        graph is kept for :meth:`backward`."""
        xt, single = self._seed_input(x, "forward")
        self._out = self._seed_net("forward")(xt)
        out = self._out.data
        return out[0] if single else out

    def _seed_target(self, y, out: Tensor) -> tuple[Tensor, np.ndarray]:
        """(the part of ``out`` that ``y`` is compared with, ``y`` shaped like it)."""
        name = type(self).__name__
        y = np.asarray(y.data if isinstance(y, Tensor) else y, dtype=out.dtype)
        if self._seed_sequence:
            N, T, O = out.shape
            if y.shape == (N, T, O):
                return out, y
            if y.shape == (N, O):
                return out[:, -1], y
            if O == 1 and y.shape == (N, T):
                return out, y[..., None]
            if O == 1 and y.shape == (N,):
                return out[:, -1], y[:, None]
            raise ValueError(f"{name}.backward: expected y of shape {(N, T, O)} (every step) "
                             f"or {(N, O)} (the last step), got {y.shape}")
        if y.shape != out.shape and y.size == out.data.size:
            y = y.reshape(out.shape)  # (n,) targets for one output, or one sample
        if y.shape != out.shape:
            raise ValueError(f"{name}.backward: expected y of shape {out.shape} (like the "
                             f"last forward's output), got {y.shape}")
        return out, y

    def backward(self, y, learning_rate: float) -> float:
        """Gradient of ``mean((out - y)^2)`` for the last :meth:`forward` (by autograd),
        then one step of gradient descent on every weight. Returns that loss (before the
        step)."""
        name = type(self).__name__
        if getattr(self, "_out", None) is None:
            raise RuntimeError(f"{name}.backward: call forward(x) first (each forward allows "
                               f"one backward)")
        if not learning_rate > 0:
            raise ValueError(f"{name}.backward: learning_rate must be > 0, got "
                             f"{learning_rate}")
        pred, y = self._seed_target(y, self._out)
        loss = F.mse_loss(pred, Tensor(y))
        value = float(loss.item())
        if not np.isfinite(value):
            raise NonFiniteError(f"{name}.backward: the loss is {value}; no step taken "
                                 f"(lower learning_rate, or check X and y)")
        opt = optim.SGD(self._seed_net("backward").parameters(), lr=float(learning_rate))
        opt.zero_grad()
        loss.backward()
        opt.step()
        opt.zero_grad()
        self._out = None
        return value

    def train(self, X, y, epochs: int = 1000, learning_rate: float = 0.1) -> list[float]:
        """Full-batch gradient descent: ``epochs`` times forward on all of ``X``, then
        backward. Returns the loss of each epoch."""
        name = type(self).__name__
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) \
                or epochs < 0:
            raise ValueError(f"{name}.train: epochs must be a non-negative int, got "
                             f"{epochs!r}")
        X = self._seed_input(X, "train")[0].data
        y = np.asarray(y.data if isinstance(y, Tensor) else y)
        if y.ndim == 0 or len(y) != len(X):
            raise ValueError(f"{name}.train: X has {len(X)} samples but y has "
                             f"{len(y) if y.ndim else 'none (a scalar)'}")
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


class MultiLayerPerceptron(SeedAPI):
    """A fully connected network trained by full-batch gradient descent on the mean
    squared error, the seed's way.

    ``MultiLayerPerceptron(input_dim, hidden_dim, output_dim)``; ``hidden_dim`` is one width
    or a sequence of widths (one per hidden layer). ``activation`` is ``"tanh"``
    (default), ``"logistic"``/``"sigmoid"`` or ``"relu"``; the output layer is linear.
    Weights start as ``nn.Linear``'s (torch's) initialisation, drawn from shendu's
    generator (seeded by ``random_state`` when given).

    Shapes: ``forward(x)``: x (N, input_dim) -> (N, output_dim), or (input_dim,) ->
    (output_dim,) for one sample; ``backward(y, learning_rate)``: y (N, output_dim) (or
    (N,) when output_dim is 1).
    """

    def __init__(self, input_dim: int, hidden_dim, output_dim: int,
                 activation: str = "tanh", random_state: int | None = None,
                 dtype=None) -> None:
        hidden = [hidden_dim] if isinstance(hidden_dim, (int, np.integer)) else list(hidden_dim)
        self.input_dim, self.hidden_dim, self.output_dim = input_dim, hidden_dim, output_dim
        self.activation = activation
        self.dtype = as_dtype(dtype)
        with seeded(random_state):
            net = make_mlp([input_dim, *hidden, output_dim], activation, self.dtype,
                           where=type(self).__name__)
        self._seed_build(net, self.dtype)

    def _seed_check(self, x: np.ndarray, where: str) -> tuple[np.ndarray, bool]:
        single = x.ndim == 1
        if single:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"{type(self).__name__}.{where}: expected input (N, "
                             f"{self.input_dim}), got {x.shape}")
        return x, single

    __call__ = SeedAPI.forward

    def predict(self, x) -> np.ndarray:
        """Outputs without recording a graph."""
        with no_grad():
            xt, single = self._seed_input(x, "predict")
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
