"""The training loop, its history, callbacks and exact checkpoints."""

from minigd.noise import StepNoise
from minigd.training.adaptive import AdaptiveBatchSize
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
from minigd.training.goodput import GoodputBatchSize
from minigd.training.gradient import GradientPath, ModelGradient
from minigd.training.history import History
from minigd.training.noise_tracker import NoiseScaleTracker
from minigd.training.tensorboard import TensorBoard
from minigd.training.thread_choice import ThreadChoice
from minigd.training.trainer import Trainer

__all__ = [
    "AdaptiveBatchSize",
    "CSVLogger",
    "Callback",
    "Checkpoint",
    "DivergenceGuard",
    "EarlyStopping",
    "GoodputBatchSize",
    "GradientPath",
    "History",
    "LearningRateSchedule",
    "ModelGradient",
    "NoiseScaleTracker",
    "ProgressBar",
    "ReduceLROnPlateau",
    "StepNoise",
    "TensorBoard",
    "ThreadChoice",
    "Trainer",
    "fit",
    "latest_checkpoint",
    "load_checkpoint",
    "make_trainer",
]
