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
import importlib
import importlib.util
import inspect
import warnings

import numpy as np

from shendu import backend
from shendu.train import Callback

__all__ = ["BaseEstimator", "ModuleEstimator", "ClassifierMixin", "RegressorMixin",
           "NotFittedError", "ConvergenceWarning", "not_fitted_error", "type_of_target",
           "training_settings", "l2_penalized", "L2Penalized", "LossPlateau", "CharLMTraining"]


class NotFittedError(ValueError, AttributeError):
    """A model was asked to predict before ``fit`` (same bases as scikit-learn's).

    What shendu raises is also an instance of ``sklearn.exceptions.NotFittedError`` when
    scikit-learn is installed (a subclass of both is made on the first raise, so
    ``import shendu`` does not import scikit-learn): ``except NotFittedError`` catches it
    under either name."""


class ConvergenceWarning(UserWarning):
    """Training stopped at its epoch budget without reaching its stopping rule."""


_SK_CACHE: dict[str, type | None] = {}


def _sklearn_class(module: str, name: str):
    """``sklearn.<module>.<name>`` if scikit-learn is installed, else None (imported on the
    first call only, never by ``import shendu``)."""
    key = f"{module}.{name}"
    if key not in _SK_CACHE:
        cls = None
        if importlib.util.find_spec("sklearn") is not None:
            try:
                cls = getattr(importlib.import_module(f"sklearn.{module}"), name)
            except (ImportError, AttributeError):  # pragma: no cover - a broken install
                cls = None
        _SK_CACHE[key] = cls
    return _SK_CACHE[key]


_NOT_FITTED: list[type] = []


def not_fitted_error(message: str) -> NotFittedError:
    """A :class:`NotFittedError` that is also scikit-learn's, when scikit-learn exists."""
    if not _NOT_FITTED:
        sk = _sklearn_class("exceptions", "NotFittedError")
        cls = NotFittedError if sk is None else type(
            "NotFittedError", (NotFittedError, sk),
            {"__module__": __name__, "__doc__": NotFittedError.__doc__})
        _NOT_FITTED.append(cls)
    return _NOT_FITTED[0](message)


def data_conversion_warning() -> type[Warning]:
    """scikit-learn's ``DataConversionWarning`` (a UserWarning) when installed."""
    return _sklearn_class("exceptions", "DataConversionWarning") or UserWarning


def _is_sparse(X) -> bool:
    mod = type(X).__module__ or ""
    return mod.startswith("scipy.sparse") or hasattr(X, "tocsr")


def _feature_names(X, where: str):
    """The string column names of a DataFrame (object array), or None."""
    cols = getattr(X, "columns", None)
    if cols is None or not hasattr(X, "iloc"):
        return None
    names = np.asarray(list(cols), dtype=object)
    kinds = {type(c) for c in names}
    is_str = [isinstance(c, str) for c in names]
    if names.size and all(is_str):
        return names
    if any(is_str):
        raise TypeError(f"{where}: feature names are only supported if all input features "
                        f"have string names, but the input has {sorted(k.__name__ for k in kinds)}"
                        f" names; convert them all to str")
    return None


def as_array(X, where: str, *, what: str = "X", dtype=None) -> np.ndarray:
    """``X`` (array-like, DataFrame, torch or shendu tensor) as a NumPy array: sparse input
    is refused (TypeError naming it), complex input too (ValueError), ``dtype`` (if given)
    converts, and a failed conversion says what could not be converted."""
    if X is None:
        raise ValueError(f"{where}: expected array-like {what} (array or non-string "
                         f"sequence), got None")
    if _is_sparse(X):
        raise TypeError(f"{where}: sparse {what} is not supported (a sparse matrix was "
                        f"passed, but dense data is required); use {what}.toarray() to "
                        f"convert it to a dense array")
    if hasattr(X, "detach") and hasattr(X, "numpy"):  # a torch tensor
        X = X.detach().cpu().numpy()
    if hasattr(X, "data") and type(X).__name__ == "Tensor" and \
            type(X).__module__.startswith("shendu"):
        X = X.data
    if isinstance(X, str):
        raise ValueError(f"{where}: expected array-like {what} (array or non-string "
                         f"sequence), got a string")
    arr = np.asarray(X)
    if arr.dtype.kind == "c" or (arr.dtype == object and any(
            isinstance(v, complex) for v in arr.reshape(-1)[:1000])):
        raise ValueError(f"{where}: Complex data not supported in {what}; split it into "
                         f"real and imaginary parts first")
    if dtype is not None:
        try:
            arr = arr.astype(dtype)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{where}: {what} must be numeric, could not convert it to "
                          f"{np.dtype(dtype).name}: {e}") from e
    return arr


def check_finite(arr: np.ndarray, where: str, what: str = "X") -> None:
    """scikit-learn's wording: ``Input X contains NaN.`` (and where the first one is)."""
    if arr.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(arr[pos]) else "infinity or a value too large"
        raise ValueError(f"{where}: Input {what} contains {kind} (first at index {pos}); "
                         f"remove or impute non-finite values first")


def type_of_target(y: np.ndarray) -> str:
    """scikit-learn's names for a target: 'binary', 'multiclass', 'continuous',
    'multiclass-multioutput', 'continuous-multioutput' or 'unknown'."""
    if y.dtype == object:
        if not all(isinstance(v, (str, int, np.integer, bool, np.bool_))
                   for v in y.reshape(-1)[:1000]):
            return "unknown"
    multi = "-multioutput" if y.ndim == 2 and y.shape[1] > 1 else ""
    if y.ndim > 2 or (y.ndim == 2 and y.shape[1] == 0):
        return "unknown"
    if y.dtype.kind == "f" and y.size:
        if not np.isfinite(y).all() or np.any(y != np.round(y)):
            return "continuous" + multi
    if multi:
        return "multiclass" + multi
    return "binary" if len(np.unique(y)) <= 2 else "multiclass"


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

    # ------------------------------------------------------------------ tags
    #: what X may be (scikit-learn's InputTags): overridden by sequence and image models
    _input_kinds: dict = {}
    #: the estimator's kind for scikit-learn ("classifier", "regressor" or None)
    _estimator_kind: str | None = None
    #: whether ``fit`` needs a target (False for the language models)
    _requires_y: bool = True

    def __sklearn_tags__(self):
        """scikit-learn's tags (imported here: only scikit-learn ever calls this)."""
        from sklearn.utils import ClassifierTags, InputTags, RegressorTags, Tags, TargetTags

        kind = self._estimator_kind
        inputs = InputTags(**self._input_kinds)
        return Tags(estimator_type=kind, target_tags=TargetTags(
                        required=self._requires_y, multi_output=kind == "regressor" and
                        bool(getattr(self, "_multi_output", False))),
                    input_tags=inputs,
                    classifier_tags=ClassifierTags() if kind == "classifier" else None,
                    regressor_tags=RegressorTags() if kind == "regressor" else None)

    # ------------------------------------------------------------------ checks
    def _where(self, where: str) -> str:
        return f"{type(self).__name__}.{where}"

    def _check_feature_names(self, X, where: str, reset: bool) -> None:
        """Remember (``reset``) or compare a DataFrame's column names, as scikit-learn."""
        name = type(self).__name__
        names = _feature_names(X, self._where(where))
        if reset:
            if names is not None:
                self.feature_names_in_ = names
            elif "feature_names_in_" in self.__dict__:
                del self.feature_names_in_
            return
        fitted = self.__dict__.get("feature_names_in_")
        if names is None and fitted is None:
            return
        if names is not None and fitted is None:
            warnings.warn(f"X has feature names, but {name} was fitted without feature names",
                          UserWarning, stacklevel=4)
            return
        if names is None:
            warnings.warn(f"X does not have valid feature names, but {name} was fitted with "
                          f"feature names", UserWarning, stacklevel=4)
            return
        if len(names) != len(fitted) or np.any(names != fitted):
            unseen = [c for c in names if c not in set(fitted)]
            missing = [c for c in fitted if c not in set(names)]
            detail = ""
            if unseen:
                detail += f"\nFeature names unseen at fit time: {unseen}"
            if missing:
                detail += f"\nFeature names seen at fit time, yet now missing: {missing}"
            if not detail:
                detail = "\nFeature names must be in the same order as they were in fit."
            raise ValueError(f"{name}.{where}: The feature names should match those that "
                             f"were passed during fit.{detail}")

    def _check_X(self, X, where: str, reset: bool, dtype=np.float64) -> np.ndarray:
        """X as a finite 2-D float array (scikit-learn's rules and messages); on ``reset``
        remember ``n_features_in_`` (and ``feature_names_in_`` of a DataFrame), else check
        them."""
        name = type(self).__name__
        w = self._where(where)
        if not reset:
            self._check_fitted(where)
        self._check_feature_names(X, where, reset)
        X = as_array(X, w, dtype=dtype)
        if X.ndim != 2:
            got = "scalar" if X.ndim == 0 else f"{X.ndim}D"
            raise ValueError(f"{w}: Expected 2D array, got {got} array instead (shape "
                             f"{X.shape}). Reshape your data either using X.reshape(-1, 1) "
                             f"if your data has a single feature or X.reshape(1, -1) if it "
                             f"contains a single sample.")
        if X.shape[0] == 0:
            raise ValueError(f"{w}: Found array with 0 sample(s) (shape={X.shape}) while a "
                             f"minimum of 1 is required.")
        if X.shape[1] == 0:
            raise ValueError(f"{w}: Found array with 0 feature(s) (shape={X.shape}) while a "
                             f"minimum of 1 is required.")
        check_finite(X, w)
        if reset:
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"{w}: X has {X.shape[1]} features, but {name} is expecting "
                             f"{self.n_features_in_} features as input.")
        return X

    def _check_y_present(self, y, where: str) -> None:
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target "
                             f"y is None ({where}(X, y))")

    def _check_y_length(self, X: np.ndarray, y: np.ndarray, where: str) -> None:
        if len(y) != len(X):
            raise ValueError(f"{type(self).__name__}.{where}: Found input variables with "
                             f"inconsistent numbers of samples: [{len(X)}, {len(y)}] (X and "
                             f"y must have the same length)")

    def _check_sample_weight(self, sample_weight, n: int, where: str):
        """``None`` or a finite non-negative float array of length ``n``."""
        if sample_weight is None:
            return None
        w = self._where(where)
        sw = as_array(sample_weight, w, what="sample_weight", dtype=np.float64)
        if sw.ndim == 0:
            sw = np.full(n, float(sw))
        if sw.shape != (n,):
            raise ValueError(f"{w}: sample_weight.shape == {sw.shape}, expected ({n},)")
        check_finite(sw, w, "sample_weight")
        if (sw < 0).any():
            raise ValueError(f"{w}: sample_weight has negative values")
        if not sw.sum() > 0:
            raise ValueError(f"{w}: Sample weights must contain at least one non-zero "
                             f"number.")
        return sw

    def _is_fitted(self) -> bool:
        return hasattr(self, "n_features_in_")

    def __sklearn_is_fitted__(self) -> bool:
        return self._is_fitted()

    def _check_fitted(self, where: str) -> None:
        if not self._is_fitted():
            raise not_fitted_error(f"This {type(self).__name__} instance is not fitted yet: "
                                   f"call fit(X, y) before {where}()")

    def to_onnx(self, f, *, verify: bool = True):
        """Write the fitted model, preprocessing included, as an ONNX file (a path or a
        binary file) that takes what ``predict`` takes; see
        :func:`shendu.onnx.export_estimator` (needs ``pip install 'shendu[onnx]'``)."""
        from shendu.onnx import export_estimator

        return export_estimator(self, f, verify=verify)

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


class ModuleEstimator(BaseEstimator):
    """The estimator protocol for an ``nn.Module`` that builds its layers in ``__init__``
    (the language models): ``get_params`` reads the constructor's arguments, and
    ``set_params`` builds the network again from the new ones (fresh weights, as
    ``clone`` gives), so the parameters and the layers never disagree."""

    _requires_y = False

    def set_params(self, **params) -> ModuleEstimator:
        valid = self._param_names()
        for key in params:
            if key not in valid:
                raise ValueError(f"{type(self).__name__}.set_params: invalid parameter "
                                 f"{key!r}; valid parameters are {valid}")
        if params:
            old = self.get_params(deep=False)
            try:
                type(self).__init__(self, **{**old, **params})
            except Exception as e:
                type(self).__init__(self, **old)       # the model as it was
                if isinstance(e, (ValueError, TypeError)):
                    raise
                raise ValueError(f"{type(self).__name__}.set_params: cannot build the network "
                                 f"with {params}: {type(e).__name__}: {e}") from e
        return self


class ClassifierMixin:
    """Classifier conventions: ``classes_`` maps label indices back to the user's labels;
    ``score`` is accuracy."""

    _estimator_type = "classifier"
    _estimator_kind = "classifier"

    def _check_classification_y(self, y, where: str) -> np.ndarray:
        """y as a 1-D array of discrete labels (scikit-learn's rules and messages)."""
        name = type(self).__name__
        self._check_y_present(y, where)
        y = as_array(y, self._where(where), what="y")
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn(f"A column-vector y was passed when a 1d array was expected. "
                          f"Please change the shape of y to (n_samples, ), for example "
                          f"using ravel() ({name}.{where}).", data_conversion_warning(),
                          stacklevel=4)
            y = y.ravel()
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"{name}.{where}: Unknown label type: {kind}. Maybe you are "
                             f"trying to fit a classifier, which expects discrete classes on "
                             f"a regression target with continuous values (y must be a 1-D "
                             f"array of class labels)")
        return y

    def _encode_y(self, y, X: np.ndarray, where: str, classes=None) -> np.ndarray:
        """Labels -> indices into ``classes_`` (set here on the first fit)."""
        name = type(self).__name__
        y = self._check_classification_y(y, where)
        self._check_y_length(X, y, where)
        if classes is not None:
            known = np.unique(np.asarray(classes))
            if hasattr(self, "classes_") and not np.array_equal(known, self.classes_):
                raise ValueError(f"{name}.{where}: classes {known.tolist()} differ from the "
                                 f"classes of the first call {self.classes_.tolist()}")
            self.classes_ = known
        elif not hasattr(self, "classes_") or where == "fit":
            self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"{name}.{where}: y has 1 class ({self.classes_[0]!r}); a "
                             f"classifier needs samples of at least 2 classes, the data "
                             f"contains only one class")
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
    _estimator_kind = "regressor"

    def _check_regression_y(self, y, where: str, multi_output: bool = True) -> np.ndarray:
        """y as a finite float array (n,) or (n, n_outputs); a column (n, 1) warns and
        becomes (n,), as scikit-learn's MLPRegressor does."""
        name = type(self).__name__
        self._check_y_present(y, where)
        w = self._where(where)
        y = as_array(y, w, what="y", dtype=np.float64)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn(f"A column-vector y was passed when a 1d array was expected. "
                          f"Please change the shape of y to (n_samples, ), for example "
                          f"using ravel() ({name}.{where}).", data_conversion_warning(),
                          stacklevel=4)
            y = y.ravel()
        if y.ndim not in ((1, 2) if multi_output else (1,)):
            raise ValueError(f"{w}: expected y of shape (n,)"
                             f"{' or (n, n_outputs)' if multi_output else ''}, got {y.shape}")
        check_finite(y, w, "y")
        return y

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



def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def training_settings(est, schedules: tuple[str, ...] = ("constant",)) -> dict:
    """The training settings every neural estimator shares, under scikit-learn's names:
    ``max_iter`` (epochs), ``learning_rate_init`` (the step), ``learning_rate`` (the
    schedule, one of ``schedules``), ``clip_grad_norm``, ``alpha`` (the L2 penalty, see
    :func:`l2_penalized`), ``tol`` and ``n_iter_no_change`` (see :class:`LossPlateau`) —
    with the older names still read (``epochs``, a number as ``learning_rate``,
    ``lr_schedule``, ``clip_norm``), each with a FutureWarning. Returns a dict of those
    (``"schedule"`` for ``learning_rate``); bad values are a ValueError naming the model and
    the parameter."""
    name = type(est).__name__

    def old(attr: str, new: str, note: str = ""):
        value = getattr(est, attr, None)
        if value is not None:
            warnings.warn(f"{name}({attr}=...) is deprecated; use {new}={note}",
                          FutureWarning, stacklevel=4)
        return value

    epochs = old("epochs", "max_iter")
    max_iter = est.max_iter if epochs is None else epochs
    lr = getattr(est, "learning_rate", None)
    if _is_number(lr):
        warnings.warn(f"{name}(learning_rate={lr!r}): a number here is deprecated; the step "
                      f"is learning_rate_init= and learning_rate is the schedule "
                      f"({', '.join(map(repr, schedules))})", FutureWarning, stacklevel=3)
        lr_init, schedule = float(lr), schedules[0]
    else:
        lr_init, schedule = est.learning_rate_init, lr if lr is not None else schedules[0]
    old_schedule = old("lr_schedule", "learning_rate", " (the schedule)")
    if old_schedule is not None:
        schedule = old_schedule
    clip_norm = old("clip_norm", "clip_grad_norm")
    clip = getattr(est, "clip_grad_norm", None) if clip_norm is None else clip_norm
    alpha = getattr(est, "alpha", 0.0)
    tol = getattr(est, "tol", None)
    patience = getattr(est, "n_iter_no_change", 10)
    bad = None
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) \
            or max_iter < 0:
        bad = f"max_iter must be an int >= 0, got {max_iter!r}"
    elif not (_is_number(lr_init) and lr_init > 0):
        bad = f"learning_rate_init must be a number > 0, got {lr_init!r}"
    elif schedule not in schedules:
        bad = (f"learning_rate (the schedule) must be one of "
               f"{', '.join(map(repr, schedules))}, got {schedule!r}")
    elif clip is not None and not (_is_number(clip) and clip > 0):
        bad = f"clip_grad_norm must be None or a number > 0, got {clip!r}"
    elif not (_is_number(alpha) and alpha >= 0):
        bad = f"alpha must be a number >= 0, got {alpha!r}"
    elif tol is not None and not (_is_number(tol) and tol >= 0):
        bad = f"tol must be None or a number >= 0, got {tol!r}"
    elif isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) \
            or patience < 1:
        bad = f"n_iter_no_change must be an int >= 1, got {patience!r}"
    if bad:
        raise ValueError(f"{name}: {bad}")
    return {"max_iter": int(max_iter), "learning_rate_init": float(lr_init),
            "schedule": schedule, "clip_grad_norm": None if clip is None else float(clip),
            "alpha": float(alpha), "tol": None if tol is None else float(tol),
            "n_iter_no_change": int(patience)}


class L2Penalized:
    """``loss_fn`` plus scikit-learn's L2 penalty (its ``alpha``), as its MLP adds it:
    ``alpha / 2 * sum ||W||^2 / n_batch`` over the weight matrices (every parameter named
    ``*weight`` with two or more dimensions: linear, recurrent, convolution and embedding
    weights, not biases or norm scales). ``n_batch`` is ``rows(target)`` (default: the
    length of the batch's target) times the trainer's ``world_size``, so in a distributed
    fit the penalty is the one-process one, not ``world_size`` times it. Its gradient adds
    ``alpha * W / n_batch`` to each weight's."""

    def __init__(self, loss_fn, model, alpha: float, rows=None) -> None:
        self.loss_fn, self.scale = loss_fn, 0.5 * float(alpha)
        self.weights = [p for n, p in model.named_parameters()
                        if n.endswith("weight") and p.ndim >= 2]
        self.rows = rows if rows is not None else (lambda t: len(getattr(t, "data", t)))
        self.trainer = None

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def __call__(self, output, target):
        value = self.loss_fn(output, target)
        sq = None
        for W in self.weights:
            term = (W * W).sum()
            sq = term if sq is None else sq + term
        if sq is None:
            return value
        world = 1 if self.trainer is None else self.trainer.world_size
        return value + sq * (self.scale / (self.rows(target) * world))


def l2_penalized(loss_fn, model, alpha: float, rows=None):
    """``loss_fn`` with scikit-learn's L2 penalty added (:class:`L2Penalized`); ``loss_fn``
    itself when ``alpha`` is 0."""
    return L2Penalized(loss_fn, model, alpha, rows) if alpha else loss_fn


class LossPlateau(Callback):
    """scikit-learn's stopping rule on the training loss, as its MLP applies it: after each
    epoch, count the epochs in a row whose loss is not below the best so far minus ``tol``,
    and stop once the count exceeds ``n_iter_no_change``. ``tol=None`` never stops. Keeps
    ``loss_curve_``, ``loss_`` and ``best_loss_`` on the estimator; ``stopped`` says whether
    the rule fired."""

    def __init__(self, est, tol: float | None, n_iter_no_change: int) -> None:
        self.est, self.tol, self.patience = est, tol, n_iter_no_change
        self.count, self.stopped = 0, False
        est.loss_curve_, est.best_loss_ = [], np.inf

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        est, loss = self.est, float(logs["loss"])
        est.loss_curve_.append(loss)
        est.loss_ = loss
        if self.tol is not None:
            self.count = self.count + 1 if loss > est.best_loss_ - self.tol else 0
            if self.count > self.patience:
                self.stopped = True
                self.trainer.stop_training = True
        est.best_loss_ = min(est.best_loss_, loss)

    def warn_if_not_converged(self, max_iter: int) -> None:
        """scikit-learn's ConvergenceWarning when ``tol`` is set and the budget ran out."""
        if self.tol is not None and not self.stopped and max_iter > 0 \
                and len(self.est.loss_curve_) >= max_iter:
            warnings.warn(f"{type(self.est).__name__}: maximum iterations ({max_iter}) "
                          f"reached and the training loss has not settled within tol="
                          f"{self.tol} (raise max_iter)", ConvergenceWarning, stacklevel=3)


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


# ------------------------------------------------------------ the language models' fit
class _WindowBatches:
    """The training batches of a character language model for :class:`shendu.train.Trainer`:
    ``steps`` batches of ``batch_size`` random windows of ``seq_len`` characters
    (``corpus.windows``, drawn from shendu's generator), served in blocks of ``block`` —
    the Trainer's epochs, one evaluation after each. It remembers how far into its block it
    is (``state_dict``), so a run resumed from a mid-block checkpoint draws exactly the
    windows the uninterrupted run would have."""

    def __init__(self, corpus, steps: int, block: int, batch_size: int, seq_len: int) -> None:
        self.corpus, self.steps, self.block = corpus, steps, block
        self.batch_size, self.seq_len = batch_size, seq_len
        self.epoch = 0          # the Trainer's epoch (set by _LMEvaluation)
        self.served = 0         # batches of this block already drawn

    def __len__(self) -> int:
        return max(0, min(self.block, self.steps - self.epoch * self.block))

    def __iter__(self):
        n = len(self)
        while self.served < n:
            x, y = self.corpus.windows(self.batch_size, self.seq_len)   # (B, L), (B, L)
            self.served += 1
            yield x, y
        self.served = 0

    def state_dict(self) -> dict:
        return {"served": int(self.served)}

    def load_state_dict(self, state: dict) -> None:
        self.served = int(state.get("served", 0))


class _LMEvaluation(Callback):
    """After each block of steps: the validation nats per character (the model's
    ``evaluate``, on the first ``eval_chars`` characters) and the step count, logged."""

    def __init__(self, model, corpus, batches: _WindowBatches, eval_chars, verbose) -> None:
        self.model, self.corpus, self.batches = model, corpus, batches
        self.eval_chars, self.verbose = eval_chars, verbose

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        self.batches.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        logs["step"] = float(self.trainer.global_step)
        logs["val_nats"] = self.model.evaluate(self.corpus, "val", max_chars=self.eval_chars)
        if self.verbose:
            print(f"step {self.trainer.global_step}: train {logs['loss']:.3f}  "
                  f"val {logs['val_nats']:.3f} nats/char", flush=True)


class CharLMTraining:
    """``fit`` of the character language models (:class:`~shendu.models.CharLM`,
    :class:`~shendu.models.CharTransformerLM`): the same call for both, run by
    :class:`shendu.train.Trainer` — so training stops with a clear error on a NaN or
    infinite loss or gradient, writes checkpoints through callbacks such as
    :class:`shendu.checkpoint.ModelCheckpoint`, resumes from one bit for bit
    (``resume=``), and returns what it has after the first Ctrl-C.

    A model using it has ``_default_step``, ``_default_schedule``, :meth:`_lm_vocab_size`
    and :meth:`_lm_seq_len`, and its ``forward`` returns the logits (N, T, V) or a tuple
    whose first item they are."""

    _default_step = 2e-3
    _default_schedule = "constant"

    def _lm_seq_len(self, seq_len) -> int:
        """The training window's length (``seq_len`` checked, or the model's default)."""
        raise NotImplementedError

    def _lm_vocab_size(self) -> int:
        raise NotImplementedError

    def fit(self, corpus, steps: int = 1000, batch_size: int = 32, seq_len: int | None = None,
            learning_rate=None, learning_rate_init: float | None = None,
            weight_decay: float = 0.0, clip_grad_norm: float | None = 1.0,
            eval_every: int = 0, eval_chars: int | None = None, verbose: int = 0,
            callbacks=(), resume=None, lr_schedule=None) -> list[dict]:
        """Train on a :class:`~shendu.data.sequences.CharCorpus` (anything with its
        ``windows(batch, L)`` and ``train``/``val`` id arrays) for ``steps`` AdamW steps
        (Loshchilov & Hutter 2019; step ``learning_rate_init``, decoupled
        ``weight_decay``), each on ``batch_size`` random training windows of ``seq_len``
        characters, with the next-character cross-entropy at every position;
        ``clip_grad_norm`` (None: off) clips the global gradient norm.
        ``learning_rate`` is the schedule, as for the estimators: ``"constant"`` or
        ``"cosine"`` (annealed to 0 over the steps, Loshchilov & Hutter 2017).

        Every ``eval_every`` steps (0: only at the end) the validation nats/char
        (``evaluate`` on the first ``eval_chars`` validation characters) are measured.
        Returns the log, one ``{"step", "train_loss", "val_nats"}`` per evaluation
        (``train_loss``: the mean over the steps since the last one); ``history_`` holds
        the Trainer's :class:`~shendu.train.History`, ``n_steps_`` the steps taken (fewer
        than ``steps`` when Ctrl-C stopped the run). ``callbacks`` go to the Trainer;
        ``resume`` is a checkpoint file or folder to continue from (build and seed the
        model as for the first run). ``lr_schedule`` and a number as ``learning_rate`` are
        the deprecated names of ``learning_rate`` and ``learning_rate_init``."""
        from shendu import functional as F
        from shendu import optim
        from shendu.train import GradientClipping, Trainer

        name = type(self).__name__
        step, schedule = learning_rate_init, learning_rate
        if _is_number(learning_rate):
            warnings.warn(f"{name}.fit(learning_rate={learning_rate!r}): a number here is "
                          f"deprecated; the step is learning_rate_init= and learning_rate "
                          f"is the schedule ('constant' or 'cosine')", FutureWarning,
                          stacklevel=2)
            step, schedule = float(learning_rate), None
        if lr_schedule is not None:
            warnings.warn(f"{name}.fit(lr_schedule=...) is deprecated; use learning_rate= "
                          f"(the schedule)", FutureWarning, stacklevel=2)
            schedule = lr_schedule
        step = self._default_step if step is None else step
        schedule = self._default_schedule if schedule is None else schedule
        bad = None
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            bad = f"steps must be a positive int, got {steps!r}"
        elif isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            bad = f"batch_size must be a positive int, got {batch_size!r}"
        elif not (_is_number(step) and step > 0):
            bad = f"learning_rate_init must be a number > 0, got {step!r}"
        elif schedule not in ("constant", "cosine"):
            bad = f"learning_rate (the schedule) must be 'constant' or 'cosine', got {schedule!r}"
        elif not (_is_number(weight_decay) and weight_decay >= 0):
            bad = f"weight_decay must be a number >= 0, got {weight_decay!r}"
        elif clip_grad_norm is not None and not (_is_number(clip_grad_norm)
                                                 and clip_grad_norm > 0):
            bad = f"clip_grad_norm must be None or a number > 0, got {clip_grad_norm!r}"
        elif isinstance(eval_every, bool) or not isinstance(eval_every, (int, np.integer)) \
                or eval_every < 0:
            bad = f"eval_every must be an int >= 0, got {eval_every!r}"
        if bad:
            raise ValueError(f"{name}.fit: {bad}")
        seq_len = self._lm_seq_len(seq_len)
        V = self._lm_vocab_size()
        top = int(max(np.max(corpus.train), np.max(corpus.val)))
        if top >= V:
            raise ValueError(f"{name}.fit: the corpus has token id {top}, but the model's "
                             f"vocabulary has {V} symbols")

        def loss_fn(output, target):
            logits = output[0] if isinstance(output, tuple) else output     # (B, L, V)
            return F.cross_entropy(logits.reshape(-1, V), target.reshape(-1))

        block = int(eval_every) or int(steps)
        batches = _WindowBatches(corpus, int(steps), block, int(batch_size), seq_len)
        opt = optim.AdamW(list(self.parameters()), lr=float(step),
                          weight_decay=float(weight_decay))
        own = [_LMEvaluation(self, corpus, batches, eval_chars, verbose)]
        if clip_grad_norm is not None:
            own.append(GradientClipping(float(clip_grad_norm)))
        sched = optim.lr_scheduler.CosineAnnealingLR(opt, int(steps)) \
            if schedule == "cosine" else None
        trainer = Trainer(self, loss_fn, opt, batches, callbacks=[*own, *callbacks],
                          scheduler=sched, scheduler_interval="batch", verbose=0)
        self.history_ = trainer.fit(-(-int(steps) // block), resume=resume)
        self.n_steps_ = int(trainer.global_step)      # fewer than steps after a Ctrl-C
        self.eval()
        h = self.history_
        return [{"step": int(s), "train_loss": float(t), "val_nats": float(v)}
                for s, t, v in zip(h.get("step", []), h.get("loss", []),
                                   h.get("val_nats", []))]
