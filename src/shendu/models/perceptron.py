r"""Rosenblatt's perceptron (1958), as a scikit-learn estimator and with the seed's API.

The model is ``y = sign(x W + b)`` with labels in {-1, +1}. Learning is online, one
sample at a time, and changes the weights only on a mistake::

    s = x W + b                      # the score
    if y * s <= 0:                   # wrong side of the hyperplane, or on it
        W += lr * y * x              # turn the hyperplane towards the sample
        b += lr * y

A score of exactly 0 counts as a mistake (so learning starts from zero weights). On data
that some hyperplane separates with margin ``gamma`` inside a ball of radius ``R`` the rule
makes at most ``(R / gamma)²`` mistakes (Novikoff 1962), so an epoch without a mistake
comes and training stops; on data that no hyperplane separates — XOR is the smallest
case (Minsky & Papert 1969) — it never does, and training stops at ``max_iter`` with a
:class:`~shendu.models.ConvergenceWarning`.

More than two classes are learnt one-vs-rest: one weight vector per class, the class's
samples labelled +1 and all others -1, and the prediction is the class of highest score.
The ``K`` binary perceptrons never interact, so they are trained side by side on the
same pass over the data, each stopping on its own.

**Same numbers as scikit-learn.** ``sklearn.linear_model.Perceptron`` is stochastic
gradient descent on the loss ``max(0, -y s)`` with a constant step ``eta0``, whose
subgradient step is exactly the rule above (it treats ``y s <= 0`` as a mistake too), one
binary problem per class with the class ``classes_[i]`` as +1 (for two classes, one
problem with ``classes_[1]`` as +1). With ``shuffle=False``, ``penalty=None``, the same
``eta0`` and ``fit_intercept``, both produce the same ``coef_`` and ``intercept_`` after the
same number of epochs (with sample weights up to 1 too; a larger weight here is that many
copies of the sample, where scikit-learn scales the one step). Its stopping rule is
reproduced too: with ``tol`` set (default 1e-3), a binary problem stops after
``n_iter_no_change`` epochs in a row whose mean loss ``sum max(0, -y s) / n`` is not below
the best so far minus ``tol``; with ``tol=None`` it runs ``max_iter`` epochs — where ours
stops at the first epoch without a mistake, since the weights cannot change after it.

**Two ways to use the same class.** As an estimator, ``Perceptron(eta0=..., max_iter=...)``
then ``fit(X, y)`` with any labels (``classes_``, ``predict``, ``score``...). As in the
seed, ``Perceptron(input_dim, output_dim)`` allocates zero weights ``W`` (input_dim,
output_dim) and ``b`` right away, and ``forward(x)`` / ``backward(y, learning_rate)`` /
``train(X, y, epochs, learning_rate)`` work on them with labels in {-1, +1}, one column
per output. Both share ``W`` and ``b`` (``coef_`` is ``W.T``), and for one output the
seed's ``train`` on labels ±1 gives the same weights as ``fit`` does.
"""

from __future__ import annotations

import warnings

import numpy as np

from shendu import backend
from shendu.models._base import BaseEstimator, ClassifierMixin, ConvergenceWarning, seeded

__all__ = ["Perceptron"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(h: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele et al. 2014): a bijection of uint64 whose every
    output bit depends on every input bit, so nearby inputs land far apart."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _fingerprints(X: np.ndarray, Y: np.ndarray, rows: int = 4096) -> np.ndarray:
    """A 64-bit hash of each sample's features and targets (n,): equal samples get equal
    hashes, different ones (almost surely) different. Each value's bits are mixed with a
    per-column constant and the columns summed mod 2**64; ``+ 0.0`` makes -0.0 hash as
    0.0. Done ``rows`` samples at a time to bound the temporaries."""
    A = np.hstack([X, Y]).astype(np.float64, copy=False)
    col = _mix64(np.arange(1, A.shape[1] + 1, dtype=np.uint64) * _GOLDEN)
    out = np.empty(len(A), np.uint64)
    for lo in range(0, len(A), rows):
        bits = np.ascontiguousarray(A[lo:lo + rows] + 0.0).view(np.uint64)
        out[lo:lo + rows] = _mix64(bits ^ col).sum(axis=1, dtype=np.uint64)
    return out


_DEPRECATED = {"lr": "eta0", "max_epochs": "max_iter"}


class Perceptron(ClassifierMixin, BaseEstimator):
    """Rosenblatt's perceptron (Rosenblatt 1958), binary or one-vs-rest, with
    ``sklearn.linear_model.Perceptron``'s parameters, meanings and defaults.

    Parameters
    ----------
    input_dim, output_dim : seed-style constructor: allocate zero ``W`` of shape
        (input_dim, output_dim) and ``b`` now, for ``forward``/``backward``/``train``.
        Leave them ``None`` to use the estimator API (``fit`` sizes the weights).
    penalty, alpha, l1_ratio : scikit-learn's regularisation: ``None``, ``"l2"``
        (every step shrinks ``W`` by ``1 - (1 - l1_ratio) eta0 alpha``), ``"l1"`` or
        ``"elasticnet"`` (Tsuruoka et al.'s cumulative L1 penalty after every step).
    fit_intercept : learn ``b`` (else it stays 0).
    max_iter : most passes over the data in ``fit``.
    tol, n_iter_no_change : stop a binary problem after ``n_iter_no_change`` epochs in a
        row whose mean loss ``sum max(0, -y s) / n`` is not below the best so far minus
        ``tol`` (``tol=None``: run ``max_iter`` epochs, or until an epoch without a
        mistake when there is no penalty).
    shuffle, random_state : visit the samples in a new random order each epoch: the order
        of a hash of each sample's contents salted by shendu's generator (seeded by
        ``random_state``, an int, default 0), so the fit does not depend on the order of
        the rows and equal samples are visited side by side.
    verbose : print the mistakes of each epoch.
    eta0 : the step ``eta0`` of ``W += eta0 * y * x``.
    n_jobs : accepted for scikit-learn's signature; the K one-vs-rest problems are already
        trained together in one vectorised pass.
    early_stopping, validation_fraction : hold out a stratified ``validation_fraction`` of
        the data and stop each binary problem when its validation accuracy has not risen
        by ``tol`` for ``n_iter_no_change`` epochs.
    class_weight : ``None``, ``"balanced"`` or ``{label: weight}``; multiplies the step of
        the samples of each class (one-vs-rest: the positive class of each problem);
        ``"balanced"`` counts each class's summed sample weight.
    warm_start : let ``fit`` start from the current weights instead of zeros.
    average : (shendu) predict with the mean of the weights over every step of training
        (Freund & Schapire 1999); scikit-learn's ``SGDClassifier(loss="perceptron",
        learning_rate="constant", average=True)``.
    lr, max_epochs : deprecated names of ``eta0`` and ``max_iter`` (a FutureWarning).

    Attributes (after ``fit``)
    --------------------------
    classes_, n_features_in_, feature_names_in_ (DataFrame input), coef_ (n_classifiers,
    n_features), intercept_, n_iter_ (epochs run), t_ (weight updates + 1, as
    scikit-learn), mistakes_ (total mistakes per epoch), mistakes_per_class_ (epochs,
    n_classifiers), converged_ (the last epoch made no mistake).
    """

    def __init__(self, input_dim: int | None = None, output_dim: int | None = None, *,
                 penalty: str | None = None, alpha: float = 0.0001, l1_ratio: float = 0.15,
                 fit_intercept: bool = True, max_iter: int = 1000, tol: float | None = 1e-3,
                 shuffle: bool = True, verbose: int = 0, eta0: float = 1.0,
                 n_jobs: int | None = None, random_state: int | None = 0,
                 early_stopping: bool = False, validation_fraction: float = 0.1,
                 n_iter_no_change: int = 5, class_weight=None, warm_start: bool = False,
                 average: bool = False, lr: float | None = None,
                 max_epochs: int | None = None) -> None:
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.verbose = verbose
        self.eta0 = eta0
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.average = average
        self.lr = lr
        self.max_epochs = max_epochs
        if self._seed_dims_ok():
            self._W = np.zeros((int(input_dim), int(output_dim)))
            self._b = np.zeros(int(output_dim))

    def _seed_dims_ok(self) -> bool:
        """True when the seed's two sizes are given as positive ints; False when neither
        is; a ValueError otherwise (raised on first use, not by ``__init__``, so that
        ``set_params``/``clone`` never fail)."""
        i, o = self.input_dim, self.output_dim
        if i is None and o is None:
            return False
        return all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
                   for d in (i, o))

    def _seed_dims_error(self) -> None:
        if (self.input_dim is not None or self.output_dim is not None) \
                and not self._seed_dims_ok():
            raise ValueError(f"Perceptron(input_dim, output_dim) expects two positive ints, "
                             f"got input_dim={self.input_dim!r}, "
                             f"output_dim={self.output_dim!r}")

    # --------------------------------------------------------------- weights
    @property
    def W(self) -> np.ndarray:
        """The weights (n_features, n_classifiers); ``coef_`` is ``W.T``."""
        if "_W" not in self.__dict__:
            self._seed_dims_error()
            raise AttributeError("Perceptron has no weights W yet: call fit(X, y) or build "
                                 "it as Perceptron(input_dim, output_dim)")
        return self._W

    @W.setter
    def W(self, value) -> None:
        self._W = value

    @property
    def b(self) -> np.ndarray:
        if "_b" not in self.__dict__:
            self._seed_dims_error()
            raise AttributeError("Perceptron has no bias b yet: call fit(X, y) first")
        return self._b

    @b.setter
    def b(self, value) -> None:
        self._b = value

    @property
    def coef_(self) -> np.ndarray:
        """``W.T``: one row of weights per binary classifier (scikit-learn's layout)."""
        if "_W" not in self.__dict__ or not self._is_fitted():
            raise AttributeError("Perceptron has no coef_ yet: call fit(X, y) first")
        return self._W.T

    @property
    def intercept_(self) -> np.ndarray:
        if "_b" not in self.__dict__ or not self._is_fitted():
            raise AttributeError("Perceptron has no intercept_ yet: call fit(X, y) first")
        return self._b

    def _settings(self) -> tuple[float, int]:
        """(eta0, max_iter), from the deprecated ``lr``/``max_epochs`` when given."""
        eta0, max_iter = self.eta0, self.max_iter
        for old, new in _DEPRECATED.items():
            value = getattr(self, old)
            if value is not None:
                warnings.warn(f"Perceptron({old}=...) is deprecated; use scikit-learn's name "
                              f"{new}=", FutureWarning, stacklevel=4)
                if old == "lr":
                    eta0 = value
                else:
                    max_iter = value
        return eta0, max_iter

    def _check_hyper(self) -> tuple[float, int]:
        self._seed_dims_error()
        eta0, max_iter = self._settings()
        bad = None
        if isinstance(eta0, bool) or not isinstance(eta0, (int, float, np.number)) \
                or not eta0 > 0:
            bad = f"eta0 must be > 0, got {eta0!r}"
        elif isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) \
                or max_iter < 1:
            bad = f"max_iter must be an int >= 1, got {max_iter!r}"
        elif self.penalty not in (None, "l2", "l1", "elasticnet"):
            bad = f"penalty must be None, 'l2', 'l1' or 'elasticnet', got {self.penalty!r}"
        elif not (isinstance(self.alpha, (int, float, np.number)) and self.alpha >= 0):
            bad = f"alpha must be a float >= 0, got {self.alpha!r}"
        elif not (isinstance(self.l1_ratio, (int, float, np.number))
                  and 0 <= self.l1_ratio <= 1):
            bad = f"l1_ratio must be in [0, 1], got {self.l1_ratio!r}"
        elif self.tol is not None and not isinstance(self.tol, (int, float, np.number)):
            bad = f"tol must be a float or None, got {self.tol!r}"
        elif isinstance(self.n_iter_no_change, bool) or not isinstance(
                self.n_iter_no_change, (int, np.integer)) or self.n_iter_no_change < 1:
            bad = f"n_iter_no_change must be an int >= 1, got {self.n_iter_no_change!r}"
        elif self.early_stopping and not (isinstance(self.validation_fraction, float)
                                          and 0 < self.validation_fraction < 1):
            bad = f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}"
        elif not (self.class_weight is None or self.class_weight == "balanced"
                  or isinstance(self.class_weight, dict)):
            bad = (f"class_weight must be None, 'balanced' or a dict, got "
                   f"{self.class_weight!r}")
        if bad:
            raise ValueError(f"Perceptron: {bad}")
        return float(eta0), int(max_iter)

    # ----------------------------------------------------------- the learning
    def _epoch(self, X: np.ndarray, Y: np.ndarray, active: np.ndarray, order,
               st: dict, step_w: np.ndarray, reps: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, int]:
        """One pass of the perceptron rule over ``X[order]`` for the binary problems that
        are ``active``; ``Y`` (n, K) holds ±1, ``step_w`` (n, K) each sample's step factor
        (its class weight) and ``st`` the raw weights ``W``, ``b`` (and, when averaging,
        ``U``, ``Ub``: each update times its step number minus one, and ``t``: steps taken).

        ``reps`` (n,) are the sample weights, read as repetitions: a sample of weight ``w``
        is taken as ``floor(w)`` full steps in a row, then one step scaled by
        ``w - floor(w)``. A weight in (0, 1] therefore scales the sample's one step, as
        scikit-learn's does; a whole weight ``k`` is exactly ``k`` copies of the sample side
        by side, and 0 removes it. Without a penalty the copies after the first one on the
        right side change nothing, so they are counted, not run.

        Returns mistakes and summed loss ``max(0, -y s)`` per problem, and the number of
        steps taken. With a penalty every step first shrinks ``W`` (L2 part) and afterwards
        applies the cumulative L1 penalty, in scikit-learn's order (``_plain_sgd``)."""
        W, b, lr = st["W"], st["b"], st["eta0"]
        fit_b, avg = bool(self.fit_intercept), bool(self.average)
        pen = self.penalty
        ratio = {"l2": 0.0, "l1": 1.0}.get(pen, self.l1_ratio)    # l1_ratio: elasticnet only
        l2 = max(0.0, 1.0 - (1.0 - ratio) * lr * self.alpha) \
            if pen in ("l2", "elasticnet") else None
        l1 = ratio * lr * self.alpha if pen in ("l1", "elasticnet") else None
        K = Y.shape[1]
        mistakes = np.zeros(K, np.int64)
        loss = np.zeros(K)
        t = st["t"]
        cols = np.flatnonzero(active)
        pos = 0                                            # steps taken in this epoch

        def step(x: np.ndarray, y: np.ndarray, sw: np.ndarray) -> bool:
            """One step of the rule on sample ``x``; True when some problem erred."""
            nonlocal pos
            s = x @ W + b                                  # (K,) scores
            z = y * s
            wrong = (z <= 0) & active
            erred = bool(wrong.any())
            if erred:
                mistakes[:] += wrong
                loss[:] -= np.where(wrong, z, 0.0)
            if pen is not None:
                if l2 is not None:
                    W[:, cols] *= l2
                if erred:
                    self._update(W, b, x, y, wrong, lr, sw, fit_b)
                if l1 is not None:
                    u = st["u"]
                    u[cols] += l1
                    Wa, q = W[:, cols], st["q"][:, cols]
                    new = np.where(Wa > 0, np.maximum(0.0, Wa - (u[cols] + q)),
                                   np.where(Wa < 0, np.minimum(0.0, Wa + (u[cols] - q)), Wa))
                    st["q"][:, cols] = q + (new - Wa)
                    W[:, cols] = new
                if avg:
                    st["S"][:, cols] += W[:, cols]
                    st["Sb"][cols] += b[cols]
                    t[cols] += 1
            elif erred:
                k = np.flatnonzero(wrong)
                c = self._update(W, b, x, y, wrong, lr, sw, fit_b)
                if avg:
                    n_before = t[k] + pos                  # this step's number minus one
                    st["U"][:, k] += np.multiply.outer(x, c * n_before)
                    if fit_b:
                        st["Ub"][k] += c * n_before
            pos += 1
            return erred

        for i in order:
            x, y, sw = X[i], Y[i], step_w[i]
            r = 1.0 if reps is None else float(reps[i])
            if r == 1.0:
                step(x, y, sw)
                continue
            whole = int(r)
            frac = r - whole
            for j in range(whole):
                if not step(x, y, sw) and pen is None:
                    pos += whole - j - 1 + (frac > 0)      # the rest would change nothing
                    break
            else:
                if frac > 0:
                    step(x, y, sw * frac)
        if avg and pen is None:
            t[active] += pos
        st["updates"] += pos
        return mistakes, loss, pos

    @staticmethod
    def _update(W, b, x, y, wrong, lr, sw, fit_b) -> np.ndarray:
        """``W += lr * y * x`` (times the sample's step factor) on the wrong problems."""
        k = np.flatnonzero(wrong)
        c = lr * y[k] * sw[k]                              # the step of each wrong problem
        if W.shape[1] == 1:
            W[:, 0] += c[0] * x
        else:
            W[:, k] += np.multiply.outer(x, c)
        if fit_b:
            b[k] += c
        return c

    def _start_state(self, n_features: int, K: int, fresh: bool, eta0: float) -> dict:
        """The raw training state: zeros, or where the last fit/partial_fit left it."""
        old = self.__dict__.get("_state")
        if not fresh and old is not None and old["W"].shape == (n_features, K) \
                and old.get("penalty", None) == self.penalty:
            old["eta0"] = eta0
            return old
        if not fresh and "_W" in self.__dict__ and self._W.shape == (n_features, K):
            W, b = self._W.copy(), self._b.copy()
        else:
            W, b = np.zeros((n_features, K)), np.zeros(K)
        return {"W": W, "b": b, "U": np.zeros_like(W), "Ub": np.zeros_like(b),
                "S": np.zeros_like(W), "Sb": np.zeros_like(b), "u": np.zeros(K),
                "q": np.zeros_like(W), "t": np.zeros(K, np.int64), "eta0": eta0,
                "updates": 0, "penalty": self.penalty}

    def _run(self, X: np.ndarray, Y: np.ndarray, epochs: int, st: dict, warn: bool,
             step_w: np.ndarray, reps: np.ndarray | None = None, val=None) -> None:
        """Up to ``epochs`` epochs, each binary problem stopping on its own; sets the
        weights used for prediction and the history on ``self``. ``reps``: the sample
        weights (see :meth:`_epoch`); ``val``: held-out ``(X, Y)`` for ``early_stopping``.

        With ``shuffle`` each epoch visits the samples in the order of a seeded hash of
        their contents (:func:`_fingerprints`), not of their positions: a random order, the
        same whatever order the rows came in, in which equal samples sit side by side. So
        the fit does not depend on the order of the rows, and a sample of weight ``k``
        trains exactly as ``k`` copies of it would."""
        n, K = Y.shape
        keys = _fingerprints(X, Y) if self.shuffle else None
        active = np.ones(K, bool)
        best = np.full(K, np.inf if val is None else -np.inf)
        no_improve = np.zeros(K, np.int64)
        history, stopped_by_tol = [], np.zeros(K, bool)
        extra = np.zeros(K, np.int64)   # epochs scikit-learn would still run, weights frozen
        frozen = self.penalty is None   # without a penalty a clean epoch changes nothing
        for epoch in range(epochs):
            if keys is None:
                order = range(n)
            else:
                salt = backend.rng().integers(0, 2 ** 64, dtype=np.uint64)
                order = np.argsort(_mix64(keys ^ salt), kind="stable")
            mistakes, loss, steps = self._epoch(X, Y, active, order, st, step_w, reps)
            history.append(mistakes)
            if self.verbose:
                print(f"Perceptron epoch {epoch + 1}: {int(mistakes.sum())} mistakes")
            clean = active & (mistakes == 0) if frozen else np.zeros(K, bool)
            if self.tol is not None:
                if val is None:
                    mean_loss = loss / max(steps, 1)
                    worse = mean_loss > best - self.tol
                    best = np.minimum(best, mean_loss)
                else:
                    Xv, Yv = val
                    acc = ((Xv @ st["W"] + st["b"]) * Yv > 0).mean(axis=0)
                    worse = acc < best + self.tol
                    best = np.maximum(best, acc)
                no_improve = np.where(worse, no_improve + 1, 0)
                stopped_by_tol |= active & ~clean & (no_improve >= self.n_iter_no_change)
                more = np.maximum(self.n_iter_no_change - no_improve, 0)
            else:
                more = np.full(K, epochs)
            extra[clean] = np.minimum(more[clean], epochs - epoch - 1)
            active &= ~clean & ~stopped_by_tol
            if not active.any():
                break
        self._state = st
        if self.average and self.penalty is None:
            # mean of the weights after every step, W_avg = (T W - U) / T, where the steps
            # scikit-learn would still take with frozen weights count too
            T = np.maximum(st["t"] + extra * steps, 1)
            self._W = st["W"] - st["U"] / T
            self._b = st["b"] - st["Ub"] / T
        elif self.average:
            T = np.maximum(st["t"], 1)
            self._W, self._b = st["S"] / T, st["Sb"] / T
        else:
            self._W, self._b = st["W"], st["b"]
        per_class = np.array(history, np.int64).reshape(len(history), K)
        self.mistakes_per_class_ = per_class
        self.mistakes_ = per_class.sum(axis=1)
        self.n_iter_ = len(history)
        self.t_ = float(st["updates"] + 1)
        self.converged_ = bool(per_class[-1].sum() == 0)
        if warn and active.any():
            warnings.warn(
                f"Perceptron did not converge: {int(per_class[-1].sum())} mistakes in epoch "
                f"{self.n_iter_} of max_iter={epochs}; the data may not be linearly "
                f"separable (e.g. XOR), or it needs more epochs",
                ConvergenceWarning, stacklevel=3)

    def _targets(self, idx: np.ndarray) -> np.ndarray:
        """Class indices -> ±1 targets, one column per binary problem."""
        K = len(self.classes_)
        if K == 2:
            return np.where(idx == 1, 1.0, -1.0)[:, None]
        Y = -np.ones((len(idx), K))
        Y[np.arange(len(idx)), idx] = 1.0
        return Y

    def _step_weights(self, idx: np.ndarray, Y: np.ndarray, sample_weight) -> np.ndarray:
        """(n, K) factor of each sample's step in each binary problem: scikit-learn's class
        weight (one-vs-rest: the positive class's weight for its samples, 1 for the rest;
        two classes: each class its own). Sample weights count as repetitions instead
        (:meth:`_epoch`), so ``"balanced"`` counts each class's summed sample weight, as
        ``sklearn.utils.compute_class_weight(..., sample_weight=)`` does."""
        K = len(self.classes_)
        cw = np.ones(K)
        if self.class_weight == "balanced":
            counts = np.bincount(idx, weights=sample_weight, minlength=K)
            cw = counts.sum() / (K * np.where(counts > 0, counts, 1.0))
        elif isinstance(self.class_weight, dict):
            for label, wt in self.class_weight.items():
                hit = np.flatnonzero(self.classes_ == label)
                if not hit.size:
                    raise ValueError(f"Perceptron: class_weight has label {label!r}, not "
                                     f"among classes {self.classes_.tolist()}")
                cw[hit[0]] = float(wt)
        if K == 2:
            f = cw[idx][:, None]
        else:
            f = np.where(Y > 0, cw[None, :], 1.0)
        return np.ascontiguousarray(f, dtype=np.float64)

    def _validation_split(self, X, idx):
        """A stratified hold-out of ``validation_fraction`` of the samples (shendu's
        generator), for ``early_stopping``."""
        n_val = int(np.ceil(self.validation_fraction * len(X)))
        if n_val < 2 or len(X) - n_val < 2:
            raise ValueError(f"Perceptron.fit: early_stopping with validation_fraction="
                             f"{self.validation_fraction} leaves too few samples on one side "
                             f"({len(X)} samples)")
        val = np.zeros(len(X), bool)
        gen = backend.rng()
        for k in np.unique(idx):
            members = np.flatnonzero(idx == k)
            take = int(round(len(members) * self.validation_fraction))
            val[gen.permutation(members)[:take]] = True
        return ~val, val

    # ----------------------------------------------------------- estimator API
    def fit(self, X, y, coef_init=None, intercept_init=None, sample_weight=None
            ) -> Perceptron:
        """Learn from ``(X, y)`` from zero weights (or ``coef_init``/``intercept_init``,
        or the current ones with ``warm_start``) until the stopping rule or ``max_iter``
        (then it warns). ``sample_weight`` counts as repetitions: a weight ``k`` trains as
        ``k`` copies of the sample, a fraction as one step scaled by it (see
        :meth:`_epoch`)."""
        eta0, max_iter = self._check_hyper()
        X = self._check_X(X, "fit", reset=True)
        if self.input_dim is not None and X.shape[1] != self.input_dim:
            raise ValueError(f"Perceptron.fit: X has {X.shape[1]} features but the model was "
                             f"built with input_dim={self.input_dim}")
        idx = self._encode_y(y, X, "fit")
        sw = self._check_sample_weight(sample_weight, len(X), "fit")
        Y = self._targets(idx)
        st = self._start_state(X.shape[1], Y.shape[1], fresh=not self.warm_start, eta0=eta0)
        if coef_init is not None:
            st["W"] = np.array(coef_init, dtype=np.float64).reshape(Y.shape[1], -1).T.copy()
        if intercept_init is not None:
            st["b"] = np.array(intercept_init, dtype=np.float64).reshape(-1).copy()
        step_w = self._step_weights(idx, Y, sw)
        with seeded(self.random_state):
            val = None
            if self.early_stopping:
                tr, va = self._validation_split(X, idx)
                val = (X[va], Y[va])
                X, Y, step_w = X[tr], Y[tr], step_w[tr]
                sw = None if sw is None else sw[tr]
            self._run(X, Y, max_iter, st, warn=True, step_w=step_w, reps=sw, val=val)
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None) -> Perceptron:
        """One epoch over ``(X, y)`` from the current weights. The first call must name
        every class in ``classes``."""
        eta0, _ = self._check_hyper()
        first = not hasattr(self, "classes_")
        if first and classes is None:
            raise ValueError("Perceptron.partial_fit: the first call needs classes=, the "
                             "list of all classes y can take")
        X = self._check_X(X, "partial_fit", reset=first)
        idx = self._encode_y(y, X, "partial_fit", classes=classes if first else None)
        sw = self._check_sample_weight(sample_weight, len(X), "partial_fit")
        Y = self._targets(idx)
        st = self._start_state(X.shape[1], Y.shape[1], fresh=first, eta0=eta0)
        with seeded(self.random_state, getattr(self, "_rng_state", None)):
            self._run(X, Y, 1, st, warn=False, step_w=self._step_weights(idx, Y, sw), reps=sw)
            if self.random_state is not None:
                self._rng_state = backend.get_rng_state()
        return self

    def decision_function(self, X) -> np.ndarray:
        """Scores ``X W + b``: shape (n,) for two classes, (n, n_classes) otherwise."""
        X = self._check_X(X, "decision_function", reset=False)
        s = X @ self._W + self._b
        return s[:, 0] if s.shape[1] == 1 else s

    def predict(self, X) -> np.ndarray:
        """The class of highest score (for two classes: ``classes_[1]`` iff score > 0)."""
        self._check_fitted("predict")
        s = self.decision_function(X)
        if s.ndim == 1:
            return self.classes_[(s > 0).astype(np.int64)]
        return self.classes_[np.argmax(s, axis=1)]

    # ----------------------------------------------------------------- seed API
    def _seed_weights(self, where: str) -> None:
        self._seed_dims_error()
        if "_W" not in self.__dict__:
            raise RuntimeError(f"Perceptron.{where}: no weights yet; build the model as "
                               f"Perceptron(input_dim, output_dim) or call fit(X, y) first")

    def _seed_y(self, y, n: int, where: str) -> np.ndarray:
        K = self.W.shape[1]
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 1 and K == 1:
            y = y[:, None]
        if y.shape != (n, K):
            raise ValueError(f"Perceptron.{where}: expected y of shape ({n}, {K}), got "
                             f"{y.shape}")
        if not np.all((y == 1) | (y == -1)):
            raise ValueError(f"Perceptron.{where}: labels must be -1 or +1, got "
                             f"{np.unique(y).tolist()}")
        return y

    def forward(self, x) -> np.ndarray:
        """The scores ``x W + b`` (n, output_dim) for a batch ``x`` (n, input_dim); the
        perceptron's answer is their sign (``np.sign(model.forward(x))``: -1, +1, or 0
        exactly on the hyperplane, which no label equals, so it counts as a mistake).
        Remembers ``x`` for :meth:`backward`."""
        self._seed_weights("forward")
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.W.shape[0]:
            raise ValueError(f"Perceptron.forward: expected input (n, {self.W.shape[0]}), "
                             f"got {x.shape}")
        self._x = x
        self._out = x @ self.W + self.b
        return self._out.copy()

    def backward(self, y, learning_rate: float = 1.0) -> int:
        """The perceptron rule on the last :meth:`forward`: for every sample and output
        whose score's sign is not its label ``y`` (±1), that is ``y * score <= 0``,
        ``W += learning_rate * y * x`` and
        ``b += learning_rate * y`` (summed over the batch; on one sample this is
        Rosenblatt's rule exactly). Returns the number of mistakes."""
        if getattr(self, "_out", None) is None:
            raise RuntimeError("Perceptron.backward: call forward(x) first")
        y = self._seed_y(y, len(self._x), "backward")
        err = np.where(y * self._out <= 0, y, 0.0)         # (n, K): y on mistakes, else 0
        if err.any():
            self.W += learning_rate * (self._x.T @ err)
            if self.fit_intercept:
                self.b += learning_rate * err.sum(axis=0)
        self._out = None
        return int(np.count_nonzero(err))

    def train(self, X, y, epochs: int = 100, learning_rate: float = 1.0) -> list[int]:
        """Online training, one sample at a time in order, until an epoch makes no
        mistake (or ``epochs``, with a warning). Returns the mistakes of each epoch."""
        self._seed_weights("train")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.W.shape[0]:
            raise ValueError(f"Perceptron.train: expected X (n, {self.W.shape[0]}), got "
                             f"{X.shape}")
        Y = self._seed_y(y, len(X), "train")
        history = []
        for _ in range(int(epochs)):
            m = 0
            for i in range(len(X)):
                self.forward(X[i:i + 1])
                m += self.backward(Y[i:i + 1], learning_rate)
            history.append(m)
            if m == 0:
                break
        else:
            warnings.warn(f"Perceptron.train did not converge: {history[-1]} mistakes in "
                          f"the last of {epochs} epochs; the data may not be linearly "
                          f"separable (e.g. XOR)", ConvergenceWarning, stacklevel=2)
        return history
