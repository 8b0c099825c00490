"""Optimizers that match torch.optim step for step, and learning-rate schedules."""

from minigd.optim.base import Optimizer
from minigd.optim.optimizers import OPTIMIZERS, SGD, Adam, AdamW, RMSprop, get_optimizer
from minigd.optim.schedules import (
    Constant,
    Cosine,
    Exponential,
    LinearWarmup,
    PerEpoch,
    Schedule,
    StepDecay,
)

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "AdamW",
    "Constant",
    "Cosine",
    "Exponential",
    "LinearWarmup",
    "Optimizer",
    "PerEpoch",
    "RMSprop",
    "Schedule",
    "StepDecay",
    "get_optimizer",
]
