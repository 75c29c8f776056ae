r"""Sequence to sequence with additive attention: :class:`AttentionMechanism` (a
scikit-learn-style estimator) and the network it trains, :class:`Seq2SeqNet`.

The RNN encoder-decoder (Cho et al. 2014, "Learning phrase representations using RNN
encoder-decoder for statistical machine translation"; Sutskever, Vinyals & Le 2014) reads a
source sequence ``x_1..x_S`` into states and then writes the target one token at a time.
With additive attention (Bahdanau, Cho & Bengio 2014, "Neural machine translation by
jointly learning to align and translate") the decoder looks back at every encoder state
at every step instead of at one fixed summary::

    h_j   = [h→_j ; h←_j] = BiRNN(E_src x_j)                 annotations      (N, S, D·H)
    s_0   = tanh(W_s [h→_S ; h←_1] + b_s)                    decoder state    (N, H)
    e_ij  = v^T tanh(W_q s_{i-1} + W_k h_j [+ U f_ij])       alignment scores (N, S)
    α_ij  = softmax_j(e_ij)            (padding positions masked out)
    c_i   = Σ_j α_ij u_j                                     context
    s_i   = Cell([E_tgt y_{i-1} ; c_i], s_{i-1})             GRUCell / LSTMCell
    p(y_i | y_<i, x) = softmax(W_o [s_i ; c_i] + b_o)

``y_0`` is a begin-of-sequence token and the decoder ends a sequence by emitting an
end-of-sequence class. The keys are always the annotations ``h_j`` (they say *where*);
the values ``u_j`` (what is read there) are

* ``values="annotations"``: ``u_j = h_j``, Bahdanau et al.'s model;
* ``values="embeddings"``: ``u_j = E_src x_j``, the source token itself.

``location_aware`` adds the location term ``U f_ij`` of Chorowski, Bahdanau, Serdyuk, Cho
& Bengio (2015, "Attention-based models for speech recognition"): ``f_i`` is a width-3
convolution of the previous step's weights ``α_{i-1}`` (so ``U f_ij`` is a learned linear
map of ``α_{i-1, j-1..j+1}``), which lets the scorer say "one step left of where I looked
last". ``α_{i-1}`` enters as an input feature: no gradient flows back through it.

Why the choice matters (measured on digit reversal, docs/attention.md): with Bahdanau's
annotation values the model reverses perfectly well but attends *one position to the
right* of the mirrored one — to the token it has just written, whose neighbour the forward
RNN still remembers. Reading the bare token embeddings removes that detour, and the
location term makes the alignment crisp: the attention map becomes the exact
anti-diagonal. Those two are the defaults.

With ``attention=False`` the same network uses the fixed ``c_i = c = [h→_S ; h←_1]`` at
every step: Cho et al.'s encoder-decoder, in which the whole source must squeeze through
one vector of ``D·H`` numbers, the bottleneck that attention removed. Bahdanau et al.
start the decoder from the backward state ``h←_1`` only; here ``s_0`` sees both
directions' final states.

Training minimises the cross-entropy of the next token under teacher forcing (Williams &
Zipser 1989): the decoder reads the true previous token ``y_{i-1}``, or, with probability
``1 - teacher_forcing_ratio`` per step and sequence, its own greedy guess (the
"scheduled sampling" of Bengio et al. 2015, at a fixed ratio). Prediction is greedy: each
step feeds back the arg-max token until every sequence has ended.

Speed: the keys' projection ``W_k h_j`` is computed once per batch (not once per decoder
step), and every step runs on the whole batch; with full teacher forcing the output layer
runs once over all steps.

The seed's API on the same class: ``AttentionMechanism(input_dim, hidden_dim, output_dim)``
builds at once the seed's network ``net`` — self-attention over the sequence, scaled
dot-product (Vaswani et al. 2017) with a learned query, key and value of width
``hidden_dim`` and a linear read-out at every step (:class:`~shendu.models.seed.
SelfAttentionNet`) — for ``forward(x)``: x (N, T, input_dim) -> (N, T, output_dim),
``backward(y, learning_rate)`` (one step of gradient descent on the squared error; y (N, T,
output_dim), or (N, output_dim) for the last step) and ``train(X, y, epochs,
learning_rate)``. The estimator settings are keywords and configure ``fit``, which trains
the encoder-decoder above on token sequences; the two networks are separate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shendu import functional as F
from shendu import nn, optim
from shendu.autograd import no_grad
from shendu.backend import as_dtype, rng
from shendu.data import DataLoader, TensorDataset
from shendu.models._base import (
    BaseEstimator,
    LossPlateau,
    l2_penalized,
    seeded,
    training_settings,
)
from shendu.models.seed import SeedAPI, SelfAttentionNet, check_seed_dims
from shendu.tensor import Tensor
from shendu.train import Callback, Trainer

__all__ = ["AttentionMechanism", "Seq2SeqNet"]

_IGNORE = -100  # cross-entropy's ignore_index: target positions after a sequence's end


def _arr(x) -> np.ndarray:
    return np.asarray(x.data if isinstance(x, Tensor) else x)


class Seq2SeqNet(nn.Module):
    """The encoder-decoder of :class:`AttentionMechanism` (equations in the module doc).

    Token ids: symbols ``0..n_symbols-1``; ``end_id = n_symbols`` is the end-of-sequence
    class the decoder emits and also the source's padding id; ``bos_id = n_symbols + 1``
    is fed to the decoder at its first step. Parameters: ``src_embed``, ``tgt_embed``,
    ``encoder`` (GRU/LSTM), ``bridge`` (``W_s``), ``decoder`` (the cell), ``attention``
    (``query_proj`` = ``W_q``, ``key_proj`` = ``W_k``, ``v``), ``location`` (``U``, (A, 3))
    and ``out`` (``W_o``).

    ``forward(src, lengths, dec_in)`` (training, teacher forcing): ``src`` (N, S) ids,
    ``lengths`` (N,) source lengths, ``dec_in`` (N, T) decoder inputs (``bos_id`` then the
    target shifted right) -> next-token logits (N, T, n_symbols + 1).
    ``greedy(src, lengths, steps)`` decodes without a graph.
    """

    def __init__(self, n_symbols: int, embed_dim: int = 32, hidden_size: int = 64,
                 cell: str = "gru", bidirectional: bool = True, attention: bool = True,
                 attention_dim: int | None = None, values: str = "embeddings",
                 location_aware: bool = True, teacher_forcing_ratio: float = 1.0,
                 dtype=None) -> None:
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"Seq2SeqNet: cell must be 'gru' or 'lstm', got {cell!r}")
        if values not in ("annotations", "embeddings"):
            raise ValueError(f"Seq2SeqNet: values must be 'annotations' or 'embeddings', got "
                             f"{values!r}")
        if not 0.0 <= teacher_forcing_ratio <= 1.0:
            raise ValueError(f"Seq2SeqNet: teacher_forcing_ratio must be in [0, 1], got "
                             f"{teacher_forcing_ratio}")
        V, E, H = int(n_symbols), int(embed_dim), int(hidden_size)
        self.n_symbols, self.end_id, self.bos_id = V, V, V + 1
        self.cell, self.bidirectional = cell, bool(bidirectional)
        self.teacher_forcing_ratio = float(teacher_forcing_ratio)
        D = 2 if self.bidirectional else 1
        De = D * H                                       # annotation size
        A = attention_dim or H                           # alignment model size
        self.values = values
        Dc = De if (values == "annotations" or not attention) else E     # context size
        self.src_embed = nn.Embedding(V + 1, E, padding_idx=V, dtype=dtype)
        self.tgt_embed = nn.Embedding(V + 2, E, dtype=dtype)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.encoder = rnn(E, H, batch_first=True, bidirectional=self.bidirectional,
                           dtype=dtype)
        self.bridge = nn.Linear(De, H, dtype=dtype)
        step = nn.GRUCell if cell == "gru" else nn.LSTMCell
        self.decoder = step(E + Dc, H, dtype=dtype)
        self.attention = nn.AdditiveAttention(H, De, A, dtype=dtype) if attention else None
        self.location = (nn.Linear(3, A, bias=False, dtype=dtype)
                         if attention and location_aware else None)
        self.out = nn.Linear(H + Dc, V + 1, dtype=dtype)

    # ------------------------------------------------------------------ encoder
    def encode(self, src: np.ndarray, lengths: np.ndarray):
        """Annotations (N, S, D·H), the attention values (annotations or embeddings), the
        final states [h→_S ; h←_1] (N, D·H) and the decoder's initial state."""
        emb = self.src_embed(src)                                           # (N, S, E)
        res = self.encoder(emb, lengths=lengths)
        keys, hn = res[0], (res[1][0] if self.cell == "lstm" else res[1])    # hn (D, N, H)
        final = F.cat([hn[0], hn[1]], 1) if self.bidirectional else hn[0]   # (N, D·H)
        s0 = F.tanh(self.bridge(final))                                     # (N, H)
        if self.cell == "lstm":
            s0 = (s0, Tensor(np.zeros(s0.shape, s0.dtype)))
        return keys, (keys if self.values == "annotations" else emb), final, s0

    # ------------------------------------------------------------------ decoder
    def _steps(self, keys, vals, final, state, pad_mask, steps: int, dec_in=None,
               greedy: bool = False):
        """Run ``steps`` decoder steps. Yields per step ``(h, ctx, weights)`` through the
        lists it returns; inputs come from ``dec_in`` (teacher forcing) or from the
        previous step's arg-max (``greedy``, or a failed teacher-forcing coin)."""
        N, S = keys.shape[0], keys.shape[1]
        lstm = self.cell == "lstm"
        kp = self.attention.project_keys(keys) if self.attention is not None else None
        ratio = self.teacher_forcing_ratio if (self.training and not greedy) else 1.0
        all_tf = dec_in is not None and ratio >= 1.0
        emb_all = self.tgt_embed(dec_in) if all_tf else None               # (N, T, E)
        prev = np.full(N, self.bos_id, np.int64)
        ended = np.zeros(N, bool)
        a_prev = np.zeros((N, S + 2), keys.dtype)    # α_{i-1}, zero-padded at both ends
        hs, ctxs, logits, weights, preds = [], [], [], [], []
        for t in range(steps):
            h = state[0] if lstm else state                                 # s_{t-1} (N, H)
            if self.attention is not None:
                kpt = kp                                                    # (N, S, A)
                if self.location is not None:   # windows α_{i-1, j-1..j+1}: (N, S, 3)
                    f = np.stack([a_prev[:, :-2], a_prev[:, 1:-1], a_prev[:, 2:]], 2)
                    kpt = kp + self.location(Tensor(f))
                ctx, w = self.attention(h, keys, vals, key_padding_mask=pad_mask,
                                        projected_keys=kpt)                 # (N, Dc), (N, S)
                a_prev[:, 1:-1] = w.data
                weights.append(a_prev[:, 1:-1].copy())
            else:
                ctx = final
            if all_tf:
                e = emb_all[:, t]                                           # (N, E)
            else:
                tok = prev
                if dec_in is not None and t > 0 and ratio > 0.0:
                    forced = rng().random(N) < ratio
                    tok = np.where(forced, dec_in[:, t], prev)
                e = self.tgt_embed(tok)
            state = self.decoder(F.cat([e, ctx], 1), state)
            h = state[0] if lstm else state                                 # s_t
            if all_tf:
                hs.append(h)
                ctxs.append(ctx)
                continue
            lo = self.out(F.cat([h, ctx], 1))                               # (N, V + 1)
            logits.append(lo)
            prev = lo.data.argmax(1)
            if greedy:
                preds.append(np.where(ended, self.end_id, prev))
                ended |= prev == self.end_id
                if ended.all():
                    break
        if all_tf:   # one output GEMM for all steps: (N, T, H + De) -> (N, T, V + 1)
            out = self.out(F.cat([F.stack(hs, 1), F.stack(ctxs, 1)], 2))
        else:
            out = F.stack(logits, 1)
        return out, weights, preds

    @staticmethod
    def _trim(src: np.ndarray, lengths: np.ndarray):
        S = max(int(lengths.max()), 1)
        src = src[:, :S]
        return src, lengths, np.arange(S)[None, :] >= lengths[:, None]

    def forward(self, src, lengths, dec_in) -> Tensor:
        src, lengths, pad_mask = self._trim(_arr(src), _arr(lengths))
        dec_in = _arr(dec_in)
        keys, vals, final, state = self.encode(src, lengths)
        out, _, _ = self._steps(keys, vals, final, state, pad_mask, dec_in.shape[1], dec_in)
        return out

    def greedy(self, src, lengths, steps: int):
        """Greedy decoding: ``(tokens (N, T'), weights (N, T', S) or None)``, ``T' <=
        steps`` (it stops once every sequence has emitted ``end_id``; later tokens of an
        ended sequence are ``end_id``)."""
        src, lengths, pad_mask = self._trim(_arr(src), _arr(lengths))
        with no_grad():
            keys, vals, final, state = self.encode(src, lengths)
            _, w, preds = self._steps(keys, vals, final, state, pad_mask, steps, greedy=True)
        tokens = np.stack(preds, 1) if preds else np.zeros((len(src), 0), np.int64)
        weights = np.stack(w[:tokens.shape[1]], 1) if w else None
        return tokens, weights


class _ClipGradNorm(Callback):
    def __init__(self, max_norm: float) -> None:
        self.max_norm = max_norm

    def on_after_backward(self, batch: int, logs: dict) -> None:
        nn.utils.clip_grad_norm_(self.trainer.model.parameters(), self.max_norm)


def _sequence_loss(logits: Tensor, target) -> Tensor:
    """Mean next-token cross-entropy over the real target positions (and each end)."""
    k = logits.shape[-1]
    t = _arr(target)
    return F.cross_entropy(logits.reshape(-1, k), t[:, :logits.shape[1]].reshape(-1),
                           ignore_index=_IGNORE)


class AttentionMechanism(SeedAPI, BaseEstimator):
    r"""An RNN encoder-decoder with Bahdanau additive attention, as an estimator; and, built
    the seed's way, self-attention over a sequence.

    Seed API: ``AttentionMechanism(input_dim, hidden_dim, output_dim)``; ``forward(x)``: x
    (N, T, input_dim) -> (N, T, output_dim), each step a read-out of
    ``softmax(Q K^T / sqrt(hidden_dim)) V`` (query, key, value: learned linear maps of x of
    width ``hidden_dim``); ``backward(y, learning_rate)``: y (N, T, output_dim), or
    (N, output_dim) for the last step; ``train(X, y, epochs, learning_rate)`` -> the loss of
    each epoch; ``net.attention_weights(x)`` (N, T, T). The network is in ``dtype``
    (default float32).

    Estimator API (the keywords below):

    ``fit(X, y)`` learns to map each source sequence ``X[i]`` to its target ``y[i]``;
    ``predict(X)`` decodes greedily; ``score(X, y)`` is the exact-sequence accuracy (a
    prediction counts only if every token and its length are right);
    ``attention_weights(X)`` (or ``predict(X, return_attention=True)``) gives where each
    output step looked in the source.

    Sequences are integer tokens ``0..vocab_size-1``, given as a 2-D array padded with
    ``pad_id`` after each sequence (a row ends at its first ``pad_id``; with
    ``pad_id=None`` every row is full length), a list of 1-D sequences of any lengths, or
    (for ``predict`` and ``attention_weights``) a single 1-D sequence. Predictions come
    back in the same form: a 2-D array padded with ``pad_id`` (``vocab_size`` if
    ``pad_id`` is None), a list, or one sequence.

    Parameters
    ----------
    input_dim, hidden_dim, output_dim : the seed's constructor (see above); leave them
        ``None`` for the estimator.
    vocab_size : number of symbols; default ``max token + 1`` of the training data.
    pad_id : the padding id in 2-D arrays (e.g. ``sequence_task(...).pad_id``).
    cell : ``"gru"`` (Cho et al. 2014) or ``"lstm"`` (Hochreiter & Schmidhuber 1997), for
        both the encoder and the decoder cell.
    embed_dim, hidden_size : token embedding size; hidden units per direction.
    bidirectional : a bidirectional encoder (Schuster & Paliwal 1997), as Bahdanau et al.
    attention : additive attention; ``False`` gives the fixed-summary encoder-decoder.
    attention_dim : hidden size of the alignment model (default ``hidden_size``).
    values : what attention reads at the attended positions: ``"embeddings"`` (the source
        tokens) or ``"annotations"`` (the encoder states, as Bahdanau et al.); see the
        module doc for why the default gives exact alignments.
    location_aware : add Chorowski et al.'s (2015) location term to the scores.
    teacher_forcing_ratio : probability of feeding the true previous token in training.
    max_iter, batch_size, learning_rate_init, weight_decay : AdamW (torch's, decoupled
        ``weight_decay``) for ``max_iter`` epochs on mini-batches reshuffled every epoch,
        step ``learning_rate_init``; ``clip_grad_norm`` clips the global gradient norm
        (None: no clipping).
    alpha : scikit-learn's L2 penalty ``alpha / 2 * sum ||W||^2 / n_batch`` on the weight
        matrices, added to the loss (default 0), apart from AdamW's decoupled
        ``weight_decay``.
    tol, n_iter_no_change : scikit-learn's stopping rule on the training loss: stop once
        more than ``n_iter_no_change`` epochs in a row have not lowered the best loss by
        ``tol`` (default ``tol=None``: run all ``max_iter`` epochs).
    learning_rate : the schedule, scikit-learn's name: ``"cosine"`` anneals the step to 0
        over the ``max_iter`` budget, batch by batch (Loshchilov & Hutter 2017, without
        restarts); ``"constant"`` keeps it.
    epochs, clip_norm, lr_schedule : deprecated names of ``max_iter``, ``clip_grad_norm``
        and ``learning_rate``; a number as ``learning_rate`` is ``learning_rate_init``
        (each with a FutureWarning).
    callbacks : :class:`shendu.train.Callback` objects passed to the training loop (e.g.
        one that scores held-out data after each epoch and stops at a target).
    random_state : int seeding initial weights, shuffling and teacher-forcing coins.
    dtype : the networks' dtype (default float32), for ``fit`` and the seed API alike.
    verbose : 0 silent, 1 progress bars, 2 one line per epoch.

    Attributes
    ----------
    model_ : the trained :class:`Seq2SeqNet`; ``history_`` the loss per epoch;
    ``vocab_size_``, ``max_target_len_``.
    """

    _seed_sequence = True

    def __init__(self, input_dim: int | None = None, hidden_dim: int | None = None,
                 output_dim: int | None = None, *, vocab_size: int | None = None,
                 pad_id: int | None = None,
                 cell: str = "gru", embed_dim: int = 32, hidden_size: int = 64,
                 bidirectional: bool = True, attention: bool = True,
                 attention_dim: int | None = None, values: str = "embeddings",
                 location_aware: bool = True, teacher_forcing_ratio: float = 1.0,
                 max_iter: int = 20, batch_size: int = 64, learning_rate="cosine",
                 learning_rate_init: float = 3e-3, weight_decay: float = 0.0,
                 clip_grad_norm: float | None = 1.0, alpha: float = 0.0,
                 tol: float | None = None, n_iter_no_change: int = 10,
                 callbacks: Sequence[Callback] | None = None,
                 random_state: int | None = None, dtype=None, verbose: int = 0,
                 epochs=None, clip_norm=None, lr_schedule=None) -> None:
        self.input_dim, self.hidden_dim, self.output_dim = input_dim, hidden_dim, output_dim
        self.vocab_size, self.pad_id, self.cell = vocab_size, pad_id, cell
        self.embed_dim, self.hidden_size = embed_dim, hidden_size
        self.bidirectional, self.attention, self.attention_dim = (bidirectional, attention,
                                                                 attention_dim)
        self.values, self.location_aware = values, location_aware
        self.teacher_forcing_ratio = teacher_forcing_ratio
        self.max_iter, self.batch_size = max_iter, batch_size
        self.learning_rate, self.learning_rate_init = learning_rate, learning_rate_init
        self.weight_decay, self.clip_grad_norm = weight_decay, clip_grad_norm
        self.alpha, self.tol, self.n_iter_no_change = alpha, tol, n_iter_no_change
        self.epochs, self.clip_norm, self.lr_schedule = epochs, clip_norm, lr_schedule
        self.callbacks, self.random_state, self.verbose = callbacks, random_state, verbose
        self.dtype = dtype
        self._seed_init()

    def _seed_make(self) -> None:
        """Build the seed's network from the three sizes (see ``SeedAPI._seed_init``)."""
        check_seed_dims(type(self).__name__, self.input_dim, self.hidden_dim, self.output_dim)
        dt = as_dtype(self.dtype)
        with seeded(self.random_state):
            net = SelfAttentionNet(int(self.input_dim), int(self.hidden_dim),
                                   int(self.output_dim), dt)
        self._seed_build(net, dt)

    def _seed_check(self, x: np.ndarray, where: str) -> tuple[np.ndarray, bool]:
        if x.ndim != 3 or x.shape[2] != self.input_dim or 0 in x.shape[:2]:
            raise ValueError(f"{type(self).__name__}.{where}: expected input (N, T, "
                             f"{self.input_dim}) (N sequences of T steps of {self.input_dim} "
                             f"features), got {x.shape}")
        return x, False

    # ------------------------------------------------------------------ inputs
    def _parse(self, X, where: str, what: str, single_ok: bool):
        """Sequences -> (tokens (n, W) int64 with -1 past each end, lengths (n,), form)."""
        name = f"{type(self).__name__}.{where}"
        if isinstance(X, Tensor):
            X = X.data
        if isinstance(X, np.ndarray) and X.ndim == 2:
            if X.dtype.kind not in "iu":
                raise ValueError(f"{name}: expected {what} of integer token ids, got dtype "
                                 f"{X.dtype}")
            tok = X.astype(np.int64)
            W = tok.shape[1]
            if self.pad_id is None:
                lengths = np.full(len(tok), W, np.int64)
            else:
                is_pad = tok == self.pad_id
                lengths = np.where(is_pad.any(1), is_pad.argmax(1), W).astype(np.int64)
                tok = np.where(np.arange(W)[None, :] < lengths[:, None], tok, -1)
            form = "array"
        else:
            if isinstance(X, np.ndarray) and X.ndim == 1 and X.dtype.kind in "iu":
                if not single_ok:
                    raise ValueError(f"{name}: expected {what} as a 2-D array (n, T) or a "
                                     f"list of sequences, got one 1-D sequence {X.shape}; "
                                     f"wrap it in a list")
                seqs, form = [X], "single"
            elif isinstance(X, (list, tuple)):
                seqs, form = list(X), "list"
            else:
                raise ValueError(f"{name}: expected {what} as a 2-D integer array (n, T), a "
                                 f"list of 1-D integer sequences or one sequence, got "
                                 f"{type(X).__name__}"
                                 + (f" {X.dtype} {X.shape}" if isinstance(X, np.ndarray)
                                    else ""))
            arrs = []
            for i, s in enumerate(seqs):
                a = np.asarray(s.data if isinstance(s, Tensor) else s)
                if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
                    raise ValueError(f"{name}: {what}[{i}] must be a 1-D sequence of integer "
                                     f"token ids, got {a.dtype} {a.shape}")
                a = a.astype(np.int64)
                if self.pad_id is not None and (a == self.pad_id).any():
                    a = a[:int((a == self.pad_id).argmax())]
                arrs.append(a)
            lengths = np.array([len(a) for a in arrs], np.int64)
            tok = np.full((len(arrs), max(int(lengths.max(initial=0)), 1)), -1, np.int64)
            for i, a in enumerate(arrs):
                tok[i, :len(a)] = a
        if len(tok) == 0:
            raise ValueError(f"{name}: {what} has 0 sequences; at least 1 is required")
        return tok, lengths, form

    def _check_tokens(self, tok, lengths, V: int, where: str, what: str) -> np.ndarray:
        """Tokens in ``0..V-1``; returns them with ``V`` (the end/padding id) past ends."""
        real = np.arange(tok.shape[1])[None, :] < lengths[:, None]
        bad = real & ((tok < 0) | (tok >= V))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            hint = "" if self.pad_id is not None else (
                f"; pass pad_id={tok[r, c]} if it marks padding" if tok[r, c] >= V else "")
            raise ValueError(f"{type(self).__name__}.{where}: {what} has token {tok[r, c]} "
                             f"(sequence {r}, position {c}), outside 0..{V - 1} "
                             f"(vocab_size={V}){hint}")
        return np.where(real, tok, V)

    _input_kinds = {"two_d_array": False, "three_d_array": False}

    def _is_fitted(self) -> bool:
        return hasattr(self, "model_")

    # ------------------------------------------------------------------ fit
    def fit(self, X, y) -> AttentionMechanism:
        """Train on source sequences ``X`` and target sequences ``y`` (same count)."""
        name = type(self).__name__
        self._seed_validate()
        cfg = training_settings(self, schedules=("cosine", "constant"))
        xs, xl, _ = self._parse(X, "fit", "X", single_ok=False)
        ys, yl, _ = self._parse(y, "fit", "y", single_ok=False)
        if len(xs) != len(ys):
            raise ValueError(f"{name}.fit: X has {len(xs)} sequences but y has {len(ys)}; "
                             f"they must have the same count")
        if (xl == 0).any():
            raise ValueError(f"{name}.fit: X[{int(np.argmax(xl == 0))}] is empty; every "
                             f"source needs at least one token")
        if self.vocab_size is None:
            V = int(max(xs.max(initial=-1), ys.max(initial=-1))) + 1
            V = max(V, 2)
        else:
            V = int(self.vocab_size)
            if V < 1:
                raise ValueError(f"{name}: vocab_size must be a positive int, got {V}")
        src = self._check_tokens(xs, xl, V, "fit", "X")
        tgt = self._check_tokens(ys, yl, V, "fit", "y")
        # decoder targets: the sequence, then the end class once, then ignored positions
        T = int(yl.max()) + 1
        target = np.full((len(tgt), T), _IGNORE, np.int64)
        target[:, :tgt.shape[1]] = np.where(tgt == V, _IGNORE, tgt)[:, :T]
        target[np.arange(len(tgt)), yl] = V                                   # end of sequence
        dec_in = np.full((len(tgt), T), V, np.int64)
        dec_in[:, 0] = V + 1                                                  # begin
        dec_in[:, 1:] = np.where(target[:, :-1] == _IGNORE, V, target[:, :-1])
        self.vocab_size_, self.max_target_len_ = V, int(yl.max())
        self.max_source_len_ = int(xl.max())
        with seeded(self.random_state):
            self.model_ = Seq2SeqNet(V, self.embed_dim, self.hidden_size, self.cell,
                                     self.bidirectional, self.attention, self.attention_dim,
                                     self.values, self.location_aware,
                                     self.teacher_forcing_ratio, dtype=as_dtype(self.dtype))
            opt = optim.AdamW(self.model_.parameters(), lr=cfg["learning_rate_init"],
                              weight_decay=self.weight_decay)
            plateau = LossPlateau(self, cfg["tol"], cfg["n_iter_no_change"])
            callbacks = [plateau, *(self.callbacks or [])]
            if cfg["clip_grad_norm"] is not None:
                callbacks.insert(0, _ClipGradNorm(cfg["clip_grad_norm"]))
            loader = DataLoader(TensorDataset(src, xl, dec_in, target),
                                batch_size=self.batch_size, shuffle=True)
            sched = None
            epochs = cfg["max_iter"]
            if cfg["schedule"] == "cosine" and epochs > 0:
                sched = optim.lr_scheduler.CosineAnnealingLR(opt, epochs * len(loader))
            loss_fn = l2_penalized(_sequence_loss, self.model_, cfg["alpha"])
            trainer = Trainer(self.model_, loss_fn, opt, loader, callbacks=callbacks,
                              scheduler=sched, scheduler_interval="batch",
                              verbose=self.verbose)
            self.history_ = trainer.fit(epochs)
        self.n_iter_ = len(self.history_.epochs)
        plateau.warn_if_not_converged(epochs)
        self.model_.eval()
        return self

    # ------------------------------------------------------------------ predict
    def _decode(self, X, where: str, max_len: int | None):
        self._check_fitted(where)
        xs, xl, form = self._parse(X, where, "X", single_ok=True)
        V = self.vocab_size_
        src = self._check_tokens(xs, xl, V, where, "X")
        if (xl == 0).any():
            raise ValueError(f"{type(self).__name__}.{where}: X[{int(np.argmax(xl == 0))}] "
                             f"is empty; every source needs at least one token")
        steps = max(self.max_target_len_, int(xl.max())) if max_len is None else int(max_len)
        if steps < 0:
            raise ValueError(f"{type(self).__name__}.{where}: max_len must be >= 0, got "
                             f"{max_len}")
        model = self.model_
        was_training = model.training     # (a callback may score during training)
        model.eval()
        S = src.shape[1]
        tokens = np.full((len(src), steps), V, np.int64)
        weights = np.zeros((len(src), steps, S), np.float64) if self.attention else None
        for i in range(0, len(src), 512):
            tk, w = model.greedy(src[i:i + 512], xl[i:i + 512], steps)
            tokens[i:i + 512, :tk.shape[1]] = tk
            if w is not None:
                weights[i:i + 512, :w.shape[1], :w.shape[2]] = w
        model.train(was_training)
        ended = tokens == V
        out_len = np.where(ended.any(1), ended.argmax(1), steps)
        if weights is not None:   # the weights of the output tokens only (not of the end)
            weights[np.arange(steps)[None, :] >= out_len[:, None]] = 0.0
        return tokens, out_len, weights, xl, form

    def predict(self, X, max_len: int | None = None, return_attention: bool = False):
        """Greedy decoding of ``X`` (see the class doc for the forms), at most ``max_len``
        tokens per sequence (default: the longest of the training targets and of ``X``).

        With ``return_attention``, also the attention weights ``a[t, j]`` of output token
        ``t`` on source position ``j``: (n, max_len, S) for a 2-D ``X`` (zeros past each
        output's end), a list of (len(output), len(source)) matrices for a list, one such
        matrix for one sequence.
        """
        if return_attention and not self.attention:
            raise ValueError(f"{type(self).__name__}(attention=False) has no attention "
                             f"weights: its decoder sees only the final encoder state")
        tokens, out_len, weights, xl, form = self._decode(X, "predict", max_len)
        if form == "array":
            pad = self.vocab_size_ if self.pad_id is None else self.pad_id
            pred = np.where(tokens == self.vocab_size_, pad, tokens)
            return (pred, weights) if return_attention else pred
        seqs = [tokens[i, :out_len[i]].copy() for i in range(len(tokens))]
        if return_attention:
            mats = [weights[i, :out_len[i], :xl[i]].copy() for i in range(len(tokens))]
            return (seqs[0], mats[0]) if form == "single" else (seqs, mats)
        return seqs[0] if form == "single" else seqs

    def attention_weights(self, X, max_len: int | None = None):
        """The attention weights of the greedy decoding of ``X`` (see :meth:`predict`)."""
        return self.predict(X, max_len=max_len, return_attention=True)[1]

    def score(self, X, y, sample_weight=None) -> float:
        """Exact-sequence accuracy: the fraction of ``X`` whose greedy decoding equals the
        target sequence of ``y`` token for token, length included."""
        self._check_fitted("score")
        ys, yl, _ = self._parse(y, "score", "y", single_ok=False)
        tokens, out_len, _, _, _ = self._decode(X, "score", max(int(yl.max()), 1))
        if len(tokens) != len(ys):
            raise ValueError(f"{type(self).__name__}.score: X has {len(tokens)} sequences but "
                             f"y has {len(ys)}")
        W = min(tokens.shape[1], ys.shape[1])
        real = np.arange(W)[None, :] < yl[:, None]
        same = ((tokens[:, :W] == ys[:, :W]) | ~real).all(1) & (out_len == yl)
        return float(np.average(same, weights=sample_weight))
