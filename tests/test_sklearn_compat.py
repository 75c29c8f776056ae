"""The estimator API inside scikit-learn: clone, get/set_params, Pipeline, GridSearchCV,
cross_val_score; and importing shendu does not import scikit-learn."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from shendu.data.datasets import iris
from shendu.models import ConvergenceWarning, MLPClassifier, MLPRegressor, Perceptron


@pytest.fixture(autouse=True)
def _quiet():
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


ESTIMATORS = [
    lambda: Perceptron(max_iter=20),
    lambda: MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, learning_rate_init=0.05,
                          random_state=0),
]


@pytest.mark.slow
def test_import_shendu_does_not_import_sklearn_or_torch():
    code = ("import sys, shendu, shendu.models, shendu.train, shendu.data.datasets; "
            "print(sorted(m for m in ('sklearn', 'torch', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_tags_and_params():
    assert is_classifier(Perceptron()) and is_classifier(MLPClassifier())
    assert is_regressor(MLPRegressor())
    p = Perceptron(eta0=0.5, average=True)
    params = p.get_params()
    assert params["eta0"] == 0.5 and params["average"] is True and params["input_dim"] is None
    q = clone(p)
    assert q.get_params() == params and q is not p
    q.set_params(eta0=2.0)
    assert q.eta0 == 2.0 and p.eta0 == 0.5
    with pytest.raises(ValueError, match="invalid parameter 'learning_rate_init'"):
        q.set_params(learning_rate_init=1.0)
    assert repr(p) == "Perceptron(eta0=0.5, average=True)"
    assert "label_smoothing" in MLPClassifier().get_params()
    assert "label_smoothing" not in MLPRegressor().get_params()


@pytest.mark.parametrize("make", ESTIMATORS)
def test_fitted_attributes_and_check_is_fitted(make):
    X, _, y, _ = iris()
    est = make()
    with pytest.raises(Exception, match="not fitted"):
        check_is_fitted(est)
    est.fit(X, y)
    check_is_fitted(est)
    assert est.n_features_in_ == 4
    np.testing.assert_array_equal(est.classes_, [0, 1, 2])


@pytest.mark.parametrize("make", ESTIMATORS)
def test_pipeline_and_cross_val_score(make):
    X, _, y, _ = iris()
    pipe = make_pipeline(StandardScaler(), make())
    pipe.fit(X, y)
    assert pipe.score(X, y) > 0.8
    scores = cross_val_score(make_pipeline(StandardScaler(), make()), X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.7


def test_grid_search_over_perceptron_and_mlp():
    X, _, y, _ = iris()
    gs = GridSearchCV(make_pipeline(StandardScaler(), Perceptron()),
                      {"perceptron__max_iter": [1, 10], "perceptron__average": [False, True]},
                      cv=3)
    gs.fit(X, y)
    assert set(gs.best_params_) == {"perceptron__max_iter", "perceptron__average"}
    assert gs.best_estimator_.score(X, y) > 0.8
    gs = GridSearchCV(MLPClassifier(max_iter=50, learning_rate_init=0.05, random_state=0),
                      {"hidden_layer_sizes": [(4,), (16,)]}, cv=3).fit(X, y)
    assert gs.best_params_["hidden_layer_sizes"] in [(4,), (16,)]
    assert len(gs.cv_results_["mean_test_score"]) == 2


@pytest.mark.slow
def test_regressor_in_grid_search():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 2))
    y = X[:, 0] - 2 * X[:, 1]
    gs = GridSearchCV(MLPRegressor(max_iter=40, batch_size=10, random_state=0,
                                   learning_rate_init=0.01),
                      {"hidden_layer_sizes": [(8,)], "activation": ["tanh", "relu"]}, cv=3)
    gs.fit(X, y)
    assert gs.best_score_ > 0.9  # R², the regressor's score


def test_scores_match_sklearn_metrics():
    from sklearn.metrics import accuracy_score, r2_score

    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 3))
    Y = np.c_[X[:, 0], X[:, 1] * X[:, 2]]
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, Y)
    w = rng.uniform(size=60)
    assert reg.score(X, Y) == pytest.approx(r2_score(Y, reg.predict(X)), rel=1e-12)
    assert reg.score(X, Y, sample_weight=w) == pytest.approx(
        r2_score(Y, reg.predict(X), sample_weight=w), rel=1e-12)
    Xi, _, yi, _ = iris()
    p = Perceptron(max_iter=3).fit(Xi, yi)
    assert p.score(Xi, yi) == accuracy_score(yi, p.predict(Xi))
