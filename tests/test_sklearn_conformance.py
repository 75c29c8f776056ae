"""scikit-learn's own conformance suite (``parametrize_with_checks``) on the ready models, and
a test for each defect of issue #16."""

import warnings
from functools import partial

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.exceptions import NotFittedError as SkNotFittedError  # noqa: E402
from sklearn.utils import get_tags  # noqa: E402
from sklearn.utils.estimator_checks import (  # noqa: E402
    check_do_not_raise_errors_in_init_or_set_params,
    check_estimator_cloneable,
    check_estimator_repr,
    check_estimator_tags_renamed,
    check_get_params_invariance,
    check_mixin_order,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
    check_valid_tag_types,
    parametrize_with_checks,
)
from threadpoolctl import threadpool_limits  # noqa: E402

from shendu.models import (  # noqa: E402
    AttentionMechanism,
    AudioClassifier,
    CharLM,
    CharTransformerLM,
    ConvergenceWarning,
    ConvolutionalNeuralNetwork,
    GatedRecurrentUnit,
    LongShortTermMemory,
    MLPClassifier,
    MLPRegressor,
    MultiLayerPerceptron,
    NeuralNetwork,
    NotFittedError,
    Perceptron,
    RecurrentNeuralNetwork,
    TransformerClassifier,
)

# Small, fast settings: the whole suite runs ~60 checks per estimator.
TABULAR = [
    Perceptron(max_iter=20),
    MLPClassifier(hidden_layer_sizes=(8,), max_iter=100, learning_rate_init=0.01),
    MLPRegressor(hidden_layer_sizes=(8,), max_iter=100, learning_rate_init=0.01),
    NeuralNetwork(max_iter=200),                  # the default 100 units and step 0.01
    MultiLayerPerceptron(hidden_dim=(8, 8), max_iter=200),
    AudioClassifier(max_iter=2, channels=(8,), batch_size=16),   # rows are recordings
]

_LENGTH = ("a recording's length is not a number of features: recordings of any length are "
           "valid input, so there is no n_features_in_ and no length to refuse")
EXPECTED_FAILURES: dict[str, dict[str, str]] = {"AudioClassifier": {
    "check_n_features_in": _LENGTH,
    "check_n_features_in_after_fitting": _LENGTH,
    "check_classifiers_train": "predict(X.T) must raise, but the transposed rows are valid "
                               "recordings (and 2-5-sample rows hold no spectrum to learn)",
}}


def _expected(est):
    return EXPECTED_FAILURES.get(type(est).__name__, {})


@pytest.fixture(autouse=True)
def _one_thread():
    with threadpool_limits(1):
        yield


@pytest.mark.slow
@parametrize_with_checks(TABULAR, expected_failed_checks=_expected)
def test_sklearn_check_estimator(estimator, check):
    check(estimator)


# Sequence, image and token models declare input_tags.two_d_array=False, so scikit-learn's
# suite has no tabular data it may feed them (it skips them with a SkipTestWarning); the
# checks that need no data still apply.
NON_TABULAR = [RecurrentNeuralNetwork(), LongShortTermMemory(), GatedRecurrentUnit(),
               TransformerClassifier(), ConvolutionalNeuralNetwork(), AttentionMechanism()]
DATA_FREE = [check_estimator_cloneable, check_estimator_tags_renamed, check_valid_tag_types,
             check_estimator_repr, check_no_attributes_set_in_init, check_get_params_invariance,
             check_set_params, check_parameters_default_constructible,
             check_do_not_raise_errors_in_init_or_set_params, check_mixin_order]


@parametrize_with_checks(NON_TABULAR + [
    CharLM("abcdef", hidden_size=8, num_layers=1, embedding_dim=4),
    CharTransformerLM(7, d_model=8, nhead=2, num_layers=1, dim_feedforward=8, block_size=8)])
def test_sklearn_suite_on_non_tabular_models(estimator, check):
    """What scikit-learn's own suite runs on them (cloning; it has no data for the rest)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check(estimator)


@pytest.mark.parametrize("est", NON_TABULAR, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("check", DATA_FREE, ids=lambda c: c.__name__)
def test_data_free_checks_on_non_tabular_models(est, check):
    check(type(est).__name__, est)


@pytest.mark.parametrize("est", NON_TABULAR, ids=lambda e: type(e).__name__)
def test_tags_say_what_the_input_is(est):
    tags = get_tags(est)
    assert tags.input_tags.two_d_array is False
    assert tags.target_tags.required
    if not isinstance(est, AttentionMechanism):
        assert tags.input_tags.three_d_array
        assert tags.estimator_type == "classifier"


def _contract_data(est):
    rng = np.random.default_rng(0)
    if isinstance(est, AttentionMechanism):
        X = rng.integers(0, 5, (16, 4))
        return X, X[:, ::-1]
    if isinstance(est, ConvolutionalNeuralNetwork):
        X = rng.normal(size=(16, 1, 6, 6))
        return X, (X[:, 0, 0, 0] > 0).astype(int)
    X = _seq(16)
    return X, (X[:, -1, 0] > 0).astype(int)


CONTRACT = [RecurrentNeuralNetwork(hidden_size=4, max_iter=2, batch_size=8, random_state=0),
            LongShortTermMemory(hidden_size=4, max_iter=2, batch_size=8, random_state=0),
            GatedRecurrentUnit(hidden_size=4, max_iter=2, batch_size=8, random_state=0),
            TransformerClassifier(d_model=8, nhead=2, num_layers=1, dim_feedforward=8,
                                  max_iter=2, batch_size=8, random_state=0),
            ConvolutionalNeuralNetwork(conv_channels=(2,), kernel_size=3, hidden_layer_sizes=(4,),
                                       max_iter=2, batch_size=8, random_state=0),
            AttentionMechanism(hidden_size=4, embed_dim=4, max_iter=2, batch_size=8,
                               random_state=0)]


@pytest.mark.parametrize("est", CONTRACT, ids=lambda e: type(e).__name__)
def test_api_contract_on_non_tabular_models(est):
    """scikit-learn's API checks that need data, on each model's own kind of data: fit
    returns self and leaves the parameters alone, sets only attributes ending in ``_``,
    predicting changes nothing, read-only input is fine, and refitting with the same
    random_state gives the same model."""
    from sklearn.base import clone

    X, y = _contract_data(est)
    X.setflags(write=False)
    est = clone(est)
    params = est.get_params()
    public = {k for k in vars(est) if not k.startswith("_")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert est.fit(X, y) is est
    assert est.get_params() == params
    new = {k for k in vars(est) if not k.startswith("_")} - public
    assert new and all(k.endswith("_") for k in new), sorted(new)
    before = dict(vars(est))
    first = est.predict(X)
    assert set(vars(est)) == set(before)
    assert all(vars(est)[k] is v for k, v in before.items())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        again = clone(est).fit(X, y).predict(X)
    np.testing.assert_array_equal(np.asarray(first, dtype=object),
                                  np.asarray(again, dtype=object))


# ------------------------------------------------------------------- the defects
def _seq(n=12):
    return np.random.default_rng(0).normal(size=(n, 4, 2)).astype(np.float32)


CLASSIFIERS = [
    (lambda: Perceptron(max_iter=5), lambda: np.random.default_rng(0).normal(size=(30, 3))),
    (lambda: MLPClassifier(max_iter=2), lambda: np.random.default_rng(0).normal(size=(30, 3))),
    (lambda: RecurrentNeuralNetwork(max_iter=1), _seq),
    (lambda: LongShortTermMemory(max_iter=1), _seq),
    (lambda: GatedRecurrentUnit(max_iter=1), _seq),
    (lambda: TransformerClassifier(max_iter=1), _seq),
    (lambda: ConvolutionalNeuralNetwork(max_iter=1),
     lambda: np.random.default_rng(0).normal(size=(12, 1, 6, 6))),
]


@pytest.mark.parametrize("make,data", CLASSIFIERS)
def test_classifier_refuses_continuous_y(make, data):
    X = data()
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        make().fit(X, np.random.default_rng(1).random(len(X)))


@pytest.mark.parametrize("make,data", CLASSIFIERS)
def test_predict_before_fit_is_sklearns_not_fitted_error(make, data):
    est = make()
    for exc in (SkNotFittedError, NotFittedError, ValueError, AttributeError):
        with pytest.raises(exc, match="not fitted yet"):
            est.predict(data())


def test_attention_mechanism_not_fitted_is_sklearns():
    with pytest.raises(SkNotFittedError):
        AttentionMechanism().predict(np.zeros((2, 3), np.int64))


@pytest.mark.parametrize("make", [lambda: Perceptron(max_iter=5),
                                  lambda: MLPClassifier(max_iter=2),
                                  lambda: MLPRegressor(max_iter=2)])
def test_bad_X_gets_sklearns_errors(make):
    y = np.arange(6) % 2
    with pytest.raises(ValueError, match=r"0 feature\(s\)"):
        make().fit(np.zeros((6, 0)), y)
    with pytest.raises(ValueError, match=r"0 sample\(s\)"):
        make().fit(np.zeros((0, 3)), y[:0])
    with pytest.raises(ValueError, match="Complex data not supported"):
        make().fit(np.ones((6, 2)) + 1j, y)
    with pytest.raises(ValueError, match="requires y to be passed"):
        make().fit(np.ones((6, 2)), None)


def test_transformer_zero_samples():
    with pytest.raises(ValueError, match=r"0 sample\(s\)"):
        TransformerClassifier().fit(np.zeros((0, 4, 2)), np.zeros(0))


def test_feature_names_in_and_reordered_columns():
    pd = pytest.importorskip("pandas")
    from shendu.data.datasets import iris

    X, _, y, _ = iris(dtype="float64")
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    p = Perceptron(max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p.fit(df, y)
    assert list(p.feature_names_in_) == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(p.predict(df), p.predict(X))
    with pytest.raises(ValueError, match="feature names should match"):
        p.predict(df[["d", "c", "b", "a"]])
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        p.predict(X)


class _Frame:
    """The two things scikit-learn (and shendu) read of a DataFrame: string ``columns`` and
    ``iloc``; the values through ``__array__``. Lets the feature-name rules run without
    pandas."""

    def __init__(self, values, columns):
        self.values, self.columns = np.asarray(values), list(columns)
        self.iloc = self.values

    def __array__(self, dtype=None, copy=None):
        return self.values if dtype is None else self.values.astype(dtype)

    def __len__(self):
        return len(self.values)

    def reordered(self, order):
        return _Frame(self.values[:, order], [self.columns[i] for i in order])


@pytest.mark.parametrize("make", [lambda: Perceptron(max_iter=5),
                                  lambda: MLPClassifier(max_iter=3),
                                  lambda: MLPRegressor(max_iter=3)])
def test_feature_names_without_pandas(make):
    X = np.random.default_rng(0).normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    frame = _Frame(X, ["a", "b", "c"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = make().fit(frame, y)
    assert list(est.feature_names_in_) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="feature names should match"):
        est.predict(frame.reordered([2, 1, 0]))
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        plain = est.predict(X)
    np.testing.assert_array_equal(est.predict(frame), plain)     # same columns, same answer
    refit = make().fit(X, y)                          # plain arrays: no names kept
    assert not hasattr(refit, "feature_names_in_")
    with pytest.warns(UserWarning, match="fitted without feature names"):
        refit.predict(frame)


def test_non_tabular_models_in_cross_val_score_and_grid_search():
    """Defect 5: scikit-learn's model selection on a token-sequence model and a 3-D one."""
    from sklearn.model_selection import GridSearchCV, cross_val_score

    rng = np.random.default_rng(0)
    X = rng.integers(0, 5, (24, 4))
    scores = cross_val_score(AttentionMechanism(hidden_size=4, embed_dim=4, max_iter=2,
                                                batch_size=8, random_state=0), X, X[:, ::-1],
                             cv=3)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    gs = GridSearchCV(AttentionMechanism(hidden_size=4, embed_dim=4, batch_size=8,
                                         random_state=0), {"max_iter": [1, 2]}, cv=2)
    gs.fit(X, X[:, ::-1])
    assert gs.best_params_["max_iter"] in (1, 2) and hasattr(gs.best_estimator_, "model_")
    Xs = _seq(24)
    ys = (Xs[:, -1, 0] > 0).astype(int)
    scores = cross_val_score(LongShortTermMemory(hidden_size=4, max_iter=2, batch_size=8,
                                                 random_state=0), Xs, ys, cv=3)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))


def test_mlp_sklearn_parameter_names_and_defaults():
    from sklearn.neural_network import MLPClassifier as SkMLPClassifier
    from sklearn.neural_network import MLPRegressor as SkMLPRegressor

    for ours, sk in ((MLPClassifier(), SkMLPClassifier()), (MLPRegressor(), SkMLPRegressor())):
        mine = ours.get_params()
        for k, v in sk.get_params().items():
            assert mine[k] == v, k
    X = np.random.default_rng(0).normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(5,), solver="sgd", learning_rate="adaptive",
                            max_iter=30, random_state=0).fit(X, y)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 1
    assert [c.shape for c in clf.coefs_] == [(3, 5), (5, 1)]


# ------------------------------------- scikit-learn's own usage examples, import changed
def test_user_guide_mlp_classifier_lbfgs():
    from shendu.models import MLPClassifier
    X = [[0., 0.], [1., 1.]]
    y = [0, 1]
    clf = MLPClassifier(solver='lbfgs', alpha=1e-5, hidden_layer_sizes=(5, 2), random_state=1)
    clf.fit(X, y)
    np.testing.assert_array_equal(clf.predict([[2., 2.], [-1., -2.]]), [1, 0])
    assert [coef.shape for coef in clf.coefs_] == [(2, 5), (5, 2), (2, 1)]


def _accuracy_pair(make_ours, make_sk, X_tr, y_tr, X_te, y_te):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = make_ours().fit(X_tr, y_tr).score(X_te, y_te)
        b = make_sk().fit(X_tr, y_tr).score(X_te, y_te)
    return a, b


def test_docstring_perceptron_digits_within_one_point():
    """scikit-learn's Perceptron docstring example, import changed. Which samples come when
    is drawn from each library's own generator, and on digits that alone moves either
    library's training accuracy by several points from seed to seed (scikit-learn's own
    range over seeds 0-9 is 0.94-0.98), so the example's seed is held to "not a point
    worse" and the mean over ten seeds to within one point either way."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import Perceptron as SkPerceptron

    X, y = load_digits(return_X_y=True)
    pairs = [_accuracy_pair(partial(Perceptron, tol=1e-3, random_state=seed),
                            partial(SkPerceptron, tol=1e-3, random_state=seed), X, y, X, y)
             for seed in range(10)]
    ours, theirs = np.array(pairs).T
    assert ours[0] >= theirs[0] - 0.01, (ours[0], theirs[0])
    assert abs(ours.mean() - theirs.mean()) <= 0.01, (ours, theirs)


# ------------------------------------------- one naming scheme across the neural models
SEQUENCE_MODELS = [RecurrentNeuralNetwork, LongShortTermMemory, GatedRecurrentUnit,
                   TransformerClassifier, AttentionMechanism]


@pytest.mark.parametrize("cls", SEQUENCE_MODELS, ids=lambda c: c.__name__)
def test_sequence_models_use_the_mlps_names(cls):
    params = cls().get_params()
    for name in ("max_iter", "learning_rate", "learning_rate_init", "batch_size",
                 "clip_grad_norm", "random_state", "verbose"):
        assert name in params, name
    assert isinstance(params["learning_rate"], str)     # the schedule, as scikit-learn's
    assert params["epochs"] is None                      # deprecated, off by default


def _fit_small(cls, **kw):
    if cls is AttentionMechanism:
        X = [[0, 1, 2], [2, 1], [1, 2, 0, 1]] * 3
        return cls(hidden_size=4, embed_dim=4, batch_size=4, random_state=0, **kw).fit(
            X, [s[::-1] for s in X])
    X = _seq(12)
    y = (X[:, -1, 0] > 0).astype(int)
    extra = dict(d_model=8, nhead=2, num_layers=1, dim_feedforward=8) \
        if cls is TransformerClassifier else dict(hidden_size=4)
    return cls(batch_size=4, random_state=0, **extra, **kw).fit(X, y)


def _weights(est):
    return [p.data.copy() for p in est.model_.parameters()]


@pytest.mark.parametrize("cls", SEQUENCE_MODELS, ids=lambda c: c.__name__)
def test_old_names_warn_and_train_the_same_model(cls):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = _fit_small(cls, max_iter=2, learning_rate_init=0.02)
    with pytest.warns(FutureWarning, match="epochs=.*deprecated.*max_iter"), \
            pytest.warns(FutureWarning, match="learning_rate_init="):
        old = _fit_small(cls, epochs=2, learning_rate=0.02)
    assert new.n_iter_ == old.n_iter_ == 2
    for a, b in zip(_weights(new), _weights(old)):
        np.testing.assert_array_equal(a, b)
    other = _fit_small(cls, max_iter=2, learning_rate_init=0.002)
    assert any(not np.array_equal(a, b) for a, b in zip(_weights(new), _weights(other)))


@pytest.mark.parametrize("cls", SEQUENCE_MODELS, ids=lambda c: c.__name__)
def test_sequence_models_take_sklearns_alpha_and_tol(cls):
    params = cls().get_params()
    assert params["alpha"] == 0.0 and params["tol"] is None and params["n_iter_no_change"] == 10
    full = _fit_small(cls, max_iter=6)
    assert full.n_iter_ == 6 and len(full.loss_curve_) == 6           # tol=None: no rule
    assert full.best_loss_ == min(full.loss_curve_) and full.loss_ == full.loss_curve_[-1]
    # scikit-learn's rule: stop once more than n_iter_no_change epochs in a row fail to
    # lower the best loss by tol; a tol larger than any loss fires it after epoch 1 + 2
    early = _fit_small(cls, max_iter=6, tol=100.0, n_iter_no_change=1)
    assert early.n_iter_ == 3
    with pytest.warns(ConvergenceWarning, match="tol="):
        _fit_small(cls, max_iter=2, tol=0.0, n_iter_no_change=5)
    penalised = _fit_small(cls, max_iter=2, alpha=1.0)
    plain = _fit_small(cls, max_iter=2)
    assert penalised.loss_curve_[0] > plain.loss_curve_[0]          # the term is in the loss
    assert any(not np.array_equal(a, b) for a, b in zip(_weights(penalised), _weights(plain)))


def test_l2_penalized_is_sklearns_term():
    """alpha / 2 * sum ||W||^2 / n_batch on the weight matrices only; its gradient is
    alpha * W / n_batch (float64, against a central difference and the closed form)."""
    from shendu import nn
    from shendu.models._base import l2_penalized
    from shendu.tensor import Tensor

    model = nn.Sequential(nn.Linear(3, 4, dtype="float64"), nn.Tanh(),
                          nn.Linear(4, 2, dtype="float64"))
    x = Tensor(np.random.default_rng(0).normal(size=(5, 3)))
    target = np.zeros(5, np.int64)
    base = nn.CrossEntropyLoss()
    loss = l2_penalized(base, model, alpha=0.3)
    W1, b1, W2, _ = model.parameters()
    expected = 0.5 * 0.3 * ((W1.data ** 2).sum() + (W2.data ** 2).sum()) / 5
    value = loss(model(x), target)
    np.testing.assert_allclose(value.item() - base(model(x), target).item(), expected,
                               rtol=1e-12)
    value.backward()
    g_pen = W2.grad.data.copy()
    for p in model.parameters():
        p.grad = None
    base(model(x), target).backward()
    np.testing.assert_allclose(g_pen - W2.grad.data, 0.3 * W2.data / 5, rtol=1e-10)
    eps, (i, j) = 1e-6, (1, 2)
    W2.data[i, j] += eps
    up = loss(model(x), target).item()
    W2.data[i, j] -= 2 * eps
    down = loss(model(x), target).item()
    W2.data[i, j] += eps
    np.testing.assert_allclose((up - down) / (2 * eps), g_pen[i, j], rtol=1e-6)
    assert l2_penalized(base, model, 0.0) is base


def test_attention_mechanism_old_clip_norm_and_lr_schedule():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = _fit_small(AttentionMechanism, max_iter=2, clip_grad_norm=0.01,
                         learning_rate="constant")
    with pytest.warns(FutureWarning, match="clip_norm"), \
            pytest.warns(FutureWarning, match="lr_schedule"):
        old = _fit_small(AttentionMechanism, max_iter=2, clip_norm=0.01,
                         lr_schedule="constant")
    for a, b in zip(_weights(new), _weights(old)):
        np.testing.assert_array_equal(a, b)
    cosine = _fit_small(AttentionMechanism, max_iter=2, clip_grad_norm=0.01)
    assert any(not np.array_equal(a, b) for a, b in zip(_weights(new), _weights(cosine)))


@pytest.mark.parametrize("cls", SEQUENCE_MODELS, ids=lambda c: c.__name__)
def test_bad_training_settings_name_the_parameter(cls):
    for kw, match in ((dict(max_iter=-1), "max_iter must be"),
                      (dict(learning_rate_init=0.0), "learning_rate_init must be"),
                      (dict(learning_rate="adaptive"), r"learning_rate \(the schedule\)"),
                      (dict(clip_grad_norm=-1.0), "clip_grad_norm must be"),
                      (dict(alpha=-1.0), "alpha must be"), (dict(tol=-1.0), "tol must be"),
                      (dict(n_iter_no_change=0), "n_iter_no_change must be")):
        with pytest.raises(ValueError, match=match):
            _fit_small(cls, **kw)


# ------------------------------------------------- the seed's classes and the language models
def test_seed_fit_is_the_seeds_train():
    """fit on (X, y) = the seed's full-batch gradient descent, weight for weight."""
    X = np.linspace(-2, 2, 40)[:, None]
    y = np.sin(X).ravel()
    seed = NeuralNetwork(1, 8, 1, random_state=0, dtype="float32")
    seed.train(X, y[:, None], epochs=30, learning_rate=0.1)
    est = NeuralNetwork(hidden_dim=8, random_state=0, dtype="float32", max_iter=30,
                        learning_rate_init=0.1).fit(X, y)
    for a, b in zip(seed.net.parameters(), est.model_.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    assert est.n_iter_ == 30 and est.loss_curve_[-1] < est.loss_curve_[0]
    assert est.predict(X).shape == (40,)
    with pytest.raises(ValueError, match="built with input_dim=1"):
        NeuralNetwork(1, 8, 1).fit(np.zeros((5, 2)), np.zeros(5))


def test_seed_classes_clone_and_keep_the_seed_api():
    from sklearn.base import clone

    m = MultiLayerPerceptron(3, [5, 4], 2, activation="relu", random_state=1)
    c = clone(m)
    assert c.get_params() == m.get_params()
    x = np.random.default_rng(0).normal(size=(4, 3))
    np.testing.assert_array_equal(c.forward(x), m.forward(x))
    np.testing.assert_array_equal(m.predict(x), m.forward(x))      # unfitted: the seed's net
    bad = NeuralNetwork(3, None, 2)          # scikit-learn's rule: __init__ never raises ...
    with pytest.raises(ValueError, match="needs all three sizes"):
        bad.forward(x)                       # ... the first call that needs the net does
    with pytest.raises(ValueError, match="needs all three sizes"):
        bad.fit(x, np.zeros(4))
    with pytest.raises(TypeError, match="one layer's width"):
        NeuralNetwork(3, [4, 4], 2).train(x, np.zeros((4, 2)), epochs=1)
    fixed = clone(bad).set_params(hidden_dim=5)
    assert fixed.forward(x).shape == (4, 2)  # sizes set later: the net is built on first use
    with pytest.raises(SkNotFittedError):
        NeuralNetwork().predict(x)


LMS = [CharLM("abcdef", hidden_size=8, num_layers=1, embedding_dim=4),
       CharTransformerLM(7, d_model=8, nhead=2, num_layers=1, dim_feedforward=8, block_size=8)]
LM_EXPECTED = {
    # a torch-style Module builds its layers in __init__ and keeps its train/eval flag there
    "check_no_attributes_set_in_init": (AssertionError, "training"),
    # ... so it cannot be built from nonsense sizes: its parameters exist from __init__ on
    "check_do_not_raise_errors_in_init_or_set_params": (ValueError, "must be"),
}


@pytest.mark.parametrize("est", LMS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("check", DATA_FREE, ids=lambda c: c.__name__)
def test_data_free_checks_on_language_models(est, check):
    if check.__name__ in LM_EXPECTED:
        exc, match = LM_EXPECTED[check.__name__]
        with pytest.raises(exc, match=match):
            check(type(est).__name__, est)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check(type(est).__name__, est)


@pytest.mark.parametrize("est", LMS, ids=lambda e: type(e).__name__)
def test_language_models_clone_set_params_and_tags(est):
    from sklearn.base import clone

    tags = get_tags(est)
    assert tags.input_tags.two_d_array is False and tags.target_tags.required is False
    c = clone(est)
    assert c.get_params() == est.get_params() and c is not est
    key = "hidden_size" if isinstance(est, CharLM) else "d_model"
    shapes = {n: p.shape for n, p in c.named_parameters()}
    c.set_params(**{key: 12})
    assert c.get_params()[key] == 12
    assert {n: p.shape for n, p in c.named_parameters()} != shapes   # the network follows
    before = c.get_params()
    with pytest.raises((ValueError, TypeError)):
        c.set_params(num_layers=float("inf"))
    assert c.get_params() == before                                  # unchanged on error
    with pytest.raises(ValueError, match="invalid parameter"):
        c.set_params(nope=1)


# ------------------------------------- the two character LMs: one API, through the Trainer
def _tiny_corpus():
    from shendu.data.sequences import CharCorpus

    words = ["ab ", "ba ", "abc ", "cab ", "\n"]
    return CharCorpus("".join(np.random.default_rng(0).choice(words, 300)), val_fraction=0.2)


def _lm(cls, vocab):
    import shendu

    shendu.manual_seed(0)
    if cls is CharLM:
        return CharLM(vocab, hidden_size=8, num_layers=1, embedding_dim=4)
    return CharTransformerLM(vocab, d_model=8, nhead=2, num_layers=1, dim_feedforward=8,
                             dropout=0.0, block_size=8)


def _lm_weights(lm):
    return [p.data.copy() for p in lm.parameters()]


LM_CLASSES = [CharLM, CharTransformerLM]


def test_language_models_share_one_api():
    import inspect

    for method in ("fit", "evaluate", "generate"):
        a, b = (list(inspect.signature(getattr(c, method)).parameters)[:4]
                for c in LM_CLASSES)
        assert a[1:] == b[1:] or method == "generate", (method, a, b)
    fit_a, fit_b = (inspect.signature(c.fit) for c in LM_CLASSES)
    assert fit_a == fit_b                                      # one fit for both
    corpus = _tiny_corpus()
    for cls in LM_CLASSES:
        lm = _lm(cls, corpus.vocab)                            # both take the vocabulary
        text = lm.generate("ab", 5, temperature=0)
        assert isinstance(text, str) and len(text) == 7 and text.startswith("ab")
        ids = lm.generate(corpus.encode("ab"), 5, temperature=0)
        assert ids.shape == (1, 7) and corpus.decode(ids[0]) == text
        assert np.isfinite(lm.evaluate(corpus.val[:40]))       # an id array too
    with pytest.raises(ValueError, match="needs the vocabulary"):
        _lm(CharTransformerLM, corpus.vocab_size).generate("ab", 2)


@pytest.mark.parametrize("cls", LM_CLASSES, ids=lambda c: c.__name__)
def test_language_model_fit_checkpoints_stops_and_resumes_bit_for_bit(cls, tmp_path):
    from shendu.checkpoint import ModelCheckpoint
    from shendu.train import LambdaCallback

    corpus = _tiny_corpus()
    kw = dict(steps=6, batch_size=4, seq_len=8, eval_every=2, eval_chars=60)
    full = _lm(cls, corpus.vocab)
    log = full.fit(corpus, **kw)
    assert [e["step"] for e in log] == [2, 4, 6]
    assert all(np.isfinite(e["train_loss"]) and np.isfinite(e["val_nats"]) for e in log)
    assert log == [{"step": s, "train_loss": t, "val_nats": v} for s, t, v in zip(
        full.history_["step"], full.history_["loss"], full.history_["val_nats"])]

    def ctrl_c(batch, logs):        # what the Trainer does with Ctrl-C: finish, save, return
        if stopper.trainer.global_step == 3:
            raise KeyboardInterrupt

    stopper = LambdaCallback(on_batch_end=ctrl_c)
    part = _lm(cls, corpus.vocab)
    short = part.fit(corpus, callbacks=[ModelCheckpoint(tmp_path, keep_last=None), stopper],
                     **kw)
    assert [e["step"] for e in short] == [2]                  # stopped inside the 2nd block
    resumed = _lm(cls, corpus.vocab)
    again = resumed.fit(corpus, resume=tmp_path, **kw)
    for a, b in zip(_lm_weights(full), _lm_weights(resumed)):
        np.testing.assert_array_equal(a, b)
    assert again == log


@pytest.mark.parametrize("cls", LM_CLASSES, ids=lambda c: c.__name__)
def test_language_model_fit_guards_and_old_names(cls):
    from shendu.train import NonFiniteError

    corpus = _tiny_corpus()
    kw = dict(steps=2, batch_size=4, seq_len=8)
    new = _lm(cls, corpus.vocab)
    new.fit(corpus, learning_rate_init=0.01, learning_rate="constant", **kw)
    old = _lm(cls, corpus.vocab)
    with pytest.warns(FutureWarning, match="learning_rate_init"), \
            pytest.warns(FutureWarning, match="lr_schedule"):
        old.fit(corpus, learning_rate=0.01, lr_schedule="constant", **kw)
    for a, b in zip(_lm_weights(new), _lm_weights(old)):
        np.testing.assert_array_equal(a, b)
    broken = _lm(cls, corpus.vocab)
    next(iter(broken.parameters())).data[...] = np.nan
    with pytest.raises(NonFiniteError, match="at epoch 1, batch 1"):
        broken.fit(corpus, **kw)
    for bad, match in ((dict(steps=0), "steps must be"),
                       (dict(learning_rate="adaptive"), r"learning_rate \(the schedule\)"),
                       (dict(clip_grad_norm=-1.0), "clip_grad_norm must be"),
                       (dict(seq_len=0), "seq_len must be")):
        with pytest.raises(ValueError, match=match):
            _lm(cls, corpus.vocab).fit(corpus, **{**kw, **bad})
