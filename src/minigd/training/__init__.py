"""The training loop, its history, callbacks and exact checkpoints."""

from minigd.training.callbacks import (
    Callback,
    Checkpoint,
    CSVLogger,
    DivergenceGuard,
    EarlyStopping,
    LearningRateSchedule,
    ProgressBar,
    ReduceLROnPlateau,
)
from minigd.training.checkpoint import latest_checkpoint, load_checkpoint
from minigd.training.fitting import fit, make_trainer
from minigd.training.history import History
from minigd.training.trainer import Trainer

__all__ = [
    "CSVLogger",
    "Callback",
    "Checkpoint",
    "DivergenceGuard",
    "EarlyStopping",
    "History",
    "LearningRateSchedule",
    "ProgressBar",
    "ReduceLROnPlateau",
    "Trainer",
    "fit",
    "latest_checkpoint",
    "load_checkpoint",
    "make_trainer",
]
