r"""Ready attention models: :class:`TransformerClassifier` (a scikit-learn estimator for
token or feature sequences) and :class:`CharTransformerLM` (a small causal transformer
language model with ``generate``).

Both are a transformer encoder (Vaswani et al. 2017) in pre-norm form (``norm_first``,
Xiong et al. 2020, which trains without warm-up at these sizes) with GELU feed-forward
layers (tanh form) over token embeddings or a linear projection of feature vectors, plus
the sinusoidal positional encoding.
"""

from __future__ import annotations

import numpy as np

from shendu import functional as F
from shendu import nn, optim
from shendu.autograd import no_grad
from shendu.backend import rng
from shendu.data import DataLoader, TensorDataset
from shendu.models._base import (
    BaseEstimator,
    CharLMTraining,
    ClassifierMixin,
    LossPlateau,
    ModuleEstimator,
    as_array,
    l2_penalized,
    seeded,
    training_settings,
)
from shendu.tensor import Tensor
from shendu.train import LambdaCallback, Trainer

__all__ = ["TransformerClassifier", "SequenceEncoderNet", "CharTransformerLM"]


def _gelu_tanh(x: Tensor) -> Tensor:
    """GELU (Hendrycks & Gimpel 2016) in its tanh form, as GPT-2 uses it: in NumPy several
    times cheaper than the exact ``x Φ(x)``, whose erf has no vectorised library call."""
    return F.gelu(x, approximate="tanh")


class SequenceEncoderNet(nn.Module):
    """Embed (tokens) or project (features), add positions, encode, mean-pool, classify.

    ``forward(x)``: x (N, T) int tokens or (N, T, F) floats -> logits (N, n_classes). With
    ``pad_id`` set, padded tokens are masked out of attention and of the pooling.
    """

    def __init__(self, n_classes: int, d_model: int = 64, nhead: int = 4, num_layers: int = 2,
                 dim_feedforward: int = 128, dropout: float = 0.1, n_features: int | None = None,
                 vocab_size: int | None = None, max_len: int = 512,
                 pad_id: int | None = None) -> None:
        super().__init__()
        if (n_features is None) == (vocab_size is None):
            raise ValueError("SequenceEncoderNet: give exactly one of n_features (feature "
                             "sequences) and vocab_size (token sequences)")
        self.pad_id = pad_id
        if vocab_size is not None:
            self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        else:
            self.embed = nn.Linear(n_features, d_model)
        self.pos = nn.PositionalEncoding(d_model, max_len=max_len, dropout=dropout,
                                         batch_first=True)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout,
                                           activation=_gelu_tanh, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model))
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x) -> Tensor:
        tokens = not isinstance(self.embed, nn.Linear)
        xd = x.data if isinstance(x, Tensor) else np.asarray(x)
        pad = (xd == self.pad_id) if (tokens and self.pad_id is not None) else None
        h = self.encoder(self.pos(self.embed(x)), src_key_padding_mask=pad)   # (N, T, d)
        if pad is None:
            return self.head(h.mean(1))
        keep = (~pad).astype(h.dtype)[..., None]                             # (N, T, 1)
        denom = np.maximum(keep.sum(1), 1)
        return self.head((h * keep).sum(1) / denom)


class TransformerClassifier(ClassifierMixin, BaseEstimator):
    """Sequence classification with a transformer encoder, as a scikit-learn estimator.

    ``fit(X, y)``: ``X`` (n, T, F) float feature sequences (e.g. the rows of an image as
    tokens) or (n, T) integer token sequences (``vocab_size`` defaults to ``max + 1``;
    tokens equal to ``pad_id`` are padding). AdamW (step ``learning_rate_init``, decoupled
    ``weight_decay`` as torch's AdamW) on the cross-entropy for ``max_iter`` epochs,
    mini-batches of ``batch_size`` reshuffled each epoch from shendu's generator
    (``random_state`` seeds it for the fit); ``clip_grad_norm`` (None: off) clips the
    global gradient norm. ``learning_rate`` is scikit-learn's schedule (only
    ``"constant"`` here); ``alpha`` is scikit-learn's L2 penalty ``alpha / 2 * sum ||W||^2 /
    n_batch`` on the weight matrices in the loss (default 0), apart from AdamW's decoupled
    ``weight_decay``; ``tol``/``n_iter_no_change`` are scikit-learn's stopping rule on the
    training loss (default ``tol=None``: run ``max_iter`` epochs), with ``loss_curve_``,
    ``loss_``, ``best_loss_`` after ``fit``. ``epochs`` and a number as ``learning_rate``
    are the deprecated names of ``max_iter`` and ``learning_rate_init`` (FutureWarning).
    """

    def __init__(self, d_model: int = 64, nhead: int = 4, num_layers: int = 2,
                 dim_feedforward: int = 128, dropout: float = 0.1, vocab_size=None,
                 pad_id=None, max_iter: int = 30, batch_size: int = 64,
                 learning_rate="constant", learning_rate_init: float = 1e-3,
                 weight_decay: float = 0.0, clip_grad_norm: float | None = None,
                 alpha: float = 0.0, tol: float | None = None, n_iter_no_change: int = 10,
                 random_state=None, verbose: int = 0, epochs=None) -> None:
        self.alpha, self.tol, self.n_iter_no_change = alpha, tol, n_iter_no_change
        self.d_model, self.nhead, self.num_layers = d_model, nhead, num_layers
        self.dim_feedforward, self.dropout = dim_feedforward, dropout
        self.vocab_size, self.pad_id = vocab_size, pad_id
        self.max_iter, self.batch_size = max_iter, batch_size
        self.learning_rate, self.learning_rate_init = learning_rate, learning_rate_init
        self.weight_decay, self.clip_grad_norm = weight_decay, clip_grad_norm
        self.random_state, self.verbose = random_state, verbose
        self.epochs = epochs

    _input_kinds = {"two_d_array": False, "three_d_array": True}

    def _check_seq(self, X, where: str, reset: bool) -> np.ndarray:
        name = type(self).__name__
        if not reset:
            self._check_fitted(where)
        X = as_array(X, f"{name}.{where}")
        if X.ndim >= 2 and X.shape[0] == 0:
            raise ValueError(f"{name}.{where}: Found array with 0 sample(s) (shape={X.shape}) "
                             f"while a minimum of 1 is required.")
        if X.ndim == 2 and X.dtype.kind in "iu":
            tokens = True
        elif X.ndim == 3 and X.dtype.kind in "fiu":
            tokens = False
            X = X.astype(np.float32)
            if not np.isfinite(X).all():
                raise ValueError(f"{name}.{where}: X contains NaN or infinity")
        else:
            raise ValueError(f"{name}.{where}: expected X of shape (n, T, F) (float feature "
                             f"sequences) or (n, T) (integer tokens), got {X.dtype} {X.shape}")
        if reset:
            self.tokens_ = tokens
            self.seq_shape_ = X.shape[1:]
            self.n_features_in_ = int(np.prod(X.shape[1:]))
        else:
            self._check_fitted(where)
            if tokens != self.tokens_ or (not tokens and X.shape[2] != self.seq_shape_[1]):
                raise ValueError(f"{name}.{where}: X has shape {X.shape}, but the model was "
                                 f"fitted on {'tokens' if self.tokens_ else 'features'} of "
                                 f"shape (n, {', '.join(map(str, self.seq_shape_))})")
        return X

    def fit(self, X, y) -> TransformerClassifier:
        cfg = training_settings(self)
        X = self._check_seq(X, "fit", reset=True)
        t = self._encode_y(y, X, "fit")
        with seeded(self.random_state):
            vocab = None
            if self.tokens_:
                vocab = self.vocab_size or int(X.max()) + 1
            self.model_ = SequenceEncoderNet(
                len(self.classes_), self.d_model, self.nhead, self.num_layers,
                self.dim_feedforward, self.dropout,
                n_features=None if self.tokens_ else X.shape[2], vocab_size=vocab,
                max_len=max(X.shape[1], 1), pad_id=self.pad_id)
            params = list(self.model_.parameters())
            opt = optim.AdamW(params, lr=cfg["learning_rate_init"],
                              weight_decay=self.weight_decay)
            clip = cfg["clip_grad_norm"]
            plateau = LossPlateau(self, cfg["tol"], cfg["n_iter_no_change"])
            callbacks = [plateau] if clip is None else [plateau, LambdaCallback(
                on_after_backward=lambda batch, logs: nn.utils.clip_grad_norm_(params, clip))]
            loader = DataLoader(TensorDataset(X, t), batch_size=self.batch_size, shuffle=True)
            loss_fn = l2_penalized(nn.CrossEntropyLoss(), self.model_, cfg["alpha"])
            trainer = Trainer(self.model_, loss_fn, opt, loader, callbacks=callbacks,
                              verbose=self.verbose)
            self.history_ = trainer.fit(cfg["max_iter"])
        self.n_iter_ = len(self.history_.epochs)
        plateau.warn_if_not_converged(cfg["max_iter"])
        self.model_.eval()
        return self

    def predict_proba(self, X) -> np.ndarray:
        X = self._check_seq(X, "predict_proba", reset=False)
        self.model_.eval()
        out = []
        with no_grad():
            for i in range(0, len(X), 512):
                out.append(F.softmax(self.model_(Tensor(X[i:i + 512])), -1).data)
        return np.concatenate(out).astype(np.float64)

    def predict(self, X) -> np.ndarray:
        self._check_fitted("predict")
        return self.classes_[self.predict_proba(X).argmax(1)]


class CharTransformerLM(CharLMTraining, nn.Module, ModuleEstimator):
    """A causal (GPT-style, Radford et al. 2018) character transformer language model.

    ``forward(idx)``: (N, T) int token ids -> (N, T, vocab) next-token logits; position
    ``t`` sees only positions ``<= t`` (a causal mask). ``generate(idx, n)`` samples ``n``
    more tokens from shendu's generator (``temperature``, ``top_k``); ``fit(corpus, steps)``
    trains on random windows (``seq_len``, default ``block_size``) of a
    :class:`~shendu.data.sequences.CharCorpus` through :class:`shendu.train.Trainer` (see
    :class:`~shendu.models._base.CharLMTraining` for the arguments, the same as
    :class:`~shendu.models.CharLM`'s), and ``evaluate(corpus)`` gives the validation nats
    per character.

    ``vocab_size`` is the number of symbols, or the vocabulary itself as a string of
    distinct characters (``CharCorpus.vocab``, as ``CharLM`` takes it): then
    ``generate`` also takes and gives text.

    It is also a scikit-learn estimator as far as one applies to a language model:
    ``get_params``/``set_params`` (which builds the network again), ``clone`` and tags
    (token ids in, no target).
    """

    _input_kinds = {"two_d_array": False}

    def __init__(self, vocab_size: int | str, d_model: int = 64, nhead: int = 4,
                 num_layers: int = 2, dim_feedforward: int = 256, dropout: float = 0.1,
                 block_size: int = 64) -> None:
        super().__init__()
        if isinstance(vocab_size, str):
            if len(vocab_size) < 2 or len(set(vocab_size)) != len(vocab_size):
                raise ValueError("CharTransformerLM: a vocabulary given as a string must "
                                 "hold at least 2 distinct characters")
            self._V, self._index = len(vocab_size), {c: i for i, c in enumerate(vocab_size)}
        else:
            self._V, self._index = vocab_size, None
        self.vocab_size, self.block_size = vocab_size, block_size
        self.d_model, self.nhead, self.num_layers = d_model, nhead, num_layers
        self.dim_feedforward, self.dropout = dim_feedforward, dropout
        self.embed = nn.Embedding(self._V, d_model)
        self.pos = nn.PositionalEncoding(d_model, max_len=block_size, dropout=dropout,
                                         batch_first=True)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout,
                                           activation=_gelu_tanh, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model))
        self.head = nn.Linear(d_model, self._V)

    def forward(self, idx) -> Tensor:
        idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
        if idx.ndim != 2 or idx.shape[1] > self.block_size:
            raise ValueError(f"CharTransformerLM(block_size={self.block_size}) expected token "
                             f"ids (N, T) with T <= {self.block_size}, got {idx.shape}")
        x = self.pos(self.embed(idx))
        t = idx.shape[1]  # no peeking ahead: -inf above the diagonal (torch wants the mask)
        causal = np.triu(np.full((t, t), -np.inf, x.data.dtype), k=1)
        h = self.blocks(x, mask=causal, is_causal=True)
        return self.head(h)

    # fit: CharLMTraining's (shendu.train.Trainer), the same call as CharLM's
    _default_step = 3e-3
    _default_schedule = "cosine"

    def _lm_vocab_size(self) -> int:
        return self._V

    def _lm_seq_len(self, seq_len) -> int:
        if seq_len is None:
            return int(self.block_size)
        if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) \
                or not 1 <= seq_len <= self.block_size:
            raise ValueError(f"CharTransformerLM.fit: seq_len must be an int in [1, "
                             f"block_size={self.block_size}], got {seq_len!r}")
        return int(seq_len)

    def evaluate(self, corpus_or_ids, split: str = "val", max_chars: int | None = None,
                 batch_size: int = 64) -> float:
        """Mean negative log-likelihood (nats per character) of a split of a corpus (or of
        an id array): every character after the first is predicted once, from windows of
        ``block_size`` that advance by half a block, so each prediction but the first
        block's sees at least ``block_size / 2`` characters of context."""
        if isinstance(corpus_or_ids, np.ndarray):
            data = corpus_or_ids
        else:
            data = corpus_or_ids.val if split == "val" else corpus_or_ids.train
        data = np.asarray(data, np.int64)[:max_chars]
        n = len(data)
        if n < 2:
            raise ValueError(f"{type(self).__name__}.evaluate: need at least 2 characters, "
                             f"got {n}")
        T = min(self.block_size, n - 1)
        hop = max(T // 2, 1)
        starts = list(range(0, n - T, hop))                  # window a: inputs a..a+T-1
        if starts[-1] != n - T - 1:
            starts.append(n - T - 1)
        windows = data[np.array(starts)[:, None] + np.arange(T + 1)]    # (m, T + 1)
        score = np.zeros((len(starts), T), bool)             # first-time targets only
        done = 0                                             # targets 1..done are scored
        for r, a in enumerate(starts):
            first = max(done + 1, a + 1)                     # target index range
            score[r, first - a - 1:] = True
            done = a + T
        was = self.training
        self.eval()
        total = 0.0
        with no_grad():
            for i in range(0, len(windows), batch_size):
                w = windows[i:i + batch_size]
                logp = F.log_softmax(self(w[:, :-1]), -1).data          # (b, T, V)
                picked = np.take_along_axis(logp, w[:, 1:, None], -1)[..., 0]
                total -= float(picked[score[i:i + batch_size]].astype(np.float64).sum())
        self.train(was)
        return total / (n - 1)

    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None):
        """Extend ``idx`` (N, T) by ``max_new_tokens`` sampled tokens (greedy if
        ``temperature == 0``), attending to at most the last ``block_size`` tokens. When the
        model was built with its vocabulary as a string, ``idx`` may be a string prompt,
        and the answer is then the string (as ``CharLM.generate``)."""
        text = isinstance(idx, str)
        if text:
            if self._index is None:
                raise ValueError("CharTransformerLM.generate: a text prompt needs the "
                                 "vocabulary; build the model as CharTransformerLM(vocab) "
                                 "with vocab a string, or pass token ids")
            bad = sorted(set(idx) - set(self._index))
            if not idx or bad:
                raise ValueError("CharTransformerLM.generate: the prompt needs at least one "
                                 "character" if not idx else f"CharTransformerLM.generate: "
                                 f"characters {''.join(bad)!r} are not in the vocabulary")
            idx = [self._index[c] for c in idx]
        idx = np.array(idx.data if isinstance(idx, Tensor) else idx, dtype=np.int64)
        if idx.ndim == 1:
            idx = idx[None]
        was = self.training
        self.eval()
        with no_grad():
            for _ in range(max_new_tokens):
                logits = self(idx[:, -self.block_size:]).data[:, -1].astype(np.float64)
                if temperature == 0:
                    nxt = logits.argmax(1)
                else:
                    logits = logits / temperature
                    if top_k is not None and top_k < logits.shape[1]:
                        kth = np.sort(logits, 1)[:, -top_k][:, None]
                        logits = np.where(logits < kth, -np.inf, logits)
                    p = np.exp(logits - logits.max(1, keepdims=True))
                    p /= p.sum(1, keepdims=True)
                    u = rng().random((len(p), 1))
                    nxt = np.minimum((p.cumsum(1) < u).sum(1), p.shape[1] - 1)
                idx = np.concatenate([idx, nxt[:, None].astype(np.int64)], 1)
        self.train(was)
        return "".join(self.vocab_size[i] for i in idx[0]) if text else idx
