"""MLPClassifier / MLPRegressor: XOR, digits, regression, torch-identical training steps,
early stopping, partial_fit, seeding, clear errors."""

import warnings

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

import shendu
from shendu.data.datasets import digits, xor
from shendu.models import ConvergenceWarning, MLPClassifier, MLPRegressor, NotFittedError
from shendu.models.mlp import make_mlp


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):  # small matmuls: threads only add contention
        yield


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def test_xor_one_hidden_layer_100_percent():
    X, _, y, _ = xor()
    clf = _fit(MLPClassifier(hidden_layer_sizes=(8,), activation="tanh", learning_rate_init=0.05,
                             batch_size=4, max_iter=300, standardize=False, random_state=0), X, y)
    assert clf.score(X, y) == 1.0
    np.testing.assert_array_equal(clf.predict(X), [0, 1, 1, 0])
    assert len(clf.model_) == 3  # Linear, Tanh, Linear: one hidden layer


@pytest.mark.slow
def test_digits_above_975():
    X, X_test, y, y_test = digits()
    clf = _fit(MLPClassifier(hidden_layer_sizes=(256,), batch_size=64, max_iter=60,
                             label_smoothing=0.1, random_state=0), X, y)
    acc = clf.score(X_test, y_test)
    assert acc >= 0.975, acc
    assert clf.n_iter_ <= 60


def test_same_steps_as_torch():
    """Full-batch SGD with Nesterov momentum and scikit-learn's L2 penalty
    ``alpha / 2 * sum ||W||^2 / n`` on the weight matrices: after 5 epochs the weights equal
    torch's (float64)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    y = rng.integers(0, 3, 40)
    clf = MLPClassifier(hidden_layer_sizes=(7, 6), activation="tanh", solver="sgd",
                        learning_rate_init=0.1, momentum=0.9, alpha=0.01, batch_size=40,
                        max_iter=5, dtype="float64", random_state=3)
    _fit(clf, X, y)
    shendu.manual_seed(3)
    init = make_mlp([5, 7, 6, 3], "tanh", dtype="float64").state_dict()
    t = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 6),
                            torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    t.load_state_dict({k: torch.tensor(v) for k, v in init.items()})
    opt = torch.optim.SGD(t.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    for _ in range(5):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(t(torch.tensor(X)), torch.tensor(y))
        loss = loss + 0.5 * 0.01 * sum((m.weight ** 2).sum() for m in t[::2]) / len(X)
        loss.backward()
        opt.step()
    for k, v in t.state_dict().items():
        np.testing.assert_allclose(clf.model_.state_dict()[k], v.numpy(), rtol=1e-10,
                                   atol=1e-12)
    # scikit-learn's layout of the same weights
    np.testing.assert_array_equal(clf.coefs_[0], clf.model_[0].weight.data.T)
    assert clf.n_layers_ == 4 and clf.n_outputs_ == 3 and clf.out_activation_ == "softmax"
    assert clf.t_ == 5 * len(X) and clf.loss_ == clf.loss_curve_[-1]


def test_regressor_fits_a_smooth_function():
    X = np.linspace(-3, 3, 300)[:, None]
    y = np.sin(X[:, 0]) + 0.5 * X[:, 0]
    reg = _fit(MLPRegressor(hidden_layer_sizes=(32,), activation="tanh", learning_rate_init=0.01,
                            batch_size=32, max_iter=150, random_state=0), X, y)
    assert reg.predict(X).shape == (300,)
    assert reg.score(X, y) > 0.99
    Y2 = np.c_[y, -y]
    reg2 = _fit(MLPRegressor(hidden_layer_sizes=(16,), max_iter=3, random_state=0), X, Y2)
    assert reg2.predict(X).shape == (300, 2)


def test_predict_proba_labels_and_dtype():
    X, _, y, _ = digits(test_size=0.5)
    names = np.array(list("abcdefghij"))[y]
    clf = _fit(MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, dtype="float64",
                             random_state=0), X, names)
    P = clf.predict_proba(X)
    assert P.shape == (len(X), 10) and np.allclose(P.sum(1), 1)
    np.testing.assert_array_equal(clf.classes_, list("abcdefghij"))
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[P.argmax(1)])
    assert clf.model_[0].weight.dtype == np.float64
    np.testing.assert_allclose(clf.predict_log_proba(X[:3]), np.log(P[:3]))


def test_seeded_fits_are_identical_and_leave_global_generator_alone():
    X, _, y, _ = digits(test_size=0.5)
    shendu.manual_seed(11)
    expected_next = shendu.backend.rng().random()
    shendu.manual_seed(11)
    a = _fit(MLPClassifier(hidden_layer_sizes=(16,), max_iter=4, random_state=1), X, y)
    assert shendu.backend.rng().random() == expected_next
    b = _fit(MLPClassifier(hidden_layer_sizes=(16,), max_iter=4, random_state=1), X, y)
    assert a.loss_curve_ == b.loss_curve_
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_stopping_rules():
    X, _, y, _ = digits(test_size=0.5)
    # training loss stops improving by tol -> stops before the epoch budget, no warning
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=500, tol=0.05, n_iter_no_change=2,
                        random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.fit(X, y)
    assert clf.n_iter_ < 500
    # early stopping (scikit-learn's rule: validation accuracy not up by tol for more than
    # n_iter_no_change epochs) keeps the best validation epoch
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, learning_rate_init=0.01,
                        early_stopping=True, n_iter_no_change=3, random_state=0).fit(X, y)
    vs = clf.validation_scores_
    assert clf.n_iter_ < 200 and clf.best_validation_score_ == max(vs)
    assert clf.best_loss_ is None and len(vs) == clf.n_iter_
    assert np.argmax(vs) <= clf.n_iter_ - 1 - 4
    # budget reached while improving -> warns
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0).fit(X, y)


def test_partial_fit_and_warm_start():
    X, _, y, _ = digits(test_size=0.5)
    clf = MLPClassifier(hidden_layer_sizes=(16,), random_state=0)
    with pytest.raises(ValueError, match="classes="):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:100], y[:100], classes=np.arange(10))
    s1 = clf.score(X, y)
    for _ in range(5):
        clf.partial_fit(X, y)
    assert clf.n_iter_ == 6 and len(clf.loss_curve_) == 6
    assert clf.score(X, y) > s1
    warm = _fit(MLPClassifier(hidden_layer_sizes=(16,), max_iter=2, warm_start=True,
                              random_state=0), X, y)
    w0 = warm.model_[0].weight.data.copy()
    _fit(warm, X, y)
    assert not np.array_equal(w0, warm.model_[0].weight.data)
    assert warm.model_[0].weight.data.shape == w0.shape


def test_clear_errors():
    X, _, y, _ = digits(test_size=0.5)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=1)
    with pytest.raises(NotFittedError, match="MLPClassifier instance is not fitted yet"):
        clf.predict(X)
    Xn = X.copy()
    Xn[5, 7] = np.inf
    with pytest.raises(ValueError, match=r"MLPClassifier.fit: Input X contains infinity or a value "
                                         r"too large \(first at index \(5, 7\)\)"):
        clf.fit(Xn, y)
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[899, 898\]"):
        clf.fit(X, y[1:])
    with pytest.raises(ValueError, match="1 class"):
        clf.fit(X, np.full(len(X), 3))
    _fit(clf, X, y)
    with pytest.raises(ValueError, match="X has 63 features, but MLPClassifier is expecting "
                                         "64 features"):
        clf.predict(X[:, 1:])
    with pytest.raises(ValueError, match="solver must be 'adam', 'sgd' or 'lbfgs'"):
        MLPClassifier(solver="newton").fit(X, y)
    with pytest.raises(ValueError, match="activation must be one of"):
        MLPRegressor(activation="swish").fit(X, y)
    with pytest.raises(ValueError, match="MLPRegressor.fit: Input y contains NaN"):
        MLPRegressor().fit(X, np.full(len(X), np.nan))


def test_partial_fit_draws_a_fresh_shuffle_each_call():
    """An int random_state seeds the first call; later calls continue the same stream
    instead of replaying the first call's shuffle and dropout."""
    X = np.random.default_rng(0).normal(size=(64, 4))
    y = (X[:, 0] > 0).astype(int)

    def run(replay: bool):
        m = MLPClassifier(hidden_layer_sizes=(8,), random_state=0, batch_size=8)
        m.partial_fit(X, y, classes=[0, 1])
        first_state = m.rng_state_
        if replay:
            del m.rng_state_  # what re-seeding on every call would do
        m.partial_fit(X, y)
        assert m.rng_state_ != first_state
        return [p.data.copy() for p in m.model_.parameters()]

    a, b, again = run(False), run(True), run(False)
    assert all(np.array_equal(p, q) for p, q in zip(a, again))  # still repeatable
    assert not all(np.array_equal(p, q) for p, q in zip(a, b))
