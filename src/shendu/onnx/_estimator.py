"""``shendu.onnx.export_estimator``: a fitted ready model (``shendu.models``) as one ONNX
graph that takes what ``predict`` takes and gives what ``predict``/``predict_proba`` give.

The graph is three parts joined: the preprocessing the estimator applies before its
network (the cast of ``X`` to float64 that ``predict`` does, standardisation with the
fitted ``mean_`` and ``scale_``, the cast to the network's dtype), the network itself
(exported by :func:`shendu.onnx._export.build`, by tracing), and the read-out (softmax or
logistic probabilities computed in float64 as the estimator does, the label as
``classes_[argmax]``). Classifiers give two outputs, ``label`` and ``probabilities``;
regressors one, ``predictions``. ``X`` is a float64 input (``predict`` converts to float64
first, so float64 in the graph reproduces its numbers; cast float32 data with
``X.astype(np.float64)``); token models take int64.
"""

from __future__ import annotations

import io
import os

import numpy as np

from shendu.onnx._graph import UnsupportedOperatorError, dtype_code
from shendu.tensor import Tensor

_DOUBLE = np.dtype(np.float64)


class _Builder:
    """Nodes and initializers around the network's graph, under names that can't clash
    with the network's (every name here starts with ``est_``)."""

    def __init__(self, prefix: str = "est_") -> None:
        self.nodes: list = []
        self.inits: list = []
        self.n = 0
        self.prefix = prefix

    def fresh(self, base: str) -> str:
        self.n += 1
        return f"{self.prefix}{base}_{self.n}"

    def const(self, arr) -> str:
        from onnx import numpy_helper

        name = self.fresh("const")
        arr = np.asarray(arr)
        self.inits.append(numpy_helper.from_array(arr if arr.flags.c_contiguous
                                                  else arr.copy(), name))
        return name

    def node(self, op: str, inputs, out: str | None = None, **attrs) -> str:
        from onnx import helper

        out = out or self.fresh(op)
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def cast(self, x: str, dtype) -> str:
        return self.node("Cast", [x], to=dtype_code(np.dtype(dtype)))


def _net_dtype(net) -> np.dtype:
    for p in net.parameters():
        return np.dtype(p.data.dtype)
    return np.dtype(np.float32)


class _Spec:
    """What one kind of estimator needs: its network's example input, the graph input,
    and the steps before and after the network."""

    def __init__(self, est) -> None:
        self.est = est
        self.net = est.model_
        self.dt = _net_dtype(self.net)

    # the estimator's input: its dtype and dims
    x_dtype = _DOUBLE
    dynamic = {0: "N"}

    def x_dims(self):
        raise NotImplementedError

    def example(self, n: int, rng) -> np.ndarray:
        raise NotImplementedError

    def pre(self, b: _Builder, x: str) -> str:
        """Graph of ``X`` -> the network's input."""
        return b.cast(x, self.dt)

    def net_input(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    #: the file's outputs come from :func:`_post` (None) or from :meth:`post`
    custom_post = False

    def reference(self, name: str, X: np.ndarray) -> np.ndarray:
        """What the estimator gives for the file's output ``name`` on ``X``."""
        return self.est.predict_proba(X) if name == "probabilities" else self.est.predict(X)


class _SeedSpec(_Spec):
    """A model built the seed's way (``Model(input_dim, hidden_dim, output_dim)``) and
    trained with its ``train``, not ``fit``: the file gives what ``forward(x)`` gives (the
    network's output, in its dtype) for a batch ``X`` (float64, cast as ``forward``
    casts); the batch size is dynamic, and so are the length of sequences and the height
    and width of images."""

    custom_post = True

    def __init__(self, est) -> None:
        from shendu.models import ConvolutionalNeuralNetwork, MultiLayerPerceptron

        self.est = est
        self.net = est.net
        self.dt = np.dtype(est._seed_dtype)
        d = int(est.input_dim)
        if isinstance(est, MultiLayerPerceptron):
            self.shape, self.dynamic = (3, d), {0: "N"}
        elif isinstance(est, ConvolutionalNeuralNetwork):
            self.shape, self.dynamic = (3, d, 8, 8), {0: "N", 2: "H", 3: "W"}
        else:                                            # recurrent, self-attention
            self.shape, self.dynamic = (3, 5, d), {0: "N", 1: "T"}

    def x_dims(self):
        labels = {0: "N", 1: "T", 2: "H", 3: "W"}
        return [labels[i] if i in self.dynamic else int(s) for i, s in enumerate(self.shape)]

    def example(self, n, rng):
        return rng.standard_normal((n, *self.shape[1:]))

    def net_input(self, X):
        return X.astype(self.dt)

    def post(self, b: _Builder, outputs: list) -> None:
        b.node("Identity", ["net_output"], "output")
        outputs.append(("output", self.dt))

    def reference(self, name, X):
        est = self.est
        saved = est.__dict__.get("_out")
        try:
            return est.forward(X)
        finally:
            est._out = saved                     # forward keeps its graph for backward


class _MLPSpec(_Spec):
    def x_dims(self):
        return ["N", int(self.est.n_features_in_)]

    def example(self, n, rng):
        return rng.standard_normal((n, int(self.est.n_features_in_)))

    def pre(self, b, x):
        est = self.est
        if getattr(est, "mean_", None) is not None:
            x = b.node("Sub", [x, b.const(np.asarray(est.mean_, np.float64))])
            x = b.node("Div", [x, b.const(np.asarray(est.scale_, np.float64))])
        return b.cast(x, self.dt)

    def net_input(self, X):
        return self.est._scale(X).astype(self.dt)


class _SeedMLPSpec(_Spec):
    """A fitted ``MultiLayerPerceptron``/``NeuralNetwork``: ``predict`` casts ``X`` to the
    fitted dtype, runs ``model_`` and gives float64 (raveled for a 1-D ``y``)."""

    def __init__(self, est) -> None:
        super().__init__(est)
        self.dt = np.dtype(est._fit_dt)

    def x_dims(self):
        return ["N", int(self.est.n_features_in_)]

    def example(self, n, rng):
        return rng.standard_normal((n, int(self.est.n_features_in_)))

    def net_input(self, X):
        return X.astype(self.dt)


class _CNNSpec(_MLPSpec):
    """Images (N, C, H, W), float64, as ``predict`` takes them (an ONNX input has a fixed
    rank: reshape (N, H, W) or flat (N, H*W) rows to (N, C, H, W) before the call)."""

    def x_dims(self):
        return ["N", *(int(s) for s in self.est.input_shape_)]

    def example(self, n, rng):
        return rng.standard_normal((n, *self.est.input_shape_))


class _RecurrentSpec(_Spec):
    dynamic = {0: "N", 1: "T"}

    def x_dims(self):
        return ["N", "T", int(self.est.n_features_in_)]

    def example(self, n, rng):
        return rng.standard_normal((n, 5, int(self.est.n_features_in_)))

    def net_input(self, X):
        return X.astype(self.dt)


class _TransformerSpec(_Spec):
    dynamic = {0: "N", 1: "T"}

    def __init__(self, est) -> None:
        super().__init__(est)
        if est.tokens_:
            self.x_dtype = np.dtype(np.int64)
        length = int(est.seq_shape_[0])      # the positional table holds this many steps
        self.t = min(4, length - 2) if length >= 3 else length
        if length < 3:
            self.dynamic = {0: "N"}

    def x_dims(self):
        if self.est.tokens_:
            return ["N", "T"]
        return ["N", "T", int(self.est.seq_shape_[1])]

    def example(self, n, rng):
        est, t = self.est, self.t
        if est.tokens_:
            vocab = self.net.embed.num_embeddings
            x = rng.integers(0, vocab, (n, t)).astype(np.int64)
            if est.pad_id is not None and t > 1:   # padding at the end of the first row
                x[0, t // 2:] = est.pad_id
            return x
        return rng.standard_normal((n, t, int(est.seq_shape_[1])))

    def pre(self, b, x):
        return x if self.est.tokens_ else b.cast(x, np.float32)

    def net_input(self, X):
        return X if self.est.tokens_ else X.astype(np.float32)


def _spec(est) -> _Spec:
    from shendu.models import (
        AttentionMechanism,
        ConvolutionalNeuralNetwork,
        MLPClassifier,
        MLPRegressor,
        MultiLayerPerceptron,
        TransformerClassifier,
    )
    from shendu.models.recurrent import _RecurrentEstimator
    from shendu.models.seed import SeedAPI

    name = type(est).__name__
    fitted = "model_" in getattr(est, "__dict__", {})
    if isinstance(est, SeedAPI) and not fitted and est.__dict__.get("net") is not None:
        return _SeedSpec(est)
    if isinstance(est, (MLPClassifier, MLPRegressor, _RecurrentEstimator,
                        TransformerClassifier, MultiLayerPerceptron,
                        AttentionMechanism)) and not fitted:
        raise ValueError(f"onnx.export_estimator: this {name} is not fitted yet; call "
                         "fit(X, y) first (or, for the seed's API, build it as "
                         f"{name}(input_dim, hidden_dim, output_dim))")
    if isinstance(est, MultiLayerPerceptron):
        return _SeedMLPSpec(est)
    if isinstance(est, ConvolutionalNeuralNetwork):
        return _CNNSpec(est)
    if isinstance(est, (MLPClassifier, MLPRegressor)):
        return _MLPSpec(est)
    if isinstance(est, _RecurrentEstimator):
        return _RecurrentSpec(est)
    if isinstance(est, TransformerClassifier):
        return _TransformerSpec(est)
    raise TypeError(f"onnx.export_estimator: expected a fitted ready model of shendu.models "
                    f"(MLPClassifier, MLPRegressor, ConvolutionalNeuralNetwork, "
                    f"RecurrentNeuralNetwork, LongShortTermMemory, GatedRecurrentUnit, "
                    f"TransformerClassifier, Perceptron, NeuralNetwork, MultiLayerPerceptron, "
                    f"AttentionMechanism, AudioClassifier, CharLM, CharTransformerLM), got "
                    f"{name}")


def _is_classifier(est) -> bool:
    return getattr(est, "_estimator_type", None) == "classifier" or (
        hasattr(est, "classes_") and getattr(est, "task", "classification") == "classification")


def label_constant(est) -> np.ndarray:
    """``est.classes_`` as the constant the ``label`` output gathers from: strings as
    ONNX strings (object), booleans as int64, numbers as they are."""
    classes = np.asarray(est.classes_)
    if classes.dtype.kind in "US":
        return classes.astype(object)
    if classes.dtype.kind == "b":
        return classes.astype(np.int64)
    if classes.dtype.kind not in "iuf":
        raise UnsupportedOperatorError(f"onnx.export_estimator: class labels of dtype "
                                       f"{classes.dtype} have no ONNX tensor type")
    return classes


def _post(b: _Builder, est, z: str, z_ndim: int, spec: _Spec, outputs: list) -> None:
    """Logits ``z`` (the network's dtype) -> ``label`` and ``probabilities`` (classifier)
    or ``predictions`` (regressor), as the estimator's predict methods compute them."""
    from shendu.models import TransformerClassifier

    if not _is_classifier(est):
        zd = b.cast(z, _DOUBLE)
        trailing = tuple(getattr(est, "_y_trailing_", ()) or ())
        if getattr(est, "_y_ndim", 2) == 1 or getattr(est, "_y_1d", False):   # 1-D y
            zd = b.node("Squeeze", [zd, b.const(np.asarray([1], np.int64))])
        elif hasattr(est, "_y_trailing_"):                          # recurrent regressor
            lead = [0] * (z_ndim - 1)
            zd = b.node("Reshape", [zd, b.const(np.asarray(lead + list(trailing) if trailing
                                                           else lead, np.int64))])
        b.node("Identity", [zd], "predictions")
        outputs.append(("predictions", _DOUBLE))
        return
    classes = label_constant(est)
    axis = z_ndim - 1
    if isinstance(est, TransformerClassifier):                  # softmax in float32, then
        p = b.cast(b.node("Softmax", [z], axis=-1), _DOUBLE)    # float64 (as predict_proba)
        idx = b.node("ArgMax", [p], axis=axis, keepdims=0)
    else:
        zd = b.cast(z, _DOUBLE)
        one_logit = getattr(est, "_decide", None) is not None and \
            spec.net_out_shape[-1] == 1
        if one_logit:                                           # binary MLP: one logistic
            p1 = b.node("Sigmoid", [zd])
            p0 = b.node("Sub", [b.const(np.asarray(1.0)), p1])
            p = b.node("Concat", [p0, p1], axis=1)
            idx = b.cast(b.node("Greater", [b.node("Squeeze", [zd, b.const(
                np.asarray([1], np.int64))]), b.const(np.asarray(0.0))]), np.int64)
        else:
            p = b.node("Softmax", [zd], axis=-1)
            idx = b.node("ArgMax", [zd], axis=axis, keepdims=0)
    b.node("Gather", [b.const(classes), idx], "label", axis=0)
    b.node("Identity", [p], "probabilities")
    outputs.append(("label", classes.dtype))
    outputs.append(("probabilities", _DOUBLE))


def build_estimator(est, verify: bool = True):
    """The ONNX ModelProto of a fitted estimator (see :func:`export_estimator`)."""
    import onnx
    from onnx import helper

    from shendu.models import AttentionMechanism, AudioClassifier, Perceptron
    from shendu.nn.module import Module
    from shendu.onnx._audio import build_audio
    from shendu.onnx._export import build, finish_model
    from shendu.onnx._seq2seq import build_seq2seq

    if isinstance(est, AudioClassifier):
        return build_audio(est, verify)
    if isinstance(est, Perceptron):
        return _build_perceptron(est, verify)
    if isinstance(est, AttentionMechanism) and "model_" in est.__dict__:
        return build_seq2seq(est, verify)
    if isinstance(est, Module):
        return _build_language_model(est, verify)
    spec = _spec(est)
    rng = np.random.default_rng(20240608)
    X1 = spec.example(3, rng)
    net_x = spec.net_input(X1)
    dyn = {"net_input": dict(spec.dynamic)}
    proto = build(spec.net, (Tensor(net_x),), ["net_input"], ["net_output"], dyn,
                  verify=verify)
    out_vi = proto.graph.output[0]
    spec.net_out_shape = [d.dim_value or d.dim_param for d in out_vi.type.tensor_type.shape.dim]

    b = _Builder()
    pre_out = spec.pre(b, "X")
    b.node("Identity", [pre_out], "net_input")
    pre_nodes, b.nodes = b.nodes, []
    outputs: list = []
    if spec.custom_post:
        spec.post(b, outputs)
    else:
        _post(b, est, "net_output", len(spec.net_out_shape), spec, outputs)

    X_grown = X1
    for ax in spec.dynamic:                    # one more along every dynamic axis
        X_grown = np.concatenate([X_grown, np.take(X_grown, [0], axis=ax)], axis=ax)
    dims = spec.x_dims()
    x_info = helper.make_tensor_value_info("X", dtype_code(spec.x_dtype), dims)
    out_infos = []
    for name, dt in outputs:
        code = onnx.TensorProto.STRING if dt == np.dtype(object) else dtype_code(dt)
        s1, s2 = np.shape(spec.reference(name, X1)), np.shape(spec.reference(name, X_grown))
        dims = [int(a) if a == b else (spec.dynamic.get(i) or f"{name}_dim{i}")
                for i, (a, b) in enumerate(zip(s1, s2))]
        out_infos.append(helper.make_tensor_value_info(name, code, dims))
    graph = helper.make_graph(pre_nodes + list(proto.graph.node) + b.nodes,
                              type(est).__name__, [x_info], out_infos,
                              list(proto.graph.initializer) + b.inits)
    model = finish_model(graph, ir_version=proto.ir_version)
    if verify:
        _verify(model, est, spec, [X1, spec.example(7, np.random.default_rng(1))])
    return model


def _build_language_model(est, verify: bool):
    """A language model that is a module and an estimator (``CharLM``,
    ``CharTransformerLM``): the file takes token ids ``X`` int64 (N, T) and gives what
    ``forward`` gives — ``logits`` (N, T, V), and a recurrent model's final state
    (``state_0``, ...); N and T are dynamic (T up to a transformer's ``block_size``)."""
    from shendu.autograd import no_grad
    from shendu.nn.sparse import Embedding
    from shendu.onnx._export import build
    from shendu.onnx._trace import _flatten

    name = type(est).__name__
    emb = next((m for m in est.modules() if isinstance(m, Embedding)), None)
    if emb is None:
        raise TypeError(f"onnx.export_estimator: {name} is a module without a token "
                        "embedding; export it with shendu.onnx.export(model, example_input)")
    block = getattr(est, "block_size", None)
    t = 5 if block is None else max(1, min(5, int(block) - 2))
    x = np.random.default_rng(20240614).integers(0, emb.num_embeddings, (2, t))
    was = est.training
    est.eval()
    try:
        with no_grad():
            n_out = len(_flatten(est(Tensor(x)), []))
    finally:
        est.train(was)
    outs = ["logits"] + [f"state_{i}" for i in range(n_out - 1)]
    dyn = {"X": {0: "N", 1: "T"} if block is None or int(block) >= t + 2 else {0: "N"}}
    return build(est, (Tensor(x),), ["X"], outs, dyn, verify=verify)


def _build_perceptron(est, verify: bool):
    """``Perceptron``: the scores ``X W + b`` in float64 (as ``decision_function``) and,
    fitted, the label (``classes_[score > 0]`` for two classes, else the arg-max); built
    the seed's way and trained with ``train``, the file gives ``forward``'s scores."""
    import onnx
    from onnx import helper

    from shendu.onnx._export import finish_model

    name = type(est).__name__
    if "_W" not in est.__dict__:
        raise ValueError(f"onnx.export_estimator: this {name} has no weights yet; call "
                         f"fit(X, y) first, or build it as {name}(input_dim, output_dim)")
    W, bias = np.asarray(est._W, np.float64), np.asarray(est._b, np.float64)
    fitted = est._is_fitted() and hasattr(est, "classes_")
    b = _Builder()
    s = b.node("Add", [b.node("MatMul", ["X", b.const(W)]), b.const(bias)])   # (N, K)
    K = W.shape[1]
    if not fitted:
        b.node("Identity", [s], "output")
        outs = [helper.make_tensor_value_info("output", onnx.TensorProto.DOUBLE, ["N", K])]
    else:
        classes = label_constant(est)
        if K == 1:
            s = b.node("Squeeze", [s, b.const(np.asarray([1], np.int64))])
            idx = b.cast(b.node("Greater", [s, b.const(np.asarray(0.0))]), np.int64)
        else:
            idx = b.node("ArgMax", [s], axis=1, keepdims=0)
        b.node("Gather", [b.const(classes), idx], "label", axis=0)
        b.node("Identity", [s], "scores")
        outs = [helper.make_tensor_value_info("label", dtype_code(classes.dtype), ["N"]),
                helper.make_tensor_value_info("scores", onnx.TensorProto.DOUBLE,
                                              ["N"] if K == 1 else ["N", K])]
    graph = helper.make_graph(
        b.nodes, name, [helper.make_tensor_value_info("X", onnx.TensorProto.DOUBLE,
                                                      ["N", W.shape[0]])], outs, b.inits)
    model = finish_model(graph)
    if verify:
        _verify_perceptron(model, est, fitted, W.shape[0])
    return model


def _verify_perceptron(model, est, fitted: bool, n_features: int) -> None:
    from shendu.onnx._export import _close, session_or_warn

    sess = session_or_warn(model, "onnx.export_estimator", 5)
    if sess is None:
        return
    X = np.random.default_rng(20240611).standard_normal((7, n_features))
    got = sess.run(None, {"X": X})
    if fitted:
        ok = np.array_equal(got[0], est.predict(X)) and _close(got[1], est.decision_function(X))
    else:
        saved = {k: est.__dict__.get(k) for k in ("_x", "_out")}
        try:
            ok = _close(got[0], est.forward(X))
        finally:
            est.__dict__.update(saved)
    if not ok:
        raise UnsupportedOperatorError(f"onnx.export_estimator: the exported graph does not "
                                       f"reproduce {type(est).__name__}'s outputs")


def _verify(model, est, spec, inputs) -> None:
    """The graph in ONNX Runtime on two inputs must give the estimator's own outputs."""
    from shendu.onnx._export import _close, session_or_warn

    sess = session_or_warn(model, "onnx.export_estimator", 5)
    if sess is None:
        return
    names = [o.name for o in sess.get_outputs()]
    for X in inputs:
        got = dict(zip(names, sess.run(None, {"X": X})))
        if spec.custom_post:
            want = spec.reference("output", X)
            ok = got["output"].shape == want.shape and _close(got["output"], want)
            what = "forward"
        elif "probabilities" in got:
            want = est.predict_proba(X)
            ok = got["probabilities"].shape == want.shape and _close(got["probabilities"],
                                                                    want.astype(np.float32))
            what = "predict_proba"
        else:
            want = est.predict(X)
            ok = got["predictions"].shape == np.shape(want) and _close(
                got["predictions"], np.asarray(want, np.float32))
            what = "predict"
        if not ok:
            raise UnsupportedOperatorError(f"onnx.export_estimator: the exported graph does "
                                           f"not reproduce {type(est).__name__}.{what} on "
                                           f"inputs of shape {X.shape}")


def export_estimator(est, f, *, verify: bool = True):
    """Write a fitted ready model of ``shendu.models`` as one ONNX file, preprocessing
    included: the file takes what ``est.predict`` takes (``X`` as float64; int64 tokens)
    and gives ``label`` and ``probabilities`` (classifiers: ``predict`` and
    ``predict_proba``) or ``predictions`` (regressors: ``predict``).

    Standardisation (``mean_``, ``scale_``), reshaping of image rows and the casts are in
    the graph; the batch size (and the sequence length of sequence models) is dynamic.
    With ``verify`` (and onnxruntime installed) the graph is run on two inputs and must
    give the estimator's own outputs. Returns the ``onnx.ModelProto``."""
    import onnx

    model = build_estimator(est, verify)
    if isinstance(f, (str, os.PathLike)):
        onnx.save(model, os.fspath(f))
    elif isinstance(f, io.IOBase) or hasattr(f, "write"):
        f.write(model.SerializeToString())
    else:
        raise TypeError(f"onnx.export_estimator: f must be a path or a binary file, got "
                        f"{type(f).__name__}")
    return model
