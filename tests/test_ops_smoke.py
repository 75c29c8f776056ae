import numpy as np
import torch

import shendu.functional as F
from helpers import check_op


def test_add_broadcast():
    check_op(lambda a, b: a + b, [(3, 1, 4), (5, 4)])


def test_mul_div():
    check_op(lambda a, b: a * b / (b * b + 1.0), [(2, 3), (3,)])


def test_matmul_batched():
    check_op(lambda a, b: a @ b, [(2, 1, 3, 4), (5, 4, 2)])


def test_linear():
    check_op(F.linear, [(4, 3, 5), (6, 5), (6,)], torch_fn=torch.nn.functional.linear)


def test_cross_entropy_smoothing_weight():
    y = np.array([0, 2, 1, -100, 2])
    w = np.array([0.3, 1.0, 2.0])
    check_op(lambda x: F.cross_entropy(x, y, weight=w, label_smoothing=0.1),
             [(5, 3)],
             torch_fn=lambda x: torch.nn.functional.cross_entropy(
                 x, torch.tensor(y), weight=torch.tensor(w, dtype=x.dtype),
                 label_smoothing=0.1))
