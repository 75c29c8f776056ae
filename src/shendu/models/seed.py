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

import inspect

import numpy as np

from shendu import functional as F
from shendu import nn, optim
from shendu.autograd import no_grad
from shendu.backend import as_dtype
from shendu.data import DataLoader, TensorDataset
from shendu.models._base import BaseEstimator, RegressorMixin, seeded
from shendu.models.mlp import make_mlp
from shendu.tensor import Tensor
from shendu.train import NonFiniteError, Trainer

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

    def _seed_sizes_given(self) -> bool:
        """Whether the model was built the seed's way (some of the three sizes given)."""
        return any(getattr(self, d, None) is not None
                   for d in ("input_dim", "hidden_dim", "output_dim"))

    def _seed_validate(self) -> None:
        """Raise the seed constructor's error for bad sizes (each class may add its own
        checks); does nothing when no size is given."""
        check_seed_dims(type(self).__name__, getattr(self, "input_dim", None),
                        getattr(self, "hidden_dim", None), getattr(self, "output_dim", None))

    def _seed_make(self) -> None:
        """Validate the sizes and build ``self.net`` (with :meth:`_seed_build`)."""
        raise NotImplementedError

    def _seed_init(self) -> None:
        """Build the seed's network at once when its sizes are given, as the seed does.
        Bad sizes or settings leave it unbuilt instead of raising: scikit-learn's rule is
        that ``__init__`` (and so ``clone``/``set_params``) never raises, so the error comes
        from the first call that needs the network (``forward``, ``train``, ``predict``) or
        from ``fit``."""
        if not self._seed_sizes_given():
            return
        try:
            self._seed_make()
        except (ValueError, TypeError):
            self.__dict__.pop("net", None)

    def _seed_build(self, net: nn.Module, dtype) -> None:
        self.net = net
        self._seed_dtype = np.dtype(dtype)
        self._out: Tensor | None = None

    def _seed_net(self, where: str) -> nn.Module:
        net = self.__dict__.get("net")
        if net is None and self._seed_sizes_given():
            self._seed_make()      # the error __init__ held back, or (sizes since set) the net
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


class MultiLayerPerceptron(SeedAPI, RegressorMixin, BaseEstimator):
    """A fully connected network trained by full-batch gradient descent on the mean
    squared error, the seed's way — and a scikit-learn regressor.

    ``MultiLayerPerceptron(input_dim, hidden_dim, output_dim)``; ``hidden_dim`` is one width
    or a sequence of widths (one per hidden layer). ``activation`` is ``"tanh"``
    (default), ``"logistic"``/``"sigmoid"`` or ``"relu"``; the output layer is linear.
    Weights start as ``nn.Linear``'s (torch's) initialisation, drawn from shendu's
    generator (seeded by ``random_state`` when given).

    Seed API (the three sizes given, the network ``net`` built at once): ``forward(x)``: x
    (N, input_dim) -> (N, output_dim), or (input_dim,) -> (output_dim,) for one sample;
    ``backward(y, learning_rate)``: y (N, output_dim) (or (N,) when output_dim is 1);
    ``train(X, y, epochs, learning_rate)``; ``predict(x)`` before ``fit`` is ``net``'s output
    without a graph.

    Estimator API: ``fit(X, y)`` builds its own network ``model_`` for the data (the
    sizes, where given, must match it; ``hidden_dim`` None is scikit-learn's 100 units)
    and runs the seed's training on it — ``max_iter`` epochs of full-batch gradient descent
    with step ``learning_rate_init`` — through :class:`shendu.train.Trainer`;
    ``predict``/``score`` (R²) then use ``model_``. y is (n,) or (n, n_outputs). ``dtype``
    None computes ``fit`` in float64 (float32 for float32 X), as scikit-learn's MLP, while
    the seed network is float32. Fitted attributes: ``model_``, ``loss_curve_``, ``loss_``,
    ``n_iter_``, ``n_outputs_``, ``n_features_in_``, ``history_``.
    """

    _multi_output = True

    def __init__(self, input_dim: int | None = None, hidden_dim=None,
                 output_dim: int | None = None, activation: str = "tanh",
                 random_state: int | None = None, dtype=None, *, max_iter: int = 1000,
                 learning_rate_init: float = 0.01) -> None:
        self.input_dim, self.hidden_dim, self.output_dim = input_dim, hidden_dim, output_dim
        self.activation = activation
        self.random_state, self.dtype = random_state, dtype
        self.max_iter, self.learning_rate_init = max_iter, learning_rate_init
        self._seed_init()

    def _seed_sizes_given(self) -> bool:
        # hidden_dim alone is the estimator's width: fit takes the other sizes from the data
        return self.input_dim is not None or self.output_dim is not None

    def _seed_validate(self) -> None:
        if not self._seed_sizes_given():
            return
        dims = (self.input_dim, self.hidden_dim, self.output_dim)
        if any(d is None for d in dims):
            raise ValueError(f"{type(self).__name__}(input_dim, hidden_dim, output_dim) "
                             f"needs all three sizes for the seed's network, got "
                             f"input_dim={dims[0]!r}, hidden_dim={dims[1]!r}, "
                             f"output_dim={dims[2]!r} (leave input_dim and output_dim "
                             f"None for an estimator that takes them from the data)")
        for what, d in (("input_dim", dims[0]), ("output_dim", dims[2])):
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
                raise ValueError(f"{type(self).__name__}: {what} must be a positive int, "
                                 f"got {d!r}")

    def _seed_make(self) -> None:
        self._seed_validate()
        dt = as_dtype(self.dtype)
        with seeded(self.random_state):
            net = make_mlp([self.input_dim, *self._hidden(), self.output_dim],
                           self.activation, dt, where=type(self).__name__)
        self._seed_build(net, dt)

    def _hidden(self) -> list:
        h = 100 if self.hidden_dim is None else self.hidden_dim
        return [h] if isinstance(h, (int, np.integer)) else list(h)

    def _seed_check(self, x: np.ndarray, where: str) -> tuple[np.ndarray, bool]:
        single = x.ndim == 1
        if single:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"{type(self).__name__}.{where}: expected input (N, "
                             f"{self.input_dim}), got {x.shape}")
        return x, single

    __call__ = SeedAPI.forward

    # ------------------------------------------------------------ scikit-learn
    def _fit_dtype(self, X: np.ndarray) -> np.dtype:
        if self.dtype is not None:
            return as_dtype(self.dtype)
        return np.dtype(np.float32 if X.dtype == np.float32 else np.float64)

    def fit(self, X, y) -> MultiLayerPerceptron:
        """Train a network of the data's sizes by full-batch gradient descent on the mean
        squared error: ``max_iter`` epochs, step ``learning_rate_init`` (the seed's
        ``train``)."""
        name = type(self).__name__
        lr, epochs = self.learning_rate_init, self.max_iter
        if not (isinstance(lr, (int, float, np.number)) and not isinstance(lr, bool)
                and lr > 0):
            raise ValueError(f"{name}: learning_rate_init must be a number > 0, got {lr!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) \
                or epochs < 1:
            raise ValueError(f"{name}: max_iter must be an int >= 1, got {epochs!r}")
        self._seed_validate()
        raw = getattr(X, "dtype", None)
        X = self._check_X(X, "fit", reset=True)
        y = self._check_regression_y(y, "fit")
        self._check_y_length(X, y, "fit")
        n_out = 1 if y.ndim == 1 else y.shape[1]
        for what, want, got in (("input_dim", self.input_dim, X.shape[1]),
                                ("output_dim", self.output_dim, n_out)):
            if want is not None and want != got:
                raise ValueError(f"{name}.fit: the data has {got} "
                                 f"{'features' if what == 'input_dim' else 'outputs'}, but "
                                 f"the model was built with {what}={want}")
        dt = self._fit_dtype(np.empty(0, raw if isinstance(raw, np.dtype) else np.float64))
        self._y_1d = y.ndim == 1
        target = y.reshape(len(y), n_out).astype(dt)
        with seeded(self.random_state):
            self.model_ = make_mlp([X.shape[1], *self._hidden(), n_out], self.activation, dt,
                                   where=name)
            opt = optim.SGD(self.model_.parameters(), lr=float(lr))
            loader = DataLoader(TensorDataset(X.astype(dt), target), batch_size=len(X),
                                shuffle=False)
            trainer = Trainer(self.model_, F.mse_loss, opt, loader, verbose=0)
            self.history_ = trainer.fit(int(epochs))
        self.loss_curve_ = [float(v) for v in self.history_["loss"]]
        self.loss_ = self.loss_curve_[-1]
        self.n_iter_ = len(self.loss_curve_)
        self.n_outputs_ = n_out
        self._fit_dt = dt
        self.model_.eval()
        return self

    def predict(self, x) -> np.ndarray:
        """After ``fit``: the fitted network's output for X (n, n_features), float64, (n,)
        for a 1-D y. Before ``fit``, on a model built the seed's way: the seed network's
        output without recording a graph (one sample (input_dim,) allowed)."""
        if not self._is_fitted() and self._seed_sizes_given():
            with no_grad():
                xt, single = self._seed_input(x, "predict")
                out = self.net(xt).data
            return out[0] if single else out
        X = self._check_X(x, "predict", reset=False)
        with no_grad():
            out = self.model_(Tensor(X.astype(self._fit_dt))).data.astype(np.float64)
        return out.ravel() if self._y_1d else out

    @classmethod
    def _shendu_restore(cls, arrays, state, path="<state>"):
        """``shendu.load``; a file written before these classes were estimators (its
        attributes only) still loads, with today's defaults for the new settings."""
        if isinstance(state, dict) and state.get("via") == "attrs":
            from shendu.io.state import _object_restore

            obj = _object_restore(path, cls, arrays, state)
            for name, p in inspect.signature(cls.__init__).parameters.items():
                if name != "self" and name not in obj.__dict__:
                    setattr(obj, name, p.default)
            return obj
        return super()._shendu_restore(arrays, state, path)

    # --------------------------------------------------------- the seed's net
    def parameters(self):
        return self._seed_net("parameters").parameters()

    def state_dict(self):
        return self._seed_net("state_dict").state_dict()

    def load_state_dict(self, state_dict, strict: bool = True):
        return self._seed_net("load_state_dict").load_state_dict(state_dict, strict)


class NeuralNetwork(MultiLayerPerceptron):
    """The seed's ``NeuralNetwork(input_dim, hidden_dim, output_dim)``: one hidden layer
    of ``hidden_dim`` units. See :class:`MultiLayerPerceptron`."""

    def __init__(self, input_dim: int | None = None, hidden_dim: int | None = None,
                 output_dim: int | None = None, activation: str = "tanh",
                 random_state: int | None = None, dtype=None, *, max_iter: int = 1000,
                 learning_rate_init: float = 0.01) -> None:
        super().__init__(input_dim, hidden_dim, output_dim, activation, random_state, dtype,
                         max_iter=max_iter, learning_rate_init=learning_rate_init)

    def _hidden(self) -> list:
        h = self.hidden_dim
        if h is not None and (isinstance(h, bool) or not isinstance(h, (int, np.integer))):
            raise TypeError(f"NeuralNetwork: hidden_dim is one layer's width (an int), got "
                            f"{h!r}; use MultiLayerPerceptron for several layers")
        return super()._hidden()
