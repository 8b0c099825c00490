"""The batch size that trains fastest, chosen while training: ``fit(..., batch_size="adaptive")``.

Goodput (Pollux, OSDI 2021; ``batchsize.goodput``) is progress per second: the samples a step
on b rows processes per second (throughput) times what each is worth against a sample at the
starting batch b0 (statistical efficiency, from the running noise scale). The run measures both
as it goes, and every ``decide_every`` steps moves to the candidate batch with the most predicted
goodput, if it promises ``switch_gain`` (5%) more than the current one:

- step seconds as ``a + c b``, fitted to the steps the run has timed (each size's first few
  left out: they run slow), seeded at the start by a few bare steps at b0 and 4 b0 on a copy
  of the model (timed as training time);
- the noise scale from each sample's own gradient norm every 8th step (``noise.ExampleNoise``,
  a fifth of a step each time), for Adam and RMSprop of the gradient divided as they divide it
  (``Optimizer.preconditioner``); where a layer couples samples (BatchNorm), from two halves of
  every 16th step's batch (``noise.StepNoise``); both at every step until the ``warmup``
  measurements the first decision waits for are in;
- the learning rate follows the batch by AdaScale (Johnson et al. 2020): the lr given is the one
  for b0, and a step at b takes ``gain(b)`` times it (SGD), or ``sqrt(gain(b))`` (Adam, RMSprop);
  by default the gain moves with the batch only (a move multiplies it by gain(new) / gain(old)
  at the noise scale of the move) and is held while the batch is, where AdaScale as published
  ("adascale") re-reads it at every measurement, which raised the rate toward a loss floor; an
  lr schedule reads the sum of the gains (scale-invariant steps, ``Optimizer.progress``), so it
  means the same progress whatever the batch does. The rules of the doubling policy
  ("constant", "linear", "sqrt" in b / b0) stay available.

Every change is recorded (step, sizes, predicted goodput of each, the reason) in
``history.meta["batch_schedule"]``, and the step-time model, gains and lr factor in checkpoints:
a resumed run replays the recorded changes instead of recomputing them from timings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from minigd._validation import check_choice, check_float, check_int, check_state
from minigd.batchsize.goodput import SWITCH_GAIN, StepTimes, candidates, choose, gain
from minigd.noise import StepNoise
from minigd.noise.per_example import ExampleNoise
from minigd.training.adaptive import AdaptiveBatchSize

LR_RULES = ("adascale-held", "adascale", "constant", "linear", "sqrt")
ADASCALE = ("adascale-held", "adascale")  # the rules that count progress in gains
MAX_GROWTH = 4  # a move goes at most this many times up at once; the seed pass times b0 and it
SEED_STEPS = 3  # bare steps per seed size; the fastest after the first counts
LOSS_RISE = 0.25  # after a move up, a loss this fraction above its lowest undoes the move,
RISES_TO_UNDO = 2  # when that many decisions in a row see it (one was noise on mnist-5k)
SETTLE = 8  # the steps at a new size (and at the start) that are not timed: they run slow


class GoodputBatchSize(AdaptiveBatchSize):
    r"""Moves the batch to the size with the most goodput, and the learning rate with it.

    Goodput (Pollux, OSDI 2021) is throughput times statistical efficiency: with step seconds
    :math:`t(b) = a + c\,b` fitted to the run's own steps and the running noise scale
    :math:`B_\text{noise}`,

    .. math::

        \text{goodput}(b) = \frac{b}{t(b)} \cdot \frac{B_\text{noise} + b_0}{B_\text{noise} + b},

    maximised over candidates from :math:`b_0` to the memory limit. The learning rate follows by
    AdaScale's gain for :math:`s = b / b_0`, with :math:`\Sigma` the per-sample covariance,

    .. math::

        r = \frac{\operatorname{tr}\Sigma + |G|^2}{\operatorname{tr}\Sigma / s + |G|^2},
        \qquad \text{lr} = r \cdot \text{lr}(b_0),

    its square root for Adam and RMSprop, and a schedule reads the sum of the gains. By default
    :math:`r` is taken at each move, as the ratio of its values at the new and the old batch
    for the noise scale then, and held between moves.

    Args:
        start: b0, the batch the run starts at and the learning rate is given for (default
            32, the advisor's smallest power of two); the smallest candidate.
        max_batch_size: the largest candidate (default: the memory model's limit).
        lr_rule: "adascale-held" (default): a move multiplies the lr by AdaScale's gain at the
            new size over its gain at the old one, at the noise scale of the move, and the lr
            is held while the batch is; "adascale": the gain re-read at every measurement
            (Johnson et al.); or "constant", "linear", "sqrt" in b / b0.
        decide_every: steps between decisions.
        warmup: noise measurements before the first decision.
        every, beta: measure the noise every this many steps, averaged with this decay.
        switch_gain: the predicted goodput ratio a move must promise.
        step_time: a function of the batch size giving a step's seconds, used instead of
            timing the steps (a machine model: simulations and tests).
    """

    def __init__(
        self,
        start: int | None = None,
        max_batch_size: int | None = None,
        *,
        lr_rule: str = "adascale-held",
        decide_every: int = 20,
        warmup: int = 5,
        every: int = 16,
        beta: float = 0.8,
        switch_gain: float = SWITCH_GAIN,
        step_time: Callable[[int], float] | None = None,
    ) -> None:
        super().__init__(start, max_batch_size, warmup=warmup, every=every, beta=beta)
        self.lr_rule = check_choice("lr_rule", lr_rule, LR_RULES)
        self.decide_every = check_int("decide_every", decide_every, minimum=1)
        self.switch_gain = check_float("switch_gain", switch_gain, minimum=1.0)
        self.step_time = step_time
        self.times = StepTimes()
        self.gain = 1.0  # the gain of the batch in use at the noise scale last measured
        self.lr_factor = 1.0  # what this callback multiplied the optimizer's lr_scale by
        self.held: tuple[int, float] | None = None  # (batch, its gain) since the last move
        self._last: float | None = None  # elapsed() at the end of the previous timed step
        self._settling = SETTLE  # steps left before the current size's steps are timed
        self._seen = 0  # samples seen at the end of the previous step
        self._lr_for: tuple[int, float] | None = None  # (batch, noise) the lr factor is for
        self._candidates: list[int] | None = None
        self.ceiling: int | None = None  # no batch above this: a move up made the loss rise
        self._watch: dict[str, float] | None = None  # since a move up: its origin, least loss

    def noise_path(self, model, optimizer, population: int, seed: int) -> StepNoise:
        """Per-sample gradient norms where the model allows (``noise.ExampleNoise``), else two
        halves; for Adam and RMSprop, of the gradient as they scale it
        (``Optimizer.preconditioner``). Raw per-sample norms cost a fifth of a step at B=32 and
        are taken every ``every // 2`` steps, averaged over ~20 measurements; divided, a
        measured pass costs 2.2x an unmeasured one (784-128-10 at B=32: 0.23 ms against 0.10,
        with the compiled divisor of the ``fast`` extra; 0.33 ms in NumPy, where the divisor's
        1 / d^2 over every parameter takes 0.14), so every ``every`` steps, averaged over ~10:
        the same 160 steps."""
        every, beta = self.noise_settings["every"], self.noise_settings["beta"]
        precondition = optimizer.preconditioner if optimizer.adaptive else None
        if ExampleNoise.supports(model):
            every, beta = (every, 0.9) if precondition else (max(1, every // 2), 0.95)
            return ExampleNoise(every, beta=beta, population=population,
                                precondition=precondition, warm=self.warmup)  # fmt: skip
        return StepNoise(every, beta=beta, seed=seed, population=population,
                         precondition=precondition, warm=self.warmup)  # fmt: skip

    def setup(self, trainer) -> None:
        super().setup(trainer)
        if self.lr_rule in ADASCALE and trainer.optimizer.progress is None:
            trainer.optimizer.progress = 0.0

    @property
    def b0(self) -> int:
        return self.start_size

    # -- the hooks ----------------------------------------------------------------------
    def on_train_begin(self, trainer) -> None:
        super().on_train_begin(trainer)
        if self.times.empty and self.max_batch_size > self.b0:  # else nothing to choose
            self._seed(trainer)
        self._last, self._seen, self._settling = None, trainer.samples_seen, SETTLE

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        super().on_epoch_begin(trainer, epoch)
        self._last = None  # the epoch's first step also pays for its shuffle

    def on_step_end(self, trainer, loss: float) -> None:
        self._time_step(trainer)
        if self.lr_rule in ADASCALE:
            trainer.optimizer.progress += self.gain
        decision_step = trainer.step % self.decide_every == 0
        if decision_step and not self._undo_if_rising(trainer) and self._due(trainer):
            self._decide(trainer)
        self._follow_lr(trainer)

    # -- measuring ----------------------------------------------------------------------
    def _time_step(self, trainer) -> None:
        """Times the step just taken; an epoch's short last batch is not a point of the model
        (its size is not a candidate, and one-off sizes would pull the line about), nor are
        the first ``SETTLE`` steps at a size: they run slow (least squares at b0 = 32: 169,
        140, 120, 100, 77 us, then 40-47 from the tenth; at 512, 188 falling to 97 by the
        eleventh), and their median made a step at b0 cost 85 us for the first decision, whose
        line then had 83 us per step and 0.05 us per sample where the loop's steps give 38 and
        0.12: a move to 4x b0 where 256 was the best size."""
        seen = trainer.samples_seen
        b, self._seen = seen - self._seen, seen
        if self.step_time is not None:
            self.times.observe(b, self.step_time(b))
            return
        now = trainer.elapsed()
        if self._settling:
            self._settling -= 1
        elif self._last is not None and b == trainer.batch_size:
            self.times.observe(b, now - self._last)
        self._last = now

    def _seed(self, trainer) -> None:
        """Times a few bare steps at b0 and ``MAX_GROWTH`` b0 (the largest first move) on a copy
        of the model: nothing is trained, and a data-parallel model's synced BatchNorm stays
        out of it. A bare step is its batch's gather, forward and backward: without the gather
        the cost per sample came out a quarter low. The update is left out (its cost does not
        depend on b; ``StepTimes`` adds what the loop's own b0 steps cost beyond the bare one),
        and with it the optimizer's copy (784-128-10 at 32 and 128: 2.28 ms a pass against 2.41,
        medians of 40 interleaved). The sizes alternate, and each counts its fastest step after
        the first, so a machine that warms up or is briefly busy tilts neither."""
        sizes = sorted({self.b0, min(MAX_GROWTH * self.b0, self.max_batch_size)})
        if self.step_time is not None:
            for b in sizes:
                self.times.seed(b, self.step_time(b))
            return
        model = trainer.model.copy().train()
        rng = np.random.default_rng((trainer.batches.seed, 0x600D))
        pools = {b: _rows(trainer, rng, b) for b in sizes}
        seconds: dict[int, list[float]] = {b: [] for b in sizes}
        for _ in range(SEED_STEPS):
            for b, (xb, yb) in pools.items():
                order = rng.permutation(b)
                start = time.perf_counter()
                model.loss_and_grad(np.take(xb, order, axis=0), _take(yb, order))
                seconds[b].append(time.perf_counter() - start)
        for b in sizes:
            self.times.seed(b, min(seconds[b][1:]))

    # -- deciding -----------------------------------------------------------------------
    def _due(self, trainer) -> bool:
        noise = trainer.gradient.noise
        return (
            noise.steps >= self.warmup
            and math.isfinite(noise.value)
            and self.max_batch_size > self.b0
        )

    def _decide(self, trainer) -> None:
        """Moves to the candidate with the most predicted goodput, if it promises enough, and
        at most ``MAX_GROWTH`` times the current batch at once (the step-time model is measured
        before it is trusted further; AdaScale's lr grows with the batch)."""
        current, gradient = trainer.batch_size, trainer.gradient
        move = self._proposal(trainer) if gradient.rank == 0 else None
        if gradient.ranks > 1:  # timings differ between ranks: rank 0's decide
            move = gradient.comm.bcast(move, root=0)
        if move is None:
            return
        size, reason, goodput = move
        before = self._recent_loss(trainer)
        self._move(trainer, size, reason, goodput=goodput)
        # a larger batch takes a larger lr: from here on, watch the loss
        self._watch = {"from": current, "best": before} if size > current else None

    def _proposal(self, trainer) -> tuple[int, str, tuple[float, float]] | None:
        """(the batch to move to, why, the predicted goodput of the current and of it), or None
        when no candidate promises ``switch_gain`` more than the current batch."""
        current, b_noise = trainer.batch_size, trainer.gradient.noise.value
        allowed = [b for b in self._sizes(current) if b <= MAX_GROWTH * current]
        choice = choose(allowed, self.times, b_noise, self.b0)
        if choice.batch_size == current or choice.gain_over(current) <= self.switch_gain:
            return None
        a, c = choice.step_time
        old, new = choice.goodput[current], choice.goodput[choice.batch_size]
        reason = (
            f"predicted goodput {new:.4g} against {old:.4g} b0-samples/s "
            f"(+{100 * (new / old - 1):.0f}%): steps of {1e3 * a:.3g} ms + "
            f"{1e6 * c:.3g} us/sample, noise scale {b_noise:.0f}"
        )
        return choice.batch_size, reason, (float(old), float(new))

    def _sizes(self, current: int) -> list[int]:
        if self._candidates is None:
            self._candidates = candidates(self.b0, self.max_batch_size)
        ceiling = self.max_batch_size if self.ceiling is None else self.ceiling
        return sorted({b for b in self._candidates if b <= ceiling} | {current})

    def _recent_loss(self, trainer) -> float:
        """The mean loss of the last ``decide_every`` steps."""
        return float(np.mean(trainer.history.steps["loss"][-self.decide_every :]))

    def _undo_if_rising(self, trainer) -> bool:
        """After a move up, the loss is watched at every decision: once the recent mean rises
        ``LOSS_RISE`` above the lowest seen since the move (or the mean before it) at
        ``RISES_TO_UNDO`` decisions in a row (or is not finite), the larger
        batch's lr is past what the problem takes (AdaScale's gain assumes a stable step): back
        to the size before, and never again above it in this run."""
        if self._watch is None:
            return False
        recent, best = self._recent_loss(trainer), self._watch["best"]
        if math.isfinite(recent) and recent <= (1 + LOSS_RISE) * best:
            self._watch["best"], self._watch["strikes"] = min(best, recent), 0
            return False
        self._watch["strikes"] = self._watch.get("strikes", 0) + 1
        if math.isfinite(recent) and self._watch["strikes"] < RISES_TO_UNDO:
            return False  # one window above is within the noise of a mean of 20 step losses
        back, self._watch = self._watch["from"], None
        self.ceiling = back
        reason = (
            f"the loss rose from {best:.4g} to {recent:.4g} at batch {trainer.batch_size}: "
            f"back to {back}, and no larger in this run"
        )
        self._move(trainer, back, reason)
        return True

    def _move(self, trainer, size: int, reason: str, goodput=(math.nan, math.nan)) -> None:
        """Trains on batches of ``size`` from the next step on, and records the change."""
        current, b_noise = trainer.batch_size, trainer.gradient.noise.value
        self.held = (size, self._held_gain(size, b_noise))
        trainer.regroup(size)
        self._last, self._settling = None, SETTLE
        self._follow_lr(trainer)
        self.schedule.append(
            {
                "step": trainer.step,  # steps taken at the old size; the next is the new size's
                "epoch": trainer.epoch,
                "at_batch": trainer.next_batch,
                "from": current,
                "batch_size": size,
                "b_simple": b_noise,
                "lr": trainer.optimizer.lr,
                "goodput_from": goodput[0],
                "goodput_to": goodput[1],
                "reason": reason,
            }
        )

    def _follow_lr(self, trainer) -> None:
        """Sets the learning rate's factor for the next step's batch, by the lr rule (anew only
        when its size, the noise scale or the held gain changed). The size is the step's own:
        an epoch's short last batch (4 rows after 74 of 54 on 4000) takes its own gain, below
        1, not the full batch's: at the full batch's rate (1.56x b0's, on an eighth of b0's
        rows) it kicked the model at every epoch's end, and mnist-5k's validation accuracy
        there read 0.71-0.76 between epochs at 0.89-0.92."""
        b, noise = _next_size(trainer), trainer.gradient.noise.value
        if (b, noise, self.held) == self._lr_for:
            return
        self._lr_for = (b, noise, self.held)
        s = b / self.b0
        if self.lr_rule == "adascale-held":
            self.gain = self._held_gain(b, noise)
        elif self.lr_rule == "adascale":
            self.gain = 1.0 if s == 1 or not math.isfinite(noise) else gain(b, self.b0, noise)
        if self.lr_rule in ADASCALE:
            factor = math.sqrt(self.gain) if trainer.optimizer.adaptive else self.gain
        else:
            factor = {"constant": 1.0, "linear": s, "sqrt": math.sqrt(s)}[self.lr_rule]
        if factor != self.lr_factor:
            trainer.optimizer.scale_lr(factor / self.lr_factor)
            self.lr_factor = factor

    def _held_gain(self, b: int, noise: float) -> float:
        """The gain of a step on ``b`` rows under "adascale-held": the held batch's gain, times
        AdaScale's gain at b over its gain at the held batch, at the noise scale now (the ratio
        does not depend on b0). Re-read at every measurement, as published, the gain climbs
        while the batch stays and the noise scale grows toward a loss floor, and brings back
        the floor of b0 at its rate: on least squares from (32, 0.003), six epochs ended at a
        validation loss of 1.018 re-read and 1.008 held (medians of 8 seeds), and 5 of 94 runs
        never reached a target 1% above the floor re-read, none of the same 94 held."""
        batch, held = self.held or (self.b0, 1.0)  # b0's gain is 1 until the first move
        if b == batch or not math.isfinite(noise):
            return held
        return held * gain(b, self.b0, noise) / gain(batch, self.b0, noise)

    # -- checkpoints --------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            **super().state(),
            "times": self.times.state(),
            "gain": self.gain,
            "lr_factor": self.lr_factor,
            "held": None if self.held is None else list(self.held),
            "ceiling": self.ceiling,
            "watch": self._watch,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """A checkpoint from before the held gain ("adascale" was the only AdaScale, and the
        default) goes on re-reading the gain, as it was trained."""
        fields = {"times": "dict", "gain": "number", "lr_factor": "number"}
        check_state(
            "GoodputBatchSize", state, fields | {"ceiling": "int|none", "watch": "dict|none"}
        )
        super().load_state(state)
        self.times.load_state(state["times"])
        self.gain, self.lr_factor = float(state["gain"]), float(state["lr_factor"])
        self.ceiling, self._watch = state["ceiling"], state["watch"]
        if state.get("held") is not None:
            batch, held = state["held"]
            self.held = (int(batch), float(held))
        elif self.lr_rule == "adascale-held":
            self.lr_rule = "adascale"

    def __repr__(self) -> str:
        return (
            f"GoodputBatchSize(start={self.start}, max_batch_size={self.max_batch_size}, "
            f"lr_rule={self.lr_rule!r}, decide_every={self.decide_every})"
        )


def _rows(trainer, rng, b: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``b`` training rows drawn at random (a repeat does not change a step's time; drawing
    without repeats permuted the whole set: 0.15-0.66 ms of a 3-5 ms seed pass on mnist-5k),
    as arrays the seed pass owns."""
    xb, yb = trainer.batches.take(np.sort(rng.integers(0, trainer.n_samples, b)))
    return np.array(xb), None if yb is None else np.array(yb)


def _take(targets: np.ndarray | None, order: np.ndarray) -> np.ndarray | None:
    return None if targets is None else np.take(targets, order, axis=0)


def _next_size(trainer) -> int:
    """The rows of the step the trainer takes next: the next batch of this epoch, or the first
    of the next one (at the size the epoch ended in)."""
    if trainer.next_batch < trainer.batches_per_epoch:
        return trainer.batches.size_of(trainer.next_batch)
    return trainer.batch_size
