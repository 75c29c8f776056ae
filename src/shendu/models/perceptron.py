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
case (Minsky & Papert 1969) — it never does, and training stops at ``max_epochs`` with a
:class:`~shendu.models.ConvergenceWarning`.

More than two classes are learnt one-vs-rest: one weight vector per class, the class's
samples labelled +1 and all others -1, and the prediction is the class of highest score.
The ``K`` binary perceptrons never interact, so they are trained side by side on the
same pass over the data, each stopping on its own.

**Same numbers as scikit-learn.** ``sklearn.linear_model.Perceptron`` is stochastic
gradient descent on the loss ``max(0, -y s)`` with a constant step ``eta0``, whose
subgradient step is exactly the rule above (it treats ``y s <= 0`` as a mistake too), one
binary problem per class with the class ``classes_[i]`` as +1 (for two classes, one
problem with ``classes_[1]`` as +1). With ``shuffle=False``, ``penalty=None``,
``eta0 = lr`` and the same ``fit_intercept``, both produce the same ``coef_`` and
``intercept_`` after the same number of epochs. Its stopping rule is reproduced too:
with ``tol`` set, a binary problem stops after ``n_iter_no_change`` epochs in a row whose
mean loss ``sum max(0, -y s) / n`` is not below the best so far minus ``tol``; with
``tol=None`` (our default) it runs ``max_epochs`` epochs — where ours stops at the first
epoch without a mistake, since the weights cannot change after it.

**Two ways to use the same class.** As an estimator, ``Perceptron(lr=..., max_epochs=...)``
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


class Perceptron(ClassifierMixin, BaseEstimator):
    """Rosenblatt's perceptron (Rosenblatt 1958), binary or one-vs-rest.

    Parameters
    ----------
    input_dim, output_dim : seed-style constructor: allocate zero ``W`` of shape
        (input_dim, output_dim) and ``b`` now, for ``forward``/``backward``/``train``.
        Leave them ``None`` to use the estimator API (``fit`` sizes the weights).
    lr : the step ``lr`` of ``W += lr * y * x`` (scikit-learn's ``eta0``).
    max_epochs : most passes over the data in ``fit`` (scikit-learn's ``max_iter``).
    tol, n_iter_no_change : scikit-learn's optional stopping rule (see the module).
    fit_intercept : learn ``b`` (else it stays 0).
    average : predict with the mean of the weights over every step of training (the
        averaged perceptron of Freund & Schapire 1999), which is far steadier than the
        last weights on data that is not separable; scikit-learn's
        ``SGDClassifier(loss="perceptron", learning_rate="constant", penalty=None,
        average=True)``.
    shuffle, random_state : reshuffle the samples before each epoch, drawing from
        shendu's generator (seeded by ``random_state`` when it is an int).
    warm_start : let ``fit`` start from the current weights instead of zeros.
    verbose : print the mistakes of each epoch.

    Attributes (after ``fit``)
    --------------------------
    classes_, n_features_in_, coef_ (n_classifiers, n_features), intercept_,
    n_iter_ (epochs run), mistakes_ (total mistakes per epoch), mistakes_per_class_
    (epochs, n_classifiers), converged_ (the last epoch made no mistake).
    """

    def __init__(self, input_dim: int | None = None, output_dim: int | None = None, *,
                 lr: float = 1.0, max_epochs: int = 1000, tol: float | None = None,
                 n_iter_no_change: int = 5, fit_intercept: bool = True,
                 average: bool = False, shuffle: bool = False,
                 random_state: int | None = None, warm_start: bool = False,
                 verbose: int = 0) -> None:
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.lr = lr
        self.max_epochs = max_epochs
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.fit_intercept = fit_intercept
        self.average = average
        self.shuffle = shuffle
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        if input_dim is not None or output_dim is not None:
            if not (isinstance(input_dim, (int, np.integer)) and input_dim > 0
                    and isinstance(output_dim, (int, np.integer)) and output_dim > 0):
                raise ValueError(f"Perceptron(input_dim, output_dim) expects two positive "
                                 f"ints, got input_dim={input_dim!r}, output_dim={output_dim!r}")
            self.W = np.zeros((int(input_dim), int(output_dim)))
            self.b = np.zeros(int(output_dim))

    # --------------------------------------------------------------- weights
    @property
    def coef_(self) -> np.ndarray:
        """``W.T``: one row of weights per binary classifier (scikit-learn's layout)."""
        if "W" not in self.__dict__:
            raise AttributeError("Perceptron has no coef_ yet: call fit(X, y) first")
        return self.W.T

    @property
    def intercept_(self) -> np.ndarray:
        if "b" not in self.__dict__:
            raise AttributeError("Perceptron has no intercept_ yet: call fit(X, y) first")
        return self.b

    def _check_hyper(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"Perceptron: lr must be > 0, got {self.lr}")
        if not (isinstance(self.max_epochs, (int, np.integer)) and self.max_epochs >= 1):
            raise ValueError(f"Perceptron: max_epochs must be an int >= 1, got "
                             f"{self.max_epochs!r}")
        if self.tol is not None and self.n_iter_no_change < 1:
            raise ValueError(f"Perceptron: n_iter_no_change must be >= 1, got "
                             f"{self.n_iter_no_change}")

    # ----------------------------------------------------------- the learning
    def _epoch(self, X: np.ndarray, Y: np.ndarray, active: np.ndarray, order,
               st: dict) -> tuple[np.ndarray, np.ndarray]:
        """One pass of the perceptron rule over ``X[order]`` for the binary problems that
        are ``active``; ``Y`` (n, K) holds ±1 and ``st`` the raw weights ``W``, ``b`` (and,
        when averaging, ``U``, ``Ub``: each update times its step number minus one, and
        ``t``: steps taken). Returns mistakes and summed loss ``max(0, -y s)`` per problem."""
        W, b, lr = st["W"], st["b"], float(self.lr)
        fit_b, avg = bool(self.fit_intercept), bool(self.average)
        K = Y.shape[1]
        mistakes = np.zeros(K, np.int64)
        loss = np.zeros(K)
        t = st["t"]
        for pos, i in enumerate(order):
            x, y = X[i], Y[i]
            s = x @ W + b                                  # (K,) scores
            z = y * s
            wrong = (z <= 0) & active
            if not wrong.any():
                continue
            mistakes += wrong
            loss -= np.where(wrong, z, 0.0)
            k = np.flatnonzero(wrong)
            c = lr * y[k]                                  # the step of each wrong problem
            if K == 1:
                W[:, 0] += c[0] * x
            else:
                W[:, k] += np.multiply.outer(x, c)
            if fit_b:
                b[k] += c
            if avg:
                step = t[k] + pos                          # this step's number minus one
                st["U"][:, k] += np.multiply.outer(x, c * step)
                if fit_b:
                    st["Ub"][k] += c * step
        if avg:
            t[active] += len(order)
        return mistakes, loss

    def _start_state(self, n_features: int, K: int, fresh: bool) -> dict:
        """The raw training state: zeros, or where the last fit/partial_fit left it."""
        old = self.__dict__.get("_state")
        if not fresh and old is not None and old["W"].shape == (n_features, K):
            return old
        if not fresh and "W" in self.__dict__ and self.W.shape == (n_features, K):
            W, b = self.W.copy(), self.b.copy()
        else:
            W, b = np.zeros((n_features, K)), np.zeros(K)
        return {"W": W, "b": b, "U": np.zeros_like(W), "Ub": np.zeros_like(b),
                "t": np.zeros(K, np.int64)}

    def _run(self, X: np.ndarray, Y: np.ndarray, epochs: int, st: dict, warn: bool) -> None:
        """Up to ``epochs`` epochs, each binary problem stopping on its own; sets the
        weights used for prediction and the history on ``self``."""
        n, K = Y.shape
        active = np.ones(K, bool)
        best = np.full(K, np.inf)
        no_improve = np.zeros(K, np.int64)
        history, stopped_by_tol = [], np.zeros(K, bool)
        extra = np.zeros(K, np.int64)   # epochs scikit-learn would still run, weights frozen
        for epoch in range(epochs):
            order = backend.rng().permutation(n) if self.shuffle else range(n)
            mistakes, loss = self._epoch(X, Y, active, order, st)
            history.append(mistakes)
            if self.verbose:
                print(f"Perceptron epoch {epoch + 1}: {int(mistakes.sum())} mistakes")
            clean = active & (mistakes == 0)
            if self.tol is not None:
                mean_loss = loss / n
                worse = mean_loss > best - self.tol
                no_improve = np.where(worse, no_improve + 1, 0)
                best = np.minimum(best, mean_loss)
                stopped_by_tol |= active & ~clean & (no_improve >= self.n_iter_no_change)
                more = np.maximum(self.n_iter_no_change - no_improve, 0)
            else:
                more = np.full(K, epochs)
            extra[clean] = np.minimum(more[clean], epochs - epoch - 1)
            active &= ~clean & ~stopped_by_tol
            if not active.any():
                break
        self._state = st
        if self.average:
            # mean of the weights after every step, W_avg = (T W - U) / T, where the steps
            # scikit-learn would still take with frozen weights count too
            T = np.maximum(st["t"] + extra * n, 1)
            self.W = st["W"] - st["U"] / T
            self.b = st["b"] - st["Ub"] / T
        else:
            self.W, self.b = st["W"], st["b"]
        per_class = np.array(history, np.int64).reshape(len(history), K)
        self.mistakes_per_class_ = per_class
        self.mistakes_ = per_class.sum(axis=1)
        self.n_iter_ = len(history)
        self.converged_ = bool(per_class[-1].sum() == 0)
        if warn and active.any():
            warnings.warn(
                f"Perceptron did not converge: {int(per_class[-1].sum())} mistakes in epoch "
                f"{self.n_iter_} of max_epochs={epochs}; the data may not be linearly "
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

    # ----------------------------------------------------------- estimator API
    def fit(self, X, y) -> Perceptron:
        """Learn from ``(X, y)`` from zero weights (or the current ones with
        ``warm_start``) until an epoch makes no mistake, the ``tol`` rule stops it, or
        ``max_epochs`` (then it warns)."""
        self._check_hyper()
        X = self._check_X(X, "fit", reset=True)
        if self.input_dim is not None and X.shape[1] != self.input_dim:
            raise ValueError(f"Perceptron.fit: X has {X.shape[1]} features but the model was "
                             f"built with input_dim={self.input_dim}")
        idx = self._encode_y(y, X, "fit")
        Y = self._targets(idx)
        st = self._start_state(X.shape[1], Y.shape[1], fresh=not self.warm_start)
        with seeded(self.random_state):
            self._run(X, Y, int(self.max_epochs), st, warn=True)
        return self

    def partial_fit(self, X, y, classes=None) -> Perceptron:
        """One epoch over ``(X, y)`` from the current weights. The first call must name
        every class in ``classes``."""
        self._check_hyper()
        first = not hasattr(self, "classes_")
        if first and classes is None:
            raise ValueError("Perceptron.partial_fit: the first call needs classes=, the "
                             "list of all classes y can take")
        X = self._check_X(X, "partial_fit", reset=first)
        idx = self._encode_y(y, X, "partial_fit", classes=classes if first else None)
        Y = self._targets(idx)
        st = self._start_state(X.shape[1], Y.shape[1], fresh=first)
        with seeded(self.random_state):
            self._run(X, Y, 1, st, warn=False)
        return self

    def decision_function(self, X) -> np.ndarray:
        """Scores ``X W + b``: shape (n,) for two classes, (n, n_classes) otherwise."""
        X = self._check_X(X, "decision_function", reset=False)
        s = X @ self.W + self.b
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
        if "W" not in self.__dict__:
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
        """``sign(x W + b)`` for a batch ``x`` (n, input_dim): -1, +1, or 0 exactly on the
        hyperplane (which no label equals, so it counts as a mistake). Remembers ``x``
        for :meth:`backward`."""
        self._seed_weights("forward")
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.W.shape[0]:
            raise ValueError(f"Perceptron.forward: expected input (n, {self.W.shape[0]}), "
                             f"got {x.shape}")
        self._x = x
        self._out = np.sign(x @ self.W + self.b)
        return self._out

    def backward(self, y, learning_rate: float = 1.0) -> int:
        """The perceptron rule on the last :meth:`forward`: for every sample and output
        whose sign is not its label ``y`` (±1), ``W += learning_rate * y * x`` and
        ``b += learning_rate * y`` (summed over the batch; on one sample this is
        Rosenblatt's rule exactly). Returns the number of mistakes."""
        if getattr(self, "_out", None) is None:
            raise RuntimeError("Perceptron.backward: call forward(x) first")
        y = self._seed_y(y, len(self._x), "backward")
        err = np.where(self._out != y, y, 0.0)             # (n, K): y on mistakes, else 0
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
