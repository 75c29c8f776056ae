r"""The LSTM written out step by step: the textbook equations, one line each.

Read this first. :func:`shendu.functional.lstm` computes exactly the same thing as one fused
op (a hand-derived backward through time, all gates in one matrix product per step, shared
scratch memory) — fast, but not the place to learn the equations. This version is built from
small differentiable ops, so autograd derives its backward; the tests use it as a second
oracle beside torch.

For each step ``t`` (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000;
gate order ``i, f, g, o`` and parameter shapes as torch's)::

    i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)      input gate
    f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)      forget gate
    g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)   candidate cell
    o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)      output gate
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)
"""

from __future__ import annotations

from shendu.functional.shape import stack
from shendu.tensor import Tensor

__all__ = ["lstm_reference"]


def lstm_reference(x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
                   b_ih: Tensor | None = None, b_hh: Tensor | None = None
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """``x`` (T, B, I), ``h0``/``c0`` (B, H), ``w_ih`` (4H, I), ``w_hh`` (4H, H), biases
    (4H,). Returns ``(out, h_n, c_n)`` with ``out`` (T, B, H): what :func:`lstm` returns."""
    H = h0.shape[-1]
    h, c = h0, c0
    outputs = []
    for t in range(x.shape[0]):
        a = x[t] @ w_ih.T + h @ w_hh.T                      # (B, 4H): all four gates
        if b_ih is not None:
            a = a + b_ih
        if b_hh is not None:
            a = a + b_hh
        i = a[:, 0 * H:1 * H].sigmoid()                     # input gate
        f = a[:, 1 * H:2 * H].sigmoid()                     # forget gate
        g = a[:, 2 * H:3 * H].tanh()                        # candidate cell
        o = a[:, 3 * H:4 * H].sigmoid()                     # output gate
        c = f * c + i * g                                   # new cell state
        h = o * c.tanh()                                    # new hidden state
        outputs.append(h)
    if not outputs:
        return stack([h])[:0], h, c                        # (0, B, H): no steps
    return stack(outputs), h, c
