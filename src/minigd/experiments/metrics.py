"""Measures read off a run: how noisy its loss curve is, and when it reached a target.

Curve noise. The note says a mini-batch loss curve "will be less smooth ... but it should still
trend downward". We measure the unsmoothness as the standard deviation of the residuals of log(loss)
around its centered moving average over ``window`` steps:

    noise = std_t( log L_t - mean_{|s - t| <= k} log L_s ),   window = 2k + 1.

On the log scale a residual is a relative deviation (0.1 means the step loss sits ~10% off its
local trend), so curves at different loss levels compare fairly. Full-batch descent on a smooth loss
scores near zero; SGD on single samples scores highest.

Target. ``TargetTracker`` evaluates a validation metric at geometrically spaced steps (each about
2% after the last, plus every epoch end), so "steps to target" has the same relative resolution
whether a run takes 20 steps or 20000; within the last gap the step is interpolated linearly
between the evaluation that missed and the one that reached (the metric taken as linear in the
step over those few steps). Steps, epochs, samples and seconds to target are then fractional:
resolved to well under 2%, and to the step where evaluations are one step apart.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
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
    """When a run first reached its target: steps, epochs, seconds and samples, interpolated
    between the evaluation that missed and the one that reached (fractional)."""

    steps: float
    epochs: float
    seconds: float
    samples: float


class TargetTracker(Callback):
    """Records when each target is first reached; optionally stops training once all are.
    ``value_at_end`` says whether it held.

    The metric is computed on ``data`` (the validation set as ``model.prepare`` returns it, so
    it is checked once, not at every evaluation), in evaluation mode, at steps 1, 2, ..., then
    each about ``growth`` times the last, and at every epoch end. ``target`` is one Target or
    several (a sweep's); ``reached`` is the first one's Reached, ``reached_all`` every one's.
    With ``keep_states``, the model's state (``model.state()``) where each target was reached is
    kept in ``states``, for measurements there (the noise scale at the target).
    """

    def __init__(
        self,
        target: Target | Sequence[Target],
        data: tuple[np.ndarray, np.ndarray],
        *,
        growth: float = 1.02,
        stop: bool = False,
        keep_states: bool = False,
    ) -> None:
        self.targets = [target] if isinstance(target, Target) else list(target)
        if not self.targets:
            raise ValueError("TargetTracker needs at least one target.")
        self.target = self.targets[0]
        self.data = data
        self.growth = check_float("growth", growth, minimum=1.0, inclusive=False)
        self.stop = bool(stop)
        self.keep_states = bool(keep_states)
        self.reached_all: list[Reached | None] = [None] * len(self.targets)
        self.states: list[dict | None] = [None] * len(self.targets)
        self._next = 1
        self._last: tuple[int, float, float, int, dict[str, float]] | None = None
        self.evaluations = 0

    @property
    def reached(self) -> Reached | None:
        return self.reached_all[0]

    def _metrics(self, trainer) -> dict[str, float]:
        start = time.perf_counter()
        metrics = trainer.model.evaluate_prepared(*self.data)
        trainer.exclude(time.perf_counter() - start)
        self.evaluations += 1
        for target in self.targets:
            if target.metric.removeprefix("val_") not in metrics:
                raise KeyError(
                    f"target metric {target.metric!r} is not one of "
                    f"{sorted('val_' + k for k in metrics)}."
                )
        return metrics

    def _check(self, trainer, after_reached: bool = False) -> None:
        """Evaluates now, until every target is reached (and, ``after_reached``, beyond: an
        epoch's end tells whether a target held)."""
        done = all(r is not None for r in self.reached_all)
        if (done and not after_reached) or self._last_step == trainer.step:
            return
        metrics = self._metrics(trainer)
        now = (trainer.step, trainer.elapsed(), trainer.samples_seen, metrics)
        for i, target in enumerate(self.targets):
            value = metrics[target.metric.removeprefix("val_")]
            if self.reached_all[i] is None and target.reached(value):
                self.reached_all[i] = self._interpolated(trainer, target, now)
                if self.keep_states:
                    self.states[i] = trainer.model.state()
        self._last = now
        if self.stop and not done and all(r is not None for r in self.reached_all):
            trainer.stop(f"target reached: {self.targets[-1]} at step {trainer.step}")

    def value_at_end(self, i: int = 0) -> float | None:
        """Target i's metric at the last evaluation (the run's end, or where it stopped): a
        target first reached may not have held."""
        if self._last is None:
            return None
        return self._last[3][self.targets[i].metric.removeprefix("val_")]

    @property
    def _last_step(self) -> int | None:
        return None if self._last is None else self._last[0]

    def _interpolated(self, trainer, target: Target, now) -> Reached:
        """Reached between the previous evaluation (a miss) and this one, where the metric,
        taken as linear in the step, crosses the target's value."""
        step, seconds, samples, metrics = now
        last = self._last
        per_epoch = trainer.batches_per_epoch
        if last is None or step - last[0] <= 1:
            return Reached(float(step), step / per_epoch, seconds, samples)
        name = target.metric.removeprefix("val_")
        before, after = last[3][name], metrics[name]
        fraction = 1.0
        if after != before:
            fraction = min(1.0, max(0.0, (target.value - before) / (after - before)))

        def at(i: int, value: float) -> float:
            return last[i] + fraction * (value - last[i])

        steps = at(0, step)
        return Reached(steps, steps / per_epoch, at(1, seconds), at(2, samples))

    def on_step_end(self, trainer, loss):
        if trainer.step >= self._next:
            self._next = max(trainer.step + 1, math.ceil(trainer.step * self.growth))
            self._check(trainer)

    def on_epoch_end(self, trainer, epoch, logs):
        self._check(trainer, after_reached=True)
