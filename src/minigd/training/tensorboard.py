"""Training watched live in TensorBoard: ``fit(..., callbacks=[TensorBoard("runs/mnist")])``, then
``tensorboard --logdir runs``.

Per step (``every`` steps): the mini-batch loss, the learning rate, the batch size and, when the run
measures it, the noise scale B_simple; per epoch: every number of the epoch's record (train and
validation metrics, samples/s). The writer is tensorboardX's, which needs neither TensorFlow nor
PyTorch (the ``tensorboard`` extra); the ``tensorboard`` package is only needed to view the logs.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from minigd._extras import require
from minigd._validation import check_int
from minigd.noise import COLUMNS as NOISE_COLUMNS
from minigd.training.callbacks import Callback

STEP_TAGS = {
    "loss": "step/loss",
    "lr": "step/lr",
    "batch_size": "step/batch_size",
    **{column: f"step/{column}" for column in NOISE_COLUMNS},  # where the noise is measured
}
EPOCH_SKIP = frozenset({"epoch", "steps"})  # the x axis, not a measurement


class TensorBoard(Callback):
    """Writes a run's scalars as TensorBoard event files under ``logdir``.

    The x axis is the optimizer step. A resumed run passes its first step as ``purge_step``, so
    TensorBoard hides whatever a killed run had logged past its checkpoint and the curve goes on
    without a doubled stretch. In a data-parallel run rank 0 writes alone.
    """

    def __init__(self, logdir: str | os.PathLike, *, every: int = 1, flush_secs: int = 10):
        self.logdir = os.fspath(logdir)
        self.every = check_int("every", every, minimum=1)
        self.flush_secs = check_int("flush_secs", flush_secs, minimum=1)
        self.writer = None
        self._changes = 0  # the adaptive batch's changes already written
        require("tensorboardX", "tensorboard", "the TensorBoard callback")

    def on_train_begin(self, trainer) -> None:
        if trainer.rank != 0:
            return
        self._changes = len(trainer.history.meta.get("batch_schedule") or [])  # on a resume
        writer_class = require("tensorboardX", "tensorboard", "the TensorBoard callback")
        # the file is named by the second it was opened in: a resume within the same second
        # would truncate the interrupted run's file without a finer suffix (which also orders them)
        suffix = f".{time.time_ns() % 10**9:09d}.{os.getpid()}"
        self.writer = writer_class.SummaryWriter(
            self.logdir,
            purge_step=trainer.step + 1 if trainer.step else None,  # the first step it logs
            flush_secs=self.flush_secs,
            filename_suffix=suffix,
        )

    def on_step_end(self, trainer, loss: float) -> None:
        if self.writer is None or trainer.step % self.every:
            return
        steps = trainer.history.steps
        for column, tag in STEP_TAGS.items():
            values = steps.get(column)
            if values:
                self._scalar(tag, values[-1], trainer.step)
        self._batch_changes(trainer.history.meta.get("batch_schedule") or [])

    def _batch_changes(self, schedule: list[dict[str, Any]]) -> None:
        """The adaptive batch's new changes, each as text at the step it was made."""
        for change in schedule[self._changes :]:
            why = change.get("reason") or f"B_simple {change['b_simple']:.0f}"
            text = f"{change['from']} -> {change['batch_size']}, lr {change['lr']:.4g}: {why}"
            self.writer.add_text("batch_schedule", text, change["step"])
        self._changes = len(schedule)

    def on_epoch_end(self, trainer, epoch: int, logs: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for name, value in logs.items():
            if name not in EPOCH_SKIP:
                self._scalar(f"epoch/{name}", value, trainer.step)
        self.writer.flush()

    def on_train_end(self, trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _scalar(self, tag: str, value: Any, step: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if math.isfinite(value):  # a NaN B_simple (still warming up) is not a point
            self.writer.add_scalar(tag, float(value), step)

    def __repr__(self) -> str:
        return f"TensorBoard({self.logdir!r}, every={self.every})"
