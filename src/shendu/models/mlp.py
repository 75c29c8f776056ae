r"""Multi-layer perceptrons trained by backpropagation (Rumelhart, Hinton & Williams 1986),
as scikit-learn estimators: :class:`MLPClassifier` and :class:`MLPRegressor`.

The network is ``Linear -> act -> ... -> Linear`` (``nn.Sequential``, torch's layer names
and initialisation), the gradients come from shendu's autograd engine, the updates from
``shendu.optim`` and the loop from :func:`shendu.train.fit`. The classifier minimises the
cross-entropy of a softmax over the classes, the regressor the mean squared error.

The parameters, their meanings and defaults are scikit-learn's (``solver``, ``alpha``,
``learning_rate_init``, ``max_iter``...), and so are the losses: the classifier minimises
the cross-entropy of a softmax (one logistic output for two classes), the regressor half
the mean squared error, each plus ``alpha / 2 * sum ||W||^2 / n_batch`` over the weight
matrices. Stopping follows scikit-learn too: training ends after ``max_iter`` epochs, or
when the training loss has not fallen by more than ``tol`` for more than
``n_iter_no_change`` epochs in a row — with ``early_stopping``, when the score (accuracy
or R²) on a held-out ``validation_fraction`` has not risen by ``tol``, and the model keeps
the weights of its best validation epoch. ``learning_rate="adaptive"`` (``solver="sgd"``)
divides the step by 5 instead of stopping, until it is below 1e-6. Reaching ``max_iter``
gives a :class:`~shendu.models.ConvergenceWarning`. ``solver="lbfgs"`` runs SciPy's
L-BFGS-B on the full batch (SciPy is then needed).

Randomness (initial weights, the shuffling of each epoch, the validation split) is drawn
from shendu's generator; an int ``random_state`` seeds it for the fit and afterwards
restores the generator's state, so equal seeds give bit-identical models.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np

from shendu import backend, nn, optim
from shendu import functional as F
from shendu.autograd import no_grad
from shendu.backend import as_dtype, rng
from shendu.data import DataLoader, TensorDataset
from shendu.models._base import (
    BaseEstimator,
    ClassifierMixin,
    ConvergenceWarning,
    RegressorMixin,
    l2_penalized,
    seeded,
)
from shendu.tensor import Tensor
from shendu.train import Callback, Trainer

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


_DEPRECATED = {"epochs": "max_iter", "optimizer": "solver", "weight_decay": "alpha"}


class _SklearnStopping(Callback):
    """scikit-learn's MLP stopping rule after every epoch (see the module docstring), and
    the fitted attributes it keeps: ``loss_``, ``loss_curve_``, ``best_loss_``,
    ``validation_scores_``, ``best_validation_score_``, ``t_``."""

    def __init__(self, est, n_samples: int, val=None, check: bool = True) -> None:
        self.est, self.n, self.val, self.check = est, n_samples, val, check
        self.count, self.stopped, self.best_state = 0, False, None

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        est = self.est
        loss = float(logs["loss"])
        est.loss_curve_.append(loss)
        est.loss_ = loss
        est.t_ += self.n
        if not self.check:
            return
        tol = est.tol
        if self.val is not None:
            score = est._val_score(*self.val)
            est.validation_scores_.append(score)
            self.count = self.count + 1 if score < est.best_validation_score_ + tol else 0
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                self.best_state = copy.deepcopy(est.model_.state_dict())
        else:
            self.count = self.count + 1 if loss > est.best_loss_ - tol else 0
            if loss < est.best_loss_:
                est.best_loss_ = loss
        if self.count > est.n_iter_no_change:
            groups = self.trainer.optimizer.param_groups
            if est.learning_rate == "adaptive" and est._solver() == "sgd" \
                    and groups[0]["lr"] > 1e-6:
                for g in groups:
                    g["lr"] /= 5.0
                self.count = 0
                if est.verbose:
                    print(f"Setting learning rate to {groups[0]['lr']:f}")
            else:
                self.stopped = True
                self.trainer.stop_training = True


class _InvScaling(Callback):
    """``learning_rate="invscaling"``: step ``learning_rate_init / (t + 1) ** power_t``
    after every batch, ``t`` the samples seen so far (scikit-learn's rule)."""

    def __init__(self, est, t0: int) -> None:
        self.est, self.t = est, t0

    def on_batch_end(self, batch: int, logs: dict) -> None:
        self.t += int(logs.get("batch_size", 0))
        lr = self.est._lr_init() / (self.t + 1) ** self.est.power_t
        for g in self.trainer.optimizer.param_groups:
            g["lr"] = lr


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: the network, the optimizer, the loop."""

    _auto_batch = 200

    def __init__(self, hidden_layer_sizes=(100,), activation: str = "relu", *,
                 solver: str = "adam", alpha: float = 0.0001, batch_size: int | str = "auto",
                 learning_rate="constant", learning_rate_init: float = 0.001,
                 power_t: float = 0.5, max_iter: int = 200, shuffle: bool = True,
                 random_state: int | None = None, tol: float = 1e-4, verbose: int = 0,
                 warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False,
                 validation_fraction: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, n_iter_no_change: int = 10, max_fun: int = 15000,
                 standardize: bool = False, dtype=None, epochs=None,
                 optimizer=None, weight_decay=None) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
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
        self.standardize = standardize
        self.dtype = dtype
        self.epochs = epochs
        self.optimizer = optimizer
        self.weight_decay = weight_decay

    # ------------------------------------------------------ settings, old names
    def _old(self, name: str):
        value = getattr(self, name, None)
        if value is not None:
            warnings.warn(f"{type(self).__name__}({name}=...) is deprecated; use scikit-learn's "
                          f"name {_DEPRECATED[name]}= (note: alpha is scikit-learn's L2 "
                          f"penalty, alpha * W / n_batch on the gradient)"
                          if name == "weight_decay" else
                          f"{type(self).__name__}({name}=...) is deprecated; use "
                          f"scikit-learn's name {_DEPRECATED[name]}=", FutureWarning,
                          stacklevel=5)
        return value

    def _solver(self) -> str:
        old = getattr(self, "optimizer", None)
        return old if old is not None else self.solver

    def _max_iter(self) -> int:
        old = getattr(self, "epochs", None)
        return old if old is not None else self.max_iter

    def _alpha(self) -> float:
        old = getattr(self, "weight_decay", None)
        return old if old is not None else self.alpha

    def _lr_init(self) -> float:
        lr = self.learning_rate
        if isinstance(lr, (int, float, np.number)) and not isinstance(lr, bool):
            return float(lr)
        return float(self.learning_rate_init)

    def _schedule(self) -> str:
        lr = self.learning_rate
        return lr if isinstance(lr, str) else "constant"

    # -------------------------------------------------------------- checks
    def _check_hyper(self) -> None:
        name = type(self).__name__
        for old in _DEPRECATED:
            self._old(old)
        lr = self.learning_rate
        if not isinstance(lr, str) and lr is not None:
            warnings.warn(f"{name}(learning_rate={lr!r}): a number here is deprecated; "
                          f"learning_rate is scikit-learn's schedule ('constant', "
                          f"'invscaling', 'adaptive') and the step is learning_rate_init=",
                          FutureWarning, stacklevel=4)
        bad = None
        if self._solver() not in ("adam", "sgd", "lbfgs"):
            bad = f"solver must be 'adam', 'sgd' or 'lbfgs', got {self._solver()!r}"
        elif self._schedule() not in ("constant", "invscaling", "adaptive"):
            bad = (f"learning_rate must be 'constant', 'invscaling' or 'adaptive', got "
                   f"{self.learning_rate!r}")
        elif not self._lr_init() > 0:
            bad = f"learning_rate_init must be > 0, got {self._lr_init()}"
        elif isinstance(self._max_iter(), bool) or not isinstance(
                self._max_iter(), (int, np.integer)) or self._max_iter() < 1:
            bad = f"max_iter must be an int >= 1, got {self._max_iter()!r}"
        elif not (isinstance(self._alpha(), (int, float, np.number)) and self._alpha() >= 0):
            bad = f"alpha must be a float >= 0, got {self._alpha()!r}"
        elif self.batch_size != "auto" and not (
                isinstance(self.batch_size, (int, np.integer)) and self.batch_size >= 1):
            bad = f"batch_size must be 'auto' or an int >= 1, got {self.batch_size!r}"
        elif self.early_stopping and not (isinstance(self.validation_fraction, float)
                                          and 0.0 < self.validation_fraction < 1.0):
            bad = f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}"
        elif not (isinstance(self.momentum, (int, float, np.number))
                  and 0 <= self.momentum <= 1):
            bad = f"momentum must be in [0, 1], got {self.momentum!r}"
        elif not all(isinstance(b, (int, float, np.number)) and 0 <= b < 1
                     for b in (self.beta_1, self.beta_2)):
            bad = f"beta_1 and beta_2 must be in [0, 1), got {self.beta_1!r}, {self.beta_2!r}"
        elif not (isinstance(self.epsilon, (int, float, np.number)) and self.epsilon > 0):
            bad = f"epsilon must be > 0, got {self.epsilon!r}"
        elif isinstance(self.n_iter_no_change, bool) or not isinstance(
                self.n_iter_no_change, (int, np.integer)) or self.n_iter_no_change < 1:
            bad = f"n_iter_no_change must be an int >= 1, got {self.n_iter_no_change!r}"
        elif not isinstance(self.tol, (int, float, np.number)) or self.tol < 0:
            bad = f"tol must be a float >= 0, got {self.tol!r}"
        elif self.dtype is not None and (not isinstance(self.dtype, (str, type, np.dtype))
                                         or self._dt().kind != "f"):
            bad = f"dtype must be a floating dtype, got {self.dtype!r}"
        elif self._solver() == "lbfgs" and not (
                isinstance(self.max_fun, (int, np.integer)) and self.max_fun >= 1):
            bad = f"max_fun must be an int >= 1, got {self.max_fun!r}"
        if bad:
            raise ValueError(f"{name}: {bad}")

    def _dt(self) -> np.dtype:
        """The network's dtype: ``dtype``, or (None) the one chosen at the first fit."""
        if self.dtype is not None:
            return as_dtype(self.dtype)
        return np.dtype(self.__dict__.get("_fit_dtype", np.float64))

    def _hidden(self) -> list[int]:
        h = self.hidden_layer_sizes
        return [int(h)] if isinstance(h, (int, np.integer)) else [int(s) for s in h]

    # ------------------------------------------------------------ building
    def _make_optimizer(self, params) -> None:
        lr = self._lr_init()
        if self._solver() == "sgd":
            m = float(self.momentum)
            self.optimizer_ = optim.SGD(params, lr=lr, momentum=m,
                                        nesterov=bool(self.nesterovs_momentum) and m > 0)
        else:   # adam (lbfgs keeps one too, for partial_fit-free saving)
            self.optimizer_ = optim.Adam(params, lr=lr, betas=(self.beta_1, self.beta_2),
                                         eps=self.epsilon)

    def _build(self, n_in: int, n_out: int) -> None:
        dt = self._dt()
        self.model_ = make_mlp([n_in, *self._hidden(), n_out], self.activation, dtype=dt,
                               where=type(self).__name__)
        self._make_optimizer(list(self.model_.parameters()))

    def _per_sample_loss(self, out: Tensor, t: np.ndarray) -> Tensor:
        raise NotImplementedError

    def _target(self, y, X, where, classes):
        raise NotImplementedError

    def _split(self, X: np.ndarray, t: np.ndarray):
        raise NotImplementedError

    def _loss_fn(self):
        """``loss(out, packed)``: packed = [targets..., sample weight]; scikit-learn's loss,
        the weighted mean over the batch plus ``alpha / 2 * sum ||W||^2 / sum(weights)``
        (:class:`~shendu.models._base.L2Penalized`)."""

        def unpack(packed) -> np.ndarray:
            return np.asarray(packed.data if isinstance(packed, Tensor) else packed)

        def loss(out, packed):
            T = unpack(packed)
            sw = T[:, -1]
            per = self._per_sample_loss(out, T[:, :-1])             # (n,)
            return (per * Tensor(sw.astype(per.dtype))).sum() / float(sw.sum())
        return l2_penalized(loss, self.model_, float(self._alpha()),
                            rows=lambda packed: float(unpack(packed)[:, -1].sum()))

    def _val_score(self, Xv: np.ndarray, tv: np.ndarray) -> float:
        raise NotImplementedError

    # ------------------------------------------------------------- training
    def _train(self, X: np.ndarray, t: np.ndarray, sw: np.ndarray, epochs: int,
               incremental: bool) -> None:
        """Run :class:`shendu.train.Trainer` on ``(X, t)`` with scikit-learn's stopping."""
        dt = self._dt()
        X = X.astype(dt, copy=False)
        val = None
        if self.early_stopping and not incremental:
            X, Xv, t, tv, sw = self._split(X, t, sw)
            val = (Xv, tv)
        packed = np.concatenate([t.reshape(len(t), -1).astype(np.float64), sw[:, None]], 1)
        if self._solver() == "lbfgs":
            self._fit_lbfgs(X, packed, epochs)
            return
        if not incremental or not hasattr(self, "loss_curve_"):
            self.loss_curve_, self.t_ = [], 0
            self.best_loss_ = None if val is not None else np.inf
            self.validation_scores_ = [] if val is not None else None
            self.best_validation_score_ = -np.inf if val is not None else None
        if self.best_loss_ is None and val is None:
            self.best_loss_ = np.inf
        if self.batch_size == "auto":
            bs = min(self._auto_batch, len(X))
        else:
            bs = int(np.clip(int(self.batch_size), 1, len(X)))
        stop = _SklearnStopping(self, len(X), val, check=not incremental)
        callbacks: list[Callback] = [stop]
        if self._schedule() == "invscaling" and self._solver() == "sgd":
            callbacks.append(_InvScaling(self, self.t_))
        loader = DataLoader(TensorDataset(X, packed), batch_size=bs,
                            shuffle=bool(self.shuffle))
        trainer = Trainer(self.model_, self._loss_fn(), self.optimizer_, loader,
                          callbacks=callbacks, verbose=int(self.verbose))
        hist = trainer.fit(epochs)
        if incremental and hasattr(self, "history_"):
            for e in range(len(hist.epochs)):   # partial_fit: one more epoch in the history
                self.history_.append(len(self.history_.epochs),
                                     {key: v[e] for key, v in hist.items()})
        else:
            self.history_ = hist
        self.n_iter_ = len(self.loss_curve_)
        if val is not None and stop.best_state is not None:
            self.model_.load_state_dict(stop.best_state)
        if not incremental and not stop.stopped and epochs > 0:
            warnings.warn(f"{type(self).__name__}: Stochastic Optimizer: Maximum iterations "
                          f"({epochs}) reached and the optimization hasn't converged yet "
                          f"(raise max_iter or learning_rate_init).", ConvergenceWarning,
                          stacklevel=3)

    def _fit_lbfgs(self, X: np.ndarray, packed: np.ndarray, max_iter: int) -> None:
        """``solver="lbfgs"``: SciPy's L-BFGS-B on the full batch, gradients by autograd."""
        try:
            from scipy.optimize import minimize
        except ImportError as e:   # pragma: no cover - scipy comes with scikit-learn
            raise ImportError(f"{type(self).__name__}(solver='lbfgs') needs SciPy "
                              f"(pip install scipy)") from e
        params = list(self.model_.parameters())
        sizes = [p.data.size for p in params]
        loss_fn = self._loss_fn()
        xt = Tensor(X)
        self.model_.train()

        def put(theta):
            i = 0
            for p, n in zip(params, sizes):
                p.data[...] = theta[i:i + n].reshape(p.data.shape)
                i += n

        def fun(theta):
            put(theta)
            for p in params:
                p.grad = None
            loss = loss_fn(self.model_(xt), packed)
            loss.backward()
            g = np.concatenate([(p.grad.data if p.grad is not None else np.zeros(p.shape))
                                .ravel() for p in params]).astype(np.float64)
            return float(loss.item()), g

        theta0 = np.concatenate([p.data.ravel() for p in params]).astype(np.float64)
        res = minimize(fun, theta0, method="L-BFGS-B", jac=True,
                       options={"maxfun": int(self.max_fun), "maxiter": int(max_iter),
                                "gtol": float(self.tol)})
        put(res.x)
        for p in params:
            p.grad = None
        self.n_iter_ = int(res.nit)
        self.loss_ = float(res.fun)
        self.t_ = len(X) * self.n_iter_
        self.best_loss_ = None
        self.loss_curve_ = None
        self.validation_scores_ = self.best_validation_score_ = None
        if res.status == 1:
            warnings.warn(f"{type(self).__name__}: lbfgs failed to converge after "
                          f"{self.n_iter_} iterations (max_iter={max_iter}, max_fun="
                          f"{self.max_fun}); increase them or scale the data",
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

    def _net(self, X: np.ndarray) -> np.ndarray:
        """The network's output for already checked and scaled ``X`` in eval mode."""
        was = self.model_.training
        self.model_.eval()
        with no_grad():
            out = self.model_(Tensor(X.astype(self._dt())))
        self.model_.train(was)
        return out.data.astype(np.float64)

    def _forward(self, X, where: str = "predict") -> np.ndarray:
        """The network's output for ``X`` in eval mode, as a float64 array."""
        return self._net(self._scale(self._check_X(X, where, reset=False)))

    def _fit(self, X, y, where: str, classes=None, sample_weight=None):
        self._check_hyper()
        name = type(self).__name__
        if where == "partial_fit" and self._solver() == "lbfgs":
            raise AttributeError(f"{name}.partial_fit is only available for stochastic "
                                 f"optimizers; solver='lbfgs' is not")
        first = where == "fit" or not hasattr(self, "model_")
        if where == "partial_fit" and first and isinstance(self, ClassifierMixin) \
                and classes is None:
            raise ValueError(f"{name}.partial_fit: the first call needs classes=, the list "
                             f"of all classes y can take")
        if first:
            raw = getattr(X, "dtype", None)
            self._fit_dtype = np.dtype(np.float32 if raw == np.float32 else np.float64)
        X = self._check_X(X, where, reset=first)
        t = self._target(y, X, where, classes)
        sw = self._check_sample_weight(sample_weight, len(X), where)
        sw = np.ones(len(X)) if sw is None else sw
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
                for attr in ("loss_curve_", "history_"):
                    self.__dict__.pop(attr, None)
            elif where == "fit":
                self.__dict__.pop("history_", None)
            self._train(X, t, sw, int(self._max_iter()) if where == "fit" else 1,
                        incremental=where == "partial_fit")
            if self.random_state is not None:
                self.rng_state_ = backend.get_rng_state()
        self.model_.eval()
        return self

    def _shape_ok(self, n_in: int, n_out: int) -> bool:
        lin = [m for m in self.model_.modules() if isinstance(m, nn.Linear)]
        return lin[0].in_features == n_in and lin[-1].out_features == n_out

    # --------------------------------------------------- scikit-learn's attributes
    def _linear_layers(self) -> list:
        if "model_" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__} is not fitted yet")
        return [m for m in self.model_.modules() if isinstance(m, nn.Linear)]

    @property
    def coefs_(self) -> list[np.ndarray]:
        """The weight matrix of each layer, (n_in, n_out) as scikit-learn (``weight.T``)."""
        return [np.asarray(m.weight.data).T.copy() for m in self._linear_layers()]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """The bias vector of each layer."""
        return [np.asarray(m.bias.data).copy() for m in self._linear_layers()]

    @property
    def n_layers_(self) -> int:
        return len(self._linear_layers()) + 1

    @property
    def n_outputs_(self) -> int:
        return int(self._linear_layers()[-1].out_features)


_PARAMS_DOC = """
    Parameters (scikit-learn's, with its meanings and defaults)
    ----------
    hidden_layer_sizes : width of each hidden layer, e.g. ``(100,)`` or ``(256, 128)``.
    activation : ``"relu"``, ``"tanh"``, ``"logistic"``, ``"identity"`` (and ``"gelu"``).
    solver : ``"adam"`` (Kingma & Ba 2015), ``"sgd"`` (momentum, Nesterov's by default) or
        ``"lbfgs"`` (SciPy's L-BFGS-B on the full batch).
    alpha : L2 penalty ``alpha / 2 * sum ||W||^2 / n_batch`` on the weight matrices.
    batch_size : samples per step; ``"auto"`` = ``min(200, n_samples)``.
    learning_rate : ``"constant"``, ``"invscaling"`` or ``"adaptive"`` (``solver="sgd"``).
    learning_rate_init, power_t : the step, and the exponent of ``"invscaling"``.
    max_iter : most epochs (``lbfgs``: iterations); ``max_fun``: most ``lbfgs`` loss calls.
    shuffle : reshuffle the samples every epoch.
    random_state : int seed for the fit (``None``: shendu's generator as it stands).
    tol, n_iter_no_change, early_stopping, validation_fraction : the stopping rule.
    verbose : 0 silent, 1 a progress bar per epoch, 2 a line per epoch.
    warm_start : ``fit`` continues from the current weights.
    momentum, nesterovs_momentum : ``solver="sgd"``'s momentum.
    beta_1, beta_2, epsilon : ``solver="adam"``'s.
    standardize : (shendu) shift and scale each feature to mean 0 and standard deviation 1
        with the statistics of the (first) training data, kept as ``mean_`` and ``scale_``
        (LeCun et al. 1998, "Efficient BackProp"); off by default, as scikit-learn.
    dtype : (shendu) the network's dtype, ``"float32"`` or ``"float64"``; ``None``
        (default) follows scikit-learn: float32 for float32 ``X``, else float64.
    epochs, optimizer, weight_decay : deprecated names of ``max_iter``, ``solver`` and
        (with a different scale) ``alpha``; a number as ``learning_rate`` is the deprecated
        spelling of ``learning_rate_init``.

    Attributes (scikit-learn's): ``classes_``, ``n_features_in_``, ``feature_names_in_``,
    ``coefs_``, ``intercepts_``, ``loss_``, ``best_loss_``, ``loss_curve_``,
    ``validation_scores_``, ``best_validation_score_``, ``n_iter_``, ``n_layers_``,
    ``n_outputs_``, ``out_activation_``, ``t_``; shendu's: ``model_`` (the
    ``nn.Sequential``), ``optimizer_``, ``history_``.
"""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier: softmax output (one logistic output for two
    classes), cross-entropy loss; ``label_smoothing`` (shendu, default 0) trains against
    ``(1 - eps) * one_hot + eps / n_classes`` (Szegedy et al. 2016).
    """

    __doc__ += _PARAMS_DOC

    def __init__(self, hidden_layer_sizes=(100,), activation: str = "relu", *,
                 solver: str = "adam", alpha: float = 0.0001, batch_size: int | str = "auto",
                 learning_rate="constant", learning_rate_init: float = 0.001,
                 power_t: float = 0.5, max_iter: int = 200, shuffle: bool = True,
                 random_state: int | None = None, tol: float = 1e-4, verbose: int = 0,
                 warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False,
                 validation_fraction: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, n_iter_no_change: int = 10, max_fun: int = 15000,
                 label_smoothing: float = 0.0, standardize: bool = False,
                 dtype=None, epochs=None, optimizer=None,
                 weight_decay=None) -> None:
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            standardize=standardize, dtype=dtype, epochs=epochs, optimizer=optimizer,
            weight_decay=weight_decay)
        self.label_smoothing = label_smoothing

    @property
    def out_activation_(self) -> str:
        self._linear_layers()
        return "logistic" if len(self.classes_) == 2 else "softmax"

    def _per_sample_loss(self, out: Tensor, t: np.ndarray) -> Tensor:
        idx = t[:, 0].astype(np.int64)
        eps = float(self.label_smoothing)
        if out.shape[1] == 1:   # two classes: one logit, binary cross-entropy
            target = idx.astype(out.dtype) * (1.0 - eps) + eps / 2.0
            return F.binary_cross_entropy_with_logits(out[:, 0], Tensor(target),
                                                      reduction="none")
        return F.cross_entropy(out, idx, reduction="none", label_smoothing=eps)

    def _target(self, y, X, where, classes):
        return self._encode_y(y, X, where, classes=classes)

    def _n_outputs(self, t) -> int:
        return 1 if len(self.classes_) == 2 else len(self.classes_)

    def _split(self, X, t, sw):
        from shendu.data.datasets import stratified_split

        counts = np.bincount(t, minlength=len(self.classes_))
        seed = int(rng().integers(2**31))
        if counts.min() * self.validation_fraction < 1:
            raise ValueError(f"{type(self).__name__}.fit: early_stopping needs every class "
                             f"in the validation split; the smallest class has "
                             f"{counts.min()} samples, too few for validation_fraction="
                             f"{self.validation_fraction}")
        order = np.arange(len(X))
        tr_i, va_i, _, _ = stratified_split(order, t, self.validation_fraction, seed)
        return X[tr_i], X[va_i], t[tr_i], t[va_i], sw[tr_i]

    def _val_score(self, Xv, tv) -> float:
        return float(np.mean(self._decide(self._net(Xv)) == tv))

    @staticmethod
    def _decide(z: np.ndarray) -> np.ndarray:
        return (z[:, 0] > 0).astype(np.int64) if z.shape[1] == 1 else np.argmax(z, axis=1)

    def fit(self, X, y, sample_weight=None) -> MLPClassifier:
        """Train from fresh weights (or the current ones with ``warm_start``)."""
        return self._fit(X, y, "fit", sample_weight=sample_weight)

    def partial_fit(self, X, y, classes=None, sample_weight=None) -> MLPClassifier:
        """One epoch over ``(X, y)`` from the current weights; the first call needs
        ``classes``."""
        return self._fit(X, y, "partial_fit", classes, sample_weight=sample_weight)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, columns in ``classes_`` order."""
        self._check_fitted("predict_proba")
        z = self._forward(X, "predict_proba")
        if z.shape[1] == 1:
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1.0 - p, p], axis=1)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row."""
        self._check_fitted("predict")
        return self.classes_[self._decide(self._forward(X))]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor: identity output, half the mean squared error
    (scikit-learn's loss); ``y`` may be (n,) or (n, n_outputs), and ``predict`` returns the
    same shape.
    """

    __doc__ += _PARAMS_DOC + """
    loss : ``"squared_error"`` (scikit-learn's ``"poisson"`` is not implemented yet).
"""
    _multi_output = True
    out_activation_ = "identity"

    def __init__(self, loss: str = "squared_error", hidden_layer_sizes=(100,),
                 activation: str = "relu", *, solver: str = "adam", alpha: float = 0.0001,
                 batch_size: int | str = "auto", learning_rate="constant",
                 learning_rate_init: float = 0.001, power_t: float = 0.5, max_iter: int = 200,
                 shuffle: bool = True, random_state: int | None = None, tol: float = 1e-4,
                 verbose: int = 0, warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False,
                 validation_fraction: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, n_iter_no_change: int = 10, max_fun: int = 15000,
                 standardize: bool = False, dtype=None, epochs=None, optimizer=None,
                 weight_decay=None) -> None:
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            standardize=standardize, dtype=dtype, epochs=epochs, optimizer=optimizer,
            weight_decay=weight_decay)
        self.loss = loss

    def _check_hyper(self) -> None:
        if self.loss != "squared_error":
            raise ValueError(f"MLPRegressor: loss must be 'squared_error' (scikit-learn's "
                             f"'poisson' is not implemented in shendu), got {self.loss!r}")
        super()._check_hyper()

    def _per_sample_loss(self, out: Tensor, t: np.ndarray) -> Tensor:
        d = out - Tensor(t.astype(out.dtype))
        return (d * d).mean(1) * 0.5

    def _target(self, y, X, where, classes):
        y = self._check_regression_y(y, where)
        self._check_y_length(X, y, where)
        if where == "fit" or not hasattr(self, "_y_ndim"):
            self._y_ndim = y.ndim
        return y.reshape(len(y), -1)

    def _n_outputs(self, t) -> int:
        return t.shape[1]

    def _split(self, X, t, sw):
        n_val = max(1, int(round(self.validation_fraction * len(X))))
        if n_val >= len(X) - 1:
            raise ValueError(f"{type(self).__name__}.fit: early_stopping needs more than "
                             f"{len(X)} samples")
        perm = rng().permutation(len(X))
        tr, va = perm[n_val:], perm[:n_val]
        return X[tr], X[va], t[tr], t[va], sw[tr]

    def _val_score(self, Xv, tv) -> float:
        pred = self._net(Xv)
        ss_res = ((tv - pred) ** 2).sum(0)
        ss_tot = ((tv - tv.mean(0)) ** 2).sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res > 0, 0.0, 1.0))
        return float(np.mean(r2))

    def fit(self, X, y, sample_weight=None) -> MLPRegressor:
        """Train from fresh weights (or the current ones with ``warm_start``)."""
        return self._fit(X, y, "fit", sample_weight=sample_weight)

    def partial_fit(self, X, y, sample_weight=None) -> MLPRegressor:
        """One epoch over ``(X, y)`` from the current weights."""
        return self._fit(X, y, "partial_fit", sample_weight=sample_weight)

    def predict(self, X) -> np.ndarray:
        """The network's outputs, shaped like the ``y`` given to ``fit``."""
        self._check_fitted("predict")
        out = self._forward(X)
        return out[:, 0] if self._y_ndim == 1 else out
