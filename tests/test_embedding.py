"""F.embedding (fused) and nn.Embedding: gradcheck and torch parity."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from helpers import check_module, check_op, compare_with_torch, make_inputs

import shendu
import shendu.functional as F
import shendu.nn as nn

IDX = np.array([[0, 3, 3, 1], [4, 3, 0, 0]])


def test_embedding_op_repeated_indices():
    check_op(lambda w: F.embedding(IDX, w), [(5, 3)],
             torch_fn=lambda w: TF.embedding(torch.tensor(IDX), w))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [{"padding_idx": 3}, {"scale_grad_by_freq": True},
                                {"padding_idx": 0, "scale_grad_by_freq": True}])
def test_embedding_op_padding_and_freq(dtype, kw):
    # both deliberately change the gradient (the padding row gets none; counts rescale), so
    # it is no longer the derivative and gradcheck does not apply: torch parity only
    arrays = make_inputs([(5, 3)])
    compare_with_torch(lambda w: F.embedding(IDX, w, **kw), arrays,
                       lambda w: TF.embedding(torch.tensor(IDX), w, **kw), dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding_idx", [None, 0, -1])
def test_embedding_module(dtype, padding_idx):
    torch.manual_seed(0)
    t = torch.nn.Embedding(5, 4, padding_idx=padding_idx)
    s = nn.Embedding(5, 4, padding_idx=padding_idx)
    check_module(s, t, [np.array([[1, 4, 0], [0, 2, 4]])], dtype=dtype)
    if padding_idx is not None:
        np.testing.assert_array_equal(s.weight.grad.data[padding_idx], 0)


def test_embedding_init_padding_row_zero():
    shendu.manual_seed(3)
    e = nn.Embedding(10, 6, padding_idx=2)
    np.testing.assert_array_equal(e.weight.data[2], 0)
    assert e.weight.dtype == np.float32
    assert 0.5 < e.weight.data.std() < 1.5  # N(0, 1)


def test_from_pretrained():
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    e = nn.Embedding.from_pretrained(w)
    assert not e.weight.requires_grad
    np.testing.assert_array_equal(e(np.array([2, 0])).data, w[[2, 0]])
    w[0, 0] = 100  # a copy, not a view
    assert e.weight.data[0, 0] == 0
    e2 = nn.Embedding.from_pretrained(shendu.tensor(w), freeze=False, padding_idx=1)
    assert e2.weight.requires_grad and e2.padding_idx == 1
    e2(np.array([1, 1, 3])).sum().backward()
    np.testing.assert_array_equal(e2.weight.grad.data, [[0, 0, 0], [0, 0, 0], [0, 0, 0],
                                                        [1, 1, 1]])


def test_embedding_errors():
    e = nn.Embedding(5, 2)
    with pytest.raises(IndexError, match="embedding: index 5 is out of range for 5 embeddings"):
        e(np.array([1, 5]))
    with pytest.raises(TypeError, match="integer indices"):
        e(np.array([1.0]))
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(5, 2, padding_idx=5)
