"""F.layer_norm (fused) and nn.LayerNorm: gradcheck and torch parity."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from helpers import check_module, check_op, make_inputs

import shendu
import shendu.functional as F
import shendu.nn as nn


@pytest.mark.parametrize("xshape,ns", [((4, 6), (6,)), ((2, 3, 5), (5,)), ((2, 3, 4), (3, 4))])
def test_layer_norm_affine(xshape, ns):
    check_op(lambda x, w, b: F.layer_norm(x, ns, w, b), [xshape, ns, ns],
             torch_fn=lambda x, w, b: TF.layer_norm(x, ns, w, b))


def test_layer_norm_plain_and_weight_only():
    check_op(lambda x: F.layer_norm(x, (5,), eps=1e-3), [(3, 5)],
             torch_fn=lambda x: TF.layer_norm(x, (5,), eps=1e-3))
    check_op(lambda x, w: F.layer_norm(x, 5, w), [(3, 5), (5,)],
             torch_fn=lambda x, w: TF.layer_norm(x, (5,), w))


def test_layer_norm_large_offset_is_stable():
    # rows near 1000 with a spread of 0.01: a one-pass E[x^2] - E[x]^2 in float32 loses the
    # variance entirely; the two-pass form stays within the float32 rounding of the mean
    # (torch float32 is off by 1e-2 here too). Reference: float64 on the same inputs.
    x = make_inputs([(4, 8)], np.float32)[0] * 1e-2 + 1e3
    ref = TF.layer_norm(torch.tensor(x.astype(np.float64)), (8,)).numpy()
    s = F.layer_norm(shendu.tensor(x), 8).data
    np.testing.assert_allclose(s, ref, atol=1e-2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [{}, {"elementwise_affine": False}, {"bias": False},
                                {"eps": 1e-3}])
def test_layernorm_module(dtype, kw):
    torch.manual_seed(0)
    t = torch.nn.LayerNorm((3, 4), **kw)
    with torch.no_grad():
        for p in t.parameters():
            p.normal_()
    s = nn.LayerNorm((3, 4), **kw)
    check_module(s, t, make_inputs([(2, 5, 3, 4)]), dtype=dtype)


def test_layernorm_init_and_errors():
    m = nn.LayerNorm(6)
    np.testing.assert_array_equal(m.weight.data, np.ones(6, np.float32))
    np.testing.assert_array_equal(m.bias.data, np.zeros(6, np.float32))
    assert list(m.state_dict()) == ["weight", "bias"]
    with pytest.raises(ValueError, match=r"LayerNorm\(6\) expected input \(\.\.\., 6\), got "
                                         r"\(2, 5\)"):
        m(shendu.randn(2, 5))
    with pytest.raises(ValueError, match="layer_norm: weight must have shape"):
        F.layer_norm(shendu.randn(2, 6), 6, shendu.randn(5))
