"""A batch size that follows the gradient noise: ``fit(..., batch_size="adaptive")``.

McCandlish et al. 2018 find the batch size that spends steps and samples best to be about the
noise scale B_simple, which grows as the loss falls (the gradient shrinks faster than its noise).
So training starts at a small batch and, each time the running B_simple (``StepNoise``) has grown
past the next power of two, the batch grows to the largest power of two below B_simple, up to the
largest batch the memory model fits. Smith et al. 2018 ("Don't Decay the Learning Rate, Increase
the Batch Size") show that growing the batch at a fixed learning rate anneals the noise of SGD as
decaying the rate does: the default rule keeps the rate; "linear" and "sqrt" scale it with the
batch instead (the noise then stays, the steps get longer).

Every change is recorded (step, epoch, size, the B_simple that caused it, the learning rate) in
``history.meta["batch_schedule"]`` and in checkpoints, so a resumed run regroups its epoch exactly
as the interrupted one did.
"""

from __future__ import annotations

import math
from typing import Any

from minigd._validation import check_choice, check_int, check_state
from minigd.batchsize.memory import estimate_memory, memory_budget
from minigd.noise import StepNoise
from minigd.rules import POWERS
from minigd.training.callbacks import Callback

LR_RULES = ("constant", "linear", "sqrt")
START = POWERS[0]  # the advisor's smallest power of two (rule 2)
SCHEDULE_FIELDS = {"epoch": "int", "at_batch": "int", "batch_size": "int"}  # what a replay reads


def largest_fitting_batch(model, optimizer, m: int, budget: int | None = None) -> int:
    """The largest power of two <= m whose train step fits ``budget`` bytes (default: half the
    free memory), by the memory model (``minigd.batchsize.estimate_memory``)."""
    budget = memory_budget() if budget is None else budget
    b = 1 << (m.bit_length() - 1)
    while b > 1 and estimate_memory(model, b, optimizer=optimizer, n_samples=m).total > budget:
        b //= 2
    return b


class AdaptiveBatchSize(Callback):
    """Grows the batch in powers of two as the measured noise scale grows past it.

    Args:
        start: the first batch size (default 32, the advisor's smallest power of two; at most
            m); a run built with another size starts from that one when ``start`` is None.
        max_batch_size: the largest batch to grow to; default the largest power of two the
            memory model fits in half the free memory (kept in checkpoints, so a resume on a
            busier machine takes the same path).
        lr_rule: "constant" (Smith et al.: the growing batch replaces a decaying rate),
            "linear" or "sqrt" (the rate scales with the batch).
        warmup: measurements of B_simple before the first change (the running average is too
            noisy to act on before).
        every: measure B_simple every this many steps (each measurement costs half a step).
        beta: the running average's decay per measurement.

    The noise scale is measured by the trainer's gradient path (``noise.StepNoise``, with
    ``every`` and ``beta``), which ``make_trainer`` builds when it is handed this callback.
    """

    def __init__(
        self,
        start: int | None = None,
        max_batch_size: int | None = None,
        *,
        lr_rule: str = "constant",
        warmup: int = 20,
        every: int = 1,
        beta: float = 0.95,
    ) -> None:
        self.max_batch_size = (
            None
            if max_batch_size is None
            else check_int("max_batch_size", max_batch_size, minimum=1)
        )
        self.start = None if start is None else check_int("start", start, minimum=1)
        self.lr_rule = check_choice("lr_rule", lr_rule, LR_RULES)
        self.warmup = check_int("warmup", warmup, minimum=1)
        self.noise_settings = {"every": every, "beta": beta}
        self.schedule: list[dict[str, Any]] = []
        self.start_size: int | None = None  # the batch size the run started from
        self.trainer = None

    def noise_path(self, model, optimizer, population: int, seed: int) -> StepNoise:
        """The gradient path that measures the noise scale this policy follows."""
        return StepNoise(seed=seed, population=population, **self.noise_settings)

    def setup(self, trainer) -> None:
        if trainer.gradient.noise is None:
            raise ValueError(
                "an adaptive batch size follows the noise scale measured as it trains: build "
                "the trainer with make_trainer(..., batch_size='adaptive'), or pass a "
                "noise.StepNoise as its gradient."
            )
        self.trainer = trainer
        batches = trainer.batches
        if trainer.model.has_batchnorm and batches.last_batch == "keep":
            raise ValueError(
                "an adaptive batch size with BatchNorm needs last_batch='merge' (or 'drop'): "
                "regrouping an epoch can leave a last batch of one sample, which BatchNorm "
                "cannot train on."
            )
        start = batches.batch_size if self.start is None else min(self.start, batches.n_samples)
        batches.regroup(start, 0)
        self.start_size = start
        if self.max_batch_size is None:
            m = trainer.n_samples
            self.max_batch_size = largest_fitting_batch(trainer.model, trainer.optimizer, m)
        self.max_batch_size = min(self.max_batch_size, trainer.n_samples)
        trainer.history.meta["batch_schedule"] = self.schedule

    def on_train_begin(self, trainer) -> None:
        trainer.history.meta["batch_schedule"] = self.schedule  # a restored history's is older

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        """An epoch starts in the size the last one grew to (it may have grown mid-epoch)."""
        if trainer.next_batch == 0 and not trainer.batches.regular:
            trainer.regroup(trainer.batch_size)

    def on_step_end(self, trainer, loss: float) -> None:
        noise = trainer.gradient.noise
        b_simple, current = noise.value, trainer.batch_size
        if noise.steps < self.warmup or not math.isfinite(b_simple):
            return
        if b_simple < 2 * current or current >= self.max_batch_size:
            return
        size = min(1 << (int(b_simple).bit_length() - 1), self.max_batch_size)
        factor = size / current
        if self.lr_rule != "constant":
            trainer.optimizer.scale_lr(factor if self.lr_rule == "linear" else math.sqrt(factor))
        trainer.regroup(size)
        self.schedule.append(
            {
                "step": trainer.step,  # steps taken at the old size; the next is the new size's
                "epoch": trainer.epoch,
                "at_batch": trainer.next_batch,
                "from": current,
                "batch_size": size,
                "b_simple": b_simple,
                "lr": trainer.optimizer.lr,
            }
        )

    def state(self) -> dict[str, Any]:
        return {"max_batch_size": self.max_batch_size, "schedule": self.schedule}

    def load_state(self, state: dict[str, Any]) -> None:
        """Replays the schedule on the batches, so the epoch the run stopped in is cut as it
        was: each change from its batch on, and each later epoch from its start."""
        check_state(type(self).__name__, state, {"max_batch_size": "int", "schedule": "list"})
        for change in state["schedule"]:
            check_state(f"{type(self).__name__} schedule", change, SCHEDULE_FIELDS)
        self.max_batch_size = int(state["max_batch_size"])
        self.schedule[:] = [dict(change) for change in state["schedule"]]
        batches, epoch = self.trainer.batches, 0
        batches.regroup(self.start_size, 0)
        for change in self.schedule:
            if change["epoch"] != epoch:
                batches.regroup(batches.batch_size, 0)
                epoch = change["epoch"]
            batches.regroup(change["batch_size"], change["at_batch"])
        if self.trainer.position.epoch != epoch:
            batches.regroup(batches.batch_size, 0)

    def __repr__(self) -> str:
        return f"AdaptiveBatchSize(max_batch_size={self.max_batch_size}, lr_rule={self.lr_rule!r})"
