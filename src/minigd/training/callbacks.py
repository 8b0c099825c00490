"""Callbacks: every side effect of training lives here, so the loop reads like the algorithm.

A callback receives the Trainer at fixed points (train begin/end, epoch begin/end, after each step)
and may read anything from it (``model``, ``optimizer``, ``history``, ``epoch``, ``step``). It stops
training by calling ``trainer.stop(reason, outcome)``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from minigd._validation import check_choice, check_float, check_int, check_state, message
from minigd.nn.losses import higher_is_better
from minigd.optim.schedules import PerEpoch
from minigd.training.checkpoint import STEPS_FOLDER, checkpoint_name, list_checkpoints


class Callback:
    """Base class: override the hooks you need. ``state``/``load_state`` make it resumable.

    Every hook receives the Trainer first. What a callback may read from it: ``model``,
    ``optimizer`` (``optimizer.lr`` is the learning rate of the last step), ``history``,
    ``batches``, ``epoch``, ``step`` (steps taken), ``next_batch``, ``samples_seen``,
    ``elapsed()`` (training seconds), ``epochs`` (where training stops) and ``interrupted``.
    """

    def setup(self, trainer) -> None:
        """Once, when the Trainer is built and before a checkpoint is restored: the place to
        configure the trainer's parts (``LearningRateSchedule`` gives the optimizer its
        schedule here, so a resume can check it against the checkpoint's)."""

    def on_train_begin(self, trainer) -> None:
        """Before the first step of this ``run()`` (after a resume, its position is restored)."""

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        """Before the first batch of ``epoch`` (0-based) that this run trains; in a resumed run
        the epoch may start at ``trainer.next_batch`` > 0."""

    def on_step_end(self, trainer, loss: float) -> None:
        """After each optimizer step; ``loss`` is the mean loss of the batch just trained on
        (before the step), ``trainer.step`` already counts this step."""

    def on_epoch_end(self, trainer, epoch: int, logs: dict[str, Any]) -> None:
        """After the last batch of ``epoch``. ``logs`` is the record History keeps for it:
        ``epoch``, ``loss`` (the sample-weighted mean of the epoch's step losses), ``steps``,
        ``samples_seen``, ``seconds`` (the epoch's), ``elapsed``, ``samples_per_second``, ``lr``
        and, with validation data, ``val_loss`` and ``val_accuracy`` or ``val_r2``. A callback
        may add entries (a measurement, say); they are saved with the history."""

    def on_train_end(self, trainer) -> None:
        """After the last step, whatever ended training (``trainer.stop_reason`` says why, when
        it ended early; ``trainer.interrupted`` after Ctrl-C)."""

    def state(self) -> dict[str, Any]:
        """What a checkpoint must keep to resume this callback exactly (JSON-ready)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restores what ``state`` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# -- progress ---------------------------------------------------------------------------------
class ProgressBar(Callback):
    """A tqdm bar per epoch with the smoothed loss and samples/s, and at the end the reason
    training stopped early, if it did.

    tqdm is created with ``disable=None``, so where the output is not a terminal (a log file, CI)
    the bar stays silent and one plain line per epoch is printed instead of carriage returns.
    Without tqdm installed the plain lines are printed too.
    """

    def __init__(
        self,
        file=None,
        refresh_every: int = 20,
        *,
        label: str | None = None,
        show_total: bool = True,
    ) -> None:
        self.file = file
        self.refresh_every = check_int("refresh_every", refresh_every, minimum=1)
        self.label = label  # names the run in every line, when several runs share the output
        self.show_total = bool(show_total)  # False when the run ends by a budget, not an epoch
        self._bar = None

    def _epoch_name(self, trainer, epoch: int) -> str:
        name = f"epoch {epoch + 1}" + (f"/{trainer.epochs}" if self.show_total else "")
        return f"{self.label}: {name}" if self.label else name

    def on_epoch_begin(self, trainer, epoch):
        self._samples = 0
        self._since = 0
        self._bar = None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        bar = tqdm(
            total=trainer.batches_per_epoch,
            initial=trainer.next_batch,
            desc=self._epoch_name(trainer, epoch),
            unit="step",
            leave=True,
            disable=None,
            file=self.file or sys.stderr,
            dynamic_ncols=True,
        )
        self._bar = None if bar.disable else bar

    def on_step_end(self, trainer, loss):
        self._since += 1
        if self._bar is not None and self._since >= self.refresh_every:
            self._bar.update(self._since)
            self._since = 0
            self._bar.set_postfix_str(f"loss {trainer.history.smoothed_loss:.4f}", refresh=False)

    def on_epoch_end(self, trainer, epoch, logs):
        line = f"{self._epoch_name(trainer, epoch)}: {format_metrics(logs)}"
        if self._bar is not None:
            self._bar.update(self._since)
            self._bar.set_postfix_str(line.split(": ", 1)[1], refresh=True)
            self._bar.close()
            self._bar = None
        else:
            print(line, file=self.file or sys.stdout, flush=True)

    def on_train_end(self, trainer):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if trainer.stop_reason:  # early stopping, divergence, an interrupt: say why it ended
            who = f"{self.label}: " if self.label else ""
            print(f"minigd: {who}{trainer.stop_reason}", file=self.file or sys.stderr, flush=True)


def format_metrics(logs: dict[str, Any]) -> str:
    """An epoch's record as the progress line shows it."""
    parts = [f"loss {logs['loss']:.4f}"]
    for key in ("val_loss", "val_accuracy", "val_r2"):
        if key in logs:
            parts.append(f"{key} {logs[key]:.4f}")
    if "b_simple" in logs:  # measured from the ranks' gradients of a data-parallel run
        parts.append(f"B_simple {logs['b_simple']:.4g}")
    parts.append(f"{logs['seconds']:.2f}s")
    parts.append(f"{logs['samples_per_second']:,.0f} samples/s")
    return ", ".join(parts)


# -- stopping rules ---------------------------------------------------------------------------
class _Monitor:
    """Tracks the best value of a logged metric; "min" for losses, "max" for accuracy and R^2."""

    def __init__(self, monitor: str, mode: str, min_delta: float) -> None:
        self.monitor = monitor
        mode = check_choice("mode", mode, ("auto", "min", "max"))
        if mode == "auto":
            mode = "max" if higher_is_better(monitor) else "min"
        self.mode = mode
        self.min_delta = check_float("min_delta", min_delta, minimum=0.0)
        self.best = math.inf if mode == "min" else -math.inf

    def value(self, logs: dict[str, Any]) -> float:
        if self.monitor not in logs:
            raise KeyError(
                message(
                    f"the monitored metric of {type(self).__name__}",
                    f"one of {sorted(logs)}",
                    self.monitor,
                    "Pass validation data to monitor val_* metrics.",
                )
            )
        return float(logs[self.monitor])

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(Callback):
    """Stops when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the parameters (and BatchNorm statistics) of the best epoch are put
    back when training stops.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        restore_best: bool = True,
        mode: str = "auto",
    ) -> None:
        self._monitor = _Monitor(monitor, mode, min_delta)
        self.patience = check_int("patience", patience, minimum=0)
        self.restore_best = bool(restore_best)
        self.wait = 0
        self.best_epoch = None
        self._best_state = None

    def on_epoch_end(self, trainer, epoch, logs):
        value = self._monitor.value(logs)
        if self._monitor.improved(value):
            self._monitor.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self._best_state = trainer.model.state()
            return
        self.wait += 1
        if self.wait > self.patience:
            trainer.stop(
                f"early stopping: {self._monitor.monitor} did not improve for {self.wait} epochs "
                f"(best {self._monitor.best:.4g} at epoch {self.best_epoch + 1})"
            )

    def on_train_end(self, trainer):
        if self.restore_best and self._best_state is not None and trainer.stop_training:
            trainer.model.load_state(self._best_state)

    def state(self):
        return {"best": self._monitor.best, "wait": self.wait, "best_epoch": self.best_epoch}

    def load_state(self, state):
        check_state(
            "EarlyStopping", state, {"best": "number|none", "wait": "int", "best_epoch": "int|none"}
        )
        self._monitor.best = state["best"]
        self.wait, self.best_epoch = state["wait"], state["best_epoch"]


class DivergenceGuard(Callback):
    """Stops a run whose loss is not finite, or whose smoothed loss rose ``factor`` times above
    its start, and restores the last parameters known to be good.

    A copy of the parameters is taken every ``snapshot_every`` steps while the loss is healthy
    (one memcpy of the flat vector, cheap next to the steps in between); on divergence that copy
    is put back, so the model the run returns is finite and usable.
    """

    def __init__(self, factor: float = 20.0, snapshot_every: int = 100) -> None:
        self.factor = check_float("factor", factor, minimum=1.0, inclusive=False)
        self.snapshot_every = check_int("snapshot_every", snapshot_every, minimum=1)
        self._good = None
        self._good_step = 0
        self._start = None

    def on_train_begin(self, trainer):
        self._take(trainer)

    def _take(self, trainer):
        self._good = trainer.model.state()
        self._good_step = trainer.step

    def on_step_end(self, trainer, loss):
        history = trainer.history
        smoothed = history.smoothed_loss
        if self._start is None and math.isfinite(loss):
            self._start = max(loss, 1e-12)
        blown = self._start is not None and smoothed > self.factor * self._start
        if math.isfinite(loss) and not blown:
            if trainer.step - self._good_step >= self.snapshot_every:
                self._take(trainer)
            return
        trainer.model.load_state(self._good)
        what = (
            f"the loss became {loss}"
            if not math.isfinite(loss)
            else (
                f"the smoothed loss rose to {smoothed:.4g}, over {self.factor:g}x its start "
                f"({self._start:.4g})"
            )
        )
        lr = trainer.optimizer.lr
        batch = trainer.batch_size
        trainer.stop(
            f"training diverged at step {trainer.step} (epoch {trainer.epoch + 1}): {what}. "
            f"Restored the parameters of step {self._good_step}. Try a smaller learning rate "
            f"(lr={lr / 10:g} instead of {lr:g}) or a larger batch size "
            f"(batch_size={min(2 * batch, trainer.n_samples)} instead of {batch}), whose gradient "
            f"is less noisy.",
            "diverged",
        )

    def state(self):
        return {"start": self._start}

    def load_state(self, state):
        self._start = check_state("DivergenceGuard", state, {"start": "number|none"})["start"]


# -- learning rate ----------------------------------------------------------------------------
class LearningRateSchedule(Callback):
    """Gives the optimizer a schedule as its base learning rate when the Trainer is built.

    ``per="step"``: lr(t) = schedule(t), t the steps taken. ``per="epoch"``: lr(t) =
    schedule(epoch of step t). The optimizer owns the learning rate (``Optimizer.lr``: base times
    ``lr_scale``), so a ``ReduceLROnPlateau`` cut multiplies whatever the schedule gives, and a
    resumed run follows the same curve. Passing the schedule as the optimizer's ``lr`` does the
    same for ``per="step"``.
    """

    def __init__(self, schedule, per: str = "step") -> None:
        self.schedule = schedule
        self.per = check_choice("per", per, ("step", "epoch"))

    def setup(self, trainer):
        schedule = self.schedule
        if self.per == "epoch":
            schedule = PerEpoch(schedule, trainer.batches_per_epoch)
        trainer.optimizer.set_schedule(schedule)

    def __repr__(self) -> str:
        return f"LearningRateSchedule({self.schedule!r}, per={self.per!r})"


class ReduceLROnPlateau(Callback):
    """Multiplies the learning rate by ``factor`` when ``monitor`` has not improved for
    ``patience`` epochs, then waits ``cooldown`` epochs; never below ``min_lr``.

    The cut goes into the optimizer's ``lr_scale``, so it multiplies a schedule's values rather
    than being overwritten by them, and later cuts stack.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        mode: str = "auto",
    ) -> None:
        self._monitor = _Monitor(monitor, mode, min_delta)
        self.factor = check_float("factor", factor, minimum=0.0, maximum=1.0, inclusive=False)
        self.patience = check_int("patience", patience, minimum=0)
        self.cooldown = check_int("cooldown", cooldown, minimum=0)
        self.min_lr = check_float("min_lr", min_lr, minimum=0.0)
        self.wait = 0
        self.cooling = 0

    def on_epoch_end(self, trainer, epoch, logs):
        value = self._monitor.value(logs)
        if self.cooling:
            self.cooling -= 1
            self.wait = 0
        if self._monitor.improved(value):
            self._monitor.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait > self.patience:
            trainer.optimizer.scale_lr(self.factor, min_lr=self.min_lr)
            self.cooling, self.wait = self.cooldown, 0

    def state(self):
        return {"best": self._monitor.best, "wait": self.wait, "cooling": self.cooling}

    def load_state(self, state):
        fields = {"best": "number|none", "wait": "int", "cooling": "int"}
        check_state("ReduceLROnPlateau", state, fields)
        self._monitor.best = state["best"]
        self.wait, self.cooling = state["wait"], state["cooling"]


# -- files ------------------------------------------------------------------------------------
class Checkpoint(Callback):
    """Writes exact checkpoints to ``folder`` every ``every_steps`` steps, every
    ``every_seconds`` seconds of wall time and/or every epoch, keeping the ``keep_last`` newest.
    A Ctrl-C or SIGTERM ends training after the current step and writes one more.
    ``fit(..., resume=folder)`` continues from the newest.

    Time-based checkpoints bound the work a kill can lose inside a long epoch; they are written
    between steps, so they change when files appear, never what training computes.

    The History's older steps go to ``folder/steps/`` as the run goes (``keep_on_disk``): the
    memory it takes and each checkpoint's size stay flat however many steps the run takes.
    """

    def __init__(
        self,
        folder,
        *,
        every_steps: int | None = None,
        every_seconds: float | None = None,
        every_epoch: bool = True,
        keep_last: int = 2,
    ) -> None:
        self.folder = Path(folder)
        self.every_steps = (
            None if every_steps is None else check_int("every_steps", every_steps, minimum=1)
        )
        self.every_seconds = (
            None
            if every_seconds is None
            else check_float("every_seconds", every_seconds, minimum=0.0, inclusive=False)
        )
        self.every_epoch = bool(every_epoch)
        if self.every_steps is None and self.every_seconds is None and not self.every_epoch:
            raise ValueError("Checkpoint needs every_steps, every_seconds or every_epoch=True.")
        self.keep_last = check_int("keep_last", keep_last, minimum=1)
        self.last_path: Path | None = None
        self._last_time = time.monotonic()

    def write(self, trainer) -> Path | None:
        if getattr(trainer, "rank", 0) != 0:  # data-parallel ranks hold the same state
            return self.last_path
        path = trainer.save_checkpoint(self.folder / checkpoint_name(trainer.step))
        self.last_path = path
        self._last_time = time.monotonic()
        for stale in list_checkpoints(self.folder)[: -self.keep_last]:
            stale.unlink(missing_ok=True)
        return path

    def on_train_begin(self, trainer):
        # temporary files of a write that a killed process never finished
        for partial in self.folder.glob(".checkpoint-*.tmp"):
            partial.unlink(missing_ok=True)
        self._last_time = time.monotonic()
        if getattr(trainer, "rank", 0) == 0:  # the rank that writes the checkpoints
            trainer.history.keep_on_disk(self.folder / STEPS_FOLDER)

    def on_step_end(self, trainer, loss):
        due = self.every_steps and trainer.step % self.every_steps == 0
        late = self.every_seconds and time.monotonic() - self._last_time >= self.every_seconds
        if due or late:
            self.write(trainer)

    def on_epoch_end(self, trainer, epoch, logs):
        if self.every_epoch:
            self.write(trainer)

    def on_train_end(self, trainer):
        if trainer.interrupted:
            self.write(trainer)


class CSVLogger(Callback):
    """Appends one row per epoch to a CSV file, flushed at once, so a crash loses nothing."""

    def __init__(self, path, append: bool = False) -> None:
        self.path = Path(path)
        self.append = bool(append)
        self._keys: list[str] | None = None

    def on_train_begin(self, trainer):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.append and trainer.step == 0:
            self.path.write_text("")

    def on_epoch_end(self, trainer, epoch, logs):
        import csv

        write_header = not self.path.exists() or self.path.stat().st_size == 0
        keys = self._keys or list(logs)
        self._keys = keys
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f)
            if write_header:
                writer.writerow(keys)
            writer.writerow([_cell(logs.get(k, "")) for k in keys])


def _cell(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
