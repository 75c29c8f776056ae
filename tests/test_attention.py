"""Scaled dot-product and additive attention: float64 gradcheck and torch parity of outputs,
attention weights and every gradient, for every kind of mask."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from helpers import check_gradcheck, check_module, check_op, make_inputs

import shendu
import shendu.functional as F
import shendu.nn as nn
from shendu.functional import attention as A


def _torch_weights(q, k, mask=None, is_causal=False, scale=None):
    """Reference attention weights: softmax of the masked scores (safe: dead rows -> 0)."""
    sc = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ k.transpose(-1, -2) * sc
    L, S = s.shape[-2:]
    if is_causal:
        s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
    p = torch.softmax(s, -1)
    return torch.nan_to_num(p, nan=0.0)


# ------------------------------------------------------------------ scaled dot-product
@pytest.mark.parametrize("shapes", [
    [(5, 3), (4, 3), (4, 2)],                     # no batch
    [(2, 5, 3), (2, 4, 3), (2, 4, 6)],            # Ev != E
    [(2, 3, 4, 3), (2, 3, 6, 3), (2, 3, 6, 3)],   # (N, H, L, E)
])
def test_sdpa_plain(shapes):
    check_op(F.scaled_dot_product_attention, shapes,
             torch_fn=TF.scaled_dot_product_attention)


def test_sdpa_broadcast_leading_dims():
    # key/value shared over heads: (2, 1, S, E) against queries (2, 3, L, E)
    shapes = [(2, 3, 4, 3), (2, 1, 5, 3), (2, 1, 5, 2)]
    check_op(F.scaled_dot_product_attention, shapes,
             torch_fn=lambda q, k, v: TF.scaled_dot_product_attention(
                 q, k.expand(2, 3, 5, 3), v.expand(2, 3, 5, 2)))


def test_sdpa_scale():
    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.37),
             [(2, 4, 3), (2, 5, 3), (2, 5, 3)],
             torch_fn=lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, scale=0.37))


@pytest.mark.parametrize("mshape", [(4, 5), (2, 1, 4, 5), (2, 3, 1, 5)])
def test_sdpa_bool_mask(mshape):
    rng = np.random.default_rng(3)
    m = rng.random(mshape) > 0.3
    m[..., 0] = True  # every row keeps at least one key here
    tm = torch.tensor(m)
    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
             [(2, 3, 4, 3), (2, 3, 5, 3), (2, 3, 5, 2)],
             torch_fn=lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=tm))


def test_sdpa_float_mask_constant():
    rng = np.random.default_rng(4)
    m = rng.normal(size=(4, 5))
    m[1, 2] = -np.inf
    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
             [(2, 4, 3), (2, 5, 3), (2, 5, 2)],
             torch_fn=lambda q, k, v: TF.scaled_dot_product_attention(
                 q, k, v, attn_mask=torch.tensor(m, dtype=q.dtype)))


def test_sdpa_float_mask_gets_gradient():
    # a learned additive bias (relative positions, ALiBi-like): its gradient is dS
    check_op(lambda q, k, v, b: F.scaled_dot_product_attention(q, k, v, attn_mask=b),
             [(2, 2, 4, 3), (2, 2, 5, 3), (2, 2, 5, 2), (2, 1, 4, 5)],
             torch_fn=lambda q, k, v, b: TF.scaled_dot_product_attention(q, k, v, attn_mask=b))


@pytest.mark.parametrize("L,S", [(5, 5), (4, 6), (6, 4)])
def test_sdpa_causal(L, S):
    # (6, 4): query rows beyond... all have key 0, so none is fully masked
    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
             [(2, L, 3), (2, S, 3), (2, S, 2)],
             torch_fn=lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_sdpa_causal_matches_explicit_mask():
    q, k, v = (shendu.tensor(a) for a in make_inputs([(2, 5, 3)] * 3, np.float32))
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    b = F.scaled_dot_product_attention(q, k, v, attn_mask=np.tril(np.ones((5, 5), bool)))
    np.testing.assert_array_equal(a.data, b.data)


def test_sdpa_key_padding_mask():
    # key padding as a (N, 1, 1, S) keep-mask: batch row 1 has only 3 real keys
    kpm = np.ones((2, 1, 1, 5), bool)
    kpm[1, ..., 3:] = False
    tk = torch.tensor(kpm)
    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=kpm),
             [(2, 2, 4, 3), (2, 2, 5, 3), (2, 2, 5, 3)],
             torch_fn=lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=tk))


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_fully_masked_rows_are_zero_not_nan(kind):
    m = np.ones((2, 4, 5), bool)
    m[0, 1] = False          # one query row sees no key at all
    m[1, :, :] = False       # a whole batch row is padding
    m[1, 2, 0] = True
    mask = m if kind == "bool" else np.where(m, 0.0, -np.inf)
    tmask = torch.tensor(mask)
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # noqa: E731
    tfn = lambda q, k, v: TF.scaled_dot_product_attention(  # noqa: E731
        q, k, v, attn_mask=tmask if kind == "bool" else tmask.to(q.dtype))
    check_op(fn, [(2, 4, 3), (2, 5, 3), (2, 5, 2)], torch_fn=tfn)
    arrs = make_inputs([(2, 4, 3), (2, 5, 3), (2, 5, 2)], np.float32)
    q, k, v = (shendu.tensor(a, requires_grad=True) for a in arrs)
    out, w = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, need_weights=True)
    assert np.isfinite(out.data).all() and np.isfinite(w.data).all()
    np.testing.assert_array_equal(out.data[0, 1], 0)
    np.testing.assert_array_equal(w.data[1, 0], 0)
    (out.sum() + w.sum()).backward()
    np.testing.assert_array_equal(q.grad.data[0, 1], 0)
    np.testing.assert_array_equal(q.grad.data[1, [0, 1, 3]], 0)
    assert all(np.isfinite(t.grad.data).all() for t in (q, k, v))


@pytest.mark.parametrize("mask", [None, "bool", "causal"])
def test_sdpa_weights_output(mask):
    rng = np.random.default_rng(5)
    m = rng.random((4, 5)) > 0.4
    m[:, 1] = True
    tm = torch.tensor(m)

    def fn(q, k, v):
        kw = dict(attn_mask=m) if mask == "bool" else dict(is_causal=mask == "causal")
        return F.scaled_dot_product_attention(q, k, v, need_weights=True, **kw)

    def tfn(q, k, v):
        kw = dict(mask=tm) if mask == "bool" else dict(is_causal=mask == "causal")
        p = _torch_weights(q, k, **kw)
        return p @ v, p

    check_op(fn, [(2, 4, 3), (2, 5, 3), (2, 5, 2)], torch_fn=tfn)


def test_sdpa_dropout_gradcheck_and_rows():
    # same seed, same dropout mask: reseeding inside makes the op a fixed function
    def fn(q, k, v):
        shendu.manual_seed(7)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=0.3, need_weights=True)

    arrays = make_inputs([(2, 4, 3), (2, 6, 3), (2, 6, 2)])
    check_gradcheck(fn, arrays)
    q, k, v = (shendu.tensor(a, requires_grad=True) for a in arrays)
    out, w = fn(q, k, v)
    out2, w2 = fn(q, k, v)
    np.testing.assert_array_equal(out.data, out2.data)
    _, p = F.scaled_dot_product_attention(q, k, v, need_weights=True)
    kept = w.data != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(w.data[kept], p.data[kept] / 0.7, rtol=1e-6)
    np.testing.assert_allclose(out.data, w.data @ v.data, rtol=1e-6)


def test_sdpa_dropout_without_weights_gradcheck():
    # without the weights output, Pd is rebuilt in backward from P and the kept mask
    def fn(q, k, v):
        shendu.manual_seed(8)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=0.4, is_causal=True)

    check_gradcheck(fn, make_inputs([(2, 5, 3), (2, 5, 3), (2, 5, 2)]))


def test_sdpa_float32_stays_float32():
    arrs = make_inputs([(2, 4, 3)] * 3, np.float32)
    q, k, v = (shendu.tensor(a, requires_grad=True) for a in arrs)
    out, w = F.scaled_dot_product_attention(q, k, v, need_weights=True, dropout_p=0.1)
    assert out.dtype == np.float32 and w.dtype == np.float32
    out.sum().backward()
    assert q.grad.dtype == np.float32


# ------------------------------------------------------------------ blockwise kernel
@pytest.fixture
def blockwise(monkeypatch):
    """Every call takes the blockwise kernel, in tiles of 2 heads x 3 queries x 3 keys (so
    small inputs span many, and the online softmax runs over several key blocks)."""
    from shendu.functional import _flash
    from shendu.functional import attention as A

    monkeypatch.setattr(A, "BLOCKWISE_MIN_SCORES", 0)
    monkeypatch.setattr(_flash, "MIN_BLOCK", 3)
    monkeypatch.setattr(_flash, "MAX_BLOCK", 3)
    monkeypatch.setattr(_flash, "TILE_ELEMS", 18)


def _keep_with_dead_rows():
    m = np.ones((2, 1, 7, 8), bool)
    m[0, 0, 2] = False                 # a query row with no key
    m[1, 0, :, 5:] = False             # key padding: batch row 1 has 5 keys
    return m


def _mask_case(kind):
    """(shendu kwargs, torch kwargs) for each kind of mask."""
    if kind == "none":
        return {}, {}
    if kind == "causal":
        return {"is_causal": True}, {"is_causal": True}
    if kind == "padding":
        m = np.ones((2, 1, 1, 8), bool)
        m[1, ..., 5:] = False
        return {"attn_mask": m}, {"attn_mask": torch.tensor(m)}
    if kind == "dead_rows":
        m = _keep_with_dead_rows()
        return {"attn_mask": m}, {"attn_mask": torch.tensor(m)}
    if kind == "additive":
        b = np.random.default_rng(5).normal(size=(7, 8))
        b[3, :] = -np.inf               # a row that no key reaches
        b[1, 4] = -np.inf
        return {"attn_mask": b}, {"attn_mask": torch.tensor(b)}
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["none", "causal", "padding", "dead_rows", "additive"])
def test_sdpa_blockwise_matches_torch(blockwise, kind):
    sk, tk = _mask_case(kind)

    def tfn(q, k, v):
        kw = dict(tk)
        if "attn_mask" in kw and kw["attn_mask"].dtype != torch.bool:
            kw["attn_mask"] = kw["attn_mask"].to(q.dtype)
        return torch.nan_to_num(TF.scaled_dot_product_attention(q, k, v, **kw))

    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **sk),
             [(2, 2, 7, 3), (2, 2, 8, 3), (2, 2, 8, 4)], torch_fn=tfn)


def test_sdpa_blockwise_learned_bias_and_broadcast_heads(blockwise):
    # keys/values shared over heads and a learned additive bias broadcast over the batch
    check_op(lambda q, k, v, b: F.scaled_dot_product_attention(q, k, v, attn_mask=b),
             [(2, 3, 7, 3), (2, 1, 8, 3), (2, 1, 8, 2), (1, 3, 7, 8)],
             torch_fn=lambda q, k, v, b: TF.scaled_dot_product_attention(
                 q, k.expand(2, 3, 8, 3), v.expand(2, 3, 8, 2), attn_mask=b))


def test_sdpa_blockwise_equals_fused(monkeypatch):
    # the two kernels compute one function: float64 results agree to rounding
    from shendu.functional import _flash
    from shendu.functional import attention as A

    arrs = make_inputs([(2, 3, 9, 4), (2, 3, 10, 4), (2, 3, 10, 5)])
    m = np.ones((2, 1, 9, 10), bool)
    m[0, 0, :, 7:] = False              # key padding
    m[1, 0, 4] = False                  # a row with no key
    results = []
    for threshold in (1 << 60, 0):
        monkeypatch.setattr(A, "BLOCKWISE_MIN_SCORES", threshold)
        monkeypatch.setattr(_flash, "MAX_BLOCK", 4)
        q, k, v = (shendu.tensor(a, requires_grad=True) for a in arrs)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=True)
        (out * out).sum().backward()
        results.append([out.data, q.grad.data, k.grad.data, v.grad.data])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tile, block", [(1 << 18, 4096), (5 * 4 * 4, 4), (2 * 3 * 3, 3),
                                         (7, 2)])
def test_sdpa_blockwise_tilings_agree_with_fused(monkeypatch, tile, block):
    # one tile for everything, uneven head groups (4 + 2 of 6 heads), one head per tile:
    # outputs and gradients (a learned bias broadcast over the batch, a causal keep-mask,
    # shared keys, rows with no key) equal the fused kernel's to rounding
    from shendu.functional import _flash
    from shendu.functional import attention as A

    arrs = make_inputs([(2, 3, 9, 4), (2, 1, 10, 4), (2, 3, 10, 5), (1, 3, 9, 10)])
    arrs[3][0, 1, 4] = -np.inf           # head 1: query 4 sees no key
    arrs[3][0, 2, :, 7:] = -np.inf       # head 2: keys 7.. masked out
    results = []
    for forced in (False, True):
        monkeypatch.setattr(A, "BLOCKWISE_MIN_SCORES", 0 if forced else 1 << 60)
        monkeypatch.setattr(A, "BLOCKWISE_MIN_KEYS", 0 if forced else 1 << 60)
        monkeypatch.setattr(_flash, "TILE_ELEMS", tile)
        monkeypatch.setattr(_flash, "MAX_BLOCK", block)
        monkeypatch.setattr(_flash, "MIN_BLOCK", 1)
        q, k, v, b = (shendu.tensor(a, requires_grad=True) for a in arrs)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=b, is_causal=True)
        (out * out).sum().backward()
        results.append([out.data, q.grad.data, k.grad.data, v.grad.data, b.grad.data])
    for a, c in zip(*results):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("offset", [0.0, 100.0, -100.0])
def test_sdpa_blockwise_large_and_small_scores(monkeypatch, offset):
    # scores far from 0 (the softmax's shift is needed) and near it (skipped): equal to the
    # fused kernel, and finite, in float32 and float64
    from shendu.functional import _flash
    from shendu.functional import attention as A

    for dt, tol in ((np.float64, 1e-12), (np.float32, 2e-5)):
        arrs = make_inputs([(2, 2, 6, 4), (2, 2, 9, 4), (2, 2, 9, 3), (6, 9)], dt)
        arrs[0] *= 4
        arrs[3] += offset
        arrs[3][2] -= 2 * offset                # one row on the other side
        results = []
        for forced in (False, True):
            monkeypatch.setattr(A, "BLOCKWISE_MIN_SCORES", 0 if forced else 1 << 60)
            monkeypatch.setattr(A, "BLOCKWISE_MIN_KEYS", 0 if forced else 1 << 60)
            monkeypatch.setattr(_flash, "MAX_BLOCK", 4)
            q, k, v, b = (shendu.tensor(a, requires_grad=True) for a in arrs)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=b)
            (out * out).sum().backward()
            results.append([out.data, q.grad.data, k.grad.data, v.grad.data, b.grad.data])
        for a, c in zip(*results):
            assert np.isfinite(c).all()
            np.testing.assert_allclose(a, c, rtol=tol, atol=tol)


@pytest.mark.parametrize("gain", [0.05, 40.0])
@pytest.mark.parametrize("kind", ["none", "dead_rows"])
def test_sdpa_fused_bounded_scores_match_torch(kind, gain):
    # the fused kernel skips the softmax's row max where |q||k| bounds every score within
    # +-16 (small gain), and takes it where not (large gain): both match torch, gradients
    # included, with rows that no key reaches
    sk, tk = _mask_case(kind)
    fn = (lambda q, k, v: F.scaled_dot_product_attention(q * gain, k, v, **sk))
    tfn = (lambda q, k, v: torch.nan_to_num(
        TF.scaled_dot_product_attention(q * gain, k, v, **tk)))
    # float32 scores of ~gain carry rounding errors of ~gain ulps into the gradients
    tol32 = {"rtol": 1e-4, "atol": 1e-5 * gain} if gain > 1 else None
    check_op(fn, [(2, 2, 7, 3), (2, 2, 8, 3), (2, 2, 8, 4)], torch_fn=tfn, tol32=tol32)
    assert A._bounded(np.full((2, 3), 0.05 * 2), np.full((4, 3), 2.0), 3 ** -0.5)
    assert not A._bounded(np.full((2, 3), 8.0 * 2), np.full((4, 3), 2.0), 3 ** -0.5)


@pytest.mark.parametrize("gain", [0.05, 1.0, 40.0])
@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_blockwise_bounded_scores(monkeypatch, gain, masked):
    # without an additive mask, a first key block whose scores |q_i||k_j| bounds within
    # +-_NO_SHIFT skips the row max; larger ones take it: outputs and gradients equal the
    # fused kernel's either way, finite, with a keep-mask (rows with no key) or without
    from shendu.functional import _flash
    from shendu.functional import attention as A

    for dt, tol in ((np.float64, 1e-12), (np.float32, 2e-5)):
        arrs = make_inputs([(2, 2, 7, 4), (2, 2, 8, 4), (2, 2, 8, 3)], dt)
        arrs[0] *= gain
        arrs[1][1, 0, 3] *= 5                     # one long key
        kw = {"attn_mask": _keep_with_dead_rows()} if masked else {}
        results = []
        for forced in (False, True):
            monkeypatch.setattr(A, "BLOCKWISE_MIN_SCORES", 0 if forced else 1 << 60)
            monkeypatch.setattr(A, "BLOCKWISE_MIN_KEYS", 0 if forced else 1 << 60)
            monkeypatch.setattr(_flash, "MAX_BLOCK", 4)
            q, k, v = (shendu.tensor(a, requires_grad=True) for a in arrs)
            out = F.scaled_dot_product_attention(q, k, v, **kw)
            (out * out).sum().backward()
            results.append([out.data, q.grad.data, k.grad.data, v.grad.data])
        for a, c in zip(*results):     # scores ~gain: their rounding error grows with it
            assert np.isfinite(c).all()
            np.testing.assert_allclose(a, c, rtol=tol, atol=tol * max(1.0, gain))


@pytest.mark.parametrize("p", [0.0, 0.2])
def test_sdpa_blockwise_threads_give_the_same_bits(monkeypatch, p):
    # head groups split over the kernels' threads: the same bits as one thread
    from shendu.functional import _flash, conv
    from shendu.functional import attention as A

    monkeypatch.setattr(A, "BLOCKWISE_MIN_SCORES", 0)
    monkeypatch.setattr(_flash, "TILE_ELEMS", 64)
    monkeypatch.setattr(conv, "PARALLEL_MIN", 0)
    monkeypatch.setattr(_flash, "_PARALLEL_MIN_SCORES", 0)
    arrs = make_inputs([(3, 4, 7, 4), (3, 4, 8, 4), (3, 4, 8, 5)], np.float32)
    results = []
    before = conv._N_THREADS
    blas = [lib.num_threads for lib in conv._blas()]
    try:
        for threads in (1, 3):
            conv.set_kernel_threads(threads)
            shendu.manual_seed(3)
            q, k, v = (shendu.tensor(a, requires_grad=True) for a in arrs)
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            (out * out).sum().backward()
            results.append([out.data, q.grad.data, k.grad.data, v.grad.data])
    finally:
        conv.set_kernel_threads(before)
    # BLAS ran on one thread inside the parallel loop, and has its threads back
    assert [lib.num_threads for lib in conv._blas()] == blas
    for a, c in zip(*results):
        np.testing.assert_array_equal(a, c)


_BESIDE_BLAS = """
import threading
import numpy as np
from threadpoolctl import threadpool_limits
import shendu, shendu.functional as F
from shendu.functional import conv

threadpool_limits(2)                       # BLAS with a pool of its own
conv.set_kernel_threads(2)                 # and attention's head groups on two threads
blas = [lib.num_threads for lib in conv._blas()]
rng = np.random.default_rng(0)
arrs = [rng.standard_normal((8, 4, 512, 32)).astype(np.float32) for _ in range(3)]

def attention():
    q, k, v = (shendu.tensor(a, requires_grad=True) for a in arrs)
    out = F.scaled_dot_product_attention(q, k, v)
    out.sum().backward()
    return out.data, q.grad.data

alone = attention()
a = rng.standard_normal((1500, 1500)).astype(np.float32)
stop = []
def products():                            # another thread in BLAS all along
    while not stop:
        a @ a
t = threading.Thread(target=products)
t.start()
try:
    for _ in range(3):
        out, gq = attention()
        assert np.array_equal(out, alone[0]) and np.array_equal(gq, alone[1])
finally:
    stop.append(1)
    t.join()
assert [lib.num_threads for lib in conv._blas()] == blas
print("ok")
"""


@pytest.mark.slow
def test_sdpa_threads_beside_another_thread_in_blas():
    # attention's parallel head groups while another thread multiplies matrices: no hang
    # (stopping OpenBLAS's idle threads then would hang the other thread's product), the
    # same bits, and BLAS's thread count restored
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _BESIDE_BLAS], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.fixture
def by_heads(monkeypatch):
    """The fused kernel by groups of heads on three kernel threads, whatever the size."""
    from shendu.functional import attention as A
    from shendu.functional import conv

    monkeypatch.setattr(A, "BY_HEADS_MIN_SCORES", 0)
    monkeypatch.setattr(conv, "PARALLEL_MIN", 0)
    before = conv._N_THREADS
    conv.set_kernel_threads(3)
    yield
    conv.set_kernel_threads(before)


@pytest.mark.parametrize("kind", ["none", "causal", "long"])
def test_sdpa_by_heads_matches_torch(by_heads, kind):
    # torch values and gradients, and the float64 gradcheck, through the by-heads path
    from shendu.functional import attention as A

    S = 200 if kind == "long" else 8                   # long rows: the row-major layout
    shapes = [(2, 3, 7, 4), (2, 3, S, 4), (2, 3, S, 5)]
    assert A._by_heads(*(np.zeros(s) for s in shapes), None)
    causal = kind == "causal"
    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
             shapes, torch_fn=lambda q, k, v: TF.scaled_dot_product_attention(
                 q, k, v, is_causal=causal))


def test_sdpa_by_heads_gives_the_fused_kernels_bits(monkeypatch):
    # one piece on one thread, or by groups of heads on three: the same bits (rows with no
    # key included), and only where q, k, v share their leading dims
    from shendu.functional import attention as A
    from shendu.functional import conv

    monkeypatch.setattr(A, "BY_HEADS_MIN_SCORES", 0)
    monkeypatch.setattr(conv, "PARALLEL_MIN", 0)
    arrs = make_inputs([(4, 5, 9, 4), (4, 5, 10, 4), (4, 5, 10, 6)], np.float32)
    keep = np.tril(np.ones((9, 10), bool))
    keep[3] = False
    results = []
    before = conv._N_THREADS
    try:
        for threads in (1, 3):
            conv.set_kernel_threads(threads)
            assert A._by_heads(*arrs, keep) == (threads > 1)
            q, k, v = (shendu.tensor(a, requires_grad=True) for a in arrs)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
            (out * out).sum().backward()
            results.append([out.data, q.grad.data, k.grad.data, v.grad.data])
        assert not A._by_heads(arrs[0], arrs[1][:, :1], arrs[2], None)   # shared keys
        assert not A._by_heads(*arrs, np.ones((4, 1, 9, 10), bool))      # per-batch mask
    finally:
        conv.set_kernel_threads(before)
    for a, c in zip(*results):
        np.testing.assert_array_equal(a, c)
    assert not np.isnan(results[0][0]).any() and (results[0][0][:, :, 3] == 0).all()


def test_sdpa_blockwise_dropout(blockwise):
    def fn(q, k, v):
        shendu.manual_seed(9)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=0.3, is_causal=True)

    arrays = make_inputs([(2, 7, 3), (2, 8, 3), (2, 8, 8)])
    check_gradcheck(fn, arrays)
    q, k = (shendu.tensor(a) for a in arrays[:2])
    eye = shendu.tensor(np.broadcast_to(np.eye(8), (2, 8, 8)).copy())
    w = fn(q, k, eye).data                      # V = I: the output is the dropped weights
    np.testing.assert_array_equal(w, fn(q, k, eye).data)        # same seed, same bits
    _, p = F.scaled_dot_product_attention(q, k, eye, is_causal=True, need_weights=True)
    kept = w != 0
    assert 0.5 < kept[p.data != 0].mean() < 0.9
    np.testing.assert_allclose(w[kept], p.data[kept] / 0.7, rtol=1e-12)
    shendu.manual_seed(10)
    other = F.scaled_dot_product_attention(q, k, eye, dropout_p=0.3, is_causal=True).data
    assert not np.array_equal(other != 0, kept)


def test_sdpa_large_inputs_take_blockwise_kernel():
    from shendu.functional import attention as A

    big = np.zeros((16, 1024, 8), np.float32)     # 16 * 1024 * 1024 = 2^24 scores
    assert A._use_blockwise(big, big, big, None, None)
    assert not A._use_blockwise(big[:, :64], big[:, :64], big[:, :64], None, None)
    assert not A._use_blockwise(big, big, big, np.zeros((3, 16, 1, 1024), bool),
                                None)  # a mask that widens the leading dims


def test_sdpa_blockwise_memory_is_linear(blockwise, monkeypatch):
    # forward + backward at L = S = 2048 never holds a (L, S) float matrix: the fused
    # kernel keeps P, 2 * 2048 * 2048 * 4 bytes = 32 MiB (the causal mask is 4 MiB of bool)
    import tracemalloc

    from shendu.functional import _flash

    monkeypatch.setattr(_flash, "MIN_BLOCK", 32)
    monkeypatch.setattr(_flash, "MAX_BLOCK", 256)
    arrs = make_inputs([(2, 2048, 16)] * 3, np.float32)
    q, k, v = (shendu.tensor(a, requires_grad=True) for a in arrs)
    tracemalloc.start()
    try:
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert np.isfinite(q.grad.data).all()


def test_sdpa_errors():
    q = shendu.randn(2, 4, 3)
    k = shendu.randn(2, 5, 3)
    v = shendu.randn(2, 5, 2)
    with pytest.raises(ValueError, match=r"query \(\.\.\., L, E\) and key .* \(2, 4, 3\)"):
        F.scaled_dot_product_attention(q, shendu.randn(2, 5, 4), v)
    with pytest.raises(ValueError, match="must share S"):
        F.scaled_dot_product_attention(q, k, shendu.randn(2, 6, 2))
    with pytest.raises(ValueError, match=r"attn_mask of shape \(3, 5\)"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((3, 5), bool))
    with pytest.raises(TypeError, match="boolean"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((4, 5), np.int64))
    with pytest.raises(ValueError, match="leading dims"):
        F.scaled_dot_product_attention(q, shendu.randn(3, 5, 3), shendu.randn(3, 5, 2))


# ---------------------------------------------------------------------------- additive
def _torch_additive(qp, kp, w, vals, mask=None):
    single = qp.dim() == kp.dim() - 1
    if single:
        qp = qp.unsqueeze(-2)
    e = torch.tanh(qp.unsqueeze(-2) + kp.unsqueeze(-3)) @ w
    if mask is not None:
        m = mask.unsqueeze(-2) if single else mask
        e = e.masked_fill(~m, float("-inf"))
    p = torch.nan_to_num(torch.softmax(e, -1), nan=0.0)
    out = p @ vals
    if single:
        return out.squeeze(-2), p.squeeze(-2)
    return out, p


@pytest.mark.parametrize("qshape", [(3, 4), (3, 2, 4)])
def test_additive_attention(qshape):
    check_op(F.additive_attention, [qshape, (3, 5, 4), (4,), (3, 5, 2)],
             torch_fn=_torch_additive)


def test_additive_attention_mask_and_dead_row():
    m = np.ones((3, 5), bool)
    m[0, 3:] = False
    m[2] = False               # batch row 2 has no key at all: zero context, zero grad
    tm = torch.tensor(m)
    check_op(lambda a, b, c, d: F.additive_attention(a, b, c, d, mask=m),
             [(3, 4), (3, 5, 4), (4,), (3, 5, 2)],
             torch_fn=lambda a, b, c, d: _torch_additive(a, b, c, d, tm))


# --------------------------------------------------------------------- MultiheadAttention
def _mha_pair(E=8, H=2, **kw):
    torch.manual_seed(0)
    t = torch.nn.MultiheadAttention(E, H, **kw)
    with torch.no_grad():  # non-zero biases so their gradients are tested
        for p in t.parameters():
            if p.dim() == 1:
                p.normal_()
    return nn.MultiheadAttention(E, H, **kw), t


def _mask_kinds(kind, n=2, h=2, L=4, S=5):
    rng = np.random.default_rng(11)
    am = kpm = None
    if kind in ("bool", "both_bool", "mixed"):
        am = rng.random((L, S)) < 0.3
        am[:, 0] = False                      # True = may not attend; key 0 always open
    if kind == "float":
        am = rng.normal(size=(L, S))
    if kind == "bool3d":
        am = rng.random((n * h, L, S)) < 0.3
        am[..., 0] = False
    if kind in ("kpm", "both_bool"):
        kpm = np.zeros((n, S), bool)
        kpm[1, 3:] = True
    if kind in ("kpm_float", "mixed"):
        kpm = np.zeros((n, S))
        kpm[0, 4] = -np.inf
        kpm[1, 1] = -1.5
    return am, kpm


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mode", ["self", "cross", "kdim"])
def test_mha_parity(dtype, batch_first, mode):
    kw = dict(batch_first=batch_first)
    if mode == "kdim":
        kw.update(kdim=3, vdim=6)
    s, t = _mha_pair(**kw)
    N, L, S = 2, 4, 5

    def shape(n, length, d):
        return (n, length, d) if batch_first else (length, n, d)

    if mode == "self":
        fn = lambda m, x: m(x, x, x)  # noqa: E731
        inputs = make_inputs([shape(N, L, 8)])
    else:
        fn = lambda m, q, k, v: m(q, k, v)  # noqa: E731
        kd, vd = (3, 6) if mode == "kdim" else (8, 8)
        inputs = make_inputs([shape(N, L, 8), shape(N, S, kd), shape(N, S, vd)])
    check_module(s, t, inputs, dtype=dtype, fn=fn)
    if mode == "kdim":
        assert s.in_proj_weight is None and s.q_proj_weight.shape == (8, 8)


@pytest.mark.parametrize("kind", ["bool", "float", "bool3d", "kpm", "kpm_float", "both_bool",
                                  "mixed"])
@pytest.mark.parametrize("need_weights,average", [(True, True), (True, False), (False, True)])
def test_mha_masks(kind, need_weights, average):
    s, t = _mha_pair(batch_first=True)
    am, kpm = _mask_kinds(kind)

    def fn(m, q, k, v):
        def wrap(a):
            if a is None or not torch.is_tensor(q):
                return a
            return torch.tensor(a if a.dtype == bool else a.astype(dtype))

        dtype = np.float32 if q.dtype in (np.float32, torch.float32) else np.float64
        return m(q, k, v, key_padding_mask=wrap(kpm), attn_mask=wrap(am),
                 need_weights=need_weights, average_attn_weights=average)

    check_module(s, t, make_inputs([(2, 4, 8), (2, 5, 8), (2, 5, 8)]), fn=fn,
                 dtype=np.float64)
    check_module(s, t, make_inputs([(2, 4, 8), (2, 5, 8), (2, 5, 8)]), fn=fn)


def test_mha_causal_self_attention():
    s, t = _mha_pair()
    mask = torch.nn.Transformer.generate_square_subsequent_mask(5)  # float -inf above diag
    fn = lambda m, x: m(x, x, x, attn_mask=(  # noqa: E731
        mask if torch.is_tensor(x) else mask.numpy()), is_causal=True)
    check_module(s, t, make_inputs([(5, 3, 8)]), fn=fn)
    # is_causal alone (no mask given) is an error, as in torch
    x = shendu.tensor(make_inputs([(5, 3, 8)], np.float32)[0])
    with pytest.raises(RuntimeError, match="is_causal"):
        s(x, x, x, is_causal=True)
    with pytest.raises(RuntimeError, match="is_causal"):
        t(torch.tensor(x.data), torch.tensor(x.data), torch.tensor(x.data), is_causal=True)


@pytest.mark.parametrize("batch_first", [False, True])
def test_mha_unbatched(batch_first):
    s, t = _mha_pair(batch_first=batch_first)
    kpm = np.array([False, False, True, False, False])
    fn = lambda m, q, k: m(q, k, k, key_padding_mask=(  # noqa: E731
        torch.tensor(kpm) if torch.is_tensor(q) else kpm), average_attn_weights=False)
    check_module(s, t, make_inputs([(4, 8), (5, 8)]), fn=fn, dtype=np.float64)


def test_mha_bias_false():
    s, t = _mha_pair(bias=False)
    assert s.in_proj_bias is None and s.out_proj.bias is None
    check_module(s, t, make_inputs([(4, 2, 8), (5, 2, 8), (5, 2, 8)]))


def test_mha_init_matches_torch_recipe():
    shendu.manual_seed(0)
    m = nn.MultiheadAttention(16, 4)
    assert list(m.state_dict()) == ["in_proj_weight", "in_proj_bias", "out_proj.weight",
                                    "out_proj.bias"]
    bound = np.sqrt(6 / (16 + 48))  # xavier_uniform_ on the (48, 16) packed weight
    w = m.in_proj_weight.data
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    np.testing.assert_array_equal(m.in_proj_bias.data, 0)
    np.testing.assert_array_equal(m.out_proj.bias.data, 0)
    m2 = nn.MultiheadAttention(16, 4, kdim=5, vdim=7)
    assert list(m2.state_dict()) == ["q_proj_weight", "k_proj_weight", "v_proj_weight",
                                     "in_proj_bias", "out_proj.weight", "out_proj.bias"]


def test_mha_fully_masked_query_gives_zero_not_nan():
    s, t = _mha_pair(batch_first=True)
    kpm = np.zeros((2, 5), bool)
    kpm[1] = True                              # batch row 1: every key is padding
    arrs = make_inputs([(2, 4, 8), (2, 5, 8)], np.float32)
    q, k = (shendu.tensor(a, requires_grad=True) for a in arrs)
    out, w = s(q, k, k, key_padding_mask=kpm)
    assert np.isfinite(out.data).all()
    np.testing.assert_array_equal(w.data[1], 0)
    # the attention output is zero, so the layer's output there is out_proj's bias
    np.testing.assert_allclose(out.data[1], np.broadcast_to(s.out_proj.bias.data, (4, 8)))
    # torch's SDPA path (need_weights=False) agrees; its need_weights=True path gives NaN
    s.load_state_dict(t.state_dict())
    out, _ = s(q, k, k, key_padding_mask=kpm)
    to, _ = t(torch.tensor(arrs[0]), torch.tensor(arrs[1]), torch.tensor(arrs[1]),
              key_padding_mask=torch.tensor(kpm), need_weights=False)
    np.testing.assert_allclose(out.data, to.detach().numpy(), rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert np.isfinite(q.grad.data).all() and np.isfinite(k.grad.data).all()


def test_mha_dropout_only_in_training():
    s = nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True)
    x = shendu.tensor(make_inputs([(2, 6, 8)], np.float32)[0])
    shendu.manual_seed(1)
    _, w_train = s(x, x, x, average_attn_weights=False)
    assert (w_train.data == 0).mean() > 0.3                  # weights were dropped
    np.testing.assert_allclose(w_train.data.sum(-1).mean(), 1.0, atol=0.25)
    s.eval()
    o1, w1 = s(x, x, x)
    o2, w2 = s(x, x, x)
    np.testing.assert_array_equal(o1.data, o2.data)
    np.testing.assert_allclose(w1.data.sum(-1), 1.0, rtol=1e-5)
    s.train()
    shendu.manual_seed(1)
    o3, _ = s(x, x, x)
    shendu.manual_seed(1)
    o4, _ = s(x, x, x)
    np.testing.assert_array_equal(o3.data, o4.data)          # same seed, same mask
    assert not np.allclose(o3.data, o1.data)


def test_mha_errors():
    m = nn.MultiheadAttention(8, 2)
    with pytest.raises(ValueError, match="divisible"):
        nn.MultiheadAttention(8, 3)
    with pytest.raises(ValueError, match=r"MultiheadAttention\(embed_dim=8, num_heads=2\) "
                                         r"expected query \(L, N, 8\) or \(L, 8\), got "
                                         r"\(4, 2, 7\)"):
        m(shendu.randn(4, 2, 7), shendu.randn(4, 2, 8), shendu.randn(4, 2, 8))
    x = shendu.randn(4, 2, 8)
    with pytest.raises(ValueError, match=r"key_padding_mask of shape \(2, 4\)"):
        m(x, x, x, key_padding_mask=np.zeros((4, 2), bool))
    with pytest.raises(ValueError, match=r"attn_mask of shape \(4, 4\) or \(4, 4, 4\)"):
        m(x, x, x, attn_mask=np.zeros((3, 4), bool))


# ---------------------------------------------------------------------- AdditiveAttention
class _TorchAdditive(torch.nn.Module):
    """The same layer written with torch ops (no torch counterpart exists)."""

    def __init__(self, dq, dk, h):
        super().__init__()
        self.query_proj = torch.nn.Linear(dq, h, bias=False)
        self.key_proj = torch.nn.Linear(dk, h, bias=True)
        self.v = torch.nn.Parameter(torch.randn(h))

    def forward(self, q, k, vals=None, key_padding_mask=None):
        vals = k if vals is None else vals
        mask = None if key_padding_mask is None else ~key_padding_mask
        if mask is not None and q.dim() == k.dim():
            mask = mask.unsqueeze(-2)        # one (N, S) mask for every query
        return _torch_additive(self.query_proj(q), self.key_proj(k), self.v, vals, mask)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("qshape", [(3, 6), (3, 2, 6)])
def test_additive_attention_module(dtype, qshape):
    torch.manual_seed(0)
    t = _TorchAdditive(6, 4, 5)
    s = nn.AdditiveAttention(6, 4, 5, bias=True)
    kpm = np.zeros((3, 7), bool)
    kpm[0, 5:] = True

    def fn(m, q, k, vals):
        mask = torch.tensor(kpm) if torch.is_tensor(q) else kpm
        return m(q, k, vals, key_padding_mask=mask)

    check_module(s, t, make_inputs([qshape, (3, 7, 4), (3, 7, 2)]), dtype=dtype, fn=fn)


def test_additive_attention_projected_keys_reused():
    s = nn.AdditiveAttention(6, 4, 5)
    q = shendu.randn(3, 6)
    k = shendu.randn(3, 7, 4)
    a, wa = s(q, k)
    b, wb = s(q, k, projected_keys=s.project_keys(k))
    np.testing.assert_array_equal(a.data, b.data)
    assert a.shape == (3, 4) and wa.shape == (3, 7)
    np.testing.assert_allclose(wa.data.sum(-1), 1, rtol=1e-6)
    with pytest.raises(ValueError, match=r"AdditiveAttention\(query_dim=6\) expected query"):
        s(shendu.randn(3, 5), k)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_heads_projection_gradcheck_and_torch(batch_first, bias):
    """Self-attention's packed projection split into heads as one op: float64 gradcheck, and
    torch's ``linear`` + ``reshape`` + ``permute`` values and gradients."""
    from shendu.nn.attention import _HeadsProjection

    N, L, E, H = 2, 5, 12, 3
    shapes = [(N, L, E) if batch_first else (L, N, E), (3 * E, E)] + ([(3 * E,)] if bias else [])
    order = (2, 0, 3, 1, 4) if batch_first else (2, 1, 3, 0, 4)

    def torch_fn(x, w, b=None):
        y = torch.nn.functional.linear(x, w, b)
        y = y.reshape(x.shape[0], x.shape[1], 3, H, E // H).permute(order)
        return y[0], y[1], y[2]

    check_op(lambda *a: _HeadsProjection.apply(*a, heads=H, batch_first=batch_first), shapes,
             torch_fn=torch_fn)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("heads", [1, 4])
def test_mha_self_attention_without_bias_parity(batch_first, heads):
    """Self-attention takes the fused projection (bias or none, one head or several): the
    layer's output and every gradient match torch's."""
    shape = (2, 6, 8) if batch_first else (6, 2, 8)
    for dtype in (np.float32, np.float64):              # a fresh pair each: no stale grads
        s, t = _mha_pair(H=heads, bias=False, batch_first=batch_first)
        check_module(s, t, make_inputs([shape]), fn=lambda m, x: m(x, x, x), dtype=dtype)


def _flash_run(arrs, g, compiled, monkeypatch):
    from shendu.functional import _flash

    with monkeypatch.context() as m:
        m.setattr(A, "BLOCKWISE_MIN_SCORES", 0)
        if not compiled:
            m.setattr(_flash, "_compiled", lambda *a: None)
        ts = [shendu.tensor(a, requires_grad=True) for a in arrs]
        out = F.scaled_dot_product_attention(*ts)
        out.backward(shendu.tensor(g))
    return [out.data.copy()] + [t.grad.data.copy() for t in ts]


@pytest.mark.parametrize("head", [8, 32])
@pytest.mark.parametrize("products", ["batch", "single"])
@pytest.mark.parametrize("case", ["plain", "shifted", "query-blocks", "broadcast", "keys-4k"])
def test_sdpa_blockwise_compiled_tiles(monkeypatch, case, products, head):
    """The compiled tile loops (float32, no mask, no dropout) against the Python tile loop
    (to float32 rounding: their row sums and bound are their own) and against torch in
    float64 (as close as the Python loop), the shift by the row max (large scores), several
    query blocks and broadcast heads included; their products as MKL's strided batch calls,
    and as one OpenBLAS call a head (where the kernels' products are OpenBLAS's)."""
    from shendu.functional import _flash, _flash_mkl, _gemm

    if _flash_mkl.kernels() is None:
        pytest.skip("Numba or MKL is not installed (or SHENDU_NUMBA=0)")
    if products == "single":
        if _gemm._load()["name"] != "openblas":
            pytest.skip("the kernels' products are not on OpenBLAS here")
        monkeypatch.setattr(_flash_mkl, "FS", [_gemm._load()["addresses"][np.dtype(np.float32)]])
    else:
        monkeypatch.setattr(_flash_mkl, "FS", [0])
    rng = np.random.default_rng(7)
    # heads of 32 (and keys in whole vectors: 48): with single products, the rows loops';
    # 1024 keys: the transposed keys' rows 4 KiB apart, padded
    keys = 1024 if case == "keys-4k" else 37 if head == 8 else 48
    sq, sk = (2, 3, 40, head), (2, 3, keys, head)
    if case == "query-blocks":
        monkeypatch.setattr(_flash, "COMPILED_TILE_ELEMS", keys * 16)  # 16-row blocks
        monkeypatch.setattr(_flash, "MIN_BLOCK", 16)
    if case == "broadcast":
        sk = (2, 1, keys, head)
    q = rng.standard_normal(sq).astype(np.float32)
    k, v = (rng.standard_normal(sk).astype(np.float32) for _ in range(2))
    if case == "shifted":
        q *= 9                                          # row maxima far beyond +-16
        k *= 9
    g = rng.standard_normal(sq[:-1] + (head,)).astype(np.float32)
    # where they run, the rows loops make heads of 32's products with single products
    assert _flash_mkl._rows((q, k, v)) == (products == "single" and head == 32
                                           and bool(_gemm._rows_loops()))
    calls = []
    kern = _flash_mkl.kernels()
    monkeypatch.setattr(kern, "forward", lambda *a, f=kern.forward: calls.append(1) or f(*a))
    got = _flash_run((q, k, v), g, True, monkeypatch)
    assert calls, "the compiled tiles were not used"
    want = _flash_run((q, k, v), g, False, monkeypatch)
    tq = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (q, k, v)]
    to = TF.scaled_dot_product_attention(*tq)
    to.backward(torch.tensor(g, dtype=torch.float64))
    ref = [to.detach().numpy()] + [t.grad.numpy() for t in tq]
    for c, w, r in zip(got, want, ref):
        assert np.isfinite(c).all()
        scale = np.abs(r).max() + 1e-30
        assert np.abs(c - w).max() <= 1e-5 * scale
        assert np.abs(c - r).max() <= 2 * np.abs(w - r).max() + 1e-6 * scale


def test_sdpa_compiled_tiles_take_moderate_rows_on_one_thread(monkeypatch):
    """From 128 keys the compiled blockwise tiles take the call on one thread (float32, no
    mask, no dropout), where they are faster than the fused kernel; not with several
    threads, a mask, dropout or float64."""
    from shendu.functional import _flash_mkl, conv

    if _flash_mkl.kernels() is None:
        pytest.skip("Numba or MKL is not installed (or SHENDU_NUMBA=0)")
    x = np.zeros((4, 128, 8), np.float32)
    monkeypatch.setattr(conv, "_N_THREADS", 1)
    assert A._use_blockwise(x, x, x, None, None)
    assert not A._use_blockwise(x[:, :100], x[:, :100], x[:, :100], None, None)
    assert not A._use_blockwise(x, x, x, None, None, dropout_p=0.1)
    assert not A._use_blockwise(x, x, x, None, np.ones((128, 128), bool))
    assert not A._use_blockwise(*(x.astype(np.float64),) * 3, None, None)
    monkeypatch.setattr(conv, "_N_THREADS", 2)
    assert not A._use_blockwise(x, x, x, None, None)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_mha_heads_written_by_the_rows_loops(monkeypatch, batch_first, bias):
    """Heads of whole vectors (64 wide, two heads of 32): where the rows loops make
    ``linear``'s products, the packed projection is written straight into the heads'
    layout (``_gemm.heads_linear``), at one thread and split over three: the layer's output
    and every gradient match torch's, and the heads are ``linear`` + views bit for bit."""
    from shendu.functional import _gemm, conv

    if not _gemm._rows_loops():
        pytest.skip("no rows loops here: they need Numba and OpenBLAS's products")
    made = []
    real = _gemm.heads_linear
    monkeypatch.setattr(_gemm, "heads_linear",
                        lambda *a: (lambda out: made.append(out is not None) or out)(real(*a)))
    shape = (4, 9, 64) if batch_first else (9, 4, 64)
    before = conv._N_THREADS
    try:
        for threads in (1, 3):
            conv.set_kernel_threads(threads)
            for dtype in (np.float32, np.float64):
                made.clear()
                s, t = _mha_pair(E=64, H=2, bias=bias, batch_first=batch_first)
                check_module(s, t, make_inputs([shape]), fn=lambda m, x: m(x, x, x),
                             dtype=dtype)
                assert made and all(made)
        rng = np.random.default_rng(4)
        order = (2, 0, 3, 1, 4) if batch_first else (2, 1, 3, 0, 4)
        a0, a1 = shape[:2]
        # heads of two vectors, of three (two at once, then one) and of four; 1 and 3 threads
        monkeypatch.setattr(_gemm, "MIN_LINEAR_FLOPS", 0)
        for dtype, E, H in [(np.float32, 64, 2), (np.float32, 96, 2), (np.float64, 64, 2),
                            (np.float64, 48, 2)]:
            x = rng.standard_normal((a0 * a1, E)).astype(dtype)
            w = rng.standard_normal((3 * E, E)).astype(dtype)
            b = rng.standard_normal(3 * E).astype(dtype) if bias else None
            for threads in (1, 3):
                conv.set_kernel_threads(threads)
                want = _gemm.linear(x, w, b).reshape(a0, a1, 3, H, E // H).transpose(order)
                np.testing.assert_array_equal(real(x, w, b, H, a0, a1, batch_first), want)
        x = rng.standard_normal((36, 64)).astype(np.float32)
        w = rng.standard_normal((192, 64)).astype(np.float32)
        b = rng.standard_normal(192).astype(np.float32) if bias else None
        assert real(x, w, b, 8, a0, a1, batch_first) is None        # heads of 8: not whole
    finally:
        conv.set_kernel_threads(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_sum_in_vector_registers(dtype):
    """The compiled forward's row sums (``_conv_compiled.row_sum``: four vector
    accumulators, then the lanes, then what is left one by one): the float64 sum within
    the rounding of a sum of that many numbers, for lengths with no whole vector, whole
    vectors fewer than four, more than four and not a multiple, each with and without a
    tail, and an offset start."""
    pytest.importorskip("numba")
    from numba import njit

    from shendu.functional import _conv_compiled as cc

    lanes = 64 // np.dtype(dtype).itemsize

    @njit
    def total(x, base, n):
        return cc.row_sum(x, base, n, lanes)

    rng = np.random.default_rng(17)
    eps = np.finfo(dtype).eps
    for n in (0, 1, lanes - 1, lanes, lanes + 3, 3 * lanes, 4 * lanes, 4 * lanes + 1,
              9 * lanes + 5, 1024, 1031):
        x = rng.standard_normal(n + 7).astype(dtype)
        got = total(x, 5, n)
        want = x[5:5 + n].astype(np.float64).sum()
        assert abs(float(got) - want) <= 2 * n * eps * np.abs(x[5:5 + n]).sum() + 1e-30, n
