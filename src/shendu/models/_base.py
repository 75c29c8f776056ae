"""The scikit-learn estimator protocol, without importing scikit-learn.

A shendu model is a scikit-learn estimator by convention, not by inheritance: its
``__init__`` only stores its keyword arguments (so ``get_params``/``set_params`` can find
them by reading the signature), ``fit`` returns ``self``, fitted attributes end in ``_``,
and ``__sklearn_tags__`` tells scikit-learn whether it is a classifier or a regressor.
That is enough for ``Pipeline``, ``GridSearchCV``, ``cross_val_score`` and ``clone``, and
keeps ``import shendu`` free of scikit-learn (the tags import it lazily, and only
scikit-learn ever calls them).
"""

from __future__ import annotations

import contextlib
import inspect

import numpy as np

from shendu import backend

__all__ = ["BaseEstimator", "ClassifierMixin", "RegressorMixin", "NotFittedError",
           "ConvergenceWarning"]


class NotFittedError(ValueError, AttributeError):
    """A model was asked to predict before ``fit`` (same bases as scikit-learn's)."""


class ConvergenceWarning(UserWarning):
    """Training stopped at its epoch budget without reaching its stopping rule."""


class BaseEstimator:
    """``get_params``/``set_params``/``repr`` from the ``__init__`` signature, plus the input
    checks every model shares (with error messages that name the model and the method)."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        names = []
        for p in sig.parameters.values():
            if p.name == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}: estimators must not take *args or **kwargs")
            names.append(p.name)
        return sorted(names)

    def get_params(self, deep: bool = True) -> dict:
        """The constructor arguments, by name (``deep`` descends into nested estimators)."""
        out = {}
        for name in self._param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                for k, v in value.get_params().items():
                    out[f"{name}__{k}"] = v
            out[name] = value
        return out

    def set_params(self, **params) -> BaseEstimator:
        """Set constructor arguments (``name__sub`` reaches into nested estimators)."""
        valid = self._param_names()
        nested: dict[str, dict] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"{type(self).__name__}.set_params: invalid parameter "
                                 f"{name!r}; valid parameters are {valid}")
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub in nested.items():
            getattr(self, name).set_params(**sub)
        return self

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__)
        parts = []
        for p in sig.parameters.values():
            if p.name == "self":
                continue
            v = getattr(self, p.name, None)
            default = p.default
            same = v is default or (
                not isinstance(v, np.ndarray) and not isinstance(default, np.ndarray)
                and type(v) is type(default) and v == default)
            if not same:
                parts.append(f"{p.name}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    # ------------------------------------------------------------------ checks
    def _check_X(self, X, where: str, reset: bool, dtype=np.float64) -> np.ndarray:
        """X as a finite 2-D float array; on ``reset`` remember ``n_features_in_``, else
        check it."""
        name = type(self).__name__
        if hasattr(X, "detach") and hasattr(X, "numpy"):  # a torch tensor
            X = X.detach().cpu().numpy()
        try:
            X = np.asarray(X, dtype=dtype)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}.{where}: X must be numeric, could not convert it to "
                             f"{np.dtype(dtype).name} ({e})") from e
        if X.ndim != 2:
            raise ValueError(f"{name}.{where}: expected 2-D X of shape (n_samples, "
                             f"n_features), got shape {X.shape}"
                             + ("; reshape a single feature with X.reshape(-1, 1)"
                                if X.ndim == 1 else ""))
        if X.shape[0] == 0:
            raise ValueError(f"{name}.{where}: X has 0 samples; at least 1 is required")
        bad = ~np.isfinite(X)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            what = "NaN" if np.isnan(X[r, c]) else "infinity"
            raise ValueError(f"{name}.{where}: X contains {what} (first at row {r}, column "
                             f"{c}); remove or impute non-finite values first")
        if reset:
            self.n_features_in_ = X.shape[1]
        else:
            self._check_fitted(where)
            if X.shape[1] != self.n_features_in_:
                raise ValueError(f"{name}.{where}: X has {X.shape[1]} features, but {name} "
                                 f"was fitted with {self.n_features_in_} features")
        return X

    def _check_y_length(self, X: np.ndarray, y: np.ndarray, where: str) -> None:
        if len(y) != len(X):
            raise ValueError(f"{type(self).__name__}.{where}: X has {len(X)} samples but y "
                             f"has {len(y)}; they must have the same length")

    def _check_fitted(self, where: str) -> None:
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, y) "
                                 f"before {where}()")

    # ------------------------------------------------------------------ saving
    def _shendu_state(self):
        """For ``shendu.save``: ``get_params()`` and every fitted attribute (network,
        optimizer, ``classes_``...) as ``(arrays, JSON)``; see :mod:`shendu.io`."""
        from shendu.io import estimator_state

        return estimator_state(self)

    @classmethod
    def _shendu_restore(cls, arrays, state, path="<state>"):
        """For ``shendu.load``: ``cls(**params)``, then the fitted attributes."""
        from shendu.io import estimator_restore

        return estimator_restore(cls, arrays, state, path)


class ClassifierMixin:
    """Classifier conventions: ``classes_`` maps label indices back to the user's labels;
    ``score`` is accuracy."""

    _estimator_type = "classifier"

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags())

    def _encode_y(self, y, X: np.ndarray, where: str, classes=None) -> np.ndarray:
        """Labels -> indices into ``classes_`` (set here on the first fit)."""
        name = type(self).__name__
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if y.ndim != 1:
            raise ValueError(f"{name}.{where}: expected 1-D y of class labels, got shape "
                             f"{y.shape}")
        self._check_y_length(X, y, where)
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError(f"{name}.{where}: y contains NaN or infinity")
        if classes is not None:
            known = np.unique(np.asarray(classes))
            if hasattr(self, "classes_") and not np.array_equal(known, self.classes_):
                raise ValueError(f"{name}.{where}: classes {known.tolist()} differ from the "
                                 f"classes of the first call {self.classes_.tolist()}")
            self.classes_ = known
        elif not hasattr(self, "classes_") or where == "fit":
            self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"{name}.{where}: y has a single class "
                             f"({self.classes_[0]!r}); a classifier needs at least 2 classes")
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        unknown = self.classes_[idx] != y
        if unknown.any():
            raise ValueError(f"{name}.{where}: y has labels {np.unique(y[unknown]).tolist()} "
                             f"not among classes {self.classes_.tolist()}")
        return idx.astype(np.int64)

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy of ``predict(X)`` against ``y`` (weighted by ``sample_weight``)."""
        pred = self.predict(X)
        y = np.asarray(y).ravel()
        return float(np.average(pred == y, weights=sample_weight))


class RegressorMixin:
    """Regressor conventions; ``score`` is the coefficient of determination R²."""

    _estimator_type = "regressor"

    def __sklearn_tags__(self):
        from sklearn.utils import RegressorTags, Tags, TargetTags

        return Tags(estimator_type="regressor", target_tags=TargetTags(required=True),
                    regressor_tags=RegressorTags())

    def score(self, X, y, sample_weight=None) -> float:
        """``R² = 1 - sum (y - y_hat)² / sum (y - mean y)²`` (averaged over outputs)."""
        y = np.asarray(y, dtype=np.float64)
        pred = np.asarray(self.predict(X), dtype=np.float64).reshape(y.shape)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
        w = w.reshape((-1,) + (1,) * (y.ndim - 1))
        mean = (w * y).sum(0) / w.sum()
        ss_res = (w * (y - pred) ** 2).sum(0)
        ss_tot = (w * (y - mean) ** 2).sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res > 0, 0.0, 1.0))
        return float(np.mean(r2))


@contextlib.contextmanager
def seeded(random_state, state=None):
    """Run a block with shendu's generator seeded by ``random_state`` and put the
    generator's previous state back afterwards, so a model's ``random_state`` makes its
    fit repeatable without disturbing the user's own stream. ``None`` draws from the
    global generator as it stands (seed it with ``shendu.manual_seed``). ``state`` (a
    generator state saved at the end of an earlier block) continues that stream instead of
    restarting it — successive ``partial_fit`` calls then draw fresh shuffles and masks."""
    if random_state is None:
        yield
        return
    if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)):
        raise TypeError(f"random_state must be an int or None, got {random_state!r}")
    saved = backend.get_rng_state()
    if state is not None:
        backend.set_rng_state(state)
    else:
        backend.manual_seed(int(random_state))
    try:
        yield
    finally:
        backend.set_rng_state(saved)
