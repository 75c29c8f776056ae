r"""Ready recurrent models: scikit-learn estimators on ``(N, T, F)`` sequence arrays —
:class:`RecurrentNeuralNetwork` (Elman 1990), :class:`LongShortTermMemory` (Hochreiter &
Schmidhuber 1997) and :class:`GatedRecurrentUnit` (Cho et al. 2014) — and
:class:`CharLM`, a character language model with ``generate``.

The estimators put a linear head on the recurrent stack, either on the last state
(``output="last"``: one prediction per sequence, e.g. the adding problem or digits read row
by row) or on every step (``output="sequence"``: ``y`` of shape ``(N, T)`` or
``(N, T, d)``). ``task="classification"`` trains on the cross-entropy and predicts labels;
``task="regression"`` on the mean squared error. Training is Adam (step
``learning_rate_init``) on mini-batches of ``batch_size`` for ``max_iter`` epochs, with the
gradient norm clipped (``clip_grad_norm``; Pascanu, Mikolov & Bengio 2013), through
:class:`shendu.train.Trainer`. The settings carry scikit-learn's names (``max_iter``,
``learning_rate_init``, ``batch_size``, ``random_state``, ``verbose``), as
:class:`~shendu.models.MLPClassifier`; the older ``epochs=`` and a number as
``learning_rate=`` still work, with a FutureWarning.

The same classes speak the seed's API: ``RecurrentNeuralNetwork(input_dim, hidden_dim,
output_dim)`` (likewise ``LongShortTermMemory``, ``GatedRecurrentUnit``) builds at once the
seed's network ``net`` — one recurrent layer of ``hidden_dim`` units (the fused scan of
``nn.RNN``/``nn.LSTM``/``nn.GRU``) and a linear read-out at every step — for ``forward(x)``:
x (N, T, input_dim) -> (N, T, output_dim), ``backward(y, learning_rate)`` (one step of
gradient descent on the squared error, through time; y (N, T, output_dim), or
(N, output_dim) for the last step) and ``train(X, y, epochs, learning_rate)`` (the loss of
each epoch). The estimator settings are keywords (``hidden_size=``, ``max_iter=``...) and
configure ``fit``, which builds its own network ``model_`` from them and the data; the two
networks are separate (``fit`` only checks ``input_dim`` against ``X`` when it is given).
"""

from __future__ import annotations

import numpy as np

from shendu import functional as F
from shendu import nn, optim
from shendu.autograd import no_grad
from shendu.backend import as_dtype, rng
from shendu.data import DataLoader, TensorDataset
from shendu.models._base import (
    BaseEstimator,
    CharLMTraining,
    LossPlateau,
    ModuleEstimator,
    as_array,
    l2_penalized,
    seeded,
    training_settings,
    type_of_target,
)
from shendu.models.seed import SeedAPI, check_seed_dims
from shendu.nn.utils import clip_grad_norm_
from shendu.tensor import Tensor
from shendu.train import LambdaCallback, Trainer

__all__ = ["RecurrentNeuralNetwork", "LongShortTermMemory", "GatedRecurrentUnit",
           "RecurrentHeadNet", "CharLM"]

_TASKS = ("classification", "regression")


class RecurrentHeadNet(nn.Module):
    """A recurrent stack (``batch_first``) and a linear head on its last state or on every
    step. ``forward(x, lengths=None)``: x (N, T, F) -> (N, n_out) or (N, T, n_out)."""

    def __init__(self, cell: str, n_features: int, hidden_size: int, num_layers: int,
                 n_outputs: int, bidirectional: bool = False, dropout: float = 0.0,
                 output: str = "last", nonlinearity: str = "tanh", dtype=None) -> None:
        super().__init__()
        kw = dict(num_layers=num_layers, batch_first=True, bidirectional=bidirectional,
                  dropout=dropout if num_layers > 1 else 0.0, dtype=dtype)
        if cell == "rnn":
            self.rnn = nn.RNN(n_features, hidden_size, nonlinearity=nonlinearity, **kw)
        elif cell == "lstm":
            self.rnn = nn.LSTM(n_features, hidden_size, **kw)
        elif cell == "gru":
            self.rnn = nn.GRU(n_features, hidden_size, **kw)
        else:
            raise ValueError(f"RecurrentHeadNet: unknown cell {cell!r} (rnn, lstm or gru)")
        if output not in ("last", "sequence"):
            raise ValueError(f"RecurrentHeadNet: output must be 'last' or 'sequence', got "
                             f"{output!r}")
        self.output = output
        self.directions = 2 if bidirectional else 1
        self.head = nn.Linear(self.directions * hidden_size, n_outputs, dtype=dtype)

    def forward(self, x, lengths=None) -> Tensor:
        out, state = self.rnn(x, lengths=lengths)
        if self.output == "sequence":
            return self.head(out)                                   # (N, T, n_out)
        h = state[0] if isinstance(state, tuple) else state         # (L·D, N, H)
        D = self.directions
        last = h[-1] if D == 1 else F.cat([h[-2], h[-1]], dim=1)    # (N, D·H)
        return self.head(last)


class _RecurrentEstimator(SeedAPI, BaseEstimator):
    """Shared fit/predict of the recurrent estimators and their seed API (see the module
    docstring)."""

    _cell = "rnn"
    _seed_sequence = True

    def __init__(self, input_dim: int | None = None, hidden_dim: int | None = None,
                 output_dim: int | None = None, *, hidden_size: int = 64,
                 num_layers: int = 1, task: str = "classification", output: str = "last",
                 bidirectional: bool = False, dropout: float = 0.0, max_iter: int = 30,
                 batch_size: int = 64, learning_rate="constant",
                 learning_rate_init: float = 1e-2, clip_grad_norm: float | None = 1.0,
                 alpha: float = 0.0, tol: float | None = None, n_iter_no_change: int = 10,
                 random_state=None, dtype=None, verbose: int = 0, epochs=None) -> None:
        self.input_dim, self.hidden_dim, self.output_dim = input_dim, hidden_dim, output_dim
        self.alpha, self.tol, self.n_iter_no_change = alpha, tol, n_iter_no_change
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.task, self.output = task, output
        self.bidirectional, self.dropout = bidirectional, dropout
        self.max_iter, self.batch_size = max_iter, batch_size
        self.learning_rate, self.learning_rate_init = learning_rate, learning_rate_init
        self.clip_grad_norm = clip_grad_norm
        self.random_state, self.dtype, self.verbose = random_state, dtype, verbose
        self.epochs = epochs
        self._seed_init()

    # ---------------------------------------------------------------- seed API
    def _seed_make(self) -> None:
        """Build the seed's network from the three sizes (see ``SeedAPI._seed_init``)."""
        check_seed_dims(type(self).__name__, self.input_dim, self.hidden_dim, self.output_dim)
        dt = as_dtype(self.dtype)
        with seeded(self.random_state):
            net = RecurrentHeadNet(self._cell, int(self.input_dim), int(self.hidden_dim), 1,
                                   int(self.output_dim), output="sequence", dtype=dt,
                                   **self._net_kwargs())
        self._seed_build(net, dt)

    def _seed_check(self, x: np.ndarray, where: str) -> tuple[np.ndarray, bool]:
        if x.ndim != 3 or x.shape[2] != self.input_dim or 0 in x.shape[:2]:
            raise ValueError(f"{type(self).__name__}.{where}: expected input (N, T, "
                             f"{self.input_dim}) (N sequences of T steps of {self.input_dim} "
                             f"features), got {x.shape}")
        return x, False

    # ------------------------------------------------------------ scikit-learn
    @property
    def _estimator_type(self) -> str:
        return "classifier" if self.task == "classification" else "regressor"

    _input_kinds = {"two_d_array": False, "three_d_array": True}

    @property
    def _estimator_kind(self) -> str:
        return "classifier" if self.task == "classification" else "regressor"

    @property
    def _multi_output(self) -> bool:
        return self.task == "regression"

    # ------------------------------------------------------------------ checks
    def _check_seq(self, X, where: str, reset: bool) -> np.ndarray:
        name = type(self).__name__
        if not reset:
            self._check_fitted(where)
        X = as_array(X, f"{name}.{where}")
        if X.ndim == 2 and reset is False and getattr(self, "n_features_in_", None) == 1:
            X = X[..., None]
        if X.ndim != 3 or X.dtype.kind not in "fiub":
            raise ValueError(f"{name}.{where}: expected X of shape (n_samples, T, n_features) "
                             f"(numeric sequences), got {X.dtype} {X.shape}")
        X = X.astype(as_dtype(self.dtype))
        if not np.isfinite(X).all():
            raise ValueError(f"{name}.{where}: X contains NaN or infinity")
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"{name}.{where}: X has shape {X.shape}; at least one sequence "
                             "of at least one step is required")
        if reset:
            if self.input_dim is not None and X.shape[2] != self.input_dim:
                raise ValueError(f"{name}.{where}: X has {X.shape[2]} features per step but "
                                 f"the model was built with input_dim={self.input_dim}")
            self.n_features_in_ = X.shape[2]
        else:
            self._check_fitted(where)
            if X.shape[2] != self.n_features_in_:
                raise ValueError(f"{name}.{where}: X has {X.shape[2]} features per step, but "
                                 f"{name} was fitted with {self.n_features_in_}")
        return X

    def _targets(self, X: np.ndarray, y) -> tuple[np.ndarray, int]:
        name = type(self).__name__
        self._check_y_present(y, "fit")
        y = as_array(y, f"{name}.fit", what="y")
        self._check_y_length(X, y, "fit")
        seq = self.output == "sequence"
        if seq and (y.ndim < 2 or y.shape[1] != X.shape[1]):
            raise ValueError(f"{name}.fit: output='sequence' needs y of shape (n, T"
                             f"{'' if self.task == 'classification' else '[, d]'}) with "
                             f"T = {X.shape[1]}, got {y.shape}")
        if self.task == "classification":
            kind = type_of_target(y.reshape(-1))
            if kind not in ("binary", "multiclass"):
                raise ValueError(f"{name}.fit: Unknown label type: {kind}. Maybe you are "
                                 f"trying to fit a classifier, which expects discrete classes "
                                 f"on a regression target with continuous values (use "
                                 f"task='regression')")
            flat = y.reshape(-1)
            self.classes_ = np.unique(flat)
            if len(self.classes_) < 2:
                raise ValueError(f"{name}.fit: y has a single class ({self.classes_[0]!r}); a "
                                 "classifier needs at least 2 classes")
            if not seq and y.ndim != 1:
                raise ValueError(f"{name}.fit: expected 1-D y of class labels, got shape "
                                 f"{y.shape}")
            t = np.searchsorted(self.classes_, flat).reshape(y.shape).astype(np.int64)
            return t, len(self.classes_)
        y = y.astype(as_dtype(self.dtype))
        if not np.isfinite(y).all():
            raise ValueError(f"{name}.fit: y contains NaN or infinity")
        self._y_trailing_ = y.shape[2 if seq else 1:]
        t = y.reshape(len(y), X.shape[1], -1) if seq else y.reshape(len(y), -1)
        return t, t.shape[-1]

    # --------------------------------------------------------------------- fit
    def _net_kwargs(self) -> dict:
        return {}

    def fit(self, X, y) -> _RecurrentEstimator:
        name = type(self).__name__
        if self.task not in _TASKS:
            raise ValueError(f"{name}: task must be 'classification' or 'regression', got "
                             f"{self.task!r}")
        self._seed_validate()
        cfg = training_settings(self)
        X = self._check_seq(X, "fit", reset=True)
        t, n_out = self._targets(X, y)
        classify = self.task == "classification"
        with seeded(self.random_state):
            self.model_ = RecurrentHeadNet(self._cell, X.shape[2], self.hidden_size,
                                           self.num_layers, n_out, self.bidirectional,
                                           self.dropout, self.output,
                                           dtype=as_dtype(self.dtype), **self._net_kwargs())
            params = list(self.model_.parameters())
            opt = optim.Adam(params, lr=cfg["learning_rate_init"])

            def loss_fn(out, target):
                if classify:
                    return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))
                return F.mse_loss(out, target)

            plateau = LossPlateau(self, cfg["tol"], cfg["n_iter_no_change"])
            callbacks = [plateau]
            clip = cfg["clip_grad_norm"]
            if clip:
                callbacks.append(LambdaCallback(
                    on_after_backward=lambda batch, logs: clip_grad_norm_(params, clip)))
            loader = DataLoader(TensorDataset(X, t), batch_size=self.batch_size, shuffle=True)
            trainer = Trainer(self.model_, l2_penalized(loss_fn, self.model_, cfg["alpha"]),
                              opt, loader, callbacks=callbacks, verbose=self.verbose)
            self.history_ = trainer.fit(cfg["max_iter"])
        self.n_iter_ = len(self.history_.epochs)
        plateau.warn_if_not_converged(cfg["max_iter"])
        self.model_.eval()
        return self

    def _raw(self, X, where: str) -> np.ndarray:
        X = self._check_seq(X, where, reset=False)
        self.model_.eval()
        out = []
        with no_grad():
            for i in range(0, len(X), 1024):
                out.append(self.model_(Tensor(X[i:i + 1024])).data)
        return np.concatenate(out).astype(np.float64)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities: (n, n_classes), or (n, T, n_classes) per step."""
        if self.task != "classification":
            raise AttributeError(f"{type(self).__name__}.predict_proba: only for "
                                 "task='classification'")
        z = self._raw(X, "predict_proba")
        z = np.exp(z - z.max(-1, keepdims=True))
        return z / z.sum(-1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """Labels (classification) or values (regression), shaped like the fitted ``y``."""
        self._check_fitted("predict")
        if self.task == "classification":
            return self.classes_[self.predict_proba(X).argmax(-1)]
        z = self._raw(X, "predict")
        return z.reshape(z.shape[:-1] + tuple(self._y_trailing_))

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy (per step for sequences) or R²."""
        if self.task == "classification":
            pred = self.predict(X)
            return float(np.average(pred.reshape(-1) == np.asarray(y).reshape(-1)))
        y = np.asarray(y, dtype=np.float64)
        flat = y.reshape(len(y), -1)
        pred = np.asarray(self.predict(X), dtype=np.float64).reshape(flat.shape)
        ss_res = ((flat - pred) ** 2).sum(0)
        ss_tot = ((flat - flat.mean(0)) ** 2).sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res > 0, 0.0, 1.0))
        return float(np.mean(r2))


_SHAPES = """

    Seed API: ``{name}(input_dim, hidden_dim, output_dim)``; ``forward(x)``: x (N, T,
    input_dim) -> (N, T, output_dim); ``backward(y, learning_rate)``: y (N, T, output_dim),
    or (N, output_dim) for the last step; ``train(X, y, epochs, learning_rate)`` -> the
    loss of each epoch. Estimator API: keywords (``hidden_size``, ``num_layers``, ``task``,
    ``output``, ``max_iter``, ``learning_rate_init``, ``batch_size``, ``clip_grad_norm``,
    ``random_state``...), ``fit(X, y)`` with X (N, T, F); ``dtype`` (default float32) is the
    dtype of both networks. ``learning_rate`` is scikit-learn's schedule (only
    ``"constant"`` here); ``alpha`` is scikit-learn's L2 penalty ``alpha / 2 * sum ||W||^2 /
    n_batch`` on the weight matrices (default 0: none); ``tol``/``n_iter_no_change`` are
    scikit-learn's stopping rule on the training loss (default ``tol=None``: run
    ``max_iter`` epochs), with ``loss_curve_``, ``loss_``, ``best_loss_`` after ``fit``;
    ``epochs`` and a number as ``learning_rate`` are the deprecated names of ``max_iter``
    and ``learning_rate_init``."""


class RecurrentNeuralNetwork(_RecurrentEstimator):
    """An Elman (1990) recurrent network (``nonlinearity`` ``"tanh"`` or ``"relu"``) as a
    scikit-learn estimator on (N, T, F) sequences; see the module docstring."""

    __doc__ += _SHAPES.format(name="RecurrentNeuralNetwork")
    _cell = "rnn"

    def __init__(self, input_dim: int | None = None, hidden_dim: int | None = None,
                 output_dim: int | None = None, *, hidden_size: int = 64,
                 num_layers: int = 1, nonlinearity: str = "tanh",
                 task: str = "classification", output: str = "last",
                 bidirectional: bool = False, dropout: float = 0.0, max_iter: int = 30,
                 batch_size: int = 64, learning_rate="constant",
                 learning_rate_init: float = 1e-2, clip_grad_norm: float | None = 1.0,
                 alpha: float = 0.0, tol: float | None = None, n_iter_no_change: int = 10,
                 random_state=None, dtype=None, verbose: int = 0, epochs=None) -> None:
        self.nonlinearity = nonlinearity      # the seed network (built by super) needs it
        super().__init__(input_dim, hidden_dim, output_dim, hidden_size=hidden_size,
                         num_layers=num_layers, task=task, output=output,
                         bidirectional=bidirectional, dropout=dropout, max_iter=max_iter,
                         batch_size=batch_size, learning_rate=learning_rate,
                         learning_rate_init=learning_rate_init,
                         clip_grad_norm=clip_grad_norm, alpha=alpha, tol=tol,
                         n_iter_no_change=n_iter_no_change, random_state=random_state,
                         dtype=dtype, verbose=verbose, epochs=epochs)

    def _net_kwargs(self) -> dict:
        return {"nonlinearity": self.nonlinearity}


class LongShortTermMemory(_RecurrentEstimator):
    """An LSTM (Hochreiter & Schmidhuber 1997; forget gate: Gers et al. 2000) as a
    scikit-learn estimator on (N, T, F) sequences; see the module docstring."""

    __doc__ += _SHAPES.format(name="LongShortTermMemory")
    _cell = "lstm"


class GatedRecurrentUnit(_RecurrentEstimator):
    """A GRU (Cho et al. 2014) as a scikit-learn estimator on (N, T, F) sequences; see the
    module docstring."""

    __doc__ += _SHAPES.format(name="GatedRecurrentUnit")
    _cell = "gru"


# ----------------------------------------------------------------------- CharLM
class CharLM(CharLMTraining, nn.Module, ModuleEstimator):
    """A character-level language model: embedding, an LSTM (or GRU) stack, a linear
    readout to next-character logits (the char-rnn of Karpathy 2015, after Graves 2013).

    ``CharLM(vocab)`` — ``vocab`` a string of the characters (e.g. ``CharCorpus.vocab``).
    :meth:`fit` trains on random windows of a :class:`~shendu.data.sequences.CharCorpus`
    through :class:`shendu.train.Trainer` (``seq_len`` characters, default 100; see
    :class:`~shendu.models._base.CharLMTraining` for the arguments, the same as
    :class:`~shendu.models.CharTransformerLM`'s); :meth:`evaluate` gives nats per
    character on a whole split (or an id array), streaming it with the state carried
    across windows; :meth:`generate` samples text from a string prompt, or ids from ids.

    It is also a scikit-learn estimator as far as one applies to a language model:
    ``get_params``/``set_params`` (which builds the network again), ``clone`` and tags
    (raw text in, no target).
    """

    _input_kinds = {"two_d_array": False, "string": True}

    def __init__(self, vocab: str, hidden_size: int = 256, num_layers: int = 2,
                 cell: str = "lstm", embedding_dim: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(vocab, str) or len(vocab) < 2 or len(set(vocab)) != len(vocab):
            raise ValueError("CharLM: vocab must be a string of at least 2 distinct characters")
        if cell not in ("lstm", "gru"):
            raise ValueError(f"CharLM: cell must be 'lstm' or 'gru', got {cell!r}")
        self.vocab, self.cell = vocab, cell
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.embedding_dim, self.dropout = embedding_dim, dropout
        self._index = {c: i for i, c in enumerate(vocab)}
        self.embed = nn.Embedding(len(vocab), embedding_dim)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(embedding_dim, hidden_size, num_layers, batch_first=True,
                       dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size, len(vocab))

    def forward(self, idx, state=None):
        """``idx`` (N, T) ids -> (logits (N, T, V), state)."""
        out, state = self.rnn(self.embed(idx), state)
        return self.head(out), state

    # fit: CharLMTraining's (shendu.train.Trainer), the same call as CharTransformerLM's
    _default_step = 2e-3
    _default_schedule = "constant"

    def _lm_vocab_size(self) -> int:
        return len(self.vocab)

    def _lm_seq_len(self, seq_len) -> int:
        if seq_len is None:
            return 100
        if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) \
                or seq_len < 1:
            raise ValueError(f"CharLM.fit: seq_len must be a positive int, got {seq_len!r}")
        return int(seq_len)

    def evaluate(self, corpus_or_ids, split: str = "val", max_chars: int | None = None,
                 streams: int = 32, window: int = 256) -> float:
        """Mean negative log-likelihood (nats per character) of a split of a corpus (or of
        an id array): the text is cut into ``streams`` contiguous pieces read side by side,
        the state carried from window to window (so every prediction sees its full
        history)."""
        if isinstance(corpus_or_ids, np.ndarray):
            data = corpus_or_ids.reshape(-1).astype(np.int64)
        else:
            data = corpus_or_ids.val if split == "val" else corpus_or_ids.train
        if max_chars is not None:
            data = data[:max_chars]
        n = (len(data) - 1) // streams
        if n < 1:
            raise ValueError(f"CharLM.evaluate: the {split} split is too short")
        src = data[:streams * n].reshape(streams, n)
        tgt = data[1:streams * n + 1].reshape(streams, n)
        was = self.training
        self.eval()
        total, state = 0.0, None
        with no_grad():
            for s in range(0, n, window):
                logits, state = self(src[:, s:s + window], state)
                V = len(self.vocab)
                total += float(F.cross_entropy(logits.reshape(-1, V),
                                               tgt[:, s:s + window].reshape(-1),
                                               reduction="sum").item())
        self.train(was)
        return total / (streams * n)

    def generate(self, prompt, length: int, temperature: float = 1.0,
                 top_k: int | None = None):
        """``prompt`` followed by ``length`` sampled characters (shendu's generator; greedy
        when ``temperature == 0``; only the ``top_k`` likeliest when given). A string
        prompt gives a string; ids ((T,) or (N, T), as ``CharTransformerLM.generate``
        takes) give ids (N, T + length)."""
        text = isinstance(prompt, str)
        if text:
            if not prompt:
                raise ValueError("CharLM.generate: the prompt needs at least one character")
            try:
                ids = np.array([[self._index[c] for c in prompt]], np.int64)
            except KeyError as e:
                raise ValueError(f"CharLM.generate: character {e.args[0]!r} is not in the "
                                 "vocabulary") from None
        else:
            ids = np.array(getattr(prompt, "data", prompt), dtype=np.int64)
            if ids.ndim == 1:
                ids = ids[None]
            if ids.ndim != 2 or ids.shape[1] == 0 or ids.min() < 0 \
                    or ids.max() >= len(self.vocab):
                raise ValueError(f"CharLM.generate: expected a string or token ids (T,) or "
                                 f"(N, T) in [0, {len(self.vocab)}) with T >= 1, got "
                                 f"{ids.shape}")
        was = self.training
        self.eval()
        out = [ids]
        with no_grad():
            logits, state = self(ids)
            z = logits.data[:, -1].astype(np.float64)                   # (N, V)
            for _ in range(length):
                if temperature == 0:
                    nxt = z.argmax(1)
                else:
                    z = z / temperature
                    if top_k is not None and top_k < z.shape[1]:
                        z = np.where(z < np.sort(z, 1)[:, -top_k][:, None], -np.inf, z)
                    p = np.exp(z - z.max(1, keepdims=True))
                    p /= p.sum(1, keepdims=True)
                    u = rng().random((len(p), 1))
                    nxt = np.minimum((p.cumsum(1) < u).sum(1), p.shape[1] - 1)
                nxt = nxt.astype(np.int64)[:, None]                     # (N, 1)
                out.append(nxt)
                logits, state = self(nxt, state)
                z = logits.data[:, -1].astype(np.float64)
        self.train(was)
        ids = np.concatenate(out, 1)
        return "".join(self.vocab[i] for i in ids[0]) if text else ids
