"""conv2d / conv1d / dropout2d and the Conv layers: float64 gradcheck and torch parity of
values and every gradient over a grid of configurations."""

import itertools
import os

import numpy as np
import pytest
import torch
from helpers import check_module, check_op

import shendu
import shendu.functional as F
import shendu.nn as nn

TF = torch.nn.functional
# torch warns that it copies the input for an asymmetric "same" padding
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

# stride 1/2 x padding 0/1/'same' x dilation 1/2 x groups 1/C ('same' needs stride 1)
GRID = [(s, p, d, g) for s, p, d, g in itertools.product((1, 2), (0, 1, "same"), (1, 2), (1, 4))
        if not (p == "same" and s != 1)]


@pytest.mark.parametrize("stride,padding,dilation,groups", GRID)
def test_conv2d_grid(stride, padding, dilation, groups):
    # odd, non-square image and kernel; 4 input channels so that groups=C is depthwise
    shapes = [(2, 4, 7, 6), (8, 4 // groups, 3, 2), (8,)]
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    check_op(lambda x, w, b: F.conv2d(x, w, b, **kw), shapes,
             torch_fn=lambda x, w, b: TF.conv2d(x, w, b, **kw))


@pytest.mark.parametrize("shapes,kw", [
    ([(1, 3, 5, 5), (2, 3, 3, 3)], dict(padding=1)),                     # batch 1, no bias
    ([(1, 1, 9, 8), (3, 1, 5, 5)], dict(padding=(2, 1), stride=(2, 3))),  # anisotropic
    ([(2, 3, 6, 6), (4, 3, 4, 4)], dict(padding="same")),                # even kernel: pad 1/2
    ([(2, 3, 6, 7), (4, 3, 2, 3)], dict(padding="same", dilation=(3, 2))),
    ([(2, 6, 5, 5), (9, 2, 3, 3)], dict(groups=3, padding=2, stride=2)),  # 3 groups, Og=3
    ([(2, 3, 4, 4), (2, 3, 4, 4)], dict(padding="valid")),               # kernel = image
    ([(2, 2, 3, 3), (2, 2, 3, 3)], dict(padding=2, stride=3, dilation=2)),  # mostly padding
    ([(3, 5, 5), (4, 3, 3, 3)], dict(padding=1)),                         # unbatched (C, H, W)
])
def test_conv2d_special(shapes, kw):
    check_op(lambda x, w: F.conv2d(x, w, **kw), shapes,
             torch_fn=lambda x, w: TF.conv2d(x, w, **kw))


TILED = [(s, p, d) for s, p, d, g in GRID if g == 1] + [(3, 2, 1), (2, (0, 3), (2, 1))]


@pytest.fixture(params=["compiled", "compiled-spatial-outer", "compiled-columns", "numpy"])
def tiny_tiles(request, monkeypatch):
    """Every conv2d with groups=1 on the tiled path, in tiles of one output row (and, for
    the input gradient, one input row): on the compiled loops spatial-outer (any number
    of output channels; from an NCHW input, or from a spatial-outer one), on the compiled
    loops batch-innermost (as for fewer than ``ROWS_MIN_OUT`` channels), or on NumPy.
    Returns the path and the input's layout (the batch-innermost kernels copy any input
    into their own layout first)."""
    from shendu.functional import _numba
    from shendu.functional import conv as conv_mod

    path = request.param
    monkeypatch.setattr(conv_mod, "DIRECT", False)     # stride 1 would run direct
    monkeypatch.setattr(conv_mod, "TILE_ELEMS", 1)
    monkeypatch.setattr(conv_mod, "ROWS_MIN_OUT",
                        1 if path.startswith("compiled") and path != "compiled-columns" else 10**9)
    if path == "numpy":
        monkeypatch.setattr(_numba, "_loaded", [None])
    elif _numba.kernels() is None:
        pytest.skip("Numba is not installed")
    if path == "compiled-spatial-outer":
        return "compiled", "spatial-outer"
    return path, "nchw"


def _spatial_outer(x):
    """``x`` (N, C, H, W) as a view of (H, W, N, C) memory, as a tiled convolution or
    pooling on one hands its output on (differentiable: a permuted copy, permuted back)."""
    return x.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1)


@pytest.mark.parametrize("stride,padding,dilation", TILED)
@pytest.mark.parametrize("kernel", [(3, 2), (1, 1), (5, 3)])
def test_conv2d_tiled_grid(tiny_tiles, stride, padding, dilation, kernel):
    """The tiled kernel (patches made per tile, the bias inside the product, the weight
    gradient summed over tiles, the input gradient gathered per input row) against torch
    and the float64 central difference: on the compiled loops the spatial-outer one
    (:meth:`Conv2d._forward_rows`: patch rows from a spatial-outer input, the transposed
    patch columns from any other), on NumPy the batch-innermost one."""
    from shendu.functional import conv as conv_mod

    path, layout = tiny_tiles
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    shapes = [(2, 4, 9, 7), (5, 4) + kernel, (5,)]
    ran = []
    name = "_forward_rows" if path == "compiled" else "_forward_tiled"
    forward = getattr(conv_mod.Conv2d, name)

    def spy(self, *a):
        out = forward(self, *a)
        ran.append(self.rows)
        return out

    prep = _spatial_outer if layout == "spatial-outer" else (lambda x: x)
    setattr(conv_mod.Conv2d, name, spy)
    try:
        check_op(lambda x, w, b: F.conv2d(prep(x), w, b, **kw), shapes,
                 torch_fn=lambda x, w, b: TF.conv2d(x, w, b, **kw))
        check_op(lambda x, w: F.conv2d(prep(x), w, **kw), shapes[:2],
                 torch_fn=lambda x, w: TF.conv2d(x, w, **kw))
    finally:
        setattr(conv_mod.Conv2d, name, forward)
    assert ran
    if path == "compiled":                  # patch rows exactly from a spatial-outer input
        assert all(r == (layout == "spatial-outer") for r in ran), ran
    else:
        assert all(r is None for r in ran), ran


@pytest.mark.parametrize("layout", ["nchw", "spatial-outer"])
@pytest.mark.parametrize("path", ["rows", "columns"])
def test_conv2d_tiled_same_bits_for_any_threads(monkeypatch, layout, path):
    """The tiled kernels' results do not depend on the thread count, bit for bit (float32):
    the tiles, and the order their weight-gradient parts and the bias's blocks are summed
    in, depend on the shapes only. The compiled batch-innermost loops copy and add what
    the NumPy loops do, in their order: their bits; the spatial-outer ones agree with them
    to float32 rounding (they multiply in another orientation)."""
    from shendu.functional import _numba
    from shendu.functional import conv as conv_mod

    if _numba.kernels() is None:
        pytest.skip("Numba is not installed")
    monkeypatch.setattr(conv_mod, "TILE_ELEMS", 2000)
    monkeypatch.setattr(conv_mod, "COLUMN_BLOCK", 32)
    monkeypatch.setattr(conv_mod, "ROWS_MIN_OUT", 1 if path == "rows" else 10**9)

    def run():
        rng = np.random.default_rng(5)
        x, w, b = (shendu.tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True)
                   for s in [(4, 6, 11, 10), (7, 6, 3, 3), (7,)])
        xin = _spatial_outer(x) if layout == "spatial-outer" else x
        y = F.conv2d(xin, w, b, padding=(1, 2), stride=(1, 2))
        y.backward(rng.standard_normal(y.shape).astype(np.float32))
        return [a.copy() for a in (y.data, x.grad.data, w.grad.data, b.grad.data)]

    def threaded():
        with monkeypatch.context() as m:
            m.setattr(conv_mod, "PARALLEL_MIN", 1)
            m.setattr(conv_mod, "SPLIT_MIN_MACS", 0)
            split = []
            m.setattr(conv_mod, "split_threads",
                      lambda *a, f=conv_mod.split_threads: split.append(1) or f(*a))
            before = conv_mod._N_THREADS
            try:
                conv_mod.set_kernel_threads(3)
                out = run()
            finally:
                conv_mod.set_kernel_threads(before)
        assert split
        return out

    compiled, compiled_threaded = run(), threaded()
    monkeypatch.setattr(_numba, "_loaded", [None])
    numpy, numpy_threaded = run(), threaded()
    for a, b, c, d in zip(compiled, compiled_threaded, numpy, numpy_threaded):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(c, d)
        if path == "columns":
            np.testing.assert_array_equal(a, c)
        else:
            np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5 * np.abs(c).max())


@pytest.mark.parametrize("direct", [False, True])
def test_conv2d_tiled_frozen_weight_and_bias_alone(monkeypatch, direct):
    """Only the gradients asked for: a frozen weight keeps no input for its gradient, a
    bias alone still gets its own; the input gradient stays right either way. On the tiled
    path, and on the direct one (which keeps the padded input only for the weight's
    gradient)."""
    from shendu.functional import conv as conv_mod

    monkeypatch.setattr(conv_mod, "DIRECT", direct)
    monkeypatch.setattr(conv_mod, "TILE_ELEMS", 1)
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal(s) for s in [(2, 3, 6, 5), (4, 3, 3, 3), (4,)]]
    gy = rng.standard_normal((2, 4, 6, 5))
    ref = [torch.tensor(a, requires_grad=True) for a in arrays]
    TF.conv2d(*ref, padding=1).backward(torch.tensor(gy))
    x = shendu.tensor(arrays[0], requires_grad=True)
    w = shendu.tensor(arrays[1])
    b = shendu.tensor(arrays[2], requires_grad=True)
    y = F.conv2d(x, w, b, padding=1)
    assert y.grad_fn.__dict__.get("xs") is None
    assert (y.grad_fn.__dict__.get("direct") is not None) == (
        direct and conv_mod._direct() is not None)
    y.backward(gy)
    assert w.grad is None
    np.testing.assert_allclose(x.grad.data, ref[0].grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(b.grad.data, ref[2].grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (1, 0, 1, 1), (2, 1, 1, 1), (1, "same", 2, 1), (1, "same", 1, 3), (2, 3, 2, 3), (3, 1, 1, 1),
])
def test_conv1d_grid(stride, padding, dilation, groups):
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    check_op(lambda x, w, b: F.conv1d(x, w, b, **kw), [(2, 3, 11), (6, 3 // groups, 4), (6,)],
             torch_fn=lambda x, w, b: TF.conv1d(x, w, b, **kw))


def test_conv1d_unbatched():
    check_op(lambda x, w: F.conv1d(x, w, padding=1), [(3, 7), (2, 3, 3)],
             torch_fn=lambda x, w: TF.conv1d(x, w, padding=1))


@pytest.mark.parametrize("shapes,kw", [
    ([(2, 2, 3), (3, 2, 3)], dict(padding=4, stride=3, dilation=2)),   # taps reading padding only
    ([(1, 4, 9), (4, 4, 9)], dict(padding="valid")),                    # kernel = sequence
    ([(3, 4, 10), (6, 2, 2)], dict(padding="same", dilation=3, groups=2)),  # odd total pad
    ([(2, 6, 13), (8, 3, 5)], dict(padding=2, stride=2, groups=2)),     # strided, 2 groups
])
def test_conv1d_special(shapes, kw):
    check_op(lambda x, w: F.conv1d(x, w, **kw), shapes,
             torch_fn=lambda x, w: TF.conv1d(x, w, **kw))


def test_conv1d_chain_through_the_batch_innermost_view():
    """conv1d's output is a (N, O, L) view of time-major, batch-innermost memory; the next
    conv1d reads it without a copy, element-wise ops and max-pooling keep it, and the
    gradients that come back in that layout (or in another) are read correctly."""
    def f(x, w1, b1, w2):
        h = F.conv1d(x, w1, b1, padding=2).relu()
        h = F.squeeze(F.max_pool2d(F.unsqueeze(h, 2), (1, 2)), 2)
        h = F.conv1d(h, w2, padding=1, stride=2)
        return h.transpose(1, 2).reshape(h.shape[0], -1)

    def tf(x, w1, b1, w2):
        h = TF.conv1d(x, w1, b1, padding=2).relu()
        h = TF.max_pool1d(h, 2)
        h = TF.conv1d(h, w2, padding=1, stride=2)
        return h.transpose(1, 2).reshape(h.shape[0], -1)
    check_op(f, [(3, 4, 12), (5, 4, 5), (5,), (6, 5, 3)], torch_fn=tf)
    y = F.conv1d(shendu.randn(4, 3, 9), shendu.randn(6, 3, 3))
    assert y.shape == (4, 6, 7) and y.data.transpose(1, 2, 0).flags.c_contiguous


def test_conv1d_first_layer_skips_input_gradient_and_saves_its_inputs():
    x = shendu.randn(2, 3, 10)                        # features: no gradient wanted
    w = shendu.randn(4, 3, 5, requires_grad=True)
    F.conv1d(x, w, padding=2).sum().backward()
    assert x.grad is None and w.grad is not None
    # backward reads the weight: changing it in place before backward is an error
    x = shendu.randn(2, 3, 10, requires_grad=True)
    y = F.conv1d(x, w, padding=2)
    with shendu.no_grad():
        w.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_conv1d_audio_sized_float32_as_accurate_as_torch():
    """The audio network's second block (64 -> 96 channels, k 5, 50 frames, batch 16) in
    float32, each result measured against float64 truth: ours within 2x of torch's error."""
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal((16, 64, 50)), rng.standard_normal((96, 64, 5)) * 0.05,
              rng.standard_normal(96)]
    gy = rng.standard_normal((16, 96, 50))
    ref = [torch.tensor(a, requires_grad=True) for a in arrays]
    ref_y = TF.conv1d(*ref, padding=2)
    ref_y.backward(torch.tensor(gy))
    t32 = [torch.tensor(a, dtype=torch.float32, requires_grad=True) for a in arrays]
    ty = TF.conv1d(*t32, padding=2)
    ty.backward(torch.tensor(gy, dtype=torch.float32))
    s32 = [shendu.tensor(a, dtype="float32", requires_grad=True) for a in arrays]
    sy = F.conv1d(*s32, padding=2)
    sy.backward(gy.astype(np.float32))
    assert sy.dtype == np.float32 and all(t.grad.dtype == np.float32 for t in s32)
    pairs = [(sy.data, ty.detach().numpy(), ref_y.detach().numpy())] + [
        (s.grad.data, t.grad.numpy(), r.grad.numpy()) for s, t, r in zip(s32, t32, ref)]
    for i, (ours, theirs, exact) in enumerate(pairs):
        e_ours = np.abs(ours - exact).max()
        e_torch = np.abs(theirs - exact).max()
        assert e_ours <= 2 * e_torch + 1e-6 * np.abs(exact).max(), (i, e_ours, e_torch)


def test_chained_channel_major_layout():
    """The output of a conv is a batch-innermost view; the next conv, a transpose and a
    reshape must read it correctly, and the gradients must flow back through it."""
    def f(x, w1, w2):
        h = F.conv2d(x, w1, padding=1).relu()
        h = F.conv2d(h, w2, stride=2)
        return h.transpose(1, 3).reshape(h.shape[0], -1)

    def tf(x, w1, w2):
        h = TF.conv2d(x, w1, padding=1).relu()
        h = TF.conv2d(h, w2, stride=2)
        return h.transpose(1, 3).reshape(h.shape[0], -1)
    check_op(f, [(2, 3, 7, 7), (5, 3, 3, 3), (4, 5, 3, 3)], torch_fn=tf)


def test_conv_output_is_batch_innermost_view():
    x = shendu.randn(4, 3, 8, 8)
    y = F.conv2d(x, shendu.randn(6, 3, 3, 3), padding=1)
    assert y.shape == (4, 6, 8, 8)
    assert y.data.transpose(1, 2, 3, 0).flags.c_contiguous


def test_conv_first_layer_skips_input_gradient():
    x = shendu.randn(2, 1, 6, 6)                      # data: no gradient wanted
    w = shendu.randn(3, 1, 3, 3, requires_grad=True)
    F.conv2d(x, w).sum().backward()
    assert x.grad is None and w.grad is not None


def test_conv_large_float32_as_accurate_as_torch():
    """A LeNet-sized float32 case (the benchmark's dtype). The weight gradient sums 3,136
    products, so float32 rounding differs between any two summation orders by more than
    1e-5: measure both float32 results against the float64 truth instead, and ask ours to
    be at least as accurate as torch's (within 2x) for the output and every gradient."""
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((16, 6, 14, 14)), rng.standard_normal((16, 6, 5, 5)) * 0.1,
              rng.standard_normal(16)]
    gy = rng.standard_normal((16, 16, 14, 14))
    ref = [torch.tensor(a, requires_grad=True) for a in arrays]
    TF.conv2d(*ref, padding=2).backward(torch.tensor(gy))
    ref_y = TF.conv2d(*[r.detach() for r in ref], padding=2).numpy()
    t32 = [torch.tensor(a, dtype=torch.float32, requires_grad=True) for a in arrays]
    ty = TF.conv2d(*t32, padding=2)
    ty.backward(torch.tensor(gy, dtype=torch.float32))
    s32 = [shendu.tensor(a, dtype="float32", requires_grad=True) for a in arrays]
    sy = F.conv2d(*s32, padding=2)
    sy.backward(gy.astype(np.float32))
    assert sy.dtype == np.float32 and all(t.grad.dtype == np.float32 for t in s32)
    pairs = [(sy.data, ty.detach().numpy(), ref_y)] + [
        (s.grad.data, t.grad.numpy(), r.grad.numpy()) for s, t, r in zip(s32, t32, ref)]
    for i, (ours, theirs, exact) in enumerate(pairs):
        e_ours = np.abs(ours - exact).max()
        e_torch = np.abs(theirs - exact).max()
        assert e_ours <= 2 * e_torch + 1e-6 * np.abs(exact).max(), (i, e_ours, e_torch)


@pytest.mark.parametrize("kw,msg", [
    (dict(x=(2, 3, 8, 8), w=(4, 2, 3, 3)), r"expected input \(N, 2, H, W\) for weight"),
    (dict(x=(2, 4, 8, 8), w=(5, 2, 3, 3), groups=2), "divisible by groups"),
    (dict(x=(3, 8, 8, 1, 1), w=(4, 3, 3, 3)), r"expected input \(N, C, H, W\)"),
    (dict(x=(2, 3, 8, 8), w=(4, 3, 3)), "weight must be 4-D"),
    (dict(x=(2, 3, 8, 8), w=(4, 3, 3, 3), stride=2, padding="same"), "strided"),
    (dict(x=(2, 3, 2, 2), w=(4, 3, 3, 3)), "smaller than the"),
    (dict(x=(2, 3, 8, 8), w=(4, 3, 3, 3), padding="full"), "'valid' or 'same'"),
    (dict(x=(2, 3, 8, 8), w=(4, 3, 3, 3), stride=0), "positive"),
    (dict(x=(2, 3, 8, 8), w=(4, 3, 3, 3), b=(3,)), r"bias must have shape \(4,\)"),
])
def test_conv2d_errors(kw, msg):
    x = shendu.randn(*kw.pop("x"))
    w = shendu.randn(*kw.pop("w"))
    b = kw.pop("b", None)
    b = shendu.randn(*b) if b else None
    with pytest.raises(ValueError, match=msg):
        F.conv2d(x, w, b, **kw)


def test_conv2d_dtype_mismatch():
    with pytest.raises(TypeError, match="conv2d: expected input, weight and bias of one"):
        F.conv2d(shendu.randn(1, 1, 4, 4).double(), shendu.randn(1, 1, 3, 3))


# ----------------------------------------------------------------------------- layers
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("args,kw", [
    ((3, 8, 3), dict(padding=1)),
    ((3, 6, (3, 5)), dict(stride=(2, 1), padding=(1, 2), bias=False)),
    ((4, 8, 3), dict(groups=4, dilation=2, padding="same")),
    ((4, 4, 2), dict(stride=2, padding="valid")),
])
def test_conv2d_layer_matches_torch(args, kw, dtype):
    torch.manual_seed(0)
    t = torch.nn.Conv2d(*args, **kw)
    s = nn.Conv2d(*args, **kw)
    x = np.random.default_rng(0).standard_normal((2, args[0], 9, 8))
    check_module(s, t, [x], dtype=dtype)


def test_conv1d_layer_matches_torch():
    torch.manual_seed(0)
    t = torch.nn.Conv1d(4, 6, 5, stride=2, padding=2, groups=2)
    s = nn.Conv1d(4, 6, 5, stride=2, padding=2, groups=2)
    check_module(s, t, [np.random.default_rng(1).standard_normal((3, 4, 17))], np.float64)
    check_module(s, t, [np.random.default_rng(1).standard_normal((3, 4, 17))], np.float32)


def test_conv_layer_state_dict_init_and_repr():
    s, t = nn.Conv2d(3, 16, 5, groups=1), torch.nn.Conv2d(3, 16, 5)
    assert {k: v.shape for k, v in s.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in t.state_dict().items()}
    bound = 1 / np.sqrt(3 * 5 * 5)   # kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), ...)
    w = s.weight.data
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.1 * bound
    assert np.abs(s.bias.data).max() <= bound
    assert repr(s) == repr(t)
    assert repr(nn.Conv2d(4, 8, 3, padding="same", groups=2, bias=False)) == \
        repr(torch.nn.Conv2d(4, 8, 3, padding="same", groups=2, bias=False))
    shendu.manual_seed(5)
    a = nn.Conv2d(3, 4, 3).weight.data.copy()
    shendu.manual_seed(5)
    assert np.array_equal(a, nn.Conv2d(3, 4, 3).weight.data)


def test_conv_layer_errors():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 6, 3, groups=2)
    with pytest.raises(ValueError, match="strided"):
        nn.Conv2d(3, 6, 3, stride=2, padding="same")
    with pytest.raises(NotImplementedError, match="padding_mode 'reflect'"):
        nn.Conv2d(3, 6, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"Conv2d\(3→6, 3x3\) expected input \(N, 3, H, W\), "
                                         r"got \(2, 1, 28, 28\)"):
        nn.Conv2d(3, 6, 3)(shendu.randn(2, 1, 28, 28))


# ---------------------------------------------------------------------------- dropout2d
def test_dropout2d_drops_whole_channels():
    x = shendu.ones(8, 16, 5, 5, requires_grad=True)
    y = F.dropout2d(x, 0.25)
    per = y.data.reshape(8, 16, -1)
    assert np.all((per == 0).all(axis=2) | np.isclose(per, 1 / 0.75).all(axis=2))
    frac = (per[:, :, 0] == 0).mean()
    assert 0.1 < frac < 0.4
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, y.data)   # d(x*mask)/dx = mask
    assert F.dropout2d(x, 0.5, training=False) is x
    np.testing.assert_array_equal(F.dropout2d(x, 1.0).data, 0)
    shendu.manual_seed(3)
    a = F.dropout2d(x, 0.5).data
    shendu.manual_seed(3)
    np.testing.assert_array_equal(a, F.dropout2d(x, 0.5).data)


def test_dropout2d_module_and_errors():
    m = nn.Dropout2d(0.5)
    x = shendu.randn(2, 3, 4, 4)
    assert not np.array_equal(m(x).data, x.data)
    m.eval()
    assert m(x) is x
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout2d(1.5)
    with pytest.raises(ValueError, match=r"dropout2d: expected input \(N, C, H, W\)"):
        F.dropout2d(shendu.randn(2, 3), 0.5)
    y = F.dropout1d(shendu.ones(4, 6, 9), 0.5).data
    assert np.all((y == 0).all(axis=2) | (y == 2).all(axis=2))


def test_workspace_reuse_is_safe():
    """Patch matrices go back to the workspace only when the graph is freed: a retained
    graph back-propagates twice correctly, and a reused buffer never leaks old values."""
    x = shendu.randn(2, 3, 6, 6, requires_grad=True)
    w = shendu.randn(4, 3, 3, 3, requires_grad=True)
    y = F.conv2d(x, w, padding=1)
    y.sum().backward(retain_graph=True)
    gx, gw = x.grad.data.copy(), w.grad.data.copy()
    F.conv2d(shendu.randn(2, 3, 6, 6), shendu.randn(4, 3, 3, 3), padding=1)  # no grad path
    y.sum().backward()                                    # same patches, now freed after
    np.testing.assert_allclose(x.grad.data, 2 * gx, rtol=1e-6)
    np.testing.assert_allclose(w.grad.data, 2 * gw, rtol=1e-6)
    for _ in range(3):   # buffers recycled between layers of one shape: values stay right
        a, b = shendu.randn(2, 3, 6, 6), shendu.randn(4, 3, 3, 3)
        ref = TF.conv2d(torch.tensor(a.data), torch.tensor(b.data), padding=1).numpy()
        np.testing.assert_allclose(F.conv2d(a, b, padding=1).data, ref, rtol=1e-5, atol=1e-5)


def test_threaded_kernels_match_serial_bit_for_bit(monkeypatch):
    """Large layers split their copies/adds over threads: the split must not change one
    bit, and must still agree with torch (forced here on small shapes)."""
    import shendu.functional.conv as conv_mod

    def run():
        shendu.manual_seed(1)
        x = shendu.randn(3, 4, 9, 8, requires_grad=True)
        w = shendu.randn(6, 4, 3, 3, requires_grad=True)
        b = shendu.randn(6, requires_grad=True)
        y = F.max_pool2d(F.conv2d(x, w, b, padding=1).relu(), 2)
        y.backward(np.random.default_rng(0).standard_normal(y.shape).astype(np.float32))
        return [t.data.copy() for t in (y, x.grad, w.grad, b.grad)]
    serial = run()
    monkeypatch.setattr(conv_mod, "PARALLEL_MIN", 1)
    threaded = run()
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)

    def f(x, w, b):
        return F.max_pool2d(F.conv2d(x, w, b, padding=1).relu(), 2)

    def tf(x, w, b):
        return TF.max_pool2d(TF.conv2d(x, w, b, padding=1).relu(), 2)
    check_op(f, [(2, 3, 6, 7), (4, 3, 3, 3), (4,)], torch_fn=tf)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_threaded_kernels_work_in_a_forked_child(monkeypatch):
    """A data-loading worker forked after the kernel threads started must not wait on
    threads that do not exist in it."""
    import select

    import shendu.functional.conv as conv_mod
    monkeypatch.setattr(conv_mod, "PARALLEL_MIN", 1)
    x, w = shendu.randn(2, 3, 6, 6), shendu.randn(4, 3, 3, 3)
    ref = F.conv2d(x, w, padding=1).data.copy()      # the thread pool exists from here on
    r, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            ok = np.array_equal(F.conv2d(x, w, padding=1).data, ref)
            os.write(wfd, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(wfd)
    ready, _, _ = select.select([r], [], [], 60)
    if not ready:
        os.kill(pid, 9)
    os.waitpid(pid, 0)
    answer = os.read(r, 1) if ready else b""
    os.close(r)
    assert answer == b"1", "the forked child hung or computed a different result"


def test_set_kernel_threads():
    import shendu.functional.conv as conv_mod
    before = conv_mod._N_THREADS
    try:
        conv_mod.set_kernel_threads(1)
        x, w = shendu.randn(2, 3, 6, 6), shendu.randn(4, 3, 3, 3)
        np.testing.assert_allclose(F.conv2d(x, w).data,
                                   TF.conv2d(torch.tensor(x.data), torch.tensor(w.data)).numpy(),
                                   rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="positive int"):
            conv_mod.set_kernel_threads(0)
    finally:
        conv_mod.set_kernel_threads(before)


def test_kernel_threads_control_numpys_blas_only(monkeypatch):
    """The BLAS whose threads a split stops and starts again is NumPy's own, not another
    one loaded beside it (SciPy's OpenBLAS comes with Numba): restarting that one's
    threads at every split slowed cnn32's step at two threads 2.5x."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    pytest.importorskip("scipy.linalg")              # loads SciPy's own BLAS, where it has one
    import shendu.functional.conv as conv_mod

    monkeypatch.setattr(conv_mod, "_blas_libs", None)
    libs = threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers
    numpys = [lib.filepath for lib in libs if conv_mod._in_numpy(lib.filepath)]
    chosen = [lib.filepath for lib in conv_mod._blas()]
    if numpys:
        assert chosen == numpys
    else:                                            # a NumPy on a system BLAS: all of them
        assert chosen == [lib.filepath for lib in libs]
    assert conv_mod._in_numpy(os.path.join(os.path.dirname(np.__file__), "x.so"))
    assert not conv_mod._in_numpy(os.path.join(os.path.dirname(np.__file__) + "_x", "y.so"))


@pytest.mark.parametrize("threads", [1, 2])
def test_contiguous_copies_transposed_layouts_exactly(monkeypatch, threads):
    """``conv.contiguous``: every transposition of 2-4-D float arrays (size-1 axes among
    them) comes back C-contiguous with NumPy's values, in new memory, whether the tiled
    copy (far steps: the conv layouts NCHW, CHWN, HWNC) or NumPy's made it, on one kernel
    thread or split over two; views that are not a transposition of dense memory
    (strided, reversed) are NumPy's copies, and a contiguous array is returned as it is."""
    from shendu.functional import _numba, conv

    if _numba.kernels() is None:
        pytest.skip("the tiled copy needs Numba")
    monkeypatch.setattr(conv, "PERMUTE_MIN", 64)
    monkeypatch.setattr(conv, "PARALLEL_MIN", 0)
    before = conv._N_THREADS
    tiled = []
    real = _numba.kernels().permute_rows

    class Spy:
        def __getattr__(self, name):
            return getattr(_numba.kernels(), name)

        def permute_rows(self, *args):
            tiled.append(args[-1] - args[-2])
            return real(*args)

    monkeypatch.setattr(_numba, "kernels_for", lambda *a, **k: Spy())
    rng = np.random.default_rng(0)
    try:
        conv.set_kernel_threads(threads)
        for shape in [(6, 5, 33, 34), (4, 1, 40, 40), (1, 3, 50, 60), (70, 80), (9, 40, 50)]:
            for dtype in (np.float32, np.float64):
                a = rng.standard_normal(shape).astype(dtype)
                for p in itertools.permutations(range(a.ndim)):
                    t = a.transpose(p)
                    got = conv.contiguous(t)
                    assert got.flags.c_contiguous and got.dtype == dtype
                    np.testing.assert_array_equal(got, np.ascontiguousarray(t))
                    if not t.flags.c_contiguous:
                        assert not np.shares_memory(got, a)
        assert tiled, "the tiled copy never ran"
        a = rng.standard_normal((8, 6, 40, 40))
        for t in (a[:, ::2].transpose(2, 3, 0, 1), a[::-1].transpose(2, 3, 0, 1),
                  a[..., 1:].transpose(1, 0, 2, 3)):
            np.testing.assert_array_equal(conv.contiguous(t), np.ascontiguousarray(t))
        assert conv.contiguous(a) is a
    finally:
        conv.set_kernel_threads(before)
