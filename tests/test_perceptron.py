"""Perceptron: Rosenblatt's rule, identical weights to scikit-learn, convergence on
separable data, the warning on XOR, the seed-style API, and clear errors."""

import warnings

import numpy as np
import pytest
from sklearn.linear_model import Perceptron as SkPerceptron
from sklearn.linear_model import SGDClassifier

from shendu.data.datasets import blobs, digits, iris, xor
from shendu.models import ConvergenceWarning, NotFittedError, Perceptron

DATA = {
    "blobs2": lambda: blobs(n_samples=120, dtype="float64"),
    "blobs4": lambda: blobs(n_samples=120, n_classes=4, n_features=3, dtype="float64"),
    "iris": lambda: iris(dtype="float64"),
    "digits": lambda: digits(dtype="float64"),
}


def _quiet_fit(est, X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y, **kw)


@pytest.mark.parametrize("name", list(DATA))
@pytest.mark.parametrize("epochs,tol,fit_intercept,lr", [
    (1, None, True, 1.0), (7, None, True, 0.5), (7, None, False, 1.0), (30, 1e-3, True, 1.0),
])
def test_same_weights_as_sklearn(name, epochs, tol, fit_intercept, lr):
    if name == "digits" and epochs == 30:
        epochs = 12  # keeps the test fast; the tol rule still fires on iris and blobs
    X, _, y, _ = DATA[name]()
    ours = _quiet_fit(Perceptron(eta0=lr, max_iter=epochs, tol=tol, shuffle=False,
                                 fit_intercept=fit_intercept), X, y)
    sk = _quiet_fit(SkPerceptron(eta0=lr, max_iter=epochs, tol=tol, shuffle=False,
                                 penalty=None, fit_intercept=fit_intercept), X, y)
    # the same sums of the same products: equal to the last bit
    np.testing.assert_array_equal(ours.coef_, sk.coef_)
    np.testing.assert_array_equal(ours.intercept_, sk.intercept_)
    np.testing.assert_array_equal(ours.predict(X), sk.predict(X))
    np.testing.assert_array_equal(ours.classes_, sk.classes_)
    if not ours.converged_:
        # on data it cannot separate, both stop by the same rule at the same epoch
        assert ours.n_iter_ == sk.n_iter_


@pytest.mark.parametrize("name", ["blobs4", "iris", "digits"])
@pytest.mark.parametrize("tol", [None, 1e-3])
def test_averaged_same_as_sklearn_sgd(name, tol):
    X, _, y, _ = DATA[name]()
    ours = _quiet_fit(Perceptron(max_iter=8, tol=tol, shuffle=False, average=True), X, y)
    sk = _quiet_fit(SGDClassifier(loss="perceptron", learning_rate="constant", eta0=1.0,
                                  penalty=None, average=True, shuffle=False, max_iter=8,
                                  tol=tol), X, y)
    # scikit-learn keeps a running mean, we keep W - U/T: equal up to rounding
    scale = np.abs(sk.coef_).max()
    np.testing.assert_allclose(ours.coef_, sk.coef_, rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(ours.intercept_, sk.intercept_, rtol=1e-12,
                               atol=1e-12 * np.abs(sk.intercept_).max())


@pytest.mark.parametrize("name", ["blobs2", "iris", "digits"])
@pytest.mark.parametrize("kw", [
    dict(penalty="l2", alpha=1e-3), dict(penalty="l1", alpha=1e-3),
    dict(penalty="elasticnet", alpha=1e-3, l1_ratio=0.3), dict(class_weight="balanced"),
    dict(class_weight={1: 3.0}), dict(sample_weight=True), dict(tol=None, max_iter=4),
])
@pytest.mark.slow
def test_penalties_and_weights_same_as_sklearn(name, kw):
    X, _, y, _ = DATA[name]()
    kw = dict(kw)
    fit_kw = {}
    if kw.pop("sample_weight", False):
        # in (0, 1] a sample weight scales the one step, as scikit-learn's does
        fit_kw["sample_weight"] = np.random.default_rng(0).uniform(0.2, 1.0, len(X))
    kw.setdefault("max_iter", 6)
    ours = _quiet_fit(Perceptron(shuffle=False, **kw), X, y, **fit_kw)
    sk = SkPerceptron(shuffle=False, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X, y, **fit_kw)
    scale = max(np.abs(sk.coef_).max(), 1.0)
    np.testing.assert_allclose(ours.coef_, sk.coef_, rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(ours.intercept_, sk.intercept_, rtol=1e-9, atol=1e-9 * scale)
    assert ours.n_iter_ == sk.n_iter_ or (ours.converged_ and kw.get("penalty") is None)


def test_sklearn_defaults_and_deprecated_names():
    sk = SkPerceptron().get_params()
    ours = Perceptron().get_params()
    for k, v in sk.items():
        assert ours[k] == v, k
    X, _, y, _ = iris(dtype="float64")
    with pytest.warns(FutureWarning, match="max_epochs=.*deprecated.*max_iter"):
        old = Perceptron(max_epochs=3, tol=None, shuffle=False).fit(X, y)
    new = _quiet_fit(Perceptron(max_iter=3, tol=None, shuffle=False), X, y)
    np.testing.assert_array_equal(old.coef_, new.coef_)
    with pytest.warns(FutureWarning, match="lr=.*eta0"):
        Perceptron(lr=0.5, max_iter=2).fit(X, y)


def test_converges_on_separable_blobs_and_reports_it():
    for n_classes in (2, 5):
        X, X_test, y, y_test = blobs(n_samples=200, n_classes=n_classes)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no ConvergenceWarning allowed
            p = Perceptron().fit(X, y)
        assert p.converged_ and p.mistakes_[-1] == 0
        assert p.n_iter_ < 1000 and p.mistakes_[0] > 0
        assert p.score(X, y) == 1.0
        assert p.score(X_test, y_test) == 1.0


def test_xor_does_not_converge_and_warns():
    X, _, y, _ = xor()
    with pytest.warns(ConvergenceWarning, match="did not converge.*linearly separable"):
        p = Perceptron(max_iter=50, tol=None).fit(X, y)
    assert not p.converged_ and p.n_iter_ == 50
    assert np.all(p.mistakes_ > 0)
    assert p.score(X, y) < 1.0  # no line puts (0,0),(1,1) on one side and (0,1),(1,0) on the other


def test_first_mistake_rule_by_hand():
    # classes_ = [0, 1]: label 1 is +1. Sample 0 meets zero weights, score exactly 0: a
    # mistake, so W += (1, 2), b += 1. Sample 1 then scores -5 + 1 < 0: right. Epoch 2 is clean.
    X = np.array([[1.0, 2.0], [-1.0, -2.0]])
    p = Perceptron(max_iter=5, shuffle=False).fit(X, np.array([1, 0]))
    np.testing.assert_array_equal(p.coef_, [[1.0, 2.0]])
    np.testing.assert_array_equal(p.intercept_, [1.0])
    np.testing.assert_array_equal(p.mistakes_, [1, 0])


def test_digits_accuracy():
    X, X_test, y, y_test = digits()
    with pytest.warns(ConvergenceWarning):  # ten digits are not linearly separable here
        p = Perceptron(max_iter=20, tol=None, shuffle=False, average=True).fit(X, y)
    assert p.score(X_test, y_test) >= 0.93


def test_shuffle_is_seeded():
    X, _, y, _ = iris()
    a = _quiet_fit(Perceptron(max_iter=5, tol=None, random_state=3), X, y)
    b = _quiet_fit(Perceptron(max_iter=5, tol=None, random_state=3), X, y)
    c = _quiet_fit(Perceptron(max_iter=5, tol=None, random_state=4), X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert not np.array_equal(a.coef_, c.coef_)


WEIGHT_OPTIONS = [dict(), dict(average=True), dict(penalty="l2", alpha=1e-3),
                  dict(penalty="elasticnet", alpha=1e-3, average=True),
                  dict(class_weight="balanced"), dict(tol=None, fit_intercept=False)]


@pytest.mark.parametrize("kw", WEIGHT_OPTIONS, ids=lambda kw: "-".join(map(str, kw.values())))
def test_whole_sample_weights_are_repetitions(kw):
    """A weight k trains as k copies of the sample (0 as no sample), whatever the order
    of the rows: the shuffle orders samples by a seeded hash of their contents."""
    X, _, y, _ = iris(dtype="float64")
    rng = np.random.default_rng(1)
    sw = rng.integers(0, 4, len(X))
    perm = rng.permutation(len(X))
    weighted = _quiet_fit(Perceptron(max_iter=8, **kw), X[perm], y[perm],
                          sample_weight=sw[perm])
    repeated = _quiet_fit(Perceptron(max_iter=8, **kw), X.repeat(sw, axis=0), y.repeat(sw))
    np.testing.assert_array_equal(weighted.coef_, repeated.coef_)
    np.testing.assert_array_equal(weighted.intercept_, repeated.intercept_)
    assert weighted.n_iter_ == repeated.n_iter_ and weighted.t_ == repeated.t_
    np.testing.assert_array_equal(weighted.mistakes_, repeated.mistakes_)
    ones = _quiet_fit(Perceptron(max_iter=8, **kw), X, y, sample_weight=np.ones(len(X)))
    plain = _quiet_fit(Perceptron(max_iter=8, **kw), X, y)
    np.testing.assert_array_equal(ones.coef_, plain.coef_)
    assert not np.array_equal(weighted.coef_, plain.coef_)


def test_fractional_weight_is_whole_copies_then_a_scaled_step():
    X, _, y, _ = iris(dtype="float64")
    sw = np.where(np.arange(len(X)) % 3 == 0, 2.5, 1.0)
    weighted = _quiet_fit(Perceptron(max_iter=6, average=True), X, y, sample_weight=sw)
    reps = np.where(sw == 2.5, 3, 1)
    rows = np.repeat(np.arange(len(X)), reps)
    first = np.r_[True, rows[1:] != rows[:-1]]
    tail = np.r_[rows[1:] != rows[:-1], True]
    split = np.where(tail & ~first, 0.5, 1.0)             # the copies: 1, 1, then 0.5
    copies = _quiet_fit(Perceptron(max_iter=6, average=True), X[rows], y[rows],
                        sample_weight=split)
    np.testing.assert_array_equal(weighted.coef_, copies.coef_)
    np.testing.assert_array_equal(weighted.intercept_, copies.intercept_)


def test_shuffled_fit_does_not_depend_on_row_order():
    X, _, y, _ = digits(dtype="float64")
    perm = np.random.default_rng(2).permutation(len(X))
    a = _quiet_fit(Perceptron(max_iter=4), X, y)
    b = _quiet_fit(Perceptron(max_iter=4), X[perm], y[perm])
    np.testing.assert_array_equal(a.coef_, b.coef_)
    c = _quiet_fit(Perceptron(max_iter=4, shuffle=False), X[perm], y[perm])
    assert not np.array_equal(a.coef_, c.coef_)


def test_partial_fit_equals_fit_epoch_by_epoch():
    X, _, y, _ = iris(dtype="float64")
    full = _quiet_fit(Perceptron(max_iter=3, tol=None), X, y)
    inc = Perceptron()
    inc.partial_fit(X, y, classes=[0, 1, 2])
    inc.partial_fit(X, y)
    inc.partial_fit(X, y)
    np.testing.assert_array_equal(inc.coef_, full.coef_)
    np.testing.assert_array_equal(inc.intercept_, full.intercept_)
    with pytest.raises(ValueError, match="classes="):
        Perceptron().partial_fit(X, y)


# ---------------------------------------------------------------- the seed's API
def test_seed_api_matches_estimator():
    X, _, y, _ = blobs(n_samples=60, dtype="float64")
    seed = Perceptron(2, 1)
    assert seed.W.shape == (2, 1) and np.all(seed.W == 0)
    history = seed.train(X, np.where(y == 1, 1, -1), epochs=100, learning_rate=1.0)
    assert history[-1] == 0 and all(h > 0 for h in history[:-1])
    est = Perceptron(shuffle=False).fit(X, y)
    np.testing.assert_array_equal(seed.W, est.W)
    np.testing.assert_array_equal(seed.b, est.b)
    out = seed.forward(X)
    assert out.shape == (len(X), 1)
    np.testing.assert_allclose(out, X @ seed.W + seed.b)        # scores, not signs
    np.testing.assert_array_equal(np.sign(out[:, 0]), np.where(y == 1, 1.0, -1.0))


def test_seed_backward_is_the_rule():
    p = Perceptron(3, 2)
    x = np.array([[1.0, -2.0, 0.5]])
    out = p.forward(x)
    np.testing.assert_array_equal(out, [[0.0, 0.0]])  # zero score: on the hyperplane
    n = p.backward(np.array([[1, -1]]), learning_rate=0.1)
    assert n == 2
    np.testing.assert_allclose(p.W, 0.1 * np.outer(x[0], [1, -1]))
    np.testing.assert_allclose(p.b, [0.1, -0.1])
    p.forward(x)
    assert p.backward(np.array([[1, -1]]), 0.1) == 0  # both right now: no change


def test_seed_xor_warns():
    X, _, y, _ = xor()
    with pytest.warns(ConvergenceWarning):
        hist = Perceptron(2, 1).train(X, 2 * y - 1, epochs=20, learning_rate=1.0)
    assert len(hist) == 20 and min(hist) > 0


# ---------------------------------------------------------------------- errors
def test_clear_errors():
    X, _, y, _ = iris()
    p = Perceptron(max_iter=5)
    with pytest.raises(NotFittedError, match="not fitted yet.*predict"):
        p.predict(X)
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"Perceptron.fit: Input X contains NaN \(first at index "
                                         r"\(3, 2\)\)"):
        p.fit(Xn, y)
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[120, 119\]"):
        p.fit(X, y[:-1])
    with pytest.raises(ValueError, match="1 class"):
        p.fit(X, np.zeros(len(X)))
    _quiet_fit(p, X, y)
    with pytest.raises(ValueError, match="X has 3 features, but Perceptron is expecting 4"):
        p.predict(X[:, :3])
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array.*Reshape your data"):
        p.predict(X[0])
    with pytest.raises(ValueError, match="eta0 must be > 0"):
        Perceptron(eta0=0).fit(X, y)
    with pytest.raises(ValueError, match="two positive ints"):
        Perceptron(3).fit(X, y)
    with pytest.raises(ValueError, match="labels must be -1 or \\+1"):
        Perceptron(4, 1).train(X, y, epochs=1)
    with pytest.raises(RuntimeError, match="no weights yet"):
        Perceptron().forward(X)
    with pytest.raises(ValueError, match="expected input \\(n, 2\\)"):
        Perceptron(2, 1).forward(X)
