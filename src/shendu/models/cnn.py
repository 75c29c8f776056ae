r"""The convolutional network (LeCun et al. 1989; LeNet-5: LeCun, Bottou, Bengio & Haffner
1998) as a scikit-learn estimator: :class:`ConvolutionalNeuralNetwork`.

The network is, by default, LeNet-5 with today's ReLU and max pooling::

    conv 6@5x5 ('same') -> ReLU -> max-pool 2 -> conv 16@5x5 -> ReLU -> max-pool 2
    -> flatten -> Linear 120 -> ReLU -> Linear 84 -> ReLU -> Linear n_classes

On 28x28 MNIST digits that is the paper's geometry (C1 28x28 — the paper padded the
digits to 32x32 —, S2 14x14, C3 10x10, S4 5x5, 400 features into F5). Each convolution
shares one small kernel over the whole image, so the network has few weights and
recognises a stroke wherever it is; pooling makes it tolerant to small shifts.

Images come as (N, H, W) (one channel) or (N, C, H, W); flat (N, H*W) rows of a square
image (scikit-learn's digits) are reshaped to (N, 1, H, W). Training, stopping rules and
the estimator API are those of :class:`~shendu.models.MLPClassifier` (``fit``,
``partial_fit``, ``predict``, ``predict_proba``, ``score``, early stopping, warm start,
``random_state``).

The same class speaks the seed's API: ``ConvolutionalNeuralNetwork(input_dim, hidden_dim,
output_dim)`` builds at once the seed's network ``net`` (``make_seed_cnn``: two 3x3
convolutions of ``hidden_dim`` feature maps, pooling, a linear read-out) for
``forward(x)``: x (N, input_dim, H, W) — input_dim is the number of channels; (N, H, W)
when it is 1 — -> (N, output_dim), ``backward(y, learning_rate)`` (one step of gradient
descent on the squared error; y (N, output_dim)) and ``train(X, y, epochs,
learning_rate)``. The estimator settings are keywords and configure ``fit``, which builds
its own network ``model_``.
"""

from __future__ import annotations

import math

import numpy as np

from shendu import nn
from shendu.autograd import no_grad
from shendu.backend import as_dtype
from shendu.models._base import as_array, check_finite, seeded
from shendu.models.mlp import MLPClassifier
from shendu.models.seed import SeedAPI, check_seed_dims, make_seed_cnn
from shendu.tensor import Tensor

__all__ = ["ConvolutionalNeuralNetwork", "make_cnn"]

_ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "logistic": nn.Sigmoid,
        "gelu": nn.GELU}


def make_cnn(input_shape, n_classes: int, conv_channels=(6, 16), kernel_size: int = 5,
             hidden_layer_sizes=(120, 84), activation: str = "relu", pooling: str = "max",
             batch_norm: bool = False, dropout: float = 0.0, dtype=None,
             where: str = "make_cnn") -> nn.Sequential:
    """The network of :class:`ConvolutionalNeuralNetwork` for images ``input_shape``
    (C, H, W): per entry of ``conv_channels`` a conv block ``Conv2d -> [BatchNorm2d] ->
    act -> pool 2``, then ``Linear`` layers of ``hidden_layer_sizes`` and the output.

    Padding: the first convolution keeps the image size ('same'); a later one is 'valid'
    (shrinks the map by ``kernel_size - 1``, as LeNet-5's C3) when its input is at least
    ``2 * kernel_size`` wide, else 'same'. A map smaller than 2 is not pooled.
    """
    if activation not in _ACT:
        raise ValueError(f"{where}: activation must be one of {sorted(_ACT)}, got "
                         f"{activation!r}")
    if pooling not in ("max", "avg"):
        raise ValueError(f"{where}: pooling must be 'max' or 'avg', got {pooling!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{where}: dropout must be in [0, 1), got {dropout}")
    chans = [int(conv_channels)] if isinstance(conv_channels, (int, np.integer)) \
        else [int(c) for c in conv_channels]
    hidden = [int(hidden_layer_sizes)] if isinstance(hidden_layer_sizes, (int, np.integer)) \
        else [int(h) for h in hidden_layer_sizes]
    if not chans or any(c < 1 for c in chans) or any(h < 1 for h in hidden):
        raise ValueError(f"{where}: conv_channels must be one or more positive ints and "
                         f"hidden_layer_sizes positive ints, got {conv_channels!r} and "
                         f"{hidden_layer_sizes!r}")
    k = int(kernel_size)
    c, h, w = (int(s) for s in input_shape)
    layers: list[nn.Module] = []
    for i, out_c in enumerate(chans):
        valid = i > 0 and min(h, w) >= 2 * k
        layers.append(nn.Conv2d(c, out_c, k, padding=0 if valid else "same", dtype=dtype))
        if valid:
            h, w = h - k + 1, w - k + 1
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_c, dtype=dtype))
        layers.append(_ACT[activation]())
        if min(h, w) >= 2:
            layers.append(nn.MaxPool2d(2) if pooling == "max" else nn.AvgPool2d(2))
            h, w = h // 2, w // 2
        c = out_c
    layers.append(nn.Flatten())
    if dropout:
        layers.append(nn.Dropout(dropout))
    sizes = [c * h * w, *hidden, int(n_classes)]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(_ACT[activation]())
    return nn.Sequential(*layers)


class ConvolutionalNeuralNetwork(SeedAPI, MLPClassifier):
    """A convolutional network classifier for images, LeNet-5 by default.

    Seed API: ``ConvolutionalNeuralNetwork(input_dim, hidden_dim, output_dim)`` (input_dim =
    channels, hidden_dim = feature maps per conv layer); ``forward(x)``: x (N, input_dim, H,
    W), or (N, H, W) when input_dim is 1, -> (N, output_dim); ``backward(y,
    learning_rate)``: y (N, output_dim); ``train(X, y, epochs, learning_rate)`` -> the loss
    of each epoch. The network (``net``) is in ``dtype``. Estimator API: the keywords
    below, then ``fit(X, y)``.

    Parameters
    ----------
    input_dim, hidden_dim, output_dim : the seed's constructor (see above); leave them
        ``None`` for the estimator.
    conv_channels : output channels of each conv block, ``(6, 16)`` as LeNet-5.
    kernel_size : side of every convolution kernel (5).
    hidden_layer_sizes : widths of the fully connected layers after the convolutions,
        ``(120, 84)`` as LeNet-5's F5 and F6.
    activation : ``"relu"`` (default), ``"tanh"`` (the 1998 paper's squashing function),
        ``"sigmoid"`` or ``"gelu"``.
    pooling : ``"max"`` (default) or ``"avg"`` (the paper's subsampling).
    batch_norm : a ``BatchNorm2d`` after every convolution (Ioffe & Szegedy 2015).
    dropout : dropout probability before the fully connected layers (Srivastava et al.
        2014).
    solver, alpha, batch_size, learning_rate, learning_rate_init, power_t, max_iter,
    shuffle, random_state, tol, verbose, warm_start, momentum, nesterovs_momentum,
    early_stopping, validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change,
    max_fun, label_smoothing, epochs, optimizer, weight_decay : scikit-learn's names, as
        :class:`~shendu.models.MLPClassifier`; here ``batch_size="auto"`` is
        ``min(64, n_samples)``, ``max_iter`` 20, ``alpha`` 0 and ``dtype`` float32.
    standardize : shift and scale each channel to mean 0 and standard deviation 1 with the
        statistics of the training images (``mean_``, ``scale_``, per channel).

    Attributes: ``classes_``, ``input_shape_`` (C, H, W), ``n_features_in_`` (C*H*W),
    ``model_``, ``optimizer_``, ``history_``, ``loss_curve_``, ``n_iter_``, ``best_loss_``.
    """

    _auto_batch = 64
    _input_kinds = {"two_d_array": False, "three_d_array": True}

    def __init__(self, input_dim: int | None = None, hidden_dim: int | None = None,
                 output_dim: int | None = None, *, conv_channels=(6, 16), kernel_size: int = 5,
                 hidden_layer_sizes=(120, 84), activation: str = "relu",
                 pooling: str = "max", batch_norm: bool = False, dropout: float = 0.0,
                 solver: str = "adam", alpha: float = 0.0, batch_size: int | str = "auto",
                 learning_rate="constant", learning_rate_init: float = 1e-3,
                 power_t: float = 0.5, max_iter: int = 20, shuffle: bool = True,
                 random_state: int | None = None, tol: float = 1e-4, verbose: int = 0,
                 warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False,
                 validation_fraction: float = 0.1, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-8, n_iter_no_change: int = 5,
                 max_fun: int = 15000, label_smoothing: float = 0.0,
                 standardize: bool = True, dtype: str = "float32", epochs=None,
                 optimizer=None, weight_decay=None) -> None:
        self.conv_channels = conv_channels
        self.kernel_size = kernel_size
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.pooling = pooling
        self.batch_norm = batch_norm
        self.dropout = dropout
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.label_smoothing = label_smoothing
        self.standardize = standardize
        self.dtype = dtype
        self.epochs = epochs
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.input_dim, self.hidden_dim, self.output_dim = input_dim, hidden_dim, output_dim
        self._seed_init()

    def _seed_make(self) -> None:
        """Build the seed's network from the three sizes (see ``SeedAPI._seed_init``)."""
        check_seed_dims(type(self).__name__, self.input_dim, self.hidden_dim, self.output_dim)
        dt = as_dtype(self.dtype)
        with seeded(self.random_state):
            net = make_seed_cnn(int(self.input_dim), int(self.hidden_dim),
                                int(self.output_dim), dt)
        self._seed_build(net, dt)

    def _seed_check(self, x: np.ndarray, where: str) -> tuple[np.ndarray, bool]:
        C = self.input_dim
        if C == 1 and x.ndim == 3:
            x = x[:, None]                                   # (N, H, W) -> (N, 1, H, W)
        if x.ndim != 4 or x.shape[1] != C or min(x.shape[2:]) < 2 or x.shape[0] == 0:
            raise ValueError(f"{type(self).__name__}.{where}: expected images (N, {C}, H, W)"
                             f"{' or (N, H, W)' if C == 1 else ''} with H, W >= 2, got "
                             f"{x.shape}")
        return x, False

    # --------------------------------------------------------------- inputs
    def _check_X(self, X, where: str, reset: bool, dtype=np.float64) -> np.ndarray:
        """Images as a finite float (N, C, H, W) array; on ``reset`` remember
        ``input_shape_``, else check it."""
        name = type(self).__name__
        if not reset:
            self._check_fitted(where)
        else:
            self._seed_validate()
        X = as_array(X, f"{name}.{where}", dtype=dtype)
        if X.ndim == 2:
            side = math.isqrt(X.shape[1])
            if side * side != X.shape[1]:
                raise ValueError(f"{name}.{where}: expected images (N, H, W) or (N, C, H, W); "
                                 f"flat rows must hold a square image, got {X.shape[1]} "
                                 f"features per row")
            X = X.reshape(len(X), 1, side, side)
        elif X.ndim == 3:
            X = X[:, None]
        elif X.ndim != 4:
            raise ValueError(f"{name}.{where}: expected images (N, H, W) or (N, C, H, W), "
                             f"got shape {X.shape}")
        if X.shape[0] == 0:
            raise ValueError(f"{name}.{where}: Found array with 0 sample(s) (shape="
                             f"{X.shape}) while a minimum of 1 is required.")
        check_finite(X, f"{name}.{where}")
        if reset:
            if self.input_dim is not None and X.shape[1] != self.input_dim:
                raise ValueError(f"{name}.{where}: X has {X.shape[1]} channels but the model "
                                 f"was built with input_dim={self.input_dim}")
            self.input_shape_ = tuple(int(s) for s in X.shape[1:])
            self.n_features_in_ = int(np.prod(self.input_shape_))
        else:
            if tuple(X.shape[1:]) != tuple(self.input_shape_):
                raise ValueError(f"{name}.{where}: X holds images of shape {X.shape[1:]}, but "
                                 f"{name} was fitted on {tuple(self.input_shape_)}")
        return X

    def _set_scaler(self, X: np.ndarray) -> None:
        if self.standardize:
            self.mean_ = X.mean(axis=(0, 2, 3), keepdims=True)[0]
            sd = X.std(axis=(0, 2, 3), keepdims=True)[0]
            self.scale_ = np.where(sd > 0, sd, 1.0)
        else:
            self.mean_, self.scale_ = None, None

    # ------------------------------------------------------------- building
    def _build(self, n_in: int, n_out: int) -> None:
        self.model_ = make_cnn(self.input_shape_, n_out, self.conv_channels, self.kernel_size,
                               self.hidden_layer_sizes, self.activation, self.pooling,
                               self.batch_norm, self.dropout, as_dtype(self.dtype),
                               type(self).__name__)
        self._built_for = (tuple(self.input_shape_), n_out)
        self._make_optimizer(list(self.model_.parameters()))

    def _shape_ok(self, n_in: int, n_out: int) -> bool:
        return getattr(self, "_built_for", None) == (tuple(self.input_shape_), n_out)

    def _net(self, X: np.ndarray) -> np.ndarray:
        """The network's logits for checked, scaled images in eval mode, 256 at a time."""
        was = self.model_.training
        self.model_.eval()
        dt = as_dtype(self.dtype)
        outs = []
        with no_grad():
            for i in range(0, len(X), 256):
                outs.append(self.model_(Tensor(X[i:i + 256].astype(dt))).data)
        self.model_.train(was)
        return np.concatenate(outs).astype(np.float64)

