r"""Multi-layer perceptrons trained by backpropagation (Rumelhart, Hinton & Williams 1986),
as scikit-learn estimators: :class:`MLPClassifier` and :class:`MLPRegressor`.

The network is ``Linear -> act -> ... -> Linear`` (``nn.Sequential``, torch's layer names
and initialisation), the gradients come from shendu's autograd engine, the updates from
``shendu.optim`` and the loop from :func:`shendu.train.fit`. The classifier minimises the
cross-entropy of a softmax over the classes, the regressor the mean squared error.

Stopping follows scikit-learn's ``MLPClassifier``: training ends after ``epochs`` epochs,
or earlier when the monitored loss — the training loss, or with ``early_stopping`` the
loss on a held-out ``validation_fraction`` of the training data — has not fallen by more
than ``tol`` for ``n_iter_no_change`` epochs in a row. With ``early_stopping`` the model
keeps the weights of its best validation epoch. Reaching ``epochs`` while still improving
gives a :class:`~shendu.models.ConvergenceWarning`.

Randomness (initial weights, the shuffling of each epoch, the validation split) is drawn
from shendu's generator; an int ``random_state`` seeds it for the fit and afterwards
restores the generator's state, so equal seeds give bit-identical models.
"""

from __future__ import annotations

import warnings

import numpy as np

from shendu import backend, nn, optim
from shendu.autograd import no_grad
from shendu.backend import as_dtype, rng
from shendu.data import DataLoader, TensorDataset
from shendu.models._base import (
    BaseEstimator,
    ClassifierMixin,
    ConvergenceWarning,
    RegressorMixin,
    seeded,
)
from shendu.tensor import Tensor
from shendu.train import EarlyStopping, Trainer

__all__ = ["MLPClassifier", "MLPRegressor", "make_mlp"]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid,
                "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "identity": nn.Identity}


def make_mlp(sizes, activation: str = "relu", dtype=None, where: str = "make_mlp"
             ) -> nn.Sequential:
    """``nn.Sequential(Linear(sizes[0], sizes[1]), act, ..., Linear(sizes[-2], sizes[-1]))``:
    an activation after every layer but the last."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{where}: activation must be one of {sorted(_ACTIVATIONS)}, got "
                         f"{activation!r}")
    sizes = [int(s) for s in sizes]
    if any(s < 1 for s in sizes):
        raise ValueError(f"{where}: every layer size must be a positive int, got {sizes}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: the network, the optimizer, the loop."""

    _loss_name = ""

    def __init__(self, hidden_layer_sizes=(100,), activation: str = "relu",
                 optimizer: str = "adam", learning_rate: float = 1e-3,
                 batch_size: int | str = "auto", epochs: int = 200,
                 weight_decay: float = 0.0, momentum: float = 0.9,
                 early_stopping: bool = False, validation_fraction: float = 0.1,
                 n_iter_no_change: int = 10, tol: float = 1e-4,
                 standardize: bool = True, random_state: int | None = None,
                 warm_start: bool = False, dtype: str = "float32", verbose: int = 0) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.standardize = standardize
        self.random_state = random_state
        self.warm_start = warm_start
        self.dtype = dtype
        self.verbose = verbose

    # -------------------------------------------------------------- checks
    def _check_hyper(self) -> None:
        name = type(self).__name__
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"{name}: optimizer must be 'adam' or 'sgd', got "
                             f"{self.optimizer!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"{name}: learning_rate must be > 0, got {self.learning_rate}")
        if not (isinstance(self.epochs, (int, np.integer)) and self.epochs >= 1):
            raise ValueError(f"{name}: epochs must be an int >= 1, got {self.epochs!r}")
        if self.batch_size != "auto" and not (isinstance(self.batch_size, (int, np.integer))
                                              and self.batch_size >= 1):
            raise ValueError(f"{name}: batch_size must be 'auto' or an int >= 1, got "
                             f"{self.batch_size!r}")
        if self.early_stopping and not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"{name}: validation_fraction must be in (0, 1), got "
                             f"{self.validation_fraction}")
        if as_dtype(self.dtype).kind != "f":
            raise ValueError(f"{name}: dtype must be a floating dtype, got {self.dtype!r}")

    def _hidden(self) -> list[int]:
        h = self.hidden_layer_sizes
        return [int(h)] if isinstance(h, (int, np.integer)) else [int(s) for s in h]

    # ------------------------------------------------------------ building
    def _build(self, n_in: int, n_out: int) -> None:
        dt = as_dtype(self.dtype)
        self.model_ = make_mlp([n_in, *self._hidden(), n_out], self.activation, dtype=dt,
                               where=type(self).__name__)
        params = list(self.model_.parameters())
        if self.optimizer == "adam":
            self.optimizer_ = optim.Adam(params, lr=self.learning_rate,
                                         weight_decay=self.weight_decay)
        else:
            self.optimizer_ = optim.SGD(params, lr=self.learning_rate, momentum=self.momentum,
                                        weight_decay=self.weight_decay)

    def _loss(self) -> nn.Module:
        raise NotImplementedError

    def _target(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _split(self, X: np.ndarray, t: np.ndarray):
        raise NotImplementedError

    # ------------------------------------------------------------- training
    def _train(self, X: np.ndarray, t: np.ndarray, epochs: int, incremental: bool) -> None:
        """Run the loop of :mod:`shendu.train` on ``(X, t)`` (t: class indices or targets)."""
        dt = as_dtype(self.dtype)
        X = X.astype(dt, copy=False)
        val_loader, callbacks = None, []
        if self.early_stopping and not incremental:
            X, Xv, t, tv = self._split(X, t)
            val_loader = DataLoader(TensorDataset(Xv, tv), batch_size=max(len(Xv), 1))
            callbacks.append(EarlyStopping("val_loss", patience=self.n_iter_no_change,
                                           min_delta=self.tol, restore_best_weights=True))
        elif not incremental:
            callbacks.append(EarlyStopping("loss", patience=self.n_iter_no_change,
                                           min_delta=self.tol))
        bs = min(200, len(X)) if self.batch_size == "auto" else min(int(self.batch_size),
                                                                     len(X))
        loader = DataLoader(TensorDataset(X, t), batch_size=bs, shuffle=True)
        trainer = Trainer(self.model_, self._loss(), self.optimizer_, loader, val_loader,
                          callbacks=callbacks, verbose=self.verbose)
        hist = trainer.fit(epochs)
        if incremental and hasattr(self, "history_"):
            for e in range(len(hist.epochs)):   # partial_fit: one more epoch in the history
                self.history_.append(len(self.history_.epochs),
                                     {key: v[e] for key, v in hist.items()})
        else:
            self.history_ = hist
        self.loss_curve_ = list(self.history_["loss"])
        self.n_iter_ = len(self.history_.epochs)
        if callbacks:
            es = callbacks[0]
            self.best_loss_ = es.best
            if not incremental and es.stopped_epoch is None and epochs > 0:
                warnings.warn(f"{type(self).__name__}: reached epochs={epochs} while the "
                              f"{es.monitor} was still improving by more than tol={self.tol}; "
                              f"training has not converged (raise epochs or learning_rate)",
                              ConvergenceWarning, stacklevel=3)

    def _set_scaler(self, X: np.ndarray) -> None:
        """Per-feature mean and standard deviation of the training data (constant features
        get scale 1, so they become 0)."""
        if self.standardize:
            self.mean_ = X.mean(axis=0)
            sd = X.std(axis=0)
            self.scale_ = np.where(sd > 0, sd, 1.0)
        else:
            self.mean_, self.scale_ = None, None

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return X if self.mean_ is None else (X - self.mean_) / self.scale_

    def _forward(self, X) -> np.ndarray:
        """The network's output for ``X`` in eval mode, as a float64 array."""
        X = self._scale(self._check_X(X, "predict", reset=False))
        self.model_.eval()
        with no_grad():
            out = self.model_(Tensor(X.astype(as_dtype(self.dtype))))
        return out.data.astype(np.float64)

    def _fit(self, X, y, where: str, classes=None):
        self._check_hyper()
        first = where == "fit" or not hasattr(self, "model_")
        if where == "partial_fit" and first and isinstance(self, ClassifierMixin) \
                and classes is None:
            raise ValueError(f"{type(self).__name__}.partial_fit: the first call needs "
                             f"classes=, the list of all classes y can take")
        X = self._check_X(X, where, reset=first)
        t = self._target(y, X, where, classes)
        if first:
            self._set_scaler(X)
        X = self._scale(X)
        n_out = self._n_outputs(t)
        # partial_fit continues the model's own random stream (a fresh shuffle each call);
        # fit starts it again from random_state
        resume = None if where == "fit" else getattr(self, "rng_state_", None)
        with seeded(self.random_state, resume):
            keep = (not first) or (self.warm_start and hasattr(self, "model_") and
                                   self._shape_ok(X.shape[1], n_out))
            if not keep:
                self._build(X.shape[1], n_out)
            self._train(X, t, int(self.epochs) if where == "fit" else 1,
                        incremental=where == "partial_fit")
            if self.random_state is not None:
                self.rng_state_ = backend.get_rng_state()
        return self

    def _shape_ok(self, n_in: int, n_out: int) -> bool:
        lin = [m for m in self.model_.modules() if isinstance(m, nn.Linear)]
        return lin[0].in_features == n_in and lin[-1].out_features == n_out


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier (softmax output, cross-entropy loss).

    Parameters
    ----------
    hidden_layer_sizes : width of each hidden layer, e.g. ``(100,)`` or ``(256, 128)``.
    activation : ``"relu"``, ``"tanh"``, ``"logistic"``, ``"gelu"`` or ``"identity"``.
    optimizer : ``"adam"`` (Kingma & Ba 2015) or ``"sgd"`` (with ``momentum``).
    learning_rate, weight_decay, momentum : the optimizer's ``lr``, L2 ``weight_decay``
        (added to every parameter's gradient, as in ``torch.optim``) and SGD ``momentum``.
    batch_size : samples per step; ``"auto"`` = ``min(200, n_samples)``.
    epochs : most passes over the data (scikit-learn's ``max_iter``).
    label_smoothing : train against ``(1 - eps) * one_hot + eps / n_classes`` instead of
        the one-hot targets (Szegedy et al. 2016), which keeps the logits from growing
        without bound and often generalises better.
    early_stopping, validation_fraction, n_iter_no_change, tol : see the module.
    standardize : shift and scale each feature to mean 0 and standard deviation 1 with
        the statistics of the (first) training data, kept as ``mean_`` and ``scale_`` and
        applied again at prediction. Gradient descent converges much faster on
        standardised inputs (LeCun, Bottou, Orr & Müller 1998, "Efficient BackProp").
    random_state : int seed for the fit (``None``: shendu's generator as it stands).
    warm_start : ``fit`` continues from the current weights.
    dtype : ``"float32"`` (default) or ``"float64"``.
    verbose : 0 silent, 1 a progress bar per epoch, 2 a line per epoch.

    Attributes: ``classes_``, ``n_features_in_``, ``model_`` (the ``nn.Sequential``),
    ``optimizer_``, ``history_`` (per-epoch ``loss`` and ``val_loss``), ``loss_curve_``,
    ``n_iter_``, ``best_loss_``.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation: str = "relu",
                 optimizer: str = "adam", learning_rate: float = 1e-3,
                 batch_size: int | str = "auto", epochs: int = 200,
                 weight_decay: float = 0.0, momentum: float = 0.9,
                 label_smoothing: float = 0.0, early_stopping: bool = False,
                 validation_fraction: float = 0.1, n_iter_no_change: int = 10,
                 tol: float = 1e-4, standardize: bool = True,
                 random_state: int | None = None, warm_start: bool = False,
                 dtype: str = "float32", verbose: int = 0) -> None:
        super().__init__(hidden_layer_sizes, activation, optimizer, learning_rate,
                         batch_size, epochs, weight_decay, momentum, early_stopping,
                         validation_fraction, n_iter_no_change, tol, standardize,
                         random_state, warm_start, dtype, verbose)
        self.label_smoothing = label_smoothing

    def _loss(self) -> nn.Module:
        return nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)

    def _target(self, y, X, where, classes):
        return self._encode_y(y, X, where, classes=classes)

    def _n_outputs(self, t) -> int:
        return len(self.classes_)

    def _split(self, X, t):
        from shendu.data.datasets import stratified_split

        counts = np.bincount(t, minlength=len(self.classes_))
        seed = int(rng().integers(2**31))
        if counts.min() * self.validation_fraction < 1:
            raise ValueError(f"MLPClassifier.fit: early_stopping needs every class in the "
                             f"validation split; the smallest class has {counts.min()} "
                             f"samples, too few for validation_fraction="
                             f"{self.validation_fraction}")
        return stratified_split(X, t, self.validation_fraction, seed)

    def fit(self, X, y) -> MLPClassifier:
        """Train from fresh weights (or the current ones with ``warm_start``)."""
        return self._fit(X, y, "fit")

    def partial_fit(self, X, y, classes=None) -> MLPClassifier:
        """One epoch over ``(X, y)`` from the current weights; the first call needs
        ``classes``."""
        return self._fit(X, y, "partial_fit", classes)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``softmax(network(X))``, columns in ``classes_`` order."""
        self._check_fitted("predict_proba")
        z = self._forward(X)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X) -> np.ndarray:
        return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row."""
        self._check_fitted("predict")
        return self.classes_[np.argmax(self._forward(X), axis=1)]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor (identity output, mean squared error loss).

    Same parameters and attributes as :class:`MLPClassifier` (without ``classes_``);
    ``y`` may be (n,) or (n, n_outputs), and ``predict`` returns the same shape.
    """

    def _loss(self) -> nn.Module:
        return nn.MSELoss()

    def _target(self, y, X, where, classes):
        name = type(self).__name__
        y = np.asarray(y, dtype=np.float64)
        self._check_y_length(X, y, where)
        if y.ndim not in (1, 2):
            raise ValueError(f"{name}.{where}: expected y of shape (n,) or (n, n_outputs), "
                             f"got {y.shape}")
        if not np.isfinite(y).all():
            raise ValueError(f"{name}.{where}: y contains NaN or infinity")
        if where == "fit" or not hasattr(self, "_y_ndim"):
            self._y_ndim = y.ndim
        t = y.reshape(len(y), -1)
        return t.astype(as_dtype(self.dtype))

    def _n_outputs(self, t) -> int:
        return t.shape[1]

    def _split(self, X, t):
        n_val = max(1, int(round(self.validation_fraction * len(X))))
        if n_val >= len(X):
            raise ValueError(f"MLPRegressor.fit: early_stopping needs more than {len(X)} "
                             f"samples")
        perm = rng().permutation(len(X))
        tr, va = perm[n_val:], perm[:n_val]
        return X[tr], X[va], t[tr], t[va]

    def fit(self, X, y) -> MLPRegressor:
        """Train from fresh weights (or the current ones with ``warm_start``)."""
        return self._fit(X, y, "fit")

    def partial_fit(self, X, y) -> MLPRegressor:
        """One epoch over ``(X, y)`` from the current weights."""
        return self._fit(X, y, "partial_fit")

    def predict(self, X) -> np.ndarray:
        """The network's outputs, shaped like the ``y`` given to ``fit``."""
        self._check_fitted("predict")
        out = self._forward(X)
        return out[:, 0] if self._y_ndim == 1 else out

