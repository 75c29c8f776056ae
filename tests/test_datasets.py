"""Built-in data sets: shapes, dtypes, seeded stratified splits, separability of blobs."""

import numpy as np
import pytest

import shendu
from shendu.data.datasets import Split, blobs, digits, iris, stratified_split, xor


def test_xor_is_the_four_corners():
    X_train, X_test, y_train, y_test = xor()
    np.testing.assert_array_equal(X_train, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(y_train, [0, 1, 1, 0])
    assert X_train.dtype == np.float32 and y_train.dtype == np.int64
    assert X_test.shape == (0, 2) and y_test.shape == (0,)


def test_xor_noisy_labels_follow_the_corner():
    X_train, X_test, y_train, y_test = xor(n_samples=400, noise=0.1, test_size=0.25,
                                           dtype="float64")
    assert X_train.shape == (300, 2) and X_test.shape == (100, 2)
    assert X_train.dtype == np.float64
    X, y = np.concatenate([X_train, X_test]), np.concatenate([y_train, y_test])
    corner = (X > 0.5).astype(int)
    # with noise 0.1 a point crosses the 0.5 line with probability ~3e-7
    np.testing.assert_array_equal(y, corner[:, 0] ^ corner[:, 1])


@pytest.mark.parametrize("n_classes,n_features", [(2, 1), (2, 2), (3, 2), (5, 3), (10, 4)])
def test_blobs_are_one_vs_rest_separable(n_classes, n_features):
    X_train, X_test, y_train, y_test = blobs(n_samples=300, n_features=n_features,
                                             n_classes=n_classes, dtype="float64")
    X, y = np.concatenate([X_train, X_test]), np.concatenate([y_train, y_test])
    assert X.shape == (300, n_features)
    assert set(np.unique(y)) == set(range(n_classes))
    # the separating hyperplane of the docstring: project on the class centre direction
    for k in range(n_classes):
        if n_features == 1:
            u = np.array([1.0 if k == 0 else -1.0])
        else:
            a = 2 * np.pi * k / n_classes
            u = np.zeros(n_features)
            u[:2] = np.cos(a), np.sin(a)
        proj = X @ u
        assert proj[y == k].min() > proj[y != k].max(), f"class {k} not separable"


def test_splits_are_stratified_seeded_and_independent_of_global_seed():
    a = digits(random_state=0)
    shendu.manual_seed(123)
    np.random.seed(5)
    b = digits(random_state=0)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    c = digits(random_state=1)
    assert not np.array_equal(a.y_test, c.y_test)
    assert isinstance(a, Split)
    assert a.X_train.shape == (1438, 64) and a.X_test.shape == (359, 64)
    assert a.X_train.dtype == np.float32 and 0.0 <= a.X_train.min() and a.X_train.max() <= 1.0
    n_tr, n_te = np.bincount(a.y_train), np.bincount(a.y_test)
    total = n_tr + n_te
    # each class has its share of the test set, within one sample
    assert np.all(np.abs(n_te - 0.2 * total) <= 1)
    # train and test together are the whole data set, each image exactly once
    from sklearn.datasets import load_digits
    full = (load_digits().data / 16.0).astype(np.float32)
    both = np.concatenate([a.X_train, a.X_test])
    key = lambda M: M[np.lexsort(M.T[::-1])]
    np.testing.assert_array_equal(key(both), key(full))


def test_iris_split():
    X_train, X_test, y_train, y_test = iris()
    assert X_train.shape == (120, 4) and X_test.shape == (30, 4)
    np.testing.assert_array_equal(np.bincount(y_test), [10, 10, 10])


def test_digits_unscaled_are_pixel_counts():
    X_train, *_ = digits(scale=False, dtype="float64")
    assert X_train.max() == 16.0 and np.all(X_train == np.round(X_train))


def test_stratified_split_largest_remainder():
    y = np.array([0] * 7 + [1] * 3)
    X = np.arange(10)[:, None]
    s = stratified_split(X, y, test_size=0.3, random_state=0)
    assert len(s.y_test) == 3
    np.testing.assert_array_equal(np.sort(s.y_test), [0, 0, 1])
    assert sorted(np.concatenate([s.X_train, s.X_test])[:, 0]) == list(range(10))
    # every row keeps its label
    for Xp, yp in ((s.X_train, s.y_train), (s.X_test, s.y_test)):
        np.testing.assert_array_equal(y[Xp[:, 0]], yp)


@pytest.mark.parametrize("call,msg", [
    (lambda: blobs(spread=1.0), "spread"),
    (lambda: blobs(n_classes=3, n_features=1), "n_features"),
    (lambda: xor(n_samples=3), "n_samples"),
    (lambda: digits(test_size=1.5), "test_size"),
    (lambda: stratified_split(np.zeros((3, 1)), np.zeros(2)), "3 samples but y has 2"),
])
def test_bad_arguments(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()


def test_sequence_data_sets_reachable_from_datasets():
    from shendu.data import datasets, sequences

    assert datasets.adding_problem is sequences.adding_problem
    assert datasets.sequential_digits is sequences.sequential_digits
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        datasets.nope  # noqa: B018
