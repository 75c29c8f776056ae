"""scikit-learn's own docstring examples for MLPRegressor and MLPClassifier, run with only
the import changed: shendu's score is within one point of scikit-learn's on the same data."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("sklearn")


def _both(name, make, X_tr, y_tr, X_te, y_te):
    import sklearn.neural_network as skn

    import shendu.models as sm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = make(getattr(sm, name)).fit(X_tr, y_tr).score(X_te, y_te)
        theirs = make(getattr(skn, name)).fit(X_tr, y_tr).score(X_te, y_te)
    return ours, theirs


def test_mlp_regressor_docstring_example():
    from sklearn.datasets import make_regression
    from sklearn.model_selection import train_test_split

    X, y = make_regression(n_samples=200, n_features=20, random_state=1)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=1)
    ours, theirs = _both("MLPRegressor",
                         lambda cls: cls(random_state=1, max_iter=2000, tol=0.1),
                         X_train, y_train, X_test, y_test)
    assert theirs > 0.95 and abs(ours - theirs) <= 0.01, (ours, theirs)


def test_mlp_classifier_docstring_example():
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    X, y = make_classification(n_samples=100, random_state=1)
    X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=1)
    ours, theirs = _both("MLPClassifier", lambda cls: cls(random_state=1, max_iter=300),
                         X_train, y_train, X_test, y_test)
    assert abs(ours - theirs) <= 0.01 + 1e-12, (ours, theirs)
