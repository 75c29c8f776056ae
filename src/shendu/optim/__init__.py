"""Optimizers with torch's exact update rules (``shendu.optim``), learning-rate schedules
(``shendu.optim.lr_scheduler``) and the functional form of each update rule.

>>> from shendu import nn, optim
>>> model = nn.Linear(3, 1)
>>> opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
>>> sched = optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
"""

from shendu.optim import lr_scheduler
from shendu.optim.adadelta import Adadelta, adadelta_update
from shendu.optim.adagrad import Adagrad, adagrad_update
from shendu.optim.adam import Adam, AdamW, adam_update
from shendu.optim.adamax import Adamax, adamax_update
from shendu.optim.lbfgs import LBFGS
from shendu.optim.lr_scheduler import (
    ChainedScheduler,
    ConstantLR,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiplicativeLR,
    MultiStepLR,
    OneCycleLR,
    PolynomialLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)
from shendu.optim.nadam import NAdam, nadam_update
from shendu.optim.optimizer import Optimizer
from shendu.optim.radam import RAdam, radam_update
from shendu.optim.rmsprop import RMSprop, rmsprop_update
from shendu.optim.sgd import SGD, sgd_update

__all__ = [
    "Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "adadelta_update",
    "Adamax", "adamax_update", "NAdam", "nadam_update", "RAdam", "radam_update", "LBFGS",
    "sgd_update", "adam_update", "rmsprop_update", "adagrad_update",
    "lr_scheduler", "LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR",
    "CosineAnnealingLR", "LinearLR", "OneCycleLR", "ReduceLROnPlateau", "LambdaLR",
    "ConstantLR", "PolynomialLR", "CosineAnnealingWarmRestarts",
    "MultiplicativeLR", "SequentialLR", "ChainedScheduler", "CyclicLR",
]
