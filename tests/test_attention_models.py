"""Attention models and sequence tasks: TransformerClassifier on digits (rows as tokens),
token sequences with padding, the causal character LM, and sequence_task data."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import shendu
from shendu.data.sequences import CharCorpus
from shendu.data.tasks import sequence_task
from shendu.models.attention import CharTransformerLM, TransformerClassifier
from tests.conftest import data_dir


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # tiny GEMMs: one BLAS thread is fastest, and on a loaded machine far faster
    with threadpool_limits(1):
        yield


def test_sequence_task_reverse_copy_sort():
    t = sequence_task("reverse", n=50, length_range=(10, 20), vocab=10, seed=3)
    assert t.src.shape == t.tgt.shape == (50, 20) and t.src.dtype == np.int64
    assert t.lengths.min() >= 10 and t.lengths.max() <= 20
    for i in range(50):
        L = t.lengths[i]
        np.testing.assert_array_equal(t.tgt[i, :L], t.src[i, :L][::-1])
        assert (t.src[i, L:] == t.pad_id).all() and (t.tgt[i, L:] == t.pad_id).all()
        assert t.src[i, :L].max() < 10
    np.testing.assert_array_equal(t.padding_mask, t.src == t.pad_id)
    assert (t.pad_id, t.bos_id, t.n_tokens) == (10, 11, 12)
    again = sequence_task("reverse", n=50, length_range=(10, 20), vocab=10, seed=3)
    np.testing.assert_array_equal(again.src, t.src)
    other = sequence_task("reverse", n=50, length_range=(10, 20), vocab=10, seed=4)
    assert not np.array_equal(other.src, t.src)
    s = sequence_task("sort", n=20, length_range=5, vocab=4, seed=0)
    np.testing.assert_array_equal(s.tgt, np.sort(s.src, 1))
    c = sequence_task("copy", n=20, length_range=(2, 6), vocab=3, seed=0)
    np.testing.assert_array_equal(c.tgt, c.src)
    with pytest.raises(ValueError, match="task must be one of"):
        sequence_task("shuffle")
    with pytest.raises(ValueError, match="length_range"):
        sequence_task("copy", length_range=(5, 2))


@pytest.mark.slow
def test_transformer_classifier_digits_rows_as_tokens():
    from shendu.data import datasets

    s = datasets.digits()
    Xtr, Xte = s.X_train.reshape(-1, 8, 8), s.X_test.reshape(-1, 8, 8)  # 8 rows = 8 tokens
    m = TransformerClassifier(d_model=32, nhead=4, num_layers=1, dim_feedforward=64,
                              max_iter=20, batch_size=32, learning_rate_init=3e-3, random_state=0)
    m.fit(Xtr, s.y_train)
    acc = m.score(Xte, s.y_test)
    assert acc >= 0.95, acc
    p = m.predict_proba(Xte[:5])
    assert p.shape == (5, 10)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-6)
    with pytest.raises(ValueError, match="fitted on features of shape"):
        m.predict(Xte.reshape(-1, 16, 4))


@pytest.mark.slow
def test_transformer_classifier_tokens_with_padding_is_seeded():
    # label: does token 1 occur before token 2? (order matters: needs positions + attention)
    rng = np.random.default_rng(0)
    n, T, pad = 600, 8, 5
    X = rng.integers(0, 5, (n, T))
    lengths = rng.integers(4, T + 1, n)
    X[np.arange(T)[None, :] >= lengths[:, None]] = pad
    first1 = np.where(X == 1, np.arange(T), T).min(1)
    first2 = np.where(X == 2, np.arange(T), T).min(1)
    y = (first1 < first2).astype(int)
    kw = dict(d_model=32, nhead=4, num_layers=1, dim_feedforward=64, max_iter=25,
              learning_rate_init=3e-3, pad_id=pad, vocab_size=6, random_state=1, dropout=0.0)
    m = TransformerClassifier(**kw).fit(X[:500], y[:500])
    assert m.score(X[500:], y[500:]) >= 0.9
    m2 = TransformerClassifier(**kw).fit(X[:500], y[:500])
    np.testing.assert_array_equal(m.predict_proba(X[500:]), m2.predict_proba(X[500:]))
    # padding is invisible: a row scores the same with or without its trailing padding
    model = m.model_
    model.eval()
    with shendu.no_grad():
        for i in np.flatnonzero(lengths < T)[:5]:
            L = lengths[i]
            full = model(X[i:i + 1]).data
            trimmed = model(X[i:i + 1, :L]).data
            np.testing.assert_allclose(full, trimmed, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_char_lm_is_causal_learns_and_generates():
    text = "abcde" * 40
    vocab = sorted(set(text))
    ids = np.array([vocab.index(c) for c in text])
    shendu.manual_seed(0)
    lm = CharTransformerLM(len(vocab), d_model=32, nhead=2, num_layers=1,
                           dim_feedforward=64, dropout=0.0, block_size=16)
    x = shendu.tensor(np.array([ids[:16]]))
    a = lm(x).data
    changed = ids[:16].copy()
    changed[10] = (changed[10] + 1) % 5
    b = lm(np.array([changed])).data
    np.testing.assert_array_equal(a[0, :10], b[0, :10])       # the past ignores the future
    assert not np.allclose(a[0, 10:], b[0, 10:])
    opt = shendu.optim.Adam(lm.parameters(), lr=1e-2)
    starts = np.arange(0, len(ids) - 17, 3)
    X = np.stack([ids[s:s + 16] for s in starts])
    Y = np.stack([ids[s + 1:s + 17] for s in starts])
    for _ in range(40):
        opt.zero_grad()
        logits = lm(X)
        loss = shendu.functional.cross_entropy(logits.reshape(-1, len(vocab)), Y.reshape(-1))
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    out = lm.generate(np.array([ids[:3]]), 12, temperature=0)
    assert "".join(vocab[i] for i in out[0]) == text[:15]
    shendu.manual_seed(5)
    s1 = lm.generate(ids[:3], 8, temperature=1.0, top_k=2)
    shendu.manual_seed(5)
    s2 = lm.generate(ids[:3], 8, temperature=1.0, top_k=2)
    np.testing.assert_array_equal(s1, s2)
    with pytest.raises(ValueError, match=r"CharTransformerLM\(block_size=16\) expected"):
        lm(np.zeros((1, 17), np.int64))


@pytest.mark.slow
def test_char_transformer_lm_on_tinyshakespeare_beats_unigram():
    """90/10 split of tiny-shakespeare; 120 AdamW steps of a one-layer d=32 model must
    beat the unigram baseline (~3.35 nats/char) by more than half a nat."""
    d = data_dir()
    path = None if d is None else d / "text" / "tinyshakespeare.txt"
    if path is None or not path.exists():
        pytest.skip("tinyshakespeare.txt not found (set SHENDU_DATA)")
    corpus = CharCorpus(str(path), val_fraction=0.1)
    assert corpus.vocab_size == 65 and len(corpus.val) == round(0.1 * 1115394)
    shendu.manual_seed(0)
    lm = CharTransformerLM(corpus.vocab_size, d_model=32, nhead=4, num_layers=1,
                           dim_feedforward=128, dropout=0.0, block_size=32)
    before = lm.evaluate(corpus, max_chars=5000)
    assert abs(before - np.log(65)) < 0.5                # untrained: about uniform
    log = lm.fit(corpus, steps=120, batch_size=32, learning_rate_init=5e-3, eval_every=60,
                 eval_chars=20000)
    assert [e["step"] for e in log] == [60, 120]
    unigram = corpus.unigram_nats()
    assert log[-1]["val_nats"] < unigram - 0.5, (log, unigram)
    assert log[-1]["val_nats"] < log[0]["val_nats"]
    prompt = corpus.encode("ROMEO:")
    shendu.manual_seed(3)
    out = lm.generate(prompt, 40, temperature=0.8)
    assert out.shape == (1, 46) and corpus.decode(out[0]).startswith("ROMEO:")
    shendu.manual_seed(3)
    np.testing.assert_array_equal(lm.generate(prompt, 40, temperature=0.8), out)


def test_char_lm_evaluate_scores_every_character_once():
    shendu.manual_seed(0)
    lm = CharTransformerLM(5, d_model=16, nhead=2, num_layers=1, dim_feedforward=32,
                           dropout=0.0, block_size=8)
    ids = np.random.default_rng(0).integers(0, 5, 37)
    # reference: each target k >= 1 predicted once, from the window that first reaches it
    total, done = 0.0, 0
    for a in [0, 4, 8, 12, 16, 20, 24, 28]:
        logp = shendu.functional.log_softmax(lm(ids[None, a:a + 8]), -1).data[0]
        for p in range(8):
            if a + p + 1 > done:
                total -= logp[p, ids[a + p + 1]]
        done = a + 8
    np.testing.assert_allclose(lm.evaluate(ids), total / 36, rtol=1e-5)
    short = ids[:3]                                      # shorter than a block
    logp = shendu.functional.log_softmax(lm(short[None, :2]), -1).data[0]
    np.testing.assert_allclose(lm.evaluate(short), -(logp[0, short[1]] + logp[1, short[2]]) / 2,
                               rtol=1e-5)
    with pytest.raises(ValueError, match=r"learning_rate \(the schedule\) must be"):
        lm.fit(CharCorpus("abcde" * 20), steps=1, learning_rate="linear")
