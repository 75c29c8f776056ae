"""Speech in ONNX: the short-time Fourier transform of :class:`shendu.audio.PowerSTFT` as
standard ops, and :class:`~shendu.models.AudioClassifier` exported from the raw waveform.

The STFT (``|X_{k,t}|^p`` with ``X_{k,t} = sum_n w_n x_{tH+n} e^{-2 pi i k n / N}``) is
written as: reflection ``Pad`` (``center``), frames cut with a ``Gather`` of indices
``t H + n`` (``t`` up to the number of frames the waveform's length gives, so the length
is free), and the DFT as one ``MatMul`` with the matrix ``[w cos | w sin]`` (N, 2 (N/2+1)),
in float64: shendu's single-precision FFT and this product then agree to float32's
rounding. Mel filterbank, decibels, DCT and the per-utterance normalisation are the
``MatMul``/``Log``/reduction ops of the layers that compute them.

The classifier's file takes a batch of waveforms padded to one length and their lengths:
``X`` float32 (N, W) and ``lengths`` int64 (N,) (row ``i`` holds ``lengths[i]`` samples,
the rest is ignored). The graph places each recording in the model's window of
``max_seconds * sample_rate`` samples as ``predict`` does — centred in zeros when
shorter, cut to its loudest stretch when longer (:func:`shendu.audio.fit_length`) — plays
it at the ``test_speeds`` when the model has them (linear interpolation, as
:func:`shendu.audio.speed_perturb`), runs the network, and reads out ``label`` and
``probabilities`` as ``predict`` and ``predict_proba`` do.
"""

from __future__ import annotations

import math

import numpy as np

from shendu.audio.features import PowerSTFT
from shendu.onnx._graph import Ctx, UnsupportedOperatorError, dtype_code
from shendu.onnx._ops import maps
from shendu.tensor import Tensor

INT_MAX = np.iinfo(np.int64).max


def dft_basis(window: np.ndarray, n_fft: int) -> np.ndarray:
    """(n_fft, 2 F) float64: ``frames @ basis`` gives the real parts of the one-sided DFT of
    the windowed frames in the first F columns and minus the imaginary parts in the last F
    (F = n_fft // 2 + 1)."""
    k = np.arange(n_fft // 2 + 1)
    n = np.arange(n_fft)
    angle = 2.0 * math.pi * ((n[:, None] * k[None, :]) % n_fft) / n_fft   # exact phases
    w = np.asarray(window, np.float64)[:, None]
    return np.concatenate([w * np.cos(angle), w * np.sin(angle)], axis=1)


@maps(PowerSTFT)
def _power_stft(c: Ctx):
    n_fft, hop = int(c.static("n_fft")), int(c.static("hop"))
    center, power = bool(c.static("center")), float(c.static("power"))
    window = c.static("window")
    x = c.node("Cast", [c.x(0)], to=dtype_code(np.float64))             # (B, N)
    if center:
        pad = n_fft // 2
        x = c.node("Pad", [x, c.i64([0, pad, 0, pad])], mode="reflect")
    length = c.node("Shape", [x], start=1, end=2)                        # [N + 2 pad]
    frames_n = c.node("Add", [c.node("Div", [c.node("Sub", [length, c.i64([n_fft])]),
                                             c.i64([hop])]), c.i64([1])])
    t = c.node("Range", [c.const(np.asarray(0, np.int64)),
                         c.node("Squeeze", [frames_n, c.i64([0])]),
                         c.const(np.asarray(1, np.int64))])              # (T,)
    idx = c.node("Add", [c.node("Unsqueeze", [c.node("Mul", [t, c.i64(hop)]), c.i64([1])]),
                         c.const(np.arange(n_fft, dtype=np.int64)[None, :])])   # (T, N)
    frames = c.node("Gather", [x, idx], axis=1)                           # (B, T, N)
    spec = c.node("MatMul", [frames, c.const(dft_basis(window, n_fft))])  # (B, T, 2F)
    nb = n_fft // 2 + 1
    re, im = c.node("Split", [spec, c.i64([nb, nb])], n_out=2, axis=2)
    s = c.node("Add", [c.node("Mul", [re, re]), c.node("Mul", [im, im])])
    if power != 2.0:
        s = c.node("Sqrt", [s])
        if power != 1.0:
            s = c.node("Pow", [s, c.scalar(power, np.float64)])
    s = c.node("Transpose", [s], perm=[0, 2, 1])                          # (B, F, T)
    return c.node("Cast", [s], to=dtype_code(c.o1[0].dtype))


# ------------------------------------------------------------- AudioClassifier
def _i64(b, v) -> str:
    return b.const(np.asarray(v, np.int64))


def _speed(b, x: str, lens: str, factor: float) -> tuple[str, str]:
    """Rows of ``x`` (N, W) float32 played ``factor`` times as fast (``speed_perturb``):
    ``y[k] = x(k factor)`` by linear interpolation over the row's first ``lens`` samples,
    ``max(1, round(len / factor))`` samples long. Returns the rows (N, W') and lengths."""
    f = b.const(np.asarray(factor, np.float64))

    def new_len(n):                                 # max(1, round(n / factor)), half to even
        r = b.node("Round", [b.node("Div", [b.cast(n, np.float64), f])])
        return b.node("Max", [b.cast(r, np.int64), _i64(b, 1)])

    width = new_len(b.node("Shape", [x], start=1, end=2))               # [W']
    k = b.node("Range", [_i64(b, 0), b.node("Squeeze", [width, _i64(b, [0])]), _i64(b, 1)])
    t = b.node("Mul", [b.cast(k, np.float64), f])                       # (W',)
    jf = b.node("Floor", [t])
    last = b.node("Unsqueeze", [b.node("Sub", [lens, _i64(b, 1)]), _i64(b, [1])])   # (N, 1)
    j0 = b.node("Min", [b.node("Unsqueeze", [b.cast(jf, np.int64), _i64(b, [0])]), last])
    j1 = b.node("Min", [b.node("Add", [j0, _i64(b, 1)]), last])          # (N, W')
    x64 = b.cast(x, np.float64)
    y0 = b.node("GatherElements", [x64, j0], axis=1)
    y1 = b.node("GatherElements", [x64, j1], axis=1)
    y = b.node("Add", [b.node("Mul", [b.node("Sub", [y1, y0]), b.node("Sub", [t, jf])]), y0])
    return b.cast(y, np.float32), new_len(lens)


def _fit_length(b, x: str, lens: str, L: int) -> str:
    """Rows of ``x`` (N, W) float32 with ``lens`` real samples each -> (N, L) windows as
    ``fit_length(row[:len], L)``: centred in zeros, or the loudest ``L`` samples (the first
    such stretch, by a float64 running sum of squares)."""
    width = b.node("Shape", [x], start=1, end=2)
    more = b.node("Max", [b.node("Sub", [_i64(b, [L]), width]), _i64(b, [0])])
    xp = b.node("Pad", [x, b.node("Concat", [_i64(b, [0, 0, 0]), more], axis=0)])  # >= L
    wp = b.node("Shape", [xp], start=1, end=2)
    x64 = b.cast(xp, np.float64)
    energy = b.node("CumSum", [b.node("Mul", [x64, x64]), _i64(b, 1)])
    energy = b.node("Pad", [energy, _i64(b, [0, 1, 0, 0])])               # (N, Wp + 1)
    one = _i64(b, [1])
    sums = b.node("Sub", [b.node("Slice", [energy, _i64(b, [L]), _i64(b, [INT_MAX]), one]),
                          b.node("Slice", [energy, _i64(b, [0]), _i64(b, [-L]), one])])
    n_starts = b.node("Squeeze", [b.node("Add", [b.node("Sub", [wp, _i64(b, [L])]), one]),
                                  _i64(b, [0])])
    starts = b.node("Unsqueeze", [b.node("Range", [_i64(b, 0), n_starts, _i64(b, 1)]),
                                  _i64(b, [0])])                          # (1, S)
    lens2 = b.node("Unsqueeze", [lens, _i64(b, [1])])                     # (N, 1)
    valid = b.node("LessOrEqual", [starts, b.node("Sub", [lens2, _i64(b, L)])])
    sums = b.node("Where", [valid, sums, b.const(np.asarray(-np.inf))])
    is_long = b.node("GreaterOrEqual", [lens2, _i64(b, L)])
    start = b.node("Where", [is_long, b.node("ArgMax", [sums], axis=1, keepdims=1),
                             _i64(b, 0)])                                 # (N, 1)
    off = b.node("Where", [is_long, _i64(b, 0),
                           b.node("Div", [b.node("Sub", [_i64(b, L), lens2]), _i64(b, 2)])])
    j = _i64(b, np.arange(L)[None, :])                                    # (1, L)
    src = b.node("Add", [j, b.node("Sub", [start, off])])
    src = b.node("Min", [b.node("Max", [src, _i64(b, 0)]),
                         b.node("Sub", [wp, _i64(b, [1])])])              # (N, L)
    vals = b.node("GatherElements", [xp, src], axis=1)
    end = b.node("Add", [off, b.node("Min", [lens2, _i64(b, L)])])
    inside = b.node("And", [b.node("GreaterOrEqual", [j, off]), b.node("Less", [j, end])])
    return b.node("Where", [inside, vals, b.const(np.asarray(0.0, np.float32))])


def _waves_to_batch(waves: list) -> tuple[np.ndarray, np.ndarray]:
    """A list of 1-D waveforms as the file's inputs: (N, W) float32 zero-padded, lengths."""
    lens = np.array([len(w) for w in waves], np.int64)
    X = np.zeros((len(waves), int(lens.max())), np.float32)
    for i, w in enumerate(waves):
        X[i, :len(w)] = w
    return X, lens


def build_audio(est, verify: bool = True):
    """The ONNX ModelProto of a fitted :class:`~shendu.models.AudioClassifier`."""
    import onnx
    from onnx import helper

    from shendu.onnx._estimator import _Builder, _net_dtype, label_constant
    from shendu.onnx._export import build, finish_model

    name = type(est).__name__
    if "model_" not in getattr(est, "__dict__", {}):
        raise ValueError(f"onnx.export_estimator: this {name} is not fitted yet; call "
                         "fit(X, y) first")
    net = est.model_
    dt = _net_dtype(net)
    L = int(est._length)
    rng = np.random.default_rng(20240609)
    x1 = (0.1 * rng.standard_normal((3, L))).astype(dt)
    proto = build(net, (Tensor(x1),), ["net_input"], ["net_output"],
                  {"net_input": {0: "N"}}, verify=verify)

    b = _Builder()
    speeds = [float(s) for s in (getattr(est, "test_speeds", None) or ())]
    lens = "lengths"
    windows = []
    for f in speeds or [1.0]:
        x, n = ("X", lens) if f == 1.0 else _speed(b, "X", lens, f)
        windows.append(_fit_length(b, x, n, L))
    win = windows[0] if len(windows) == 1 else b.node("Concat", windows, axis=0)
    b.node("Identity", [b.cast(win, dt)], "net_input")
    pre, b.nodes = b.nodes, []

    z = b.cast("net_output", np.float64)                                  # (S N, C)
    if speeds:                        # mean over the speeds of the log-probabilities
        n_cls = len(est.classes_)
        z = b.node("LogSoftmax", [b.node("Reshape", [z, _i64(b, [len(speeds), -1, n_cls])])],
                   axis=-1)
        z = b.node("ReduceMean", [z, _i64(b, [0])], keepdims=0)
    classes = label_constant(est)
    b.node("Gather", [b.const(classes), b.node("ArgMax", [z], axis=1, keepdims=0)], "label",
           axis=0)
    b.node("Softmax", [z], "probabilities", axis=-1)

    label_type = dtype_code(classes.dtype)
    graph = helper.make_graph(
        pre + list(proto.graph.node) + b.nodes, name,
        [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, ["N", "W"]),
         helper.make_tensor_value_info("lengths", onnx.TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("label", label_type, ["N"]),
         helper.make_tensor_value_info("probabilities", onnx.TensorProto.DOUBLE,
                                       ["N", len(est.classes_)])],
        list(proto.graph.initializer) + b.inits)
    model = finish_model(graph, ir_version=proto.ir_version)
    if verify:
        _verify_audio(model, est, L)
    return model


def _verify_audio(model, est, L: int) -> None:
    """The file in ONNX Runtime on recordings shorter and longer than the window must give
    ``predict_proba`` and ``predict``."""
    from shendu.onnx._export import _close, session_or_warn

    rng = np.random.default_rng(20240610)
    waves = [(0.1 * rng.standard_normal(n) * np.hanning(n)).astype(np.float32)
             for n in (L // 2, L + L // 3, max(est.n_fft + 1, L // 5))]
    X, lens = _waves_to_batch(waves)
    sess = session_or_warn(model, "onnx.export_estimator", 5)
    if sess is None:
        return
    label, proba = sess.run(None, {"X": X, "lengths": lens})
    want = est.predict_proba(waves)
    if proba.shape != want.shape or not _close(proba, want.astype(np.float32)) or \
            not np.array_equal(label, est.predict(waves)):
        raise UnsupportedOperatorError(f"onnx.export_estimator: the exported graph does not "
                                       f"reproduce {type(est).__name__}.predict_proba on "
                                       f"recordings of {lens.tolist()} samples")
