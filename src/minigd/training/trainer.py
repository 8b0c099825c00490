"""The training loop: one optimizer step per mini-batch, epoch after epoch.

    for epoch in epochs:                     each epoch starts again from the first batch,
        for batch in batches.epoch(epoch):   in that epoch's own shuffled order
            forward, loss, backward          gradient.loss_and_grad
            step                             optimizer.step
            record                           history and callbacks

How a step's gradient is computed is one object (``training.gradient``): the model's own pass,
two halves that also measure the noise scale, or this rank's share summed over MPI ranks; the loop
does not branch on which. Everything else (progress, early stopping, schedules, checkpoints,
divergence, an adaptive batch size) is a callback. The loop keeps its ``Position`` (epoch, next
batch, steps, samples) as one small dataclass, so that a checkpoint can record it and a resumed
run can continue at exactly the next batch.

Ctrl-C and SIGTERM end training after the current step; the callbacks' end hooks run (a
checkpoint is written) and then the signal is handed on to the handler that was there before:
``run`` raises KeyboardInterrupt, and SIGTERM ends the process, as they would without minigd.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from minigd import _signals
from minigd._kernels import warm_up
from minigd._threads import BlasThreads, resolve_threads, usable_cores
from minigd._validation import check_choice, check_int
from minigd.batching import MiniBatches
from minigd.noise import B_SIMPLE
from minigd.optim import Optimizer
from minigd.training.callbacks import Callback
from minigd.training.checkpoint import (
    check_same_batching,
    check_same_model,
    load_checkpoint,
    refused_state,
    restore_part,
    save_checkpoint,
)
from minigd.training.gradient import GradientPath, ModelGradient
from minigd.training.history import History
from minigd.training.thread_choice import ThreadChoice


@dataclass
class Position:
    """Where a run stands: the next batch to train on, and what has been done so far.

    A checkpoint saves it as is; because each epoch's order is a pure function of (seed, epoch),
    it is all a resumed run needs to draw exactly the batches an uninterrupted run would draw.
    """

    epoch: int = 0  # the epoch being trained (the next one, at an epoch's end)
    next_batch: int = 0  # index of the next batch within that epoch
    step: int = 0  # optimizer steps taken
    samples_seen: int = 0
    epoch_loss: float = 0.0  # sum of loss * batch size over the current epoch
    epoch_samples: int = 0
    epoch_seconds: float = 0.0  # training seconds since the previous epoch ended (see elapsed)
    seconds: float = 0.0  # training seconds before this session (a resumed run), or in all

    def advance(self, loss: float, n: int) -> None:
        """Counts one step on a batch of n samples whose mean loss was ``loss``."""
        self.step += 1
        self.next_batch += 1
        self.samples_seen += n
        self.epoch_loss += loss * n
        self.epoch_samples += n

    def next_epoch(self) -> None:
        self.epoch, self.next_batch = self.epoch + 1, 0
        self.epoch_loss, self.epoch_samples, self.epoch_seconds = 0.0, 0, 0.0

    @classmethod
    def from_dict(cls, saved: dict[str, Any], source: Any = "the checkpoint") -> Position:
        """The position saved in a checkpoint, with a sentence naming any field that is off."""
        names = {f.name for f in fields(cls)}
        if not isinstance(saved, dict) or set(saved) != names:
            got = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
            raise ValueError(
                f"{source} has a malformed position: expected the fields {sorted(names)}, "
                f"found {got}. Resume from another checkpoint, or start a new run."
            )
        return cls(**saved)


OUTCOMES = ("completed", "stopped", "diverged", "interrupted")
GRADIENT_STATE = "trainer:noise"  # a checkpoint's key for the gradient path's state
THREADS_STATE = "trainer:threads"  # and for the BLAS threads the run trained with


class Trainer:
    """Runs mini-batch gradient descent on a model and records what happened.

    Args:
        model: a ``minigd.nn.Sequential``.
        batches: the MiniBatches of the (already prepared) training data.
        optimizer: an Optimizer.
        epochs: the epoch to stop before (a resumed run counts from its first epoch).
        validation: optional (X_val, y_val), prepared for the model.
        callbacks: Callback objects, called in order.
        threads: BLAS threads while training; default the cores this process may use (shared
            among the processes training on this machine).
        gradient: how each step's loss and gradient are computed (``training.gradient``):
            default the model's own pass; ``noise.StepNoise`` measures the noise scale as it
            goes; ``distributed.DataParallel`` trains on this rank's share of ``batches``
            (built with ``batches.shard``).
    """

    def __init__(
        self,
        model,
        batches: MiniBatches,
        optimizer: Optimizer,
        *,
        epochs: int,
        validation: tuple[np.ndarray, np.ndarray] | None = None,
        callbacks: Sequence[Callback] = (),
        threads: int | None = None,
        gradient: GradientPath | None = None,
    ) -> None:
        self.model = model
        self.gradient = ModelGradient() if gradient is None else gradient
        self.threads_given = threads is not None  # else a resume trains as its checkpoint did
        if threads is None:  # the processes on one machine share its cores
            self.threads = max(1, usable_cores() // self.gradient.local_processes)
        else:
            self.threads = resolve_threads(threads)
        self._blas: BlasThreads | None = None  # the BLAS threads while run() trains
        # BLAS threads for a step during which a streamed source's reader loads a buffer (None:
        # self.threads); ThreadChoice sets 1: on 2 cores the reader delays one of two BLAS
        # threads and each product waits for it
        self.threads_while_reading: int | None = None
        self._regrouped = False  # the batches were regrouped: reopen the epoch at next_batch
        self.batches = batches
        self.optimizer = optimizer
        self.epochs = check_int("epochs", epochs, minimum=1)
        self.validation = validation
        self.callbacks = list(callbacks)
        self.history = History()
        self.position = Position()
        self._seconds_excluded = 0.0  # evaluation time, which is not training time
        self._t0: float | None = None
        self._epoch_mark = 0.0  # elapsed() when the current epoch's seconds were last counted
        self.stop_training = False
        self.stop_reason: str | None = None
        self.outcome = "completed"  # or "stopped", "diverged", "interrupted": see stop()
        self.signal: int | None = None  # the signal that interrupted training, if one did
        for callback in self.callbacks:
            callback.setup(self)

    def stop(self, reason: str, outcome: str = "stopped") -> None:
        """Ends training after the current step. ``outcome`` says how the run ended, for the
        exit code of a command: "stopped" (a rule was met: early stopping, a target, a budget),
        "diverged" or "interrupted"."""
        self.stop_training = True
        self.stop_reason = reason
        self.outcome = check_choice("outcome", outcome, OUTCOMES)

    @property
    def interrupted(self) -> bool:
        return self.outcome == "interrupted"

    @property
    def rank(self) -> int:
        """This process's rank (0 unless training data-parallel): callbacks that write files or
        print act on rank 0 only."""
        return self.gradient.rank

    # -- facts callbacks use --------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self.position.epoch

    @property
    def next_batch(self) -> int:
        return self.position.next_batch

    @property
    def step(self) -> int:
        return self.position.step

    @property
    def samples_seen(self) -> int:
        return self.position.samples_seen

    @property
    def batch_size(self) -> int:
        return self.batches.batch_size

    @property
    def batches_per_epoch(self) -> int:
        return len(self.batches)

    @property
    def n_samples(self) -> int:
        return self.batches.n_samples

    def elapsed(self) -> float:
        """Seconds of training so far: wall time less evaluations (validation, measurements)."""
        if self._t0 is None:
            return self.position.seconds
        now = time.perf_counter() - self._t0 - self._seconds_excluded
        return self.position.seconds + now

    def _stop_clock(self) -> None:
        """Folds this session's seconds into the position, so a further ``run()`` (with more
        epochs) counts on from them instead of from zero."""
        self.position.seconds = self.elapsed()
        self._t0, self._seconds_excluded = None, 0.0

    def _epoch_seconds(self) -> float:
        """The current epoch's training seconds: one definition with ``elapsed`` (wall time less
        validation and measurements), counted from the previous epoch's end, so the callbacks
        that ran then (a checkpoint written) are in it, and the epochs add up to the run."""
        return self.position.epoch_seconds + self.elapsed() - self._epoch_mark

    def exclude(self, seconds: float) -> None:
        """Takes time spent measuring (not training) out of ``elapsed``."""
        self._seconds_excluded += seconds

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> History:
        model, history = self.model, self.history
        with (
            _signals.caught_while_training() as caught,
            np.errstate(over="ignore", invalid="ignore", divide="ignore"),
        ):
            # compile the fast extra's kernels before the clock starts, where a signal only sets
            # a flag (raised inside Numba's callbacks it would be lost), and before the BLAS
            # threads are set (Numba loads SciPy, and SciPy its own BLAS)
            warm_up(self.model.dtype)
            with BlasThreads(self.threads) as self._blas:
                self._t0 = time.perf_counter()
                self._epoch_mark = self.elapsed()
                model.train()
                self._call("on_train_begin")
                self._honour(caught)  # a signal that arrived before the first step
                try:
                    self.gradient.begin(self.model, self.batches, self._what_ranks_share)
                    self._train_epochs(caught)
                except BaseException as exc:
                    self.gradient.abandon(exc)  # other ranks would wait in the next Allreduce
                    raise
                finally:
                    self.batches.close()  # a streamed source stops reading ahead
        self._blas = None
        self.model.eval()
        self._call("on_train_end")
        history.meta.update(self._summary())
        self._stop_clock()
        if caught.signal is not None:  # stopped gracefully; now the signal does what it would
            _signals.redeliver(caught.signal)
        return history

    def _train_epochs(self, caught: _signals.Caught) -> None:
        pos = self.position
        while pos.epoch < self.epochs and not self.stop_training:
            epoch = pos.epoch
            self._call("on_epoch_begin", epoch)
            read_ahead = epoch + 1 < self.epochs  # no next epoch to read ahead for
            self._regrouped = True
            while self._regrouped and not self.stop_training and pos.next_batch < len(self.batches):
                self._regrouped = False
                # closing: a streamed source's reader thread ends with the loop, however it ends
                batches = self.batches.epoch(epoch, pos.next_batch, read_ahead=read_ahead)
                with contextlib.closing(batches):
                    self._train_epoch(batches, caught)
            pos.epoch_seconds = self._epoch_seconds()
            self._epoch_mark = self.elapsed()
            if pos.next_batch == len(self.batches):
                self._end_epoch(epoch)

    def set_threads(self, threads: int) -> None:
        """BLAS threads from the next step on (``ThreadChoice`` measures which is faster)."""
        self.threads = resolve_threads(threads)
        if self._blas is not None:
            self._blas.set(self.threads)

    @property
    def threads_settable(self) -> bool:
        """Whether the BLAS threads can be set while training (threadpoolctl is installed)."""
        return self._blas is not None and self._blas.settable

    def regroup(self, batch_size: int) -> None:
        """Trains on batches of ``batch_size`` from the next step on (``AdaptiveBatchSize``):
        the rest of the epoch is cut anew; the batches already trained on keep their samples."""
        self.batches.regroup(batch_size, self.position.next_batch)
        self._regrouped = True

    def _train_epoch(self, batches, caught: _signals.Caught) -> None:
        """The steps of one epoch (or of its rest, after a resume or a stop)."""
        model, optimizer, history, pos = self.model, self.optimizer, self.history, self.position
        gradient = self.gradient
        epoch, size_of = pos.epoch, self.batches.size_of  # a rank's xb is its share of one
        for xb, yb in batches:
            if self.threads_while_reading is not None:
                self._follow_reader(self.threads_while_reading)
            n = size_of(pos.next_batch)
            stop = caught.signal is not None  # passed on to the other ranks, if any
            loss = gradient.loss_and_grad(model, xb, yb, n, pos.step, stop)  # forward, backward
            optimizer.step(model.params, model.grads)  # one step per mini-batch
            pos.advance(loss, n)
            history.record_step(
                epoch,
                loss,
                n,
                pos.samples_seen,
                self.elapsed(),
                optimizer.lr,
                **gradient.columns(),
            )
            for callback in self.callbacks:
                callback.on_step_end(self, loss)
            self._honour(caught)
            if self.stop_training or self._regrouped:
                break

    def _follow_reader(self, while_reading: int) -> None:
        """This step's BLAS threads: ``while_reading`` while the reader loads, else the chosen
        count (``self.threads`` stays the choice ThreadChoice measures and records)."""
        blas = self._blas
        want = min(while_reading, self.threads) if self.batches.reading else self.threads
        if blas is not None and blas.threads != want:
            blas.set(want)

    def _honour(self, caught: _signals.Caught) -> None:
        """Stops after this step if Ctrl-C or SIGTERM has arrived (on any rank)."""
        if self.interrupted:
            return
        if caught.signal is not None:
            self.signal = caught.signal
            name = "Ctrl-C" if caught.signal == signal.SIGINT else "SIGTERM"
            self.stop(f"interrupted ({name}) after step {self.position.step}", "interrupted")
        elif self.gradient.stop_requested:
            self.stop(f"interrupted on another rank after step {self.step}", "interrupted")

    def _what_ranks_share(self) -> dict[str, Any]:
        """What every rank must agree on before the first Allreduce."""
        params = np.ascontiguousarray(self.model.params)
        return {
            **self.batching(),
            "model": self.model.config()["layers"],
            "parameters": hashlib.sha256(params.tobytes()).hexdigest(),
            "optimizer": repr(self.optimizer),
            "position": self._position_without_clocks(),
            "epochs": self.epochs,
        }

    def _position_without_clocks(self) -> dict[str, Any]:
        """The position the ranks must share: each rank's own clock differs, and a run continued
        in the same processes (``run()`` again, more epochs) carries those clocks."""
        position = asdict(self.position)
        del position["seconds"], position["epoch_seconds"]
        return position

    def _end_epoch(self, epoch: int) -> None:
        logs = self._epoch_logs(epoch)
        self.history.record_epoch(logs)
        self.position.next_epoch()
        self._call("on_epoch_end", epoch, logs)
        self.model.train()

    def _epoch_logs(self, epoch: int) -> dict[str, Any]:
        pos = self.position
        seconds = pos.epoch_seconds
        logs: dict[str, Any] = {
            "epoch": epoch,
            "loss": pos.epoch_loss / max(1, pos.epoch_samples),
            "steps": pos.step,
            "samples_seen": pos.samples_seen,
            "seconds": seconds,
            "elapsed": self.elapsed(),
            "samples_per_second": pos.epoch_samples / seconds if seconds > 0 else math.inf,
            "lr": self.optimizer.lr,
        }
        if self.gradient.noise is not None:  # the running noise scale where it is measured
            logs[B_SIMPLE] = self.gradient.noise.value
        if self.validation is not None:
            start = time.perf_counter()
            if isinstance(self.validation, MiniBatches):  # streamed from disk
                with contextlib.closing(self.validation.epoch(0)) as chunks:
                    metrics = self.model.evaluate_batches(chunks)
            else:
                metrics = self.model.evaluate_prepared(*self.validation)
            logs.update({f"val_{k}": v for k, v in metrics.items()})
            self.exclude(time.perf_counter() - start)
        return logs

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _summary(self) -> dict[str, Any]:
        b, io = self.batches, self.batches.io()
        if "bytes_read" in io and self.gradient.ranks > 1:  # a collective: every rank ends here
            io["bytes_read_per_rank"] = self.gradient.comm.allgather(io["bytes_read"])
        return {
            "steps": self.step,
            "samples_seen": self.samples_seen,
            "seconds": self.elapsed(),
            "stop_reason": self.stop_reason,
            "outcome": self.outcome,
            "epochs_completed": self.epoch,
            "epochs": self.epochs,
            "batch_size": b.batch_size,
            "n_samples": b.n_samples,
            "seed": b.seed,
            "last_batch": b.last_batch,
            "optimizer": repr(self.optimizer),
            "threads": self.threads,
            **self.gradient.summary(),
            **io,  # a streamed source: time waiting on the disk, bytes read (per rank)
        }

    # -- checkpoints ----------------------------------------------------------------------
    def batching(self) -> dict[str, Any]:
        b = self.batches
        layout = {}
        if b.blocks is not None:  # the block shuffle's order depends on how rows are cut
            layout = {"block_rows": b.blocks.block_rows, "buffer_blocks": b.blocks.buffer_blocks}
        return {
            "n_samples": b.n_samples,
            "batch_size": b.first_batch_size,
            "seed": b.seed,
            "shuffle": b.shuffle,
            "last_batch": b.last_batch,
            **layout,
        }

    def save_checkpoint(self, path) -> Any:
        return save_checkpoint(
            path,
            model=self.model,
            optimizer=self.optimizer,
            history=self.history,
            position=asdict(
                replace(self.position, seconds=self.elapsed(), epoch_seconds=self._epoch_seconds())
            ),
            batching=self.batching(),
            callbacks=self._states(),
        )

    def _states(self) -> dict[str, Any]:
        """What a checkpoint keeps of the callbacks and of the gradient path (a running noise
        scale, so a resumed run goes on averaging where it stood)."""
        states = {f"{i}:{type(c).__name__}": c.state() for i, c in enumerate(self.callbacks)}
        states[GRADIENT_STATE] = self.gradient.state()
        states[THREADS_STATE] = {"count": self.threads}  # a resume given no threads keeps them
        return {key: state for key, state in states.items() if state}

    def restore(self, path) -> None:
        """Continues from a checkpoint: model, optimizer, position, history, callback state."""
        ckpt = load_checkpoint(path)
        try:
            self._restore(ckpt)
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            raise ValueError(
                f"the checkpoint {ckpt['path']} has malformed metadata ({type(exc).__name__}: "
                f"{exc}); resume from another checkpoint, or start a new run."
            ) from None

    def _restore(self, ckpt: dict[str, Any]) -> None:
        check_same_model(ckpt, self.model.config())
        saved = ckpt["batching"]
        if {"block_rows", "buffer_blocks"} <= saved.keys() and self.batches.blocks is not None:
            self.batches.keep_layout(saved["block_rows"], saved["buffer_blocks"])
        check_same_batching(ckpt, self.batching())
        self.model.load_state(ckpt["model_state"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.position = Position.from_dict(ckpt["position"], ckpt["path"])
        self.history = ckpt["history"]
        states = ckpt["callbacks"]
        if GRADIENT_STATE in states:
            restore_part(self.gradient, states[GRADIENT_STATE], GRADIENT_STATE, ckpt["path"])
        try:
            self._restore_threads(states)
        except (KeyError, TypeError, ValueError) as exc:
            raise refused_state(THREADS_STATE, ckpt["path"], exc) from None
        for i, callback in enumerate(self.callbacks):
            key = f"{i}:{type(callback).__name__}"
            if key in states:
                restore_part(callback, states[key], key, ckpt["path"])

    def _restore_threads(self, states: dict[str, Any]) -> None:
        """A resume given no thread count trains as its checkpoint did, so it repeats its
        arithmetic (a count changes a product's rounding): measured if it was measured, else
        at the count it had (the cores, for checkpoints from before threads were recorded)."""
        if self.threads_given:
            return
        measured = any(key.endswith(":ThreadChoice") for key in states)
        saved = states.get(THREADS_STATE, {"count": usable_cores()})
        self.threads = int(saved["count"])
        if not measured:
            for callback in self.callbacks:
                if isinstance(callback, ThreadChoice):
                    callback.hold(self.threads)
