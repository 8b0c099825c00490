"""Learning-rate schedules: functions of the step that an optimizer's lr follows.

A schedule is called with t, the number of optimizer steps already taken (0 for the first step), and
returns the base learning rate for step t. Pass one as ``lr`` to any optimizer (or install it with
the ``LearningRateSchedule`` callback); the optimizer multiplies it by its ``lr_scale``, which only
plateau rules change. Each is a small object with an honest ``repr`` so that logs and reports say
what ran.
"""

from __future__ import annotations

import math

from minigd._validation import check_float, check_int


class Schedule:
    def __call__(self, t: int) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """lr(t) = lr."""

    def __init__(self, lr: float) -> None:
        self.lr = check_float("lr", lr, minimum=0.0)

    def __call__(self, t):
        return self.lr


class StepDecay(Schedule):
    """lr(t) = lr * gamma ** floor(t / step_size) (torch's StepLR, counted in steps)."""

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1) -> None:
        self.lr = check_float("lr", lr, minimum=0.0)
        self.step_size = check_int("step_size", step_size, minimum=1)
        self.gamma = check_float("gamma", gamma, minimum=0.0)

    def __call__(self, t):
        return self.lr * self.gamma ** (t // self.step_size)


class Exponential(Schedule):
    """lr(t) = lr * gamma ** t."""

    def __init__(self, lr: float, gamma: float) -> None:
        self.lr = check_float("lr", lr, minimum=0.0)
        self.gamma = check_float("gamma", gamma, minimum=0.0)

    def __call__(self, t):
        return self.lr * self.gamma**t


class LinearWarmup(Schedule):
    """lr(t) = lr * (t + 1) / warmup_steps for t < warmup_steps, then lr.

    Goyal et al. 2017 ramp the rate up over the first epochs when a large batch calls for a large
    (linearly scaled) learning rate, which early training cannot take at once.
    """

    def __init__(self, lr: float, warmup_steps: int) -> None:
        self.lr = check_float("lr", lr, minimum=0.0)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)

    def __call__(self, t):
        if t < self.warmup_steps:
            return self.lr * (t + 1) / self.warmup_steps
        return self.lr


class PerEpoch(Schedule):
    """lr(t) = schedule(t // steps_per_epoch): a schedule written in epochs, followed per step.

    Every epoch of a MiniBatches has the same number of steps, so the epoch of step t is
    t // steps_per_epoch, in a resumed run too.
    """

    def __init__(self, schedule, steps_per_epoch: int) -> None:
        self.schedule = schedule
        self.steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, minimum=1)

    def __call__(self, t):
        return self.schedule(t // self.steps_per_epoch)


class Cosine(Schedule):
    """Cosine decay from lr to min_lr over total_steps, after an optional linear warmup.

    1. t < warmup_steps: lr * (t + 1) / warmup_steps.
    2. t < total_steps: min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2, p the fraction of the
       decay done (Loshchilov and Hutter 2017, without restarts).
    3. afterwards: min_lr.
    """

    def __init__(
        self, lr: float, total_steps: int, *, min_lr: float = 0.0, warmup_steps: int = 0
    ) -> None:
        self.lr = check_float("lr", lr, minimum=0.0)
        self.total_steps = check_int("total_steps", total_steps, minimum=1)
        self.min_lr = check_float("min_lr", min_lr, minimum=0.0)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)

    def __call__(self, t):
        if t < self.warmup_steps:
            return self.lr * (t + 1) / self.warmup_steps
        if t >= self.total_steps:
            return self.min_lr
        span = max(1, self.total_steps - self.warmup_steps)
        progress = (t - self.warmup_steps) / span
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
