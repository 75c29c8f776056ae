r"""Recurrent sequence scans — Elman RNN, LSTM, GRU — each one fused op with a hand-derived
backpropagation through time (BPTT).

Each function runs **one layer in one direction** over a whole, time-major sequence
``x`` of shape ``(T, B, I)`` and is a single :class:`~shendu.autograd.Function`. The work is
organised the way a fast CPU implementation must be:

* a step's whole pre-activation is *one* matrix product ``[b | W_ih | W_hh] @ [1; x_t;
  h_{t-1}]`` (``G·H × (1+I+H)`` times ``(1+I+H) × B``, ``G`` gates per unit): the input
  projection, the recurrent product and both biases at once, reading a column buffer
  into which each step writes its new state;
* buffers are preallocated (and reused between training steps), every array is laid out
  features-first and batch-last so each gate block of a step is one contiguous slab, and
  each step makes one activation call for all its gates and updates in place;
* the backward pass walks the steps in reverse, carrying ``dL/dh`` (and ``dL/dc``)
  through the recurrent product only; the gradients of the weights and biases are then
  one matrix product over many steps at once, ``[db | dW_ih | dW_hh] = Σ_t dA_t [1; x_t;
  h_{t-1}]^T``, which is exactly the accumulation across steps that BPTT prescribes
  (Werbos 1990, "Backpropagation through time: what it does and how to do it"). The RNN
  and GRU make it over all steps after the loop; the LSTM, whose ``dA`` is the largest,
  adds it every few steps inside the loop, while that chunk of ``dA`` is still in cache.

Equations (torch's conventions, so weights move between the two unchanged; ``σ`` is the
logistic sigmoid, ``⊙`` the elementwise product):

Elman (1990) RNN::

    h_t = φ(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),      φ = tanh or relu

LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers, Schmidhuber & Cummins
2000), gate order ``i, f, g, o`` in the rows of ``W_ih`` / ``W_hh``::

    [a_i, a_f, a_g, a_o] = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    i = σ(a_i)   f = σ(a_f)   g = tanh(a_g)   o = σ(a_o)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

GRU (Cho et al. 2014), gate order ``r, z, n``::

    r = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

BPTT for the LSTM, with ``δh_t = ∂L/∂out_t + δh^{rec}_t`` the total gradient reaching
``h_t``::

    δc_t  = δc_{t+1} ⊙ f_{t+1} + δh_t ⊙ o ⊙ (1 - tanh²c_t)
    δa_o  = δh_t ⊙ tanh(c_t) ⊙ o(1-o)         δa_i = δc_t ⊙ g ⊙ i(1-i)
    δa_f  = δc_t ⊙ c_{t-1} ⊙ f(1-f)            δa_g = δc_t ⊙ i ⊙ (1-g²)
    δh^{rec}_{t-1} = δa_t W_hh

(and likewise for the others: ``δa = δh ⊙ φ'(a)`` for the RNN; for the GRU
``δa_n = δh ⊙ (1-z)(1-n²)``, ``δa_z = δh ⊙ (h_{t-1}-n) z(1-z)``,
``δa_r = δa_n ⊙ (W_hn h + b_hn) ⊙ r(1-r)``, ``δ(W_hn h + b_hn) = δa_n ⊙ r`` and
``δh_{t-1} = δh ⊙ z + [δa_r, δa_z, δ(W_hn h + b_hn)] W_hh``). Every factor that does not
depend on the carried gradient is computed outside the backward loop (the LSTM's during
its forward pass, while the gates are still in cache; the others' in one pass over all
steps), so the loop itself is a handful of in-place products and one matrix product.

Sigmoid gates are evaluated as ``σ(a) = (1 + tanh(a/2)) / 2``: the ``1/2`` is folded into a
copy of the weights (an exact scaling by a power of two), so one ``tanh`` call covers all
gate blocks of a step.

**Variable lengths.** ``lengths`` (one integer per sequence, ``0 ≤ len ≤ T``) marks steps
``t ≥ len_b`` of sequence ``b`` as padding: there the state is carried unchanged, the
output is zero, and the padded inputs receive zero gradient. ``h_n`` (and ``c_n``) is
therefore each sequence's state after its last real step — for ``reverse=True`` the scan
starts at each sequence's own last real step, as torch's packed sequences do.

**Truncated BPTT.** Run a long sequence in chunks and pass the final state of one chunk,
*detached*, as the initial state of the next (``h = h.detach()``): the gradient then stops
at the chunk boundary, while the forward computation still carries the full history.
"""

from __future__ import annotations

import numpy as np

from shendu import autograd
from shendu.autograd import Function
from shendu.functional import _gemm, _numba, _regions
from shendu.functional._gemm import Repeated, matmul
from shendu.functional._openblas import ONE_THREAD
from shendu.tensor import Tensor
from shendu.workspace import Workspace, workspace

__all__ = ["rnn", "lstm", "gru", "rnn_cell", "lstm_cell", "gru_cell"]


# the library's one scratch pool (shendu.backend.empty_cache() empties it)
_Workspace, _workspace = Workspace, workspace


# --------------------------------------------------------------------------- helpers
def _lengths_mask(lengths, T: int, B: int, op: str):
    """``lengths`` as an int array and the first step at which some sequence is padding."""
    if lengths is None:
        return None
    lens = np.asarray(lengths.data if isinstance(lengths, Tensor) else lengths)
    if lens.ndim != 1 or lens.shape[0] != B:
        raise ValueError(f"{op}: expected lengths of shape ({B},) (one per sequence), "
                         f"got {lens.shape}")
    if lens.dtype.kind not in "iu":
        if lens.dtype.kind != "f" or not np.all(lens == np.round(lens)):
            raise ValueError(f"{op}: lengths must be integers, got {lens}")
    lens = lens.astype(np.int64)
    if lens.size and (lens.min() < 0 or lens.max() > T):
        raise ValueError(f"{op}: lengths must lie in [0, {T}] (the sequence length), got "
                         f"min {lens.min()} and max {lens.max()}")
    first = int(lens.min()) if lens.size else T
    if first >= T:
        return None
    return lens, first


def _order(T: int, reverse: bool):
    """``(t, p, n)`` per step in processing order: time ``t`` reads the state in column
    ``p`` of the state buffer and writes the new state into column ``n``.

    The forward scan reads column ``t`` and writes ``t + 1`` (outputs are columns ``1..T``);
    the reverse scan reads ``t + 1`` and writes ``t`` (outputs ``0..T-1``). Both keep the
    outputs in time order.
    """
    if reverse:
        return [(t, t + 1, t) for t in range(T - 1, -1, -1)]
    return [(t, t, t + 1) for t in range(T)]


def _padded(mask, t: int):
    """Indices of the sequences for which step ``t`` is padding (None if none)."""
    if mask is None or t < mask[1]:
        return None
    idx = np.flatnonzero(mask[0] <= t)
    return idx if idx.size else None


def _columns(x: np.ndarray, H: int, bias: bool, reverse: bool):
    """The column buffer ``Z`` of shape ``(T+1, K, B)``, ``K = [1] + I + H``.

    Column ``Z[p]`` of step ``t`` holds ``[1; x_t; h_prev]`` (the 1 only with biases), so one
    product ``[b | W_ih | W_hh] @ Z[p]`` is the whole pre-activation of a step, and after
    the scan one product ``dA @ Z^T`` gives the gradients of the bias, ``W_ih`` and ``W_hh``
    together. Features come first and the batch last, so every gate block of a step, and
    every state, is a contiguous ``(H, B)`` slab.
    """
    T, B, I = x.shape
    o = 1 if bias else 0
    Z = _workspace.lend((T + 1, o + I + H, B), x.dtype)
    if o:
        Z[:, 0] = 1
    cols, spare = (slice(1, T + 1), 0) if reverse else (slice(0, T), T)
    Z[cols, o:o + I] = x.transpose(0, 2, 1)
    Z[spare, o:o + I] = 0
    return Z, o, cols


def _time_view(Zh: np.ndarray, T: int, reverse: bool) -> np.ndarray:
    """The hidden states at times ``0..T-1`` as a ``(T, H, B)`` view of ``Z``'s h rows."""
    return Zh[:T] if reverse else Zh[1:]


def _outputs(Zh: np.ndarray, T: int, reverse: bool, mask) -> np.ndarray:
    out = _time_view(Zh, T, reverse).transpose(0, 2, 1)  # (T, B, H)
    if mask is None:
        return out
    keep = (np.arange(T)[:, None] < mask[0][None, :]).astype(Zh.dtype)
    return out * keep[:, :, None]


def _fused_weights(w_ih, w_hh, bias, blocks=None, halved: int = 0):
    """``[b_ih + b_hh | W_ih | W_hh]`` (shape (G·H, K)) with torch's gate blocks put in the
    order ``blocks`` and the first ``halved`` of them multiplied by 1/2 (exact: a power of
    two); a workspace array, to be put back after the scan."""
    o = 1 if bias else 0
    GH, I = w_ih.shape
    H = w_hh.shape[1]
    W = _workspace.get((GH, o + I + H), w_ih.dtype)
    for k, j in enumerate(blocks or range(GH // H)):
        dst, src = slice(k * H, (k + 1) * H), slice(j * H, (j + 1) * H)
        if o:
            np.add(bias[0][src], bias[1][src], out=W[dst, 0])
        if k < halved:
            if o:
                W[dst, 0] *= 0.5
            np.multiply(w_ih[src], 0.5, out=W[dst, o:o + I])
            np.multiply(w_hh[src], 0.5, out=W[dst, o + I:])
        else:
            W[dst, o:o + I] = w_ih[src]
            W[dst, o + I:] = w_hh[src]
    return W


def _unblock(dst: np.ndarray, src: np.ndarray, blocks, H: int) -> np.ndarray:
    """Rows of ``src`` (internal gate order ``blocks``) into torch's order in ``dst``."""
    for k, j in enumerate(blocks):
        dst[j * H:(j + 1) * H] = src[k * H:(k + 1) * H]
    return dst


def _carried(g_out: np.ndarray) -> np.ndarray:
    """Which steps received a gradient through the output (often only the last)."""
    return np.any(g_out, axis=(1, 2))


def _weight_grads(fn: Function, dA: np.ndarray, Z: np.ndarray, cols, o: int, w_ih, shape):
    """Bias, ``W_ih``, ``W_hh`` and input gradients from ``dA`` (G·H, T, B) in one product.

    ``dA @ Z^T`` sums ``dA_t [1; x_t; h_prev]^T`` over every step and sequence: the
    accumulation of the weight gradients across time that BPTT prescribes.
    """
    GH, T, B = dA.shape
    I = shape[2]
    K = Z.shape[1]
    dA2 = dA.reshape(GH, T * B)
    Zin = _workspace.get((K, T, B), Z.dtype)         # the step columns, side by side
    np.copyto(Zin, Z[cols].transpose(1, 0, 2))
    dW = matmul(dA2, Zin.reshape(K, T * B).T)              # (G·H, K)
    _workspace.put(Zin)
    dw_ih = np.ascontiguousarray(dW[:, o:o + I])
    dw_hh = np.ascontiguousarray(dW[:, o + I:])
    dx = None
    if fn.needs_input_grad[0]:
        dx = matmul(w_ih.T, dA2).reshape(I, T, B).transpose(1, 2, 0)
    db = () if not o else (dW[:, 0].copy(), dW[:, 0].copy())
    return dx, dw_ih, dw_hh, db


def _flush_subnormal(a: np.ndarray, tiny: float) -> int:
    """Set the subnormal entries of ``a`` (``0 < |a| < tiny``) to 0 in place, as a GPU's
    flush-to-zero mode does; return how many steps the caller may go before looking
    again. A vanishing gradient (the tanh RNN's, over long sequences) passes through
    float32's subnormal range on its way to 0, where every product costs about 40 times
    as much: flushing changes nothing a normal number would notice. Far above that range
    (the usual case) the look is rare."""
    m = float(np.abs(a).max()) if a.size else 0.0
    if m >= tiny * 2.0 ** 48:
        return 8
    if m >= tiny:
        a[np.abs(a) < tiny] = 0
    else:
        a[...] = 0
    return 1


# ------------------------------------------------------------------------- Elman RNN
class RNNScan(Function):
    """One direction of an Elman RNN over a whole sequence (see the module docstring)."""

    saved_inputs = None

    @ONE_THREAD.around
    def forward(self, x, h0, w_ih, w_hh, *bias, relu=False, mask=None, reverse=False):
        T, B, _ = x.shape
        H = w_hh.shape[1]
        Z, o, cols = _columns(x, H, bool(bias), reverse)
        Zh = Z[:, Z.shape[1] - H:]                    # (T+1, H, B) states
        W = _fused_weights(w_ih, w_hh, bias)
        a = np.empty((H, B), x.dtype)
        Zh[T if reverse else 0] = h0.T
        step = Repeated(W, Z[0], a)                    # the steps' products, checked once
        zs = Z[0].size
        for t, p, n in _order(T, reverse):
            step(Z[p], a, p * zs, 0)                   # W_ih x_t + W_hh h_{t-1} + b: one product
            hn = Zh[n]
            if relu:
                np.maximum(a, 0, out=hn)
            else:
                np.tanh(a, out=hn)
            idx = _padded(mask, t)
            if idx is not None:
                hn[:, idx] = Zh[p][:, idx]
        _workspace.put(W)
        if any(self.needs_input_grad):
            self.saved = (Z, o, cols, w_ih, w_hh, relu, mask, reverse)
        last = 0 if reverse else T
        return _outputs(Zh, T, reverse, mask), Zh[last].T.copy()

    @ONE_THREAD.around
    def backward(self, g_out, g_hn):
        Z, o, cols, w_ih, w_hh, relu, mask, reverse = self.saved
        H = w_hh.shape[1]
        T1, _, B = Z.shape
        T = T1 - 1
        dt = Z.dtype
        hs = _time_view(Z[:, Z.shape[1] - H:], T, reverse)   # (T, H, B)
        # dA_t = δh_t ⊙ φ'(a_t): the factor φ' for every step at once, then δh in place
        Fa = _workspace.get((T, H, B), dt)
        if relu:
            np.greater(hs, 0, out=Fa)
        else:
            np.multiply(hs, hs, out=Fa)
            np.subtract(1, Fa, out=Fa)
        whhT = np.ascontiguousarray(w_hh.T)
        nz = _carried(g_out)
        dh_rec = np.array(g_hn.T, dtype=dt, order="C")    # (H, B), carried into the state
        dh = np.empty((H, B), dt)
        tiny = np.finfo(dt).tiny
        watch = 0                                          # steps until the next look
        for t, _p, _n in reversed(_order(T, reverse)):
            idx = _padded(mask, t)
            if idx is not None:
                carry = dh_rec[:, idx]
            if nz[t]:
                np.add(dh_rec, g_out[t].T, out=dh)
            else:
                dh, dh_rec = dh_rec, dh
            if idx is not None:
                dh[:, idx] = 0
            da = Fa[t]
            np.multiply(da, dh, out=da)
            if watch == 0:
                watch = _flush_subnormal(da, tiny)
            watch -= 1
            matmul(whhT, da, out=dh_rec)
            if idx is not None:
                dh_rec[:, idx] = carry
        dA = _workspace.get((H, T, B), dt)              # unit-major for the weight product
        np.copyto(dA, Fa.transpose(1, 0, 2))
        grads = _weight_grads(self, dA, Z, cols, o, w_ih, (T, B, w_ih.shape[1]))
        _workspace.put(dA, Fa)
        dx, dw_ih, dw_hh, db = grads
        return (dx, dh_rec.T, dw_ih, dw_hh, *db)


# ------------------------------------------------------------------------------ LSTM
#: internal LSTM gate order i, o, f, g (torch's blocks 0, 3, 1, 2): with a step's gates in
#: a buffer ``S = [i, o, f, g, tanh c_t, c_{t-1}]`` the three sigmoid gates are adjacent (one
#: fix-up of the tanh trick), each lines up with the value its derivative is multiplied by
#: (``i``–``g``, ``o``–``tanh c_t``, ``f``–``c_{t-1}``), and ``i, o`` line up with ``g,
#: tanh c_t`` for the two ``1 - tanh²`` factors: each family of factors is one call.
_LSTM_BLOCKS = (0, 3, 1, 2)

#: elements of the scan's buffers from which a step's element-wise passes run as one
#: compiled loop (``functional._numba``: the same bits)
_COMPILED_MIN = 1 << 12

#: steps of ``δa`` kept between two products of the weight gradient (about 0.5 MiB at the
#: benchmark's sizes, so the block is still in cache when the product reads it)
_CHUNK_BYTES = 1 << 19


def _batch_parts(dt, T: int, H: int, B: int, threads: int, train: bool,
                 K: int | None = None) -> int:
    """Into how many parts the compiled steps split the batch, one part's whole scan (and
    backward) on each thread (1: they split each step by hidden units, or run on one
    thread). Parts need no step of another, so the threads never wait for each other nor
    read what another wrote (on a machine whose cores share data slowly, a split by units
    spent a third of an LSTM step there); they are taken where every part is whole vectors
    of sequences and the rows loops make the steps' products (whose numbers for a column do
    not depend on the others, so the split keeps the bits of the NumPy steps) and, in
    training with ``K`` columns given, each part's share of the weight gradient
    (:func:`_weight_plan`)."""
    lanes = 64 // dt.itemsize
    if threads < 2 or B % (threads * lanes):
        return 1
    C = _back_chunk(T, H, B, dt)
    if train and not _gemm.rows_take(dt, 4 * H, B, C * B):
        return 1                                       # the backward's products likewise
    if train and K is not None and not _weight_rows_take(dt, H, B // threads, K, C):
        return 1
    return threads


def _weight_grad_rows():
    """``_regions_compiled.lstm_weight_grad`` where the rows loops make the products
    (``_gemm._rows_loops``), else None."""
    if not _gemm._rows_loops():
        return None
    from shendu.functional._regions_compiled import lstm_weight_grad

    return lstm_weight_grad


def _padded_columns(dt, K: int) -> int:
    """``K`` rounded up to whole vectors."""
    lanes = 64 // dt.itemsize
    return -(-K // lanes) * lanes


def _weight_rows_take(dt, H: int, w: int, K: int, C: int) -> bool:
    """Whether the rows loops make the weight gradient's product for parts of ``w``
    sequences (:func:`_weight_plan`): whole blocks of eight gate rows, and the transposed
    columns of a chunk (C w, K padded) in a core's cache."""
    return (dt in (np.float32, np.float64) and (4 * H) % 8 == 0
            and C * w * _padded_columns(dt, K) * dt.itemsize <= _gemm.ROWS_MAX_BYTES
            and _weight_grad_rows() is not None)


def _weight_plan(dt, T: int, H: int, B: int, K: int, C: int) -> int:
    """Into how many parts of the batch the LSTM's backward makes its weight gradient with
    the rows loops (``_regions_compiled.lstm_weight_grad``: each part's own sum over the
    chunks, the parts added in order at the end), the parts the compiled steps split the
    batch in at this thread count, so that the compiled steps (each thread its part's share,
    from what it made itself) and the NumPy steps give the same numbers; 0 where the GEMM
    makes it, one product a chunk."""
    parts = _batch_parts(dt, T, H, B, _gemm._threads_for(K, 4 * H * B), True, K)
    # parts > 1 only where _batch_parts found the parts' products taken
    return parts if parts > 1 or _weight_rows_take(dt, H, B, K, C) else 0


def _back_chunk(T: int, H: int, B: int, dt) -> int:
    """Steps in a chunk of the LSTM's backward: its ``δa`` (4H, C, B) about
    :data:`_CHUNK_BYTES`."""
    return max(1, min(T, _CHUNK_BYTES // (4 * H * max(B, 1) * dt.itemsize)))


def _lstm_factors(X: np.ndarray, F: np.ndarray, H: int) -> None:
    """The factors of the backward pass ``F`` (m, 6H, B) = ``[g i(1-i), tanh(c_t) o(1-o),
    c_{t-1} f(1-f), i(1-g²), o(1-tanh² c_t), f]`` of m steps from their slabs ``X`` (m, 6H,
    B) = ``[i, o, f, g, tanh c_t, c_{t-1}]``: seven calls for all m steps."""
    sig, d3, d2 = X[:, :3 * H], F[:, :3 * H], F[:, 3 * H:5 * H]
    np.subtract(1, sig, out=d3)
    d3 *= sig
    d3 *= X[:, 3 * H:]                                 # σ'(a) ⊙ [g, tanh c_t, c_{t-1}]
    np.multiply(X[:, 3 * H:5 * H], X[:, 3 * H:5 * H], out=d2)
    np.subtract(1, d2, out=d2)
    d2 *= X[:, :2 * H]                                 # [i, o] ⊙ (1 - [g, tanh c_t]²)
    F[:, 5 * H:] = X[:, 2 * H:3 * H]                   # f


def _chunk_end(t: int, C: int, T: int, reverse: bool) -> bool:
    """Whether time ``t`` is the last step of its chunk of ``C`` in the backward's order
    (which walks the times down, or up for a reverse scan)."""
    return (t % C == C - 1 or t == T - 1) if reverse else t % C == 0


def _chunk_span(t: int, C: int, T: int, reverse: bool) -> tuple[int, int]:
    """The times ``t0..t1`` of the chunk that ends at time ``t``."""
    return (t - t % C, t + 1) if reverse else (t, min(t + C, T))


class LSTMScan(Function):
    """One direction of an LSTM over a whole sequence (see the module docstring).

    Each step works in one slab ``[i, o, f, g, tanh c_t, c_{t-1}]`` (the product writes the
    gates, the step its own ``tanh c_t`` and the next slab's ``c``). When a gradient is
    needed, every step has a slab of its own, and every few steps the slabs just written,
    still in cache, are turned in place — a handful of calls for several steps at once —
    into the factors of the backward pass ``[g i(1-i), tanh(c) o(1-o), c_{t-1} f(1-f),
    i(1-g²), o(1-tanh² c), f]``: these, not the gates, are what is saved.

    The backward pass walks the steps in reverse in chunks of a few steps; after each
    chunk one product adds its ``δa [1; x; h_prev]^T`` to the weight gradients, while the
    chunk's ``δa`` is still in cache (nothing of size ``T`` is written in the backward).

    With Numba and MKL, and products of at least ``_gemm.MIN_REPEATED_FLOPS`` (MKL's in
    either case), the steps run in compiled code (``_regions_compiled.lstm_scan``,
    ``lstm_back_steps``): no interpreter between them. With several kernel threads, where
    the rows loops make the products and the batch is whole vectors a thread
    (:func:`_batch_parts`), the batch is split instead: each thread runs the whole scan,
    and then each chunk of the backward, of its own sequences (``lstm_scan_parts``,
    ``lstm_back_parts``), so the threads never wait for each other within a pass nor read
    what another wrote: each part also adds its share of the weight gradient, after each
    chunk, to a sum of its own (the rows loops' product, ``_regions_compiled.
    lstm_weight_grad``; the parts' sums added in order at the end, and the NumPy steps make
    the same sums, :func:`_weight_plan`), so the whole backward is one region where the
    input's gradient is not wanted (one a chunk where it is). Elsewhere each step is one
    region in which every thread makes its
    block of hidden units, the product of their gate rows, their ``tanh`` (NumPy's own
    loop, called from the compiled code) and their gate arithmetic; the backward's steps
    likewise, one region each (a block needs only its own rows of ``δh``). A train step at
    the benchmark's sizes at two threads: 11.2-11.4 → 10.4-10.9 ms split by sequences,
    9.9-10.7 with each part's weight gradient in its region; while this machine's two
    cores were placed far apart (a round trip between them 330 ns instead of 65), 17 → 15.5
    → 13.2-14.4 (BENCHMARKS.md).
    """

    saved_inputs = None

    @ONE_THREAD.around
    def forward(self, x, h0, c0, w_ih, w_hh, *bias, mask=None, reverse=False):
        T, B, _ = x.shape
        H = w_hh.shape[1]
        dt = x.dtype
        train = any(self.needs_input_grad)
        Z, o, cols = _columns(x, H, bool(bias), reverse)
        Zh = Z[:, Z.shape[1] - H:]
        W = _fused_weights(w_ih, w_hh, bias, _LSTM_BLOCKS, 3)   # σ(a) = (1 + tanh(a/2)) / 2
        Wx = W[:, :Z.shape[1] - H] if not h0.any() else None   # h_0 = 0: [b | W_ih] suffices
        # the slabs of the steps, in turn: C of them and the next one when training, so
        # that every C steps the factors of the backward pass are made for C steps at once;
        # with the compiled loops, a slab for every step, kept for the backward, which
        # makes each step's factors where it uses them (one pass fewer over T slabs)
        keep = (train and (T + 1) * 6 * H * B >= _COMPILED_MIN
                and _numba.kernels_for(x, min_size=0) is not None)
        C = T if keep else max(1, min(T, _CHUNK_BYTES // (3 * H * max(B, 1) * dt.itemsize)))
        S = _workspace.get((C + 1, 6 * H, B), dt)
        F = _workspace.get((T, 6 * H, B), dt) if train and not keep else None
        Zh[T if reverse else 0] = h0.T
        S[0, 5 * H:] = c0.T
        kern = _numba.kernels_for(S, min_size=_COMPILED_MIN)
        flat = S.reshape(C + 1, -1) if kern is not None else None
        P2 = np.empty((2, H, B), dt) if kern is None else None
        half = dt.type(0.5)
        # the steps in compiled code where their products are MKL's anyway (Repeated's
        # threshold: smaller ones are NumPy's, whose bits the loops above keep)
        compiled = (_regions.lstm() if kern is not None and mask is None and (keep or not train)
                    and 4 * H * B * Z.shape[1] >= _gemm.MIN_REPEATED_FLOPS
                    and (Wx is None or Wx.shape[1] > 0) else None)
        parts = 1                                      # the batch's parts (one: whole)
        if compiled is not None:                       # every step in compiled code
            scan, serial, _back, gemms, tanhs, scan_parts, _ = compiled
            kx = Z.shape[1] if Wx is None else Wx.shape[1]
            # the steps' products as Repeated makes them: by the rows loops where they take
            # them (an address of 0), else by the GEMM at the address
            fg = 0 if _gemm.rows_take(dt, Z.shape[1], B, B) else gemms[dt]
            args = (fg, *tanhs[dt], W, Z, S, T, reverse, C, not keep, kx)
            t = _gemm._threads_for(Z.shape[1], 4 * H * B)
            parts = _batch_parts(dt, T, H, B, t, train, Z.shape[1]) \
                if scan_parts is not None and fg == 0 else 1
            if parts > 1:
                # the batch in parts, each part's scan on one thread: the same buffer, each
                # part's slabs together
                Sp = S.reshape(parts, C + 1, 6 * H, B // parts)
                Sp[:, 0, 5 * H:] = c0.reshape(parts, B // parts, H).transpose(0, 2, 1)
                scan_parts(*args[:5], Sp, *args[6:])
            elif scan is not None and t > 1 and H >= 2 * t:
                # each thread's units' four gate rows together: one product per thread
                W4 = W.reshape(4, H, -1)
                Wt = np.concatenate([W4[:, H * i // t:H * (i + 1) // t].reshape(-1, W.shape[1])
                                     for i in range(t)])
                P = np.empty((t, 4 * (H // t + 1) * B), dt)
                scan(*args[:3], Wt, *args[4:], P)
            else:
                serial(*args)
            steps = []
        else:
            gates = Repeated(W, Z[0], S[0, :4 * H])    # the steps' products, checked once
            steps = _order(T, reverse)
        zs, ss = Z[0].size, S[0].size
        for k, (t, p, n) in enumerate(steps):
            j = k % C
            s, sn = S[j], S[j + 1]
            gt = s[:4 * H]
            if k == 0 and Wx is not None:
                # on the steps' library (MKL's where theirs are): the compiled steps' bits
                if gates.f is None or _gemm._matmul2(gates.f, Wx, Z[p][:Wx.shape[1]],
                                                     gt) is None:
                    matmul(Wx, Z[p][:Wx.shape[1]], out=gt)
            else:
                gates(Z[p], gt, p * zs, j * ss)        # all four gates of the step: one product
            np.tanh(gt, out=gt)                        # one activation call for every gate
            cp, cn, tc = s[5 * H:], sn[5 * H:], s[4 * H:5 * H]
            if kern is not None:                       # the same passes as one loop
                kern.lstm_gates(flat[j], flat[j + 1], H * B, half)
            else:
                sg = s[:3 * H]
                sg *= 0.5
                sg += 0.5                              # i, o, f are now sigmoids; g stays tanh
                s3 = s.reshape(6, H, B)
                np.multiply(s3[0:3:2], s3[3:6:2], out=P2)  # [i ⊙ g, f ⊙ c_{t-1}]
                np.add(P2[0], P2[1], out=cn)           # c_t
            np.tanh(cn, out=tc)
            hn = Zh[n]
            np.multiply(s[H:2 * H], tc, out=hn)        # o ⊙ tanh(c_t)
            if mask is not None:
                idx = _padded(mask, t)
                if idx is not None:
                    hn[:, idx] = Zh[p][:, idx]
                    cn[:, idx] = cp[:, idx]
            if not keep and (j == C - 1 or k == T - 1):
                if train:                              # the last j+1 steps: their factors
                    Fj = F[t:t + j + 1] if reverse else F[t - j:t + 1]
                    if kern is not None:
                        kern.lstm_factors(flat[:j + 1], Fj.reshape(j + 1, -1), H * B, 2 * half,
                                          reverse)
                    else:
                        _lstm_factors(S[:j + 1], Fj[::-1] if reverse else Fj, H)
                S[0, 5 * H:] = cn                      # c_t, for the next step
        if parts > 1:
            c_n = Sp[:, T if keep else 0, 5 * H:].transpose(0, 2, 1).reshape(B, H)
        else:
            c_n = S[T if keep else 0, 5 * H:].T.copy()
        _workspace.put(W)
        if keep:
            F = S                                      # the slabs, (T + 1, 6H, B)
        else:
            _workspace.put(S)
        if train:
            self.saved = (Z, o, cols, w_ih, w_hh, F, mask, reverse, keep, parts)
        last = 0 if reverse else T
        return _outputs(Zh, T, reverse, mask), Zh[last].T.copy(), c_n

    @ONE_THREAD.around
    def backward(self, g_out, g_hn, g_cn):
        # δa = [δc, δh, δc, δc] ⊙ [g i(1-i), tanh(c) o(1-o), c_{t-1} f(1-f), i(1-g²)]
        Z, o, cols, w_ih, w_hh, F, mask, reverse, keep, parts = self.saved
        T, H6, B = F.shape
        T -= keep                                      # the slabs: one more than the steps
        H = H6 // 6
        G = 4 * H
        K = Z.shape[1]
        I = w_ih.shape[1]
        dt = F.dtype
        whhT = _workspace.get((H, G), dt)              # W_hh^T, gate blocks in internal order
        for k, j in enumerate(_LSTM_BLOCKS):
            whhT[:, k * H:(k + 1) * H] = w_hh[j * H:(j + 1) * H].T
        nz = _carried(g_out).tolist()
        E = np.empty((2, H, B), dt)                    # [δc, δh], carried from step to step
        dc, dh = E[0], E[1]
        dc[...] = g_cn.T
        dh[...] = g_hn.T
        tmp = np.empty((H, B), dt)
        C = _back_chunk(T, H, B, dt)
        D = _workspace.get((G, C, B), dt)              # δa of a chunk of steps, gate-major
        # the forward's parts where it split the batch (so whatever the threads are now)
        wparts = parts if parts > 1 else _weight_plan(dt, T, H, B, K, C)
        if wparts:     # each part of the batch its own sum Σ δa [1; x; h_prev]^T (padded)
            Kp = _padded_columns(dt, K)
            Zc = _workspace.get((wparts, C * B // wparts, Kp), dt)
            dW = _workspace.get((wparts, G, Kp), dt)
            dW[...] = 0
        else:          # Σ δa [1; x; h_prev]^T, internal order; the chunk's columns
            Zc = _workspace.get((K, C, B), dt)
            dW = _workspace.get((G, K), dt)
        dx = np.empty((T, B, I), dt) if self.needs_input_grad[0] else None
        wi = None
        if dx is not None:                             # W_ih, gate blocks in internal order
            wi = np.empty_like(w_ih)
            for k, j in enumerate(_LSTM_BLOCKS):
                wi[k * H:(k + 1) * H] = w_ih[j * H:(j + 1) * H]
        first = True
        need_h0, need_c0 = self.needs_input_grad[1], self.needs_input_grad[2]
        order = [t for t, _p, _n in reversed(_order(T, reverse))]
        F6 = F.reshape(-1, 6, H, B)
        one, scratch = dt.type(1), (np.empty(H * B, dt) if keep else None)
        D4 = D.reshape(4, H, C, B)
        kern = _numba.kernels_for(F, min_size=_COMPILED_MIN)
        carry = Repeated(whhT, D[:, 0], dh)            # the steps' products, checked once
        cols_ = [(D[:, j], D4[0:2, :, j], D4[2:4, :, j]) for j in range(C)]
        idx = None
        compiled = (_regions.lstm() if keep and mask is None
                    and (parts > 1 or H * G * B >= _gemm.MIN_REPEATED_FLOPS) else None)
        threads = _gemm._threads_for(G, H * B)
        if parts > 1 or (compiled is not None and compiled[2] is not None
                         and H >= 2 * threads > 2):
            D2 = D.reshape(G, C * B)
            if parts > 1:      # each part of the batch its steps on one thread, as forward,
                # and its share of the weight gradient (its columns of D together)
                back, slabs = compiled[6], F.reshape(parts, T + 1, 6 * H, B // parts)
            else:              # a chunk's steps split over the threads by hidden units
                back, slabs = compiled[2], F
            # then, as below, the chunk's share of the weight and input gradients
            fg = 0 if _gemm.rows_take(dt, G, B, C * B) else compiled[3][dt]   # as carry's
            times, nzs = np.asarray(order, np.int64), np.asarray(nz, np.bool_)
            head = (fg, whhT, D2, slabs, E, g_out, nzs)
            lo, owed, chunks = 0, -1, []
            for k, t in enumerate(order):
                if _chunk_end(t, C, T, reverse):
                    # the chunk's last δh is owed to the next call: made in its first step
                    t0, t1 = _chunk_span(t, C, T, reverse)
                    tail = (reverse, owed, k == T - 1 and need_h0, scratch.reshape(H, B))
                    if parts > 1:      # the chunks' rows (times lo..k, columns from z0)
                        chunks.append((lo, k + 1, cols.start + t0))
                        if dx is not None:     # the chunk's δa, then the input's share
                            back(*head, times, *tail, Z, np.array(chunks[-1:], np.int64),
                                 Zc, dW)
                            self._input_grads(D2, t0, t1, C, parts, dx, wi, True)
                    else:
                        back(*head, times[lo:k + 1], *tail, threads)
                        first = self._chunk_grads(D, Zc, Z, cols.start, t0, t1, C, dW,
                                                  first, dx, wi, wparts)
                    lo, owed = k + 1, t % C
            if parts > 1 and dx is None:       # every chunk in one region
                back(*head, times, reverse, -1, need_h0, scratch.reshape(H, B), Z,
                     np.array(chunks, np.int64), Zc, dW)
            order = []
        for k, t in enumerate(order):
            if mask is not None:
                idx = _padded(mask, t)
                if idx is not None:
                    carry_h, carry_c = dh[:, idx], dc[:, idx]
            if nz[t]:
                dh += g_out[t].T                       # δh_t: the output's share joins
            if idx is not None:
                dh[:, idx] = 0
                dc[:, idx] = 0
            ft = F6[T - 1 - t if reverse else t] if keep else F6[t]
            j = t % C
            da, da_io, da_fg = cols_[j]
            final = k == T - 1
            if keep:                                   # the same arithmetic as one loop
                kern.lstm_step_grads_gates(dc, dh, ft, D4[:, :, j], one, scratch)
            elif kern is not None:
                kern.lstm_step_grads(dc, dh, ft, D4[:, :, j])
            else:
                np.multiply(dh, ft[4], out=tmp)
                dc += tmp                              # δc_t
                np.multiply(ft[0:2], E, out=da_io)     # δa_i, δa_o
                np.multiply(ft[2:4], dc, out=da_fg)    # δa_f, δa_g
                if not final or need_c0:
                    dc *= ft[5]                        # carried to c_{t-1}
            if not final or need_h0:
                carry(da, dh, j * B, 0)                # carried to h_{t-1}
            if idx is not None:
                dh[:, idx] = carry_h
                dc[:, idx] = carry_c
            # after the chunk's last step: its share of the weight (and input) gradients
            if _chunk_end(t, C, T, reverse):
                first = self._chunk_grads(D, Zc, Z, cols.start,
                                          *_chunk_span(t, C, T, reverse), C, dW, first, dx,
                                          wi, wparts)
        if wparts:                                     # the parts' sums, in order
            dWp = dW
            dW = dWp[0].copy()
            for i in range(1, wparts):
                dW += dWp[i]
            _workspace.put(dWp)
            dW = dW[:, :K]
        dw_ih = _unblock(np.empty((G, I), dt), dW[:, o:o + I], _LSTM_BLOCKS, H)
        dw_hh = _unblock(np.empty((G, H), dt), dW[:, o + I:], _LSTM_BLOCKS, H)
        db = ()
        if o:
            b = _unblock(np.empty(G, dt), dW[:, 0], _LSTM_BLOCKS, H)
            db = (b, b.copy())
        _workspace.put(D, Zc, whhT, None if wparts else dW)
        return (dx, dh.T if need_h0 else None, dc.T if need_c0 else None,
                dw_ih, dw_hh, *db)

    @staticmethod
    def _input_grads(D2, t0, t1, C, parts, dx, wi, by_parts) -> None:
        """A chunk's (steps ``t0..t1``) share of the input's gradient, ``dx[t] = δa_t^T
        W_ih``, one product per part of the batch (the parts' columns of ``D2`` (4H, C B)
        together where ``by_parts``, else ``D2``'s column ``j`` the numbers ``j B .. (j + 1)
        B`` of each row), so the same products whichever steps made ``δa``."""
        G = D2.shape[0]
        B = D2.shape[1] // C
        w, m = B // parts, t1 - t0
        for i in range(parts):
            if by_parts:
                a = np.ascontiguousarray(D2[:, i * C * w:i * C * w + m * w])
            else:
                a = np.ascontiguousarray(D2.reshape(G, C, B)[:, :m, i * w:(i + 1) * w])
            dx[t0:t1, i * w:(i + 1) * w] = matmul(a.reshape(G, m * w).T,
                                                  wi).reshape(m, w, wi.shape[1])

    @staticmethod
    def _chunk_grads(D, Zc, Z, z0, t0, t1, C, dW, first, dx, wi, wparts) -> bool:
        """A chunk's (steps ``t0..t1``) share of the weight gradient ``dW`` (set when
        ``first``, else added to) and of the input's, from its ``δa`` in ``D`` (4H, C,
        B) and its columns ``Z[z0 + t0:z0 + t1]`` (copied into ``Zc`` (K, C, B)); returns
        False (the next chunk adds). With ``wparts``, each of that many parts of the batch
        adds its share to its own ``dW[i]`` by the rows loops, as the compiled steps split by
        sequences do (``_regions_compiled.lstm_weight_grad``, ``Zc[i]`` its scratch, the
        columns from ``Z[z0 + t0 ..]``), and the input's gradient is made per part."""
        G, _, B = D.shape
        m = t1 - t0
        if wparts:
            w = B // wparts
            grad = _weight_grad_rows()
            for i in range(wparts):
                a = np.ascontiguousarray(D[:, :m, i * w:(i + 1) * w]).reshape(-1)
                grad(a, 0, m * w, Z, z0 + t0, m, i * w, (i + 1) * w, Zc[i], dW[i],
                     64 // D.itemsize)
            if dx is not None:
                LSTMScan._input_grads(D.reshape(G, -1), t0, t1, C, wparts, dx, wi, False)
            return False
        K = Zc.shape[0]
        np.copyto(Zc[:, :m], Z[z0 + t0:z0 + t1].transpose(1, 0, 2))
        Dm = D[:, :m].reshape(G, m * B) if m == C else \
            np.ascontiguousarray(D[:, :m]).reshape(G, m * B)
        Zm = Zc.reshape(K, C * B)[:, :m * B] if m == C else \
            np.ascontiguousarray(Zc[:, :m]).reshape(K, m * B)
        if first:
            matmul(Dm, Zm.T, out=dW)
        else:
            matmul(Dm, Zm.T, out=dW, accumulate=True)   # inside the product
        if dx is not None:
            dx[t0:t1] = matmul(Dm.T, wi).reshape(m, B, wi.shape[1])
        return False

    def _free(self) -> None:
        saved = self.__dict__.get("saved")
        if saved is not None:
            _workspace.put(saved[5])                   # the factors: private to the scan
        super()._free()


# ------------------------------------------------------------------------------- GRU
class GRUScan(Function):
    """One direction of a GRU over a whole sequence (see the module docstring)."""

    saved_inputs = None

    @ONE_THREAD.around
    def forward(self, x, h0, w_ih, w_hh, *bias, mask=None, reverse=False):
        T, B, I = x.shape
        H = w_hh.shape[1]
        dt = x.dtype
        train = any(self.needs_input_grad)
        Z, o, cols = _columns(x, H, bool(bias), reverse)
        Zh = Z[:, Z.shape[1] - H:]
        scale = np.ones(3 * H, dt)
        scale[:2 * H] = 0.5
        # input side for all steps at once: [b_ih + (b_hr, b_hz, 0) | W_ih], r and z halved
        Wx = np.empty((3 * H, o + I), dt)
        if o:
            Wx[:, 0] = bias[0]
            Wx[:2 * H, 0] += bias[1][:2 * H]   # b_hr, b_hz fold in; b_hn cannot (r ⊙ ...)
            b_hn = bias[1][2 * H:, None]
        Wx[:, o:] = w_ih
        Wx *= scale[:, None]
        X = _workspace.get((T, 3 * H, B), dt)
        matmul(Wx, Z[cols, :o + I], out=X)     # (T, 3H, B)
        whh = w_hh * scale[:, None]
        Ts = T if train else 1
        RZ = _workspace.get((Ts, 2 * H, B), dt)   # r, z
        N = _workspace.get((Ts, H, B), dt)        # n
        HN = _workspace.get((Ts, H, B), dt)       # W_hn h_{t-1} + b_hn
        hp = np.empty((3 * H, B), dt)
        d = np.empty((H, B), dt)
        Zh[T if reverse else 0] = h0.T
        step = Repeated(whh, Zh[0], hp)                # the steps' products, checked once
        zs = Z[0].size
        for t, p, n_ in _order(T, reverse):
            s = t if train else 0
            xt, rz, nt, hn = X[t], RZ[s], N[s], HN[s]
            hprev = Zh[p]
            step(hprev, hp, p * zs, 0)
            np.add(xt[:2 * H], hp[:2 * H], out=rz)
            np.tanh(rz, out=rz)
            rz *= 0.5
            rz += 0.5
            if o:
                np.add(hp[2 * H:], b_hn, out=hn)
            else:
                hn[...] = hp[2 * H:]
            np.multiply(rz[:H], hn, out=nt)
            nt += xt[2 * H:]
            np.tanh(nt, out=nt)
            np.subtract(hprev, nt, out=d)          # h' = n + z ⊙ (h - n)
            d *= rz[H:]
            np.add(nt, d, out=Zh[n_])
            idx = _padded(mask, t)
            if idx is not None:
                Zh[n_][:, idx] = hprev[:, idx]
        _workspace.put(X)
        if train:
            self.saved = (Z, o, cols, w_ih, w_hh, RZ, N, HN, mask, reverse)
        else:
            _workspace.put(RZ, N, HN)
        last = 0 if reverse else T
        return _outputs(Zh, T, reverse, mask), Zh[last].T.copy()

    @ONE_THREAD.around
    def backward(self, g_out, g_hn):
        Z, o, cols, w_ih, w_hh, RZ, N, HN, mask, reverse = self.saved
        T, H, B = N.shape
        I = w_ih.shape[1]
        dt = N.dtype
        K = Z.shape[1]
        r, z = RZ[:, :H], RZ[:, H:]
        Hprev = Z[cols, K - H:]                          # (T, H, B)
        # Factors for all steps: Pn = (1-z)(1-n²);  Fh = [Pn hn r(1-r), (h-n) z(1-z), Pn r]
        Pn = _workspace.get((T, H, B), dt)
        omz = _workspace.get((T, H, B), dt)
        np.multiply(N, N, out=Pn)
        np.subtract(1, Pn, out=Pn)
        np.subtract(1, z, out=omz)
        Pn *= omz
        Fh = _workspace.get((T, 3 * H, B), dt)
        fr, fz, fn = Fh[:, :H], Fh[:, H:2 * H], Fh[:, 2 * H:]
        np.subtract(1, r, out=fr)
        fr *= r
        fr *= HN
        fr *= Pn
        np.subtract(Hprev, N, out=fz)
        fz *= z
        fz *= omz
        np.multiply(Pn, r, out=fn)
        whhT = np.ascontiguousarray(w_hh.T)
        dAh = _workspace.get((3 * H, T, B), dt)   # [δa_r, δa_z, δ(W_hn h + b_hn)] per step
        dAn = omz.reshape(H, T, B)                # δa_n (the input side's third block)
        nz = _carried(g_out)
        dh_rec = np.array(g_hn.T, dtype=dt, order="C")
        dh = np.empty((H, B), dt)
        tmp = np.empty((H, B), dt)
        for t, _p, _n in reversed(_order(T, reverse)):
            idx = _padded(mask, t)
            if idx is not None:
                carry = dh_rec[:, idx]
            if nz[t]:
                np.add(dh_rec, g_out[t].T, out=dh)
            else:
                dh, dh_rec = dh_rec, dh
            if idx is not None:
                dh[:, idx] = 0
            da = dAh[:, t]
            np.multiply(Fh[t].reshape(3, H, B), dh, out=da.reshape(3, H, B))
            np.multiply(Pn[t], dh, out=dAn[:, t])
            np.multiply(dh, z[t], out=tmp)
            matmul(whhT, da, out=dh_rec)
            dh_rec += tmp
            if idx is not None:
                dh_rec[:, idx] = carry
        dAh2 = dAh.reshape(3 * H, T * B)
        Zin = _workspace.get((K, T, B), dt)              # the step columns, side by side
        np.copyto(Zin, Z[cols].transpose(1, 0, 2))
        Zin2 = Zin.reshape(K, T * B)
        dw_hh = matmul(dAh2, Zin2[K - H:].T)
        db_hh = dAh2.sum(axis=1) if o else None
        dAh[2 * H:] = dAn                                # the input side has δa_n there
        dWx = matmul(dAh2, Zin2[:o + I].T)                     # [db_ih | dW_ih]
        _workspace.put(Zin)
        dx = None
        if self.needs_input_grad[0]:
            dx = matmul(w_ih.T, dAh2).reshape(I, T, B).transpose(1, 2, 0)
        _workspace.put(Pn, omz, Fh, dAh)
        dw_ih = np.ascontiguousarray(dWx[:, o:])
        if o:
            return dx, dh_rec.T, dw_ih, dw_hh, dWx[:, 0].copy(), db_hh
        return dx, dh_rec.T, dw_ih, dw_hh

    def _free(self) -> None:
        saved = self.__dict__.get("saved")
        if saved is not None:
            _workspace.put(saved[5], saved[6], saved[7])   # RZ, N, HN: private to the scan
        super()._free()


# ----------------------------------------------------------------------- public API
def _check(op: str, x: Tensor, states, w_ih: Tensor, w_hh: Tensor, b_ih, b_hh, gates: int):
    if x.ndim != 3:
        raise ValueError(f"{op}: expected a time-major input (T, B, input_size), got shape "
                         f"{tuple(x.shape)}")
    T, B, I = x.shape
    GH, H = w_hh.shape if w_hh.ndim == 2 else (None, None)
    if GH is None or GH != gates * H:
        raise ValueError(f"{op}: expected weight_hh of shape ({gates}*hidden, hidden), got "
                         f"{tuple(w_hh.shape)}")
    if tuple(w_ih.shape) != (gates * H, I):
        raise ValueError(f"{op}: expected weight_ih of shape ({gates * H}, {I}) for input size "
                         f"{I}, got {tuple(w_ih.shape)}")
    if (b_ih is None) != (b_hh is None):
        raise ValueError(f"{op}: give both biases or neither")
    if b_ih is not None:
        for name, b in (("bias_ih", b_ih), ("bias_hh", b_hh)):
            if tuple(b.shape) != (gates * H,):
                raise ValueError(f"{op}: expected {name} of shape ({gates * H},), got "
                                 f"{tuple(b.shape)}")
    for name, s in states:
        if tuple(s.shape) != (B, H):
            raise ValueError(f"{op}: expected {name} of shape ({B}, {H}), got {tuple(s.shape)}")
    dt = w_hh.dtype
    for name, t in (("input", x), *states, ("weight_ih", w_ih), ("bias_ih", b_ih),
                    ("bias_hh", b_hh)):
        if t is not None and t.dtype != dt:
            raise TypeError(f"{op}: expected {name} of dtype {dt} (the weights' dtype), got "
                            f"{t.dtype}")
    return T, B


def _biases(b_ih, b_hh) -> tuple:
    return () if b_ih is None else (b_ih, b_hh)


def rnn(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
        b_hh: Tensor | None = None, nonlinearity: str = "tanh", lengths=None,
        reverse: bool = False) -> tuple[Tensor, Tensor]:
    """One direction of an Elman RNN over a time-major sequence, as one fused op.

    ``x`` (T, B, I), ``h0`` (B, H), ``w_ih`` (H, I), ``w_hh`` (H, H), biases (H,).
    Returns ``(out, h_n)``: all hidden states (T, B, H) and the final one (B, H).
    ``h_t = φ(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` with φ = ``tanh`` or ``relu``.
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"rnn: unknown nonlinearity {nonlinearity!r} (expected 'tanh' or "
                         "'relu')")
    T, B = _check("rnn", x, (("h0", h0),), w_ih, w_hh, b_ih, b_hh, 1)
    mask = _lengths_mask(lengths, T, B, "rnn")
    return RNNScan.apply(x, h0, w_ih, w_hh, *_biases(b_ih, b_hh),
                         relu=nonlinearity == "relu", mask=mask, reverse=bool(reverse))


def lstm(x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
         b_ih: Tensor | None = None, b_hh: Tensor | None = None, lengths=None,
         reverse: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """One direction of an LSTM over a time-major sequence, as one fused op.

    ``x`` (T, B, I), ``h0``/``c0`` (B, H), ``w_ih`` (4H, I), ``w_hh`` (4H, H), biases (4H,),
    gate order ``i, f, g, o`` (torch's). Returns ``(out, h_n, c_n)``.
    """
    T, B = _check("lstm", x, (("h0", h0), ("c0", c0)), w_ih, w_hh, b_ih, b_hh, 4)
    mask = _lengths_mask(lengths, T, B, "lstm")
    return LSTMScan.apply(x, h0, c0, w_ih, w_hh, *_biases(b_ih, b_hh), mask=mask,
                          reverse=bool(reverse))


def gru(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
        b_hh: Tensor | None = None, lengths=None, reverse: bool = False
        ) -> tuple[Tensor, Tensor]:
    """One direction of a GRU over a time-major sequence, as one fused op.

    ``x`` (T, B, I), ``h0`` (B, H), ``w_ih`` (3H, I), ``w_hh`` (3H, H), biases (3H,), gate
    order ``r, z, n`` with torch's ``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``.
    Returns ``(out, h_n)``.
    """
    T, B = _check("gru", x, (("h0", h0),), w_ih, w_hh, b_ih, b_hh, 3)
    mask = _lengths_mask(lengths, T, B, "gru")
    return GRUScan.apply(x, h0, w_ih, w_hh, *_biases(b_ih, b_hh), mask=mask,
                         reverse=bool(reverse))


def _step_input(op: str, x: Tensor) -> Tensor:
    if x.ndim != 2:
        raise ValueError(f"{op}: expected input (B, input_size), got shape {tuple(x.shape)}")
    return x.reshape(1, *x.shape)


def rnn_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
             b_hh: Tensor | None = None, nonlinearity: str = "tanh") -> Tensor:
    """One step of an Elman RNN: ``h' = φ(W_ih x + b_ih + W_hh h + b_hh)``; x (B, I), h (B, H)."""
    _, h_n = rnn(_step_input("rnn_cell", x), h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
    return h_n


def lstm_cell(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor,
              b_ih: Tensor | None = None, b_hh: Tensor | None = None
              ) -> tuple[Tensor, Tensor]:
    """One LSTM step: returns ``(h', c')``; x (B, I), h and c (B, H)."""
    _, h_n, c_n = lstm(_step_input("lstm_cell", x), h, c, w_ih, w_hh, b_ih, b_hh)
    return h_n, c_n


class GRUCellStep(Function):
    """One GRU step, batch-major: the decoder's cell, called once per output step, where
    the scan's column buffers cost more than they save. Same equations as :class:`GRUScan`
    (``r, z, n`` in torch's order); backward, with ``g = dL/dh'``::

        δa_n = g (1-z)(1-n²)     δa_z = g (h-n) z(1-z)     δa_r = δa_n (W_hn h + b_hn) r(1-r)
        dx = [δa_r, δa_z, δa_n] W_ih      dh = g z + [δa_r, δa_z, δa_n r] W_hh
    """

    saved_inputs = None

    def forward(self, x, h, w_ih, w_hh, *bias):
        H = h.shape[1]
        gi = matmul(x, w_ih.T)                                  # (B, 3H): W_i[rzn] x
        gh = matmul(h, w_hh.T)                                  # (B, 3H): W_h[rzn] h
        if bias:
            gi += bias[0]
            gh += bias[1]
        rz = gi[:, :2 * H]
        rz += gh[:, :2 * H]
        rz *= 0.5                                         # σ(a) = (1 + tanh(a/2)) / 2
        np.tanh(rz, out=rz)
        rz *= 0.5
        rz += 0.5
        r, z = rz[:, :H], rz[:, H:]
        hn = gh[:, 2 * H:]                                # W_hn h + b_hn
        n = gi[:, 2 * H:]
        n += r * hn
        np.tanh(n, out=n)
        out = h - n                                       # h' = n + z (h - n)
        out *= z
        out += n
        self.x, self.h, self.w_ih, self.w_hh = x, h, w_ih, w_hh
        self.gi, self.hn, self.has_bias = gi, hn, bool(bias)
        return out

    def backward(self, g):
        x, h, w_ih, w_hh, gi = self.x, self.h, self.w_ih, self.w_hh, self.gi
        H = h.shape[1]
        r, z, n = gi[:, :H], gi[:, H:2 * H], gi[:, 2 * H:]
        da = np.empty_like(gi)                            # [δa_r, δa_z, δa_n]
        dar, daz, dan = da[:, :H], da[:, H:2 * H], da[:, 2 * H:]
        np.subtract(1, z, out=dan)
        dan *= g
        dan *= 1 - n * n                                  # δa_n = g (1-z)(1-n²)
        np.subtract(h, n, out=daz)
        daz *= g
        daz *= z * (1 - z)                                # δa_z = g (h-n) z(1-z)
        np.multiply(dan, self.hn, out=dar)
        dar *= r * (1 - r)                                # δa_r = δa_n (W_hn h + b_hn) r(1-r)
        need = self.needs_input_grad
        dx = matmul(da, w_ih) if need[0] else None
        dw_ih = matmul(da.T, x) if need[2] else None
        db_ih = da.sum(axis=0) if self.has_bias and need[4] else None
        dan *= r                                          # δ(W_hn h + b_hn) = δa_n r
        dh = None
        if need[1]:
            dh = matmul(da, w_hh)
            dh += g * z
        dw_hh = matmul(da.T, h) if need[3] else None
        if not self.has_bias:
            return dx, dh, dw_ih, dw_hh
        db_hh = da.sum(axis=0) if need[5] else None
        return dx, dh, dw_ih, dw_hh, db_ih, db_hh


def gru_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
             b_hh: Tensor | None = None) -> Tensor:
    """One GRU step: returns ``h'``; x (B, I), h (B, H)."""
    if x.ndim != 2:
        raise ValueError(f"gru_cell: expected input (B, input_size), got shape "
                         f"{tuple(x.shape)}")
    if autograd._tracer is not None:  # while tracing (ONNX export): the scan, ONNX's GRU
        _, h_n = gru(_step_input("gru_cell", x), h, w_ih, w_hh, b_ih, b_hh)
        return h_n
    _check("gru_cell", np.broadcast_to(x.data, (1,) + x.data.shape), (("h", h),), w_ih, w_hh,
           b_ih, b_hh, 3)
    return GRUCellStep.apply(x, h, w_ih, w_hh, *_biases(b_ih, b_hh))
