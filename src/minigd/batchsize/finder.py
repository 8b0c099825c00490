"""The throughput/memory finder: samples per second and peak memory at each candidate batch size.

Bigger batches use the hardware better (fewer Python calls per sample, larger matrix products)
until they stop paying; the *knee* is the smallest batch size whose throughput is within 10% of
the best measured, the point past which a larger batch buys little speed but costs gradient noise,
generalization and memory.

Each candidate is timed on a copy of the model (the caller's model is not trained), after warm-up
steps that allocate its buffers, in three rounds of which the fastest counts: other processes can
only slow a round down, never speed one up. How busy the other processes kept the cores while
measuring is recorded, and a busy machine is named in the result. Before a candidate is tried its
memory is estimated; the search stops before one would exceed the budget, and a MemoryError ends
it cleanly instead of the process.
"""

from __future__ import annotations

import os
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minigd._json import dataclass_dict
from minigd._kernels import warm_up
from minigd._threads import current_blas_threads, other_load
from minigd._validation import check_int
from minigd.batching import MiniBatches
from minigd.batchsize.memory import estimate_memory, format_bytes, memory_budget
from minigd.optim import SGD, get_optimizer

DEFAULT_CANDIDATES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
ROUNDS = 3  # each candidate is timed this many times and its best round counts
BUSY = 0.5  # other processes using half a core or more: the machine counts as busy


@dataclass
class FinderRow:
    """One measured batch size: throughput, time per step, and measured and estimated memory."""

    batch_size: int
    samples_per_second: float
    ms_per_step: float
    peak_bytes: int
    estimated_bytes: int

    def line(self) -> str:
        """What the finder prints for this row as it measures."""
        return (
            f"{self.samples_per_second:>10,.0f} samples/s, {self.ms_per_step:.3f} ms/step, "
            f"peak {format_bytes(self.peak_bytes)}"
        )


@dataclass
class FinderResult:
    """Every measured batch size, the knee, why the search stopped early (if it did), and the
    memory budget it was held to."""

    rows: list[FinderRow]
    knee: int | None
    stopped: str | None = None
    budget: int = 0
    notes: list[str] = field(default_factory=list)
    busy: float | None = None  # cores other processes kept busy while measuring
    threads: int | None = None  # BLAS threads while measuring

    @property
    def machine_busy(self) -> bool:
        return self.busy is not None and self.busy >= BUSY

    def busy_note(self) -> str:
        advice = "measure again when it is quiet, or train with --threads 1"
        if self.threads == 1:  # what it would suggest is what it ran with
            advice = "measure again when it is quiet (this ran on one BLAS thread already)"
        return (
            f"the machine looked busy: other processes kept ~{self.busy:.1f} of "
            f"{os.cpu_count()} cores busy while measuring, so throughput is understated and "
            f"the knee may sit lower; {advice}."
        )

    @property
    def best(self) -> FinderRow | None:
        return max(self.rows, key=lambda r: r.samples_per_second) if self.rows else None

    def table(self) -> str:
        lines = [f"{'batch':>6} {'samples/s':>11} {'ms/step':>9} {'peak mem':>10} {'estimate':>10}"]
        for r in self.rows:
            mark = "  <- knee" if r.batch_size == self.knee else ""
            lines.append(
                f"{r.batch_size:>6} {r.samples_per_second:>11,.0f} "
                f"{r.ms_per_step:>9.3f} {format_bytes(r.peak_bytes):>10} "
                f"{format_bytes(r.estimated_bytes):>10}{mark}"
            )
        if self.stopped:
            lines.append(f"stopped: {self.stopped}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return dataclass_dict(self)


def knee_of(rows: list[FinderRow], within: float = 0.10) -> int | None:
    """The smallest batch size whose throughput is within ``within`` of the best."""
    if not rows:
        return None
    best = max(r.samples_per_second for r in rows)
    return min(r.batch_size for r in rows if r.samples_per_second >= (1 - within) * best)


def find_batch_size(
    model,
    X: Any,
    y: Any,
    *,
    candidates=None,
    memory_budget_bytes: int | None = None,
    steps: int | None = None,
    warmup: int = 3,
    optimizer=None,
    sample_axis: int = 0,
    progress: bool = True,
    file=None,
    pipeline=None,
) -> FinderResult:
    """Measures samples/s, ms/step and peak memory of a train step at each candidate batch size.

    Args:
        model: the Sequential to measure (a copy is trained; the model itself is untouched).
        X, y: training data (or a representative sample of it).
        candidates: batch sizes to try, ascending; default powers of two 16..4096 up to m.
        memory_budget_bytes: stop before a candidate whose estimated step memory exceeds this;
            default half the available RAM.
        steps: timed steps per candidate (after ``warmup`` untimed ones); default enough steps
            for 16384 samples (at least 10), so small batches are timed long enough too.
        optimizer: the optimizer to step with (its state counts in memory); default SGD.
        progress: print one line per candidate to ``file`` (stderr by default).
        pipeline: for data streamed from disk (X, y a sample of it), ``pipeline(b)``: the bytes
            of its shuffle buffer and prefetched batches at b, counted in the budget check.
    """
    if steps is not None:
        check_int("steps", steps, minimum=1)
    warmup = check_int("warmup", warmup, minimum=0)
    rows_data, targets = model.prepare(X, y, sample_axis=sample_axis)
    cands = _candidates(candidates, len(rows_data))
    budget = memory_budget() if memory_budget_bytes is None else int(memory_budget_bytes)
    rows: list[FinderRow] = []
    stopped = None
    out = file or sys.stderr
    busy = other_load()
    for b in cands:
        extra = 0 if pipeline is None else pipeline(b)
        row = _try(model, optimizer, rows_data, targets, b, steps, warmup, budget, extra)
        if isinstance(row, str):  # why the search stops here
            stopped = row
            break
        rows.append(row)
        if progress:
            print(f"  batch {b:>5}: {row.line()}", file=out, flush=True)
    result = FinderResult(
        rows, knee_of(rows), stopped, budget, busy=busy, threads=current_blas_threads()
    )
    if result.machine_busy:
        result.notes.append(result.busy_note())
        if progress:
            print(f"  note: {result.busy_note()}", file=out, flush=True)
    return result


def _candidates(candidates, m: int) -> list[int]:
    """The candidate batch sizes that fit m samples, ascending, each once."""
    cands = sorted({int(c) for c in (candidates or DEFAULT_CANDIDATES) if int(c) <= m})
    if not cands:
        raise ValueError(f"no candidate batch size fits the {m} samples; pass smaller ones.")
    return cands


def _try(model, optimizer, X, y, b, steps, warmup, budget, extra) -> FinderRow | str:
    """Measures batch size b on a fresh copy of the model, or says why it cannot."""
    trial = model.copy().train()
    opt = _fresh(optimizer)
    estimate = estimate_memory(trial, b, optimizer=opt, pipeline_bytes=extra).total
    if estimate > budget:
        return (
            f"batch size {b} would need ~{format_bytes(estimate)}, over the budget "
            f"of {format_bytes(budget)}"
        )
    try:
        return _measure(trial, opt, X, y, b, steps or max(10, -(-16384 // b)), warmup, estimate)
    except MemoryError:
        return f"batch size {b} ran out of memory"


def _fresh(optimizer):
    """A new optimizer per candidate, with the caller's schedule and settings, no state."""
    if optimizer is None:
        return SGD(0.01)
    if isinstance(optimizer, str):
        return get_optimizer(optimizer)
    return optimizer.fresh()


def _timed(model, opt, batches, steps: int) -> float:
    """Seconds for ``steps`` train steps."""
    start = time.perf_counter()
    for _ in range(steps):
        xb, yb = next(batches)
        model.loss_and_grad(xb, yb)
        opt.step(model.params, model.grads)
    return time.perf_counter() - start


def _measure(model, opt, X, y, b, steps, warmup, estimate) -> FinderRow:
    # Cycle through as many batches as the timing needs, epoch after epoch.
    batches = MiniBatches(X, y, batch_size=b, last_batch="drop", seed=0)

    def stream():
        e = 0
        while True:
            yield from batches.epoch(e)
            e += 1

    it = stream()
    warm_up(model.dtype)  # a first-use compilation (the fast extra) is not the step's memory
    with np.errstate(all="ignore"):
        # one step under tracemalloc for the peak; the timed steps run without it
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        xb, yb = next(it)
        model.loss_and_grad(xb, yb)
        opt.step(model.params, model.grads)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        for _ in range(warmup):
            xb, yb = next(it)
            model.loss_and_grad(xb, yb)
            opt.step(model.params, model.grads)
        seconds = min(_timed(model, opt, it, steps) for _ in range(ROUNDS))
    fixed = 2 * model.params.nbytes  # parameters and gradients existed before tracing began
    return FinderRow(b, steps * b / seconds, 1000 * seconds / steps, peak + fixed, estimate)
