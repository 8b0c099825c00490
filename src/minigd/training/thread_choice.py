"""BLAS threads chosen by measurement: the faster of one thread and the usable cores, as it is now.

On this 2-core machine two BLAS threads train a large batch up to ~1.6x faster than one on a
quiet machine, and 1.4-100x slower while another process is busy: OpenBLAS splits each product
between its threads and waits for the slower, and a thread the scheduler has given away costs a
whole time slice (a 0.25 ms step took 30 ms). That shows only over many steps, so the loop
measures on its own steps: it starts at one thread (safe on a busy machine), times a window of
steps, then tries the other count for a few steps (cut short if they are much slower) and keeps
the faster by mean step time. It tries again when its steps at several threads slow down (at one
thread: speed up, the neighbour left), when the batch has moved far (an adaptive batch), and
every ``recheck_seconds``.

Before trying more threads than one it looks at the machine: where another process has a task
ready to run (a busy neighbour, a second training) those threads would fight it (a try of two
at B=256 beside a busy loop cost a short run 1.4x its time on one thread), so the try is left
out and that decision recorded.

A streamed run's reader loads a shuffle buffer, then idles until a slot frees, and while it
reads it takes CPU from the BLAS threads: a window shorter than a buffer's steps saw the step
with the reader or without it, by chance, and chose one thread for a streamed MLP at B=1024
that ran 1.2x faster on two. Its windows and tries span a buffer's steps (up to ``MAX_SPAN``),
so each sees the reader's share once, and a step that waited for the reader is not timed: a
wait of up to 80 ms at a buffer's start (the first epoch's reads are the slowest) made one
step of a try look 4x slower and ended it. While the reader loads, the steps train on one
thread whatever the choice (``Trainer.threads_while_reading``): 8-9% faster an epoch at
B=1024. A file whose features are mapped (``data.leased_map``) is not copied: its windows and
threads are a run in memory's.

Each decision (step, mean milliseconds per step at each count, the choice, why) is recorded in
``history.meta["thread_checks"]`` and in checkpoints. A thread count changes a matrix product's
rounding, so a resumed run starts at the count its checkpoint was trained at and repeats the
interrupted run's arithmetic. ``fit(threads=N)`` (``--threads N``) forces N and measures nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minigd._threads import others_runnable
from minigd._validation import check_float, check_int, check_state
from minigd.training.callbacks import Callback

SLOWDOWN = 1.5  # a window this much slower (faster, at 1 thread) than after the last decision
BATCH_MOVE = 2.0  # as does a batch this many times larger or smaller than the one decided at
GIVE_UP = 2.0  # a try whose steps are this much slower ends after two of them
HOPELESS = 4.0  # and after one this much slower (threads fighting a neighbour: 20-100x)
MARGIN = 0.05  # the other count is kept only if this much faster
MAX_SPAN = 1024  # the most steps a window spans to cover a streamed run's shuffle buffer


class ThreadChoice(Callback):
    """Trains at the faster of 1 BLAS thread and the usable cores, measured on the run's steps.

    Args:
        window: steps timed at the current count before a decision.
        trial: steps tried at the other count (fewer if they are ``GIVE_UP`` times slower).
        recheck_seconds: training seconds after which the other count is tried again anyway.
    """

    def __init__(self, *, window: int = 8, trial: int = 8, recheck_seconds: float = 30.0) -> None:
        self.window = check_int("window", window, minimum=2)
        self.trial = check_int("trial", trial, minimum=2)
        self.recheck_seconds = check_float("recheck_seconds", recheck_seconds, minimum=0.0)
        self.checks: list[dict[str, Any]] = []
        self.counts: list[int] = []
        self._restored = False
        self._starting: str | None = None  # the first window's try, and why
        self._reset()

    def _reset(self) -> None:
        self._times: list[float] = []  # this window's (or try's) step seconds
        self._trying: dict[str, Any] | None = None  # the count being tried, and what it beats
        self._reference: float | None = None  # mean step seconds after the last decision
        self._last: float | None = None  # elapsed() at the previous step's end
        self._waited = 0.0  # seconds the loop had waited on a streamed reader by then

    def setup(self, trainer) -> None:
        self.trainer = trainer
        self.counts = sorted({1, trainer.threads})

    def hold(self, threads: int) -> None:
        """Measures nothing and trains at ``threads`` (a resumed run that was given a count)."""
        self.counts = [threads]

    def on_train_begin(self, trainer) -> None:
        trainer.history.meta["thread_checks"] = self.checks
        streamed = self._span(trainer, 0) > 0  # by shuffle buffers
        trainer.threads_while_reading = 1 if self._active(trainer) and streamed else None
        self._reset()
        if self._active(trainer) and not self._restored:
            trainer.set_threads(1)  # safe while a neighbour is busy; the cores are tried next
        self._starting = "the run resumes" if self._restored else "the run starts"
        self._restored = False

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        self._last = None  # the epoch's first step also pays for its shuffle

    def on_step_end(self, trainer, loss: float) -> None:
        if not self._active(trainer):
            return
        seconds = self._step_seconds(trainer)
        if seconds is None:
            return
        self._times.append(seconds)
        if self._trying is not None:
            self._try_step(trainer)
        elif len(self._times) >= self._span(trainer, self.window):
            self._window_done(trainer)

    @staticmethod
    def _span(trainer, steps: int) -> int:
        """``steps``, or the steps one shuffle buffer lasts in a run streamed by copying
        buffers, if more (a mapped file's reader takes next to nothing from the steps)."""
        batches = getattr(trainer, "batches", None)
        if batches is None or not batches.streaming or batches.shuffle != "blocks":
            return steps
        if batches.features_mapped:
            return steps
        per_buffer = -(-batches.blocks.buffer_rows // max(1, trainer.batch_size))
        return max(steps, min(per_buffer, MAX_SPAN))

    def _active(self, trainer) -> bool:
        return len(self.counts) > 1 and trainer.threads_settable

    def _step_seconds(self, trainer) -> float | None:
        """The step's seconds; None for a step that is not typical (after a pause, an epoch's
        short last batch, a batch of another size than the one being timed, a wait for a
        streamed reader)."""
        now, last = trainer.elapsed(), self._last
        waited, self._waited = self._waited, _reader_wait(trainer)
        self._last = now
        if last is None or trainer.history.steps["batch_size"][-1] != trainer.batch_size:
            return None
        if self._waited > waited:
            return None
        if self._trying is not None and trainer.batch_size != self._trying["batch_size"]:
            trainer.set_threads(self._trying["from"])  # the batch moved: this try says nothing
            self._reset()
            return None
        return now - last

    def _window_done(self, trainer) -> None:
        mean = sum(self._times) / len(self._times)
        self._times = []
        why = self._why_try(trainer, mean)
        if why is None:
            self._reference = self._reference if self._reference is not None else mean
            return
        other = next(n for n in self.counts if n != trainer.threads)
        busy = others_runnable() if other > trainer.threads else None
        self._last = trainer.elapsed()  # the look is not the next step's time
        if busy:  # the cores another process keeps busy would be shared: worse, not tried
            self._reference = mean
            self._record(trainer, {str(trainer.threads): 1e3 * mean}, trainer.threads,
                         f"{why}; {other} threads not tried: {busy} task(s) of other "
                         "processes ready to run")  # fmt: skip
            return
        self._trying = {"from": trainer.threads, "to": other, "mean": mean, "why": why,
                        "batch_size": trainer.batch_size}  # fmt: skip
        trainer.set_threads(other)

    def _why_try(self, trainer, mean: float) -> str | None:
        last = self.checks[-1] if self.checks else None
        if self._starting:
            why, self._starting = self._starting, None
            return why
        reference, many = self._reference, trainer.threads > 1
        # more threads than one suffer when a neighbour gets busy; one thread gains when it
        # leaves: each change is a reason to try the other count
        if reference is not None and many and mean > SLOWDOWN * reference:
            return f"steps slowed from {1e3 * reference:.3g} to {1e3 * mean:.3g} ms"
        if reference is not None and not many and mean < reference / SLOWDOWN:
            return f"steps sped up from {1e3 * reference:.3g} to {1e3 * mean:.3g} ms"
        if last is None:  # the first try was cut short (the batch moved under it)
            return "no decision yet"
        moved = trainer.batch_size / last["batch_size"]
        if not 1 / BATCH_MOVE < moved < BATCH_MOVE:
            return f"the batch moved from {last['batch_size']} to {trainer.batch_size}"
        if trainer.elapsed() - last["seconds"] >= self.recheck_seconds:
            return f"{self.recheck_seconds:g} s since the last decision"
        return None

    def _try_step(self, trainer) -> None:
        trying, times = self._trying, self._times
        mean = sum(times) / len(times)
        span = self._span(trainer, self.trial)
        if len(times) < span and not self._hopeless(times, mean, trying["mean"], span):
            return
        keep = mean < (1 - MARGIN) * trying["mean"]
        chosen = trying["to"] if keep else trying["from"]
        trainer.set_threads(chosen)
        measured = {str(trying["from"]): 1e3 * trying["mean"], str(trying["to"]): 1e3 * mean}
        self._record(trainer, measured, chosen, trying["why"])
        self._reset()
        self._last = trainer.elapsed()

    def _record(self, trainer, measured: dict[str, float], chosen: int, reason: str) -> None:
        self.checks.append(
            {
                "step": trainer.step,
                "seconds": trainer.elapsed(),
                "batch_size": trainer.batch_size,
                "ms_per_step": measured,
                "threads": chosen,
                "reason": reason,
            }
        )

    def _hopeless(self, times: list[float], mean: float, other: float, span: int) -> bool:
        """Whether a try is already far slower than ``other``. Over a streamed run's longer
        span by the median of three steps or more: the step at 2 threads during which the
        reader began a buffer lost a time slice (17-22 ms against 0.3-3.6), once a buffer."""
        if span > self.trial:
            return len(times) >= 3 and float(np.median(times)) > GIVE_UP * other
        return times[-1] > HOPELESS * other or (len(times) >= 2 and mean > GIVE_UP * other)

    def state(self) -> dict[str, Any]:
        if len(self.counts) < 2:  # held at one count: the run is not measured
            return {}
        return {"threads": self.trainer.threads, "checks": self.checks}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continues at the count the checkpoint was trained at (the same rounding)."""
        check_state("ThreadChoice", state, {"threads": "int", "checks": "list"})
        self.checks[:] = [dict(c) for c in state["checks"]]
        self.trainer.threads = int(state["threads"])
        self._restored = True

    def __repr__(self) -> str:
        return f"ThreadChoice(counts={self.counts}, recheck_seconds={self.recheck_seconds:g})"


def _reader_wait(trainer) -> float:
    """Seconds the loop has waited for a streamed source's reader so far; 0 in memory."""
    batches = getattr(trainer, "batches", None)
    if batches is None or not batches.streaming:
        return 0.0
    return batches.io().get("io_wait_seconds", 0.0)
