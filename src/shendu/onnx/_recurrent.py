"""ONNX forms of the recurrent scans: one direction of one layer each, as ONNX's ``RNN``,
``LSTM`` and ``GRU`` operators.

shendu keeps torch's gate order; ONNX has its own, so the weight blocks are reordered:
LSTM ``i, f, g, o`` -> ``i, o, f, c``; GRU ``r, z, n`` -> ``z, r, h`` with
``linear_before_reset=1`` (torch's ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``).
Variable lengths become ``sequence_lens``; an all-zero initial state is left out (ONNX's
default), so the graph does not fix the batch size through it.
"""

from __future__ import annotations

import importlib

import numpy as np

from shendu.onnx._graph import Ctx
from shendu.onnx._ops import maps

RC = importlib.import_module("shendu.functional.recurrent")

_ORDER = {RC.LSTMScan: [0, 3, 1, 2], RC.GRUScan: [1, 0, 2], RC.RNNScan: [0]}
_OP = {RC.LSTMScan: "LSTM", RC.GRUScan: "GRU", RC.RNNScan: "RNN"}


def _blocks(a: np.ndarray, order: list[int]) -> np.ndarray:
    parts = np.split(a, len(order), axis=0)
    return np.concatenate([parts[i] for i in order], axis=0)


@maps(RC.RNNScan, RC.LSTMScan, RC.GRUScan)
def _scan(c: Ctx):
    cls = c.r1.cls
    n_state = 2 if cls is RC.LSTMScan else 1
    x_v = c.ins[0]
    states = c.ins[1:1 + n_state]
    w_ih, w_hh, *bias = c.ins[1 + n_state:]
    for v, what in ((w_ih, "weight_ih"), (w_hh, "weight_hh"), *((b, "bias") for b in bias)):
        if v.dyn or not v.same:
            c.fail(f"its {what} is computed from the inputs; ONNX's {_OP[cls]} takes fixed "
                   "weights")
    order = _ORDER[cls]
    H = w_hh.a1.shape[1]
    dt = x_v.a1.dtype
    W = c.const(_blocks(w_ih.a1, order)[None], "W")
    R = c.const(_blocks(w_hh.a1, order)[None], "R")
    B = ""
    if bias:
        B = c.const(np.concatenate([_blocks(bias[0].a1, order), _blocks(bias[1].a1, order)])[None]
                    .astype(dt), "B")
    lens = ""
    m1, m2 = c.p.get("mask"), c.p2.get("mask")
    if (m1 is None) != (m2 is None):
        c.fail("lengths shorter than the sequence in one traced run and not in the other; pass "
               "lengths that differ from T in the example input")
    if m1 is not None:
        v = c.g.lookup_array(m1[0], m2[0])
        lens = c.node("Cast", [c.g.name(v)], to=6)  # int32
    init = []
    for s in states:
        if not s.dyn and not (np.any(s.a1) or np.any(s.a2)):
            init.append("")  # zeros (of a size that may follow the batch): ONNX's default
        else:
            init.append(c.node("Unsqueeze", [c.g.name(s), c.i64([0])]))
    attrs = dict(hidden_size=int(H), direction="reverse" if c.static("reverse") else "forward")
    if cls is RC.RNNScan:
        attrs["activations"] = ["Relu" if c.static("relu") else "Tanh"]
    if cls is RC.GRUScan:
        attrs["linear_before_reset"] = 1
    ins = [c.x(0), W, R, B, lens] + init
    while ins[-1] == "":
        ins.pop()
    outs = c.node(_OP[cls], ins, n_out=1 + n_state, **attrs)
    y = c.node("Squeeze", [outs[0], c.i64([1])])                 # (T, 1, B, H) -> (T, B, H)
    finals = [c.node("Squeeze", [o, c.i64([0])]) for o in outs[1:]]  # (1, B, H) -> (B, H)
    return [y, *finals]


def _gru_cell_step(c: Ctx):
    """One GRU step (B, I), (B, H) -> (B, H): ``r, z = sigmoid(.)``, ``n = tanh(W_in x +
    b_in + r (W_hn h + b_hn))``, ``h' = n + z (h - n)`` (torch's gate order r, z, n)."""
    x, h, w_ih, w_hh = (c.x(j) for j in range(4))
    H = c.a(1).shape[1]
    bias = [[c.x(4)], [c.x(5)]] if len(c.ins) > 4 else [[], []]
    gi = c.node("Gemm", [x, w_ih, *bias[0]], transB=1)                  # (B, 3H)
    gh = c.node("Gemm", [h, w_hh, *bias[1]], transB=1)
    sizes = c.i64([H, H, H])
    ir, iz, i_n = c.node("Split", [gi, sizes], n_out=3, axis=1)
    hr, hz, hn = c.node("Split", [gh, sizes], n_out=3, axis=1)
    r = c.node("Sigmoid", [c.node("Add", [ir, hr])])
    z = c.node("Sigmoid", [c.node("Add", [iz, hz])])
    n = c.node("Tanh", [c.node("Add", [i_n, c.node("Mul", [r, hn])])])
    return c.node("Add", [n, c.node("Mul", [z, c.node("Sub", [h, n])])])


if hasattr(RC, "GRUCellStep"):         # the decoder's one-step GRU kernel
    maps(RC.GRUCellStep)(_gru_cell_step)
