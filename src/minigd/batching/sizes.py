"""Batch sizes as users write them, and how an epoch of m samples is cut into batches of B.

``batch_bounds`` is the grouping step of the data path: the order of an epoch (``order``) is cut
at these offsets; ``last_batch`` decides what happens to a remainder when B does not divide m.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from minigd._validation import is_int, message

LAST_BATCH_POLICIES = ("keep", "drop", "merge")


def resolve_batch_size(batch_size: Any, m: int) -> int:
    """Turns ``batch_size`` (an int or ``"full"``) into a number of samples, checking it fits m."""
    if isinstance(batch_size, str):
        if batch_size.lower() == "full":
            return m
        raise ValueError(
            message(
                "batch_size",
                'an integer >= 1 or "full"',
                batch_size,
                'Use "full" for batch gradient descent, 1 for SGD.',
            )
        )
    if not is_int(batch_size):
        raise TypeError(
            message(
                "batch_size",
                'an integer >= 1 or "full"',
                batch_size,
                "Pass a whole number of samples, e.g. 64.",
            )
        )
    if batch_size < 1:
        raise ValueError(
            message(
                "batch_size",
                'an integer >= 1 or "full"',
                batch_size,
                "Use 1 for SGD, a power of two such as 64 for mini-batches, "
                'or "full" for batch gradient descent.',
            )
        )
    if batch_size > m:
        raise ValueError(
            message(
                "batch_size",
                f"at most the number of samples ({m})",
                batch_size,
                'Use batch_size="full" to train on all samples at once.',
            )
        )
    return int(batch_size)


def parse_batch_size(text: str) -> int | str:
    """A batch size as a user writes it: "full" or "adaptive" (any case), or a whole number such
    as "64"."""
    text = str(text).strip()
    if text.lower() in ("full", "adaptive"):
        return text.lower()
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            message(
                "a batch size",
                'a whole number such as 64, "full" or "adaptive"',
                text,
                'Use "full" for batch gradient descent, 1 for SGD, "adaptive" to grow the batch '
                "with the gradient noise scale.",
            )
        ) from None


def batch_bounds(m: int, batch_size: int, last_batch: str) -> np.ndarray:
    """Start offsets of each batch in the epoch's order, plus m: batch i is ``[b[i], b[i+1])``."""
    full, rest = divmod(m, batch_size)
    starts = np.arange(full + 1, dtype=np.intp) * batch_size
    if rest and last_batch == "keep":
        return np.append(starts, m)
    # "drop" stops after the last full batch; "merge" lets that batch run on to m.
    if rest and last_batch == "merge":
        starts[-1] = m
    return starts


@dataclass(frozen=True)
class _Run:
    """``count`` batches of ``size`` from position ``start``; the last ends at ``end`` (a kept
    remainder, a merged last batch, or simply ``start + count * size``)."""

    start: int
    size: int
    count: int
    end: int

    def bound(self, i: int) -> int:
        return self.end if i == self.count else self.start + i * self.size

    def sizes(self) -> tuple[int, ...]:
        """The run's batch sizes that may differ: its size, and its last batch's."""
        last = self.end - self.start - (self.count - 1) * self.size
        return (last,) if self.count == 1 else (self.size, last)


def _run(start: int, m: int, batch_size: int, last_batch: str) -> _Run | None:
    """``batch_bounds(m, batch_size, last_batch) + start`` as one run (None: no batch)."""
    full, rest = divmod(m, batch_size)
    if rest and last_batch == "keep":
        return _Run(start, batch_size, full + 1, start + m)
    if full == 0:
        return None
    end = start + (m if rest and last_batch == "merge" else full * batch_size)
    return _Run(start, batch_size, full, end)


class Cut:
    """An epoch's batch bounds without an array: ``cut[i]`` is where batch i starts, ``cut[-1]``
    where the last ends, ``len(cut)`` is the number of batches plus one, as for the array of
    ``batch_bounds``. Runs of equal batches are kept as (start, size, count, end): a cut of m
    samples costs a few numbers, however large m (an array of bounds for 10^9 rows at B=64
    held 125 MB). ``np.asarray(cut)`` gives the array, for orders that are per row anyway."""

    def __init__(self, runs: list[_Run]) -> None:
        self._runs = runs
        self._firsts = []  # the first batch of each run
        total = 0
        for run in runs:
            self._firsts.append(total)
            total += run.count
        self._batches = total

    @classmethod
    def regular(cls, m: int, batch_size: int, last_batch: str) -> Cut:
        """The cut of ``batch_bounds(m, batch_size, last_batch)``."""
        run = _run(0, m, batch_size, last_batch)
        return cls([] if run is None else [run])

    def __len__(self) -> int:
        return self._batches + 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return np.asarray(self)[i]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i <= self._batches:
            raise IndexError(f"bound {i} of a cut of {self._batches} batches")
        if not self._runs:
            return 0
        k = bisect.bisect_right(self._firsts, i) - 1
        if k > 0 and i == self._firsts[k]:
            k -= 1  # a run's end is the next run's start
        return self._runs[k].bound(i - self._firsts[k])

    def spans(self, start: int = 0) -> Iterator[tuple[int, int]]:
        """(lo, hi) of batches start, start + 1, ... in turn: a loop's walk, an addition a
        batch instead of a search (``cut[b]`` bisects the runs each time)."""
        for run, first in zip(self._runs, self._firsts, strict=True):
            for i in range(max(start - first, 0), run.count):
                yield run.start + i * run.size, run.bound(i + 1)

    def size_of(self, b: int) -> int:
        """Batch b's number of samples (the loop asks it every step: one bisect)."""
        if not 0 <= b < self._batches:
            raise IndexError(f"batch {b} of a cut of {self._batches} batches")
        k = bisect.bisect_right(self._firsts, b) - 1
        run, i = self._runs[k], b - self._firsts[k]
        return run.size if i < run.count - 1 else run.end - run.start - i * run.size

    def smallest(self) -> int:
        return min(s for run in self._runs for s in run.sizes())

    def largest(self) -> int:
        return max(s for run in self._runs for s in run.sizes())

    def regrouped(self, at: int, batch_size: int, m: int, last_batch: str) -> Cut:
        """Batches 0..at-1 as they are, then the rest of the m samples in ``batch_size``."""
        runs = []
        for run, first in zip(self._runs, self._firsts, strict=True):
            if first >= at:
                break
            count = min(run.count, at - first)
            end = run.end if count == run.count else run.start + count * run.size
            runs.append(_Run(run.start, run.size, count, end))
        offset = self[at]
        left = m - offset
        # fewer samples left than a batch: "keep" and "merge" make them one last batch, "drop"
        # ends the epoch here
        if left and (left >= batch_size or last_batch != "drop"):
            runs.append(_run(offset, left, min(batch_size, left), last_batch))
        return Cut(_merged(runs))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        parts = [np.arange(run.count, dtype=np.intp) * run.size + run.start for run in self._runs]
        ends = [self._runs[-1].end] if self._runs else [0]
        whole = np.concatenate([*parts, np.array(ends, dtype=np.intp)])
        return whole if dtype is None else whole.astype(dtype)

    def __eq__(self, other) -> bool:
        """The same bounds, however the runs were made (compared as runs of batch sizes)."""
        if isinstance(other, Cut):
            return self._size_runs() == other._size_runs()
        return NotImplemented

    def _size_runs(self) -> list[tuple[int, int]]:
        """(size, how many in a row) of the batches in order, adjacent equal sizes joined."""
        out: list[tuple[int, int]] = []
        for run in self._runs:
            last = run.sizes()[-1]
            for size, count in ((run.size, run.count - 1), (last, 1)):
                if count and out and out[-1][0] == size:
                    out[-1] = (size, out[-1][1] + count)
                elif count:
                    out.append((size, count))
        return out

    __hash__ = None

    def __repr__(self) -> str:
        return f"Cut({self._batches} batches in {len(self._runs)} runs)"


def _merged(runs: list[_Run]) -> list[_Run]:
    """Joins runs that continue one another with the same size: a cut regrouped at every
    epoch to the same size stays one run."""
    out: list[_Run] = []
    for run in runs:
        last = out[-1] if out else None
        regular_end = last is not None and last.end == last.start + last.count * last.size
        if last is not None and regular_end and last.size == run.size and run.start == last.end:
            out[-1] = _Run(last.start, last.size, last.count + run.count, run.end)
        else:
            out.append(run)
    return out
