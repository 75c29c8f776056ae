"""A fitted :class:`~shendu.models.AttentionMechanism` in ONNX: its greedy decoding as an
ONNX ``Loop``.

``predict`` encodes the source once, then runs decoder steps, each feeding back the
previous step's arg-max token, until every sequence has emitted the end class (at most
``max(max_target_len_, longest source)`` steps). The file holds three parts:

* the source as ``predict`` reads a 2-D array: tokens (N, S) int64 padded with ``pad_id``
  (each row ends at its first ``pad_id``; every row is full length when ``pad_id`` is
  None), their lengths, the padding replaced by the end id;
* the encoder (embeddings, the bidirectional GRU/LSTM with ``sequence_lens``, the bridge,
  the projected keys), traced from the network;
* a ``Loop`` whose body is one decoder step traced from the network (location features,
  additive attention over the unpadded source, the cell, the read-out), then ``ArgMax``,
  the end bookkeeping and the loop condition "some sequence has not ended".

The output ``tokens`` (N, steps) is ``predict``'s array: the decoded tokens, ``pad_id``
(or ``vocab_size_``) after each sequence's end.
"""

from __future__ import annotations

import numpy as np

from shendu import functional as F
from shendu.autograd import no_grad
from shendu.nn.module import Module
from shendu.onnx._graph import UnsupportedOperatorError
from shendu.tensor import Tensor


class _Encode(Module):
    """The encoder of a :class:`~shendu.models.seq2seq.Seq2SeqNet`: (src, lengths) ->
    keys, values, final states, initial decoder state and the projected keys."""

    def __init__(self, net) -> None:
        super().__init__()
        self.net = net

    def forward(self, src, lengths):
        net = self.net
        keys, vals, final, s0 = net.encode(src, lengths.data)
        h0 = s0[0] if net.cell == "lstm" else s0
        outs = [keys, vals, final, h0]
        if net.attention is not None:
            outs.append(net.attention.project_keys(keys))
        return tuple(outs)


class _Step(Module):
    """One greedy decoder step of a Seq2SeqNet (its ``_steps`` loop body), on tensors."""

    def __init__(self, net) -> None:
        super().__init__()
        self.net = net

    def forward(self, h, c, a_prev, tok, keys, vals, final, kp, pad):
        net = self.net
        if net.attention is not None:
            kpt = kp
            if net.location is not None:          # windows a_{i-1, j-1..j+1}: (N, S, 3)
                f = F.stack([a_prev[:, :-2], a_prev[:, 1:-1], a_prev[:, 2:]], 2)
                kpt = kp + net.location(f)
            ctx, w = net.attention(h, keys, vals, key_padding_mask=pad, projected_keys=kpt)
            a_next = F.pad(w, (1, 1))                                       # (N, S + 2)
        else:
            ctx, a_next = final, a_prev
        e = net.tgt_embed(tok)
        state = (h, c) if net.cell == "lstm" else h
        state = net.decoder(F.cat([e, ctx], 1), state)
        h1, c1 = state if net.cell == "lstm" else (state, c)
        logits = net.out(F.cat([h1, ctx], 1))                               # (N, V + 1)
        return h1, c1, a_next, logits


def _rename(graph, prefix: str, keep: dict) -> tuple[list, list]:
    """The nodes and initializers of ``graph`` with every name prefixed, except the names
    in ``keep`` (mapped to their new names)."""
    def nm(n: str) -> str:
        if not n:
            return n
        return keep.get(n, prefix + n)

    nodes = []
    for node in graph.node:
        new = type(node)()
        new.CopyFrom(node)
        del new.input[:]
        del new.output[:]
        new.input.extend(nm(n) for n in node.input)
        new.output.extend(nm(n) for n in node.output)
        nodes.append(new)
    inits = []
    for t in graph.initializer:
        new = type(t)()
        new.CopyFrom(t)
        new.name = nm(t.name)
        inits.append(new)
    return nodes, inits


def build_seq2seq(est, verify: bool = True):
    """The ONNX ModelProto of a fitted AttentionMechanism's ``predict`` (2-D array form)."""
    import onnx
    from onnx import TensorProto, helper

    from shendu.onnx._estimator import _Builder, _net_dtype
    from shendu.onnx._export import build, finish_model

    net = est.model_
    V = int(est.vocab_size_)
    dt = _net_dtype(net)
    rng = np.random.default_rng(20240612)

    # ---- the encoder, traced on a padded batch
    src1 = rng.integers(0, V, (3, 5)).astype(np.int64)
    len1 = np.array([5, 2, 4], np.int64)
    src1[np.arange(5)[None, :] >= len1[:, None]] = V
    enc_out = ["keys", "vals", "final", "h0"] + (["kp"] if net.attention is not None else [])
    enc = build(_Encode(net), (Tensor(src1), Tensor(len1)), ["src", "lengths"], enc_out,
                {"src": {0: "N", 1: "S"}, "lengths": {0: "N"}}, verify=verify)

    # ---- one decoder step, traced on the encoder's outputs
    was_training = net.training
    net.eval()
    try:
        with no_grad():
            keys, vals, final, h0, *kp = _Encode(net)(Tensor(src1), Tensor(len1))
    finally:
        net.train(was_training)
    N, S = src1.shape
    H = h0.shape[1]
    pad1 = np.arange(S)[None, :] >= len1[:, None]
    a1 = np.zeros((N, S + 2), dt)
    a1[:, 1:-1] = rng.random((N, S)) * ~pad1
    step_in = [h0.data, np.zeros((N, H), dt), a1, rng.integers(0, V + 2, N).astype(np.int64),
               keys.data, vals.data, final.data,
               (kp[0].data if kp else np.zeros((N, S, 1), dt)), pad1]
    names = ["h", "c", "a_prev", "tok", "keys", "vals", "final", "kp", "pad"]
    dyn = {"h": {0: "N"}, "c": {0: "N"}, "a_prev": {0: "N", 1: "S"}, "tok": {0: "N"},
           "keys": {0: "N", 1: "S"}, "vals": {0: "N", 1: "S"}, "final": {0: "N"},
           "kp": {0: "N", 1: "S"}, "pad": {0: "N", 1: "S"}}
    step = build(_Step(net), tuple(Tensor(a) for a in step_in), names,
                 ["h_out", "c_out", "a_out", "logits"], dyn, verify=verify)

    b = _Builder()
    i64 = lambda v: b.const(np.asarray(v, np.int64))  # noqa: E731

    # ---- the source: lengths from pad_id, padding -> end id
    width = b.node("Shape", ["X"], start=1, end=2)                        # [W]
    pos = b.node("Unsqueeze", [b.node("Range", [i64(0), b.node("Squeeze", [width, i64([0])]),
                                                i64(1)]), i64([0])])    # (1, W)
    if est.pad_id is None:
        lens = b.node("Expand", [b.node("Squeeze", [width, i64([0])]),
                                 b.node("Shape", ["X"], start=0, end=1)])
    else:
        is_pad = b.node("Equal", ["X", i64(int(est.pad_id))])
        first = b.node("ArgMax", [b.cast(is_pad, np.int32)], axis=1, keepdims=0)
        any_pad = b.node("Cast", [b.node("ReduceMax", [b.cast(is_pad, np.int32), i64([1])],
                                         keepdims=0)], to=TensorProto.BOOL)
        lens = b.node("Where", [any_pad, first, b.node("Squeeze", [width, i64([0])])])
    real = b.node("Less", [pos, b.node("Unsqueeze", [lens, i64([1])])])    # (N, W)
    b.node("Where", [real, "X", i64(V)], "src")
    b.node("Identity", [lens], "lengths")
    pre, b.nodes = b.nodes, []

    # ---- the loop
    n_dim = b.node("Shape", ["X"], start=0, end=1)
    steps = b.node("Max", [b.node("ReduceMax", [lens], keepdims=1), i64([est.max_target_len_])])
    steps = b.node("Squeeze", [steps, i64([0])])
    a0 = b.node("ConstantOfShape", [b.node("Concat", [n_dim, b.node("Add", [width, i64([2])])],
                                           axis=0)],
                value=onnx.numpy_helper.from_array(np.zeros(1, dt)))
    c0 = b.node("ConstantOfShape", [b.node("Concat", [n_dim, i64([H])], axis=0)],
                value=onnx.numpy_helper.from_array(np.zeros(1, dt)))
    tok0 = b.node("Expand", [i64(V + 1), n_dim])
    ended0 = b.node("ConstantOfShape", [n_dim], value=onnx.numpy_helper.from_array(
        np.zeros(1, np.bool_)))
    pad = b.node("Not", [real])
    outer = {"keys": "keys", "vals": "vals", "final": "final", "kp": "kp", "pad": pad}
    body_io = {"h": "b_h", "c": "b_c", "a_prev": "b_a", "tok": "b_tok"}
    body_nodes, body_inits = _rename(step.graph, "step_", {**outer, **body_io})
    bb = _Builder("body_")
    pred = bb.node("ArgMax", ["step_logits"], axis=1, keepdims=0)         # (N,)
    vv = bb.const(np.asarray(V, np.int64))
    bb.node("Where", ["b_ended", vv, pred], "b_pred")
    ended = bb.node("Or", ["b_ended", bb.node("Equal", [pred, vv])], "b_ended_out")
    left = bb.node("ReduceMax", [bb.cast(bb.node("Not", [ended]), np.int32)], keepdims=0)
    bb.node("Cast", [left], "b_cond_out", to=TensorProto.BOOL)
    for src_name, dst in (("step_h_out", "b_h_out"), ("step_c_out", "b_c_out"),
                          ("step_a_out", "b_a_out")):
        bb.node("Identity", [src_name], dst)
    bb.node("Identity", [pred], "b_tok_out")
    fdt = onnx.helper.np_dtype_to_tensor_dtype(dt)
    body = helper.make_graph(
        body_nodes + bb.nodes, "greedy_step",
        [helper.make_tensor_value_info("b_iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("b_cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("b_h", fdt, ["N", H]),
         helper.make_tensor_value_info("b_c", fdt, ["N", H]),
         helper.make_tensor_value_info("b_a", fdt, ["N", "S2"]),
         helper.make_tensor_value_info("b_tok", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("b_ended", TensorProto.BOOL, ["N"])],
        [helper.make_tensor_value_info("b_cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("b_h_out", fdt, ["N", H]),
         helper.make_tensor_value_info("b_c_out", fdt, ["N", H]),
         helper.make_tensor_value_info("b_a_out", fdt, ["N", "S2"]),
         helper.make_tensor_value_info("b_tok_out", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("b_ended_out", TensorProto.BOOL, ["N"]),
         helper.make_tensor_value_info("b_pred", TensorProto.INT64, ["N"])],
        body_inits + bb.inits)
    outs = [b.fresh("loop") for _ in range(6)]
    b.nodes.append(helper.make_node(
        "Loop", [steps, b.const(np.asarray(True)), "h0", c0, a0, tok0, ended0], outs,
        body=body))
    preds = b.node("Transpose", [outs[5]], perm=[1, 0])                    # (N, T')
    short = b.node("Sub", [b.node("Reshape", [steps, i64([1])]),
                           b.node("Shape", [preds], start=1, end=2)])
    preds = b.node("Pad", [preds, b.node("Concat", [i64([0, 0, 0]), short], axis=0), i64(V)])
    fill = V if est.pad_id is None else int(est.pad_id)
    b.node("Where", [b.node("Equal", [preds, i64(V)]), i64(fill), preds], "tokens")

    enc_nodes, enc_inits = _rename(enc.graph, "enc_", {n: n for n in
                                                        ["src", "lengths", *enc_out]})
    graph = helper.make_graph(
        pre + enc_nodes + b.nodes, type(est).__name__,
        [helper.make_tensor_value_info("X", TensorProto.INT64, ["N", "W"])],
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", "T"])],
        enc_inits + b.inits)
    model = finish_model(graph, ir_version=enc.ir_version)
    if verify:
        _verify_seq2seq(model, est, V)
    return model


def _verify_seq2seq(model, est, V: int) -> None:
    from shendu.onnx._export import session_or_warn

    rng = np.random.default_rng(20240613)
    X = rng.integers(0, V, (4, 6)).astype(np.int64)
    if est.pad_id is not None:                     # rows of 6, 3, 1 and 5 tokens
        X[np.arange(6)[None, :] >= np.array([6, 3, 1, 5])[:, None]] = est.pad_id
    sess = session_or_warn(model, "onnx.export_estimator", 5)
    if sess is None:
        return
    got, = sess.run(None, {"X": X})
    want = est.predict(X)
    if got.shape != want.shape or not np.array_equal(got, want):
        raise UnsupportedOperatorError(f"onnx.export_estimator: the exported graph does not "
                                       f"reproduce {type(est).__name__}.predict")
