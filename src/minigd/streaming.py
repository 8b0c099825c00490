"""Batches from a source on disk: read, checked and prefetched while the step computes.

    source --(a reader thread)--> slot: raw rows -> cast -> finite? -> targets --> queue --> step

1. *Reading*: the rows of batch b under the epoch's shuffle policy (``minigd.shuffle``): one
   positioned read per run of rows (policy "rows"), per range ("none"), or a shuffle buffer read
   block by block that batches are gathered from ("blocks").
2. *Checks that need no first pass*: each batch is cast to the model's dtype and checked for
   NaN/inf, its targets encoded (a label outside the classes is refused) as it is read; the
   error names the global row and the file. This is cheap next to the step, and off its thread.
3. *Prefetch*: a background thread fills a ring of batch slots ahead of the loop through a
   queue; positioned reads and large NumPy copies release the GIL, so reading overlaps the step.
   An error in the reader is raised in the loop's thread; ending the epoch in any way (its last
   batch, a ``break``, an exception, Ctrl-C) stops the reader and joins it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from minigd.data.sources import Source
from minigd.shuffle import BlockShuffle

PREFETCH_BYTES = 16 << 20  # read up to ~16 MiB of batches ahead
MAX_AHEAD = 16


class BadRowError(ValueError):
    """A value of one row of a streamed batch is unusable; ``position`` is its place in the
    batch, the reader adds the global row and the file."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(reason)
        self.position, self.reason = position, reason


def label_encoder(classes: np.ndarray | None, prepare: Callable[[np.ndarray], np.ndarray]):
    """The targets of one streamed batch: original labels -> class indices through ``classes``
    (sorted), or values as they are (regression), then ``prepare`` (the loss's conversion)."""

    def encode(raw: np.ndarray) -> np.ndarray:
        if classes is None:
            if raw.dtype.kind == "f" and not np.isfinite(raw).all():
                bad = ~np.isfinite(raw.reshape(len(raw), -1)).all(axis=1)
                raise BadRowError(int(np.argmax(bad)), "the target is NaN or inf")
            return prepare(raw)
        labels = raw.reshape(-1)
        if labels.dtype.kind == "O":  # text read from Parquet
            labels = labels.astype(str)
        index = np.searchsorted(classes, labels)
        known = (index < len(classes)) & (classes[np.minimum(index, len(classes) - 1)] == labels)
        if not known.all():
            i = int(np.argmin(known))
            label = labels[i : i + 1].tolist()[0]
            raise BadRowError(
                i, f"label {label!r} is not one of the {len(classes)} classes of the data"
            )
        return prepare(index)

    return encode


@dataclass
class IOStats:
    """What streaming cost: seconds the loop waited for a batch, seconds and bytes of reads."""

    wait_seconds: float = 0.0
    read_seconds: float = 0.0
    bytes_read: int = 0
    batches: int = 0
    per_epoch: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        return {
            "io_wait_seconds": self.wait_seconds,
            "read_seconds": self.read_seconds,
            "bytes_read": self.bytes_read,
        }


class _Slot:
    """Reused buffers for one batch in flight: raw rows as stored, and the model's dtype."""

    def __init__(self, x_source: Source, y_source: Source | None, rows: int, dtype) -> None:
        self.raw = np.empty((rows, *x_source.row_shape), x_source.dtype)
        self.x = self.raw if x_source.dtype == dtype else np.empty(self.raw.shape, dtype)
        self.y_raw = None
        if y_source is not None:
            self.y_raw = np.empty((rows, *y_source.row_shape), y_source.dtype)
        self.batch: tuple = ()


class BatchReader:
    """Fills slots with batch b of an epoch: reads, casts, checks (runs in the reader thread).

    Args:
        x_source, y_source: the rows and their targets (y may be None).
        dtype: the model's float dtype.
        targets: raw target rows of a batch -> the loss's targets (may raise BadRowError).
        x_name: what error messages call X ("X", "validation X").
    """

    def __init__(self, x_source, y_source, dtype, targets, x_name: str = "X") -> None:
        self.x_source, self.y_source = x_source, y_source
        self.dtype, self.targets, self.x_name = np.dtype(dtype), targets, x_name
        self.stats = IOStats()
        self._buffers: dict[int, tuple[np.ndarray, np.ndarray | None, np.ndarray]] = {}
        self._pool: list[tuple[np.ndarray, np.ndarray | None]] = []

    def new_slot(self, rows: int) -> _Slot:
        return _Slot(self.x_source, self.y_source, rows, self.dtype)

    # -- reading ------------------------------------------------------------------------
    def read_index(self, slot: _Slot, index: np.ndarray) -> np.ndarray:
        """Rows at a sorted global index (policy "rows")."""
        n = len(index)
        self.x_source.read_rows(index, slot.raw[:n])
        if self.y_source is not None:
            self.y_source.read_rows(index, slot.y_raw[:n])
        return index

    def read_span(self, slot: _Slot, lo: int, hi: int) -> np.ndarray:
        """Rows lo..hi-1 (policy "none")."""
        self.x_source.read_range(lo, hi, slot.raw[: hi - lo])
        if self.y_source is not None:
            self.y_source.read_range(lo, hi, slot.y_raw[: hi - lo])
        return np.arange(lo, hi)

    def read_parts(self, slot: _Slot, plan: BlockShuffle, lo: int, hi: int) -> np.ndarray:
        """Stream positions lo..hi-1 of a block shuffle, gathered from its buffers."""
        parts = plan.parts(lo, hi)
        self._release_before(parts[0][0])
        rows, at = [], 0
        for j, positions in parts:
            xbuf, ybuf, buffer_rows = self._buffer(plan, j)
            n = len(positions)
            xbuf.take(positions, axis=0, out=slot.raw[at : at + n], mode="clip")
            if ybuf is not None:
                ybuf.take(positions, axis=0, out=slot.y_raw[at : at + n], mode="clip")
            rows.append(buffer_rows[positions])
            at += n
        return np.concatenate(rows)

    def _buffer(self, plan: BlockShuffle, j: int):
        """Buffer j of the shuffle, read block by block on first use."""
        if j not in self._buffers:
            rows = plan.rows(j)
            size = plan.layout.buffer_rows
            xbuf, ybuf = self._pool.pop() if self._pool else self._new_buffer(size)
            self.x_source.read_rows(rows, xbuf[: len(rows)])
            if ybuf is not None:
                self.y_source.read_rows(rows, ybuf[: len(rows)])
            self._buffers[j] = (xbuf, ybuf, rows)  # the first len(rows) rows are buffer j's
            self.stats.bytes_read += len(rows) * self.x_source.row_bytes
        return self._buffers[j]

    def _new_buffer(self, size: int):
        x = np.empty((size, *self.x_source.row_shape), self.x_source.dtype)
        y = None
        if self.y_source is not None:
            y = np.empty((size, *self.y_source.row_shape), self.y_source.dtype)
        return x, y

    def _release_before(self, j: int) -> None:
        for old in [k for k in self._buffers if k < j]:
            xbuf, ybuf, _ = self._buffers.pop(old)
            self._pool.append((xbuf, ybuf))

    def reset(self) -> None:
        """Forgets the buffers of an epoch (its plan is gone); keeps their memory for reuse."""
        self._release_before(1 << 62)

    # -- checks ------------------------------------------------------------------------
    def finish(self, slot: _Slot, rows: np.ndarray) -> None:
        """Casts and checks the batch in ``slot``; sets ``slot.batch`` to (X, y) or (X,)."""
        n = len(rows)
        raw = slot.raw[:n]
        x = slot.x[:n]
        if slot.x is not slot.raw:
            np.copyto(x, raw, casting="unsafe")
        flat = x.reshape(n, -1)
        if not np.isfinite(flat).all():
            bad = int(np.argmax(~np.isfinite(flat).all(axis=1)))
            self._refuse(self.x_source, rows, bad, f"{self.x_name} holds NaN or inf")
        if self.y_source is None:
            slot.batch = (x,)
            return
        try:
            y = self.targets(slot.y_raw[:n])
        except BadRowError as exc:
            self._refuse(self.y_source, rows, exc.position, exc.reason)
        slot.batch = (x, y)

    def _refuse(self, source: Source, rows: np.ndarray, position: int, reason: str):
        row = int(rows[position])
        file, local = source.locate(row)
        raise ValueError(
            f"row {row} ({file}, row {local}): {reason}. Fix or drop that sample "
            "(checks run batch by batch as the data streams, so earlier batches trained)."
        )


def prefetch(
    fill: Callable[[_Slot, int], None],
    batches: range,
    slots: list[_Slot],
    stats: IOStats,
    name: str = "minigd-prefetch",
) -> Iterator[tuple]:
    """Yields ``slot.batch`` for each batch index in ``batches``, filled by ``fill(slot, b)`` in
    a background thread up to ``len(slots) - 1`` batches ahead. A yielded batch is valid until
    the next one is requested."""
    free: queue.SimpleQueue = queue.SimpleQueue()
    ready: queue.SimpleQueue = queue.SimpleQueue()
    for slot in slots:
        free.put(slot)
    stop = threading.Event()
    done = object()

    def reader() -> None:
        try:
            for b in batches:
                slot = free.get()
                if stop.is_set() or slot is None:
                    return
                start = time.perf_counter()
                fill(slot, b)
                stats.read_seconds += time.perf_counter() - start
                ready.put(slot)
        except BaseException as exc:  # raised again in the loop's thread
            ready.put(exc)
            return
        ready.put(done)

    thread = threading.Thread(target=reader, name=name, daemon=True)
    thread.start()
    held = None
    try:
        while True:
            if held is not None:
                free.put(held)
                held = None
            start = time.perf_counter()
            item = ready.get()
            stats.wait_seconds += time.perf_counter() - start
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            held = item
            stats.batches += 1
            yield item.batch
    finally:
        stop.set()
        free.put(None)  # wakes a reader waiting for a slot
        thread.join()


def pipeline_bytes(row_bytes: int, batch_size: int, buffer_rows: int) -> int:
    """Memory of streaming at ``batch_size``: two shuffle buffers (a batch may span them; 0 rows
    without a block shuffle) and the prefetched batch slots."""
    batch = batch_size * row_bytes
    return 2 * buffer_rows * row_bytes + slot_count(batch) * batch


def slot_count(batch_bytes: int) -> int:
    """Slots for prefetching: ~PREFETCH_BYTES of batches ahead, at least 2, at most 16, plus the
    one the loop holds."""
    return min(MAX_AHEAD, max(2, PREFETCH_BYTES // max(1, batch_bytes))) + 1
