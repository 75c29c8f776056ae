"""Ready recurrent models and sequence data: the adding problem (LSTM vs tanh RNN, the
contrast that motivated the LSTM), digits read row by row, a character language model
that must beat the unigram baseline, and the estimator API."""

import numpy as np
import pytest

import shendu
from shendu.data.sequences import CharCorpus, adding_problem, sequential_digits
from shendu.models import (
    CharLM,
    GatedRecurrentUnit,
    LongShortTermMemory,
    RecurrentNeuralNetwork,
)
from tests.conftest import data_dir


def test_adding_problem_data():
    X, y = adding_problem(500, 40, seed=3)
    assert X.shape == (500, 40, 2) and y.shape == (500,) and X.dtype == np.float32
    marks = X[:, :, 1]
    assert np.all(marks.sum(1) == 2)
    assert np.all(marks[:, :20].sum(1) == 1)               # one mark in each half
    np.testing.assert_allclose(y, (X[:, :, 0] * marks).sum(1), rtol=1e-6)
    # predicting the mean scores about 1/6
    assert abs(np.mean((y - y.mean()) ** 2) - 1 / 6) < 0.02
    X2, y2 = adding_problem(500, 40, seed=3)
    np.testing.assert_array_equal(X, X2)
    with pytest.raises(ValueError, match="T must be an integer >= 2"):
        adding_problem(10, 1)


@pytest.mark.slow
def test_adding_problem_lstm_solves_it_tanh_rnn_does_not():
    """CI-sized Hochreiter & Schmidhuber (1997) experiment: T=30, 2,000 training
    sequences, 20 epochs of Adam, same size and budget for both (a few CPU seconds)."""
    Xtr, ytr = adding_problem(2000, 30, seed=0)
    Xte, yte = adding_problem(1000, 30, seed=1)
    kw = dict(hidden_size=32, task="regression", max_iter=20, batch_size=32,
              learning_rate_init=1e-2, random_state=0)
    lstm = LongShortTermMemory(**kw).fit(Xtr, ytr)
    rnn = RecurrentNeuralNetwork(**kw).fit(Xtr, ytr)
    mse_lstm = float(np.mean((lstm.predict(Xte) - yte) ** 2))
    mse_rnn = float(np.mean((rnn.predict(Xte) - yte) ** 2))
    assert mse_lstm < 0.01, mse_lstm
    assert mse_rnn > 0.05, mse_rnn


@pytest.mark.slow
def test_sequential_digits_lstm_above_95_percent():
    Xtr, Xte, ytr, yte = sequential_digits()
    assert Xtr.shape[1:] == (8, 8)
    m = LongShortTermMemory(hidden_size=64, max_iter=30, batch_size=32, learning_rate_init=1e-2,
                            random_state=0).fit(Xtr, ytr)
    assert m.score(Xte, yte) >= 0.95
    proba = m.predict_proba(Xte[:5])
    assert proba.shape == (5, 10)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)


def _text():
    d = data_dir()
    path = None if d is None else d / "text" / "tinyshakespeare.txt"
    if path is not None and path.exists():
        return str(path)
    rng = np.random.default_rng(0)   # fallback: a repetitive text with structure to learn
    words = ["the ", "king ", "and ", "queen ", "of ", "rome ", "shall ", "speak ", "\n"]
    return "".join(rng.choice(words, 20000))


@pytest.mark.slow
def test_char_lm_beats_unigram_and_generates():
    shendu.manual_seed(0)
    corpus = CharCorpus(_text(), val_fraction=0.1)
    model = CharLM(corpus.vocab, hidden_size=64, num_layers=1, embedding_dim=32)
    log = model.fit(corpus, steps=150, batch_size=32, seq_len=64, learning_rate_init=1e-2,
                    eval_every=150, eval_chars=20000)
    assert log[-1]["val_nats"] < corpus.unigram_nats() - 0.5
    text = model.generate(corpus.decode(corpus.val[:5]), 50, temperature=0.8, top_k=10)
    assert len(text) == 55 and set(text) <= set(corpus.vocab)
    shendu.manual_seed(1)
    a = model.generate("th", 20, temperature=1.0)
    shendu.manual_seed(1)
    assert model.generate("th", 20, temperature=1.0) == a       # seeded sampling
    assert model.generate("th", 5, temperature=0) == model.generate("th", 5, temperature=0)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        model.generate("\x00", 3)


def test_char_corpus():
    c = CharCorpus("hello world\nhello there\n", val_fraction=0.25)
    assert c.vocab == "".join(sorted(set("hello world\nhello there\n")))
    assert c.decode(c.encode("hello")) == "hello"
    assert len(c.train) + len(c.val) == 24
    x, y = c.windows(4, 5, rng=np.random.default_rng(0))
    assert x.shape == y.shape == (4, 5)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        c.encode("z")


@pytest.mark.parametrize("cls", [RecurrentNeuralNetwork, LongShortTermMemory,
                                 GatedRecurrentUnit])
def test_estimators_sequence_outputs_and_params(cls):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 6, 3)).astype(np.float32)
    y_seq = np.cumsum(X[:, :, 0], axis=1)                       # running sum per step
    reg = cls(hidden_size=16, task="regression", output="sequence", max_iter=3,
              random_state=0).fit(X, y_seq)
    assert reg.predict(X).shape == (64, 6)
    labels = (X[:, :, 1] > 0).astype(int)
    clf = cls(hidden_size=16, output="sequence", max_iter=3, bidirectional=True,
              random_state=0).fit(X, labels)
    assert clf.predict(X).shape == (64, 6) and set(np.unique(clf.predict(X))) <= {0, 1}
    assert 0 <= clf.score(X, labels) <= 1
    # scikit-learn conventions
    from sklearn.base import clone

    c2 = clone(clf)
    assert c2.get_params() == clf.get_params() and not hasattr(c2, "model_")
    # same random_state => identical predictions
    again = cls(hidden_size=16, output="sequence", max_iter=3, bidirectional=True,
                random_state=0).fit(X, labels)
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))


def test_estimator_errors():
    m = LongShortTermMemory(max_iter=1)
    with pytest.raises(ValueError, match=r"expected X of shape \(n_samples, T, n_features\)"):
        m.fit(np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match="single class"):
        m.fit(np.zeros((4, 3, 2)), np.zeros(4, int))
    m.fit(np.random.default_rng(0).standard_normal((8, 3, 2)), np.arange(8) % 2)
    with pytest.raises(ValueError, match="fitted with 2"):
        m.predict(np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="task must be"):
        LongShortTermMemory(task="ranking").fit(np.zeros((4, 3, 2)), np.arange(4) % 2)
