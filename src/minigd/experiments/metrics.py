"""Measures read off a run: how noisy its loss curve is, and when it reached a target.

Curve noise. The note says a mini-batch loss curve "will be less smooth ... but it should still
trend downward". We measure the unsmoothness as the standard deviation of the residuals of log(loss)
around its centered moving average over ``window`` steps:

    noise = std_t( log L_t - mean_{|s - t| <= k} log L_s ),   window = 2k + 1.

On the log scale a residual is a relative deviation (0.1 means the step loss sits ~10% off its
local trend), so curves at different loss levels compare fairly. Full-batch descent on a smooth loss
scores near zero; SGD on single samples scores highest.

Target. ``TargetTracker`` evaluates a validation metric at geometrically spaced steps (each about
5% after the last, plus every epoch end), so "steps to target" has the same relative resolution
whether a run takes 20 steps or 20000.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from minigd._validation import check_float, check_int
from minigd.nn.losses import higher_is_better
from minigd.training.callbacks import Callback

CURVE_WINDOW = 11


def curve_noise(losses: Any, window: int = CURVE_WINDOW) -> float:
    """Relative spread of the step losses around their moving trend (see the module docstring)."""
    losses = np.asarray(losses, dtype=np.float64)
    losses = losses[np.isfinite(losses)]
    window = min(check_int("window", window, minimum=3), len(losses) - (len(losses) + 1) % 2)
    if window < 3:
        return float("nan")
    logs = np.log(np.maximum(losses, 1e-12))
    trend = np.convolve(logs, np.ones(window) / window, mode="valid")
    k = window // 2
    return float(np.std(logs[k : len(logs) - k] - trend))


def trend(history) -> np.ndarray:
    """The step loss smoothed over ~1% of the run: about a hundred independent points per curve,
    whether the run took 10 steps (then it is the raw curve) or 100000."""
    horizon = max(1.0, history.n_steps / 100)
    return history.smoothed(beta=1.0 - 1.0 / horizon)


@dataclass
class Target:
    """A metric and the value that counts as reached: ``val_accuracy >= 0.9``, ``val_loss <= 0.3``,
    ``loss <= 0.2`` (the train loss on the evaluation data)."""

    metric: str = "val_accuracy"
    value: float = 0.9

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)

    def reached(self, value: float) -> bool:
        return value >= self.value if self.higher_is_better else value <= self.value

    def __str__(self) -> str:
        return f"{self.metric} {'>=' if self.higher_is_better else '<='} {self.value:g}"


@dataclass
class Reached:
    """When a run first reached its target: steps, epochs (fractional), seconds, samples."""

    steps: int
    epochs: float
    seconds: float
    samples: int


class TargetTracker(Callback):
    """Records when a target is first reached; optionally stops training there.

    The metric is computed on ``data`` (the validation set as ``model.prepare`` returns it, so
    it is checked once, not at every evaluation), in evaluation mode, at steps 1, 2, ..., then
    each about ``growth`` times the last, and at every epoch end.
    """

    def __init__(
        self,
        target: Target,
        data: tuple[np.ndarray, np.ndarray],
        *,
        growth: float = 1.05,
        stop: bool = False,
    ) -> None:
        self.target = target
        self.data = data
        self.growth = check_float("growth", growth, minimum=1.0, inclusive=False)
        self.stop = bool(stop)
        self.reached: Reached | None = None
        self._next = 1
        self.evaluations = 0

    def _metric(self, trainer) -> float:
        start = time.perf_counter()
        metrics = trainer.model.evaluate_prepared(*self.data)
        trainer.exclude(time.perf_counter() - start)
        self.evaluations += 1
        name = self.target.metric.removeprefix("val_")
        if name not in metrics:
            raise KeyError(
                f"target metric {self.target.metric!r} is not one of "
                f"{sorted('val_' + k for k in metrics)}."
            )
        return metrics[name]

    def _check(self, trainer) -> None:
        if self.reached is not None:
            return
        if self.target.reached(self._metric(trainer)):
            self.reached = Reached(
                trainer.step,
                trainer.step / trainer.batches_per_epoch,
                trainer.elapsed(),
                trainer.samples_seen,
            )
            if self.stop:
                trainer.stop(f"target reached: {self.target} at step {trainer.step}")

    def on_step_end(self, trainer, loss):
        if self.reached is None and trainer.step >= self._next:
            self._next = max(trainer.step + 1, math.ceil(trainer.step * self.growth))
            self._check(trainer)

    def on_epoch_end(self, trainer, epoch, logs):
        self._check(trainer)
