"""Batches from a source on disk: read, checked and prefetched while the step computes.

1. *Reading*, in a background thread, under the epoch's shuffle policy (``batching.order``):
   - "blocks" (the default on disk): whole shuffle buffers, one positioned read per block, one
     buffer ahead of the loop; the loop gathers each batch's rows from the buffers in memory,
     with the same compiled gather as for an array, so a step costs what it costs in RAM;
   - "rows" and "none": each batch's rows (one read per run of consecutive rows), a few batches
     ahead, in a ring of reused batch slots.
2. *Checks that need no first pass*: what is read is cast to the model's dtype, checked for
   NaN/inf and its targets encoded (a label outside the classes is refused) in the reader thread,
   a buffer or a batch at a time; the error names the global row and the file. Under the block
   shuffle a block of an unchanging source (``.npy`` files) has its features checked the first
   epoch that reads it, not again (``VerifiedBlocks``), as an array in memory is checked once.
3. *Prefetch*: positioned reads and large NumPy loops release the GIL, so reading overlaps the
   step. An error in the reader is raised in the loop's thread; ending the epoch in any way (its
   last batch, a ``break``, an exception, Ctrl-C) stops the reader and joins it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from minigd.data.sources import Source

CHECK_ELEMENTS = 1 << 20  # values checked for NaN/inf per call: a 1 MB temporary mask
PREFETCH_BYTES = 16 << 20  # read up to ~16 MiB of batches ahead
MAX_AHEAD = 16
INDEX_BYTES = 16  # a shuffle buffer's row numbers and their permutation: one int64 each a row
TARGET_BYTES = 8  # an encoded target value at the most (a class index, a float64)


def buffer_row_bytes(x_row_bytes: int, y_row_bytes: int = 0, y_values: int = 0) -> int:
    """What one row of a shuffle buffer costs, counted from the data alone so that arrays in
    memory and the same rows on disk are cut alike: the features as stored, the buffer's
    indexes, and the target as stored and encoded. For rows of a few features the indexes and
    targets outweigh the features (4 float32 features and a uint8 label: 16 bytes of 41), so
    buffers are sized by this. A cast to the model's dtype adds a copy of the features, which
    the memory model counts on top (``DiskRows.pipeline_bytes``)."""
    target = y_row_bytes + max(1, y_values) * TARGET_BYTES if y_row_bytes else 0
    return x_row_bytes + INDEX_BYTES + target


class VerifiedBlocks:
    """The blocks of a streamed source whose features were found finite, one bit a block.

    Checking what was already checked costs a third of the reader's CPU in every epoch after the
    first, and on 2 cores that CPU comes out of the BLAS threads' time. Skipping it is safe only
    for a source whose bytes cannot change unnoticed (``Source.unchanging``: a ``.npy`` file
    refuses reads once it was written to or replaced); others are checked on every read. A block
    that fails is never marked, so it is refused in every epoch that reads it.
    """

    def __init__(self, block_rows: int, n_rows: int) -> None:
        self.block_rows = block_rows
        n_blocks = -(-n_rows // max(1, block_rows))
        self._bits = np.zeros(-(-n_blocks // 8), np.uint8)

    def unverified(self, rows: np.ndarray) -> list[tuple[int, int, int]]:
        """(block, lo, hi) for each block of ``rows`` (sorted whole blocks, as a shuffle buffer
        holds them) not yet verified: its rows are positions lo..hi-1 of ``rows``."""
        if len(rows) == 0:  # a rank that owns no block of this buffer
            return []
        block = rows // self.block_rows
        edges = np.flatnonzero(np.diff(block)) + 1
        starts = np.concatenate(([0], edges)).tolist()
        ends = np.concatenate((edges, [len(rows)])).tolist()
        ids = block[starts].tolist()
        return [
            (k, lo, hi)
            for k, lo, hi in zip(ids, starts, ends, strict=True)
            if not self._bits[k >> 3] >> (k & 7) & 1
        ]

    def mark(self, block: int) -> None:
        self._bits[block >> 3] |= np.uint8(1 << (block & 7))


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

    def as_dict(self) -> dict[str, float]:
        """What History.meta records of a streamed run."""
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

    def new_slot(self, rows: int) -> _Slot:
        return _Slot(self.x_source, self.y_source, rows, self.dtype)

    @property
    def buffer_row_bytes(self) -> int:
        """One shuffle-buffer row's memory, by the data (``buffer_row_bytes``)."""
        y = self.y_source
        if y is None:
            return buffer_row_bytes(self.x_source.row_bytes)
        values = int(np.prod(y.row_shape, dtype=np.int64))
        return buffer_row_bytes(self.x_source.row_bytes, y.row_bytes, values)

    @property
    def cast_row_bytes(self) -> int:
        """A row's features again in the model's dtype, where they are stored in another."""
        if self.x_source.dtype == self.dtype:
            return 0
        return int(np.prod(self.x_source.row_shape, dtype=np.int64)) * self.dtype.itemsize

    # -- reading ------------------------------------------------------------------------
    def read_index(self, slot: _Slot, index: np.ndarray) -> np.ndarray:
        """Rows at a sorted global index (policy "rows")."""
        n = len(index)
        self.x_source.read_rows(index, slot.raw[:n])
        if self.y_source is not None:
            self.y_source.read_rows(index, slot.y_raw[:n])
        self.stats.bytes_read += n * self.x_source.row_bytes
        return index

    def read_span(self, slot: _Slot, lo: int, hi: int) -> np.ndarray:
        """Rows lo..hi-1 (policy "none", or one batch of everything)."""
        self.x_source.read_range(lo, hi, slot.raw[: hi - lo])
        if self.y_source is not None:
            self.y_source.read_range(lo, hi, slot.y_raw[: hi - lo])
        self.stats.bytes_read += (hi - lo) * self.x_source.row_bytes
        return np.arange(lo, hi)

    def new_buffer(self, rows: int) -> _Slot:
        """A slot for one shuffle buffer of up to ``rows`` rows (block shuffle)."""
        return _Slot(self.x_source, self.y_source, rows, self.dtype)

    def load_buffer(
        self, slot: _Slot, rows: np.ndarray, verified: VerifiedBlocks | None = None
    ) -> None:
        """Reads the rows of a shuffle buffer (all of it, or a rank's blocks of it) into
        ``slot``, checked and encoded; sets ``slot.batch`` to (X rows, targets or None, their
        global rows). With ``verified``, only blocks not checked before are checked."""
        n = len(rows)
        self.x_source.read_rows(rows, slot.raw[:n])
        if self.y_source is not None:
            self.y_source.read_rows(rows, slot.y_raw[:n])
        self.stats.bytes_read += n * self.x_source.row_bytes
        slot.batch = (*self._checked(slot, rows, verified), rows)

    def load_mapped(self, slot: _Slot, rows: np.ndarray, verified: VerifiedBlocks, leased) -> bool:
        """``load_buffer`` for rows of a ``LeasedMap``: the features stay in the map (the loop
        gathers its batches from it), blocks not checked before are checked there, the targets
        are read; ``slot.batch`` is (None, targets or None, rows). False, with nothing loaded,
        once the map's lease is broken (read the rows instead)."""
        n = len(rows)
        with leased.access() as mapped:
            if mapped is None:
                return False
            for block, lo, hi in verified.unverified(rows):
                first = int(rows[lo])
                self._check_block(slot, mapped[first : first + hi - lo], rows, lo)
                verified.mark(block)
        self.stats.bytes_read += n * self.x_source.row_bytes
        slot.batch = (None, self._targets(rows, slot), rows)
        return True

    # -- checks ------------------------------------------------------------------------
    def finish(self, slot: _Slot, rows: np.ndarray) -> None:
        """Casts and checks the rows read into ``slot``; sets ``slot.batch`` to (X, y) or (X,)."""
        x, y = self._checked(slot, rows)
        slot.batch = (x,) if y is None else (x, y)

    def _why_not_finite(self, slot: _Slot, x: np.ndarray, bad: int) -> str:
        """NaN or inf as stored, or a finite value the cast to the model's dtype overflowed
        (``bad``: the row's place in ``slot``)."""
        if slot.x is not slot.raw and slot.raw.dtype.kind in "iuf":
            stored = np.asarray(slot.raw[bad], dtype=np.float64)
            if np.isfinite(stored).all():
                return (
                    f"{self.x_name} holds a value beyond {x.dtype}'s range "
                    f"(+-{np.finfo(x.dtype).max:.3g}): train with --dtype float64, or scale "
                    "the features"
                )
        return f"{self.x_name} holds NaN or inf"

    def _checked(
        self, slot: _Slot, rows: np.ndarray, verified: VerifiedBlocks | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(X in the model's dtype, targets or None) of the rows in ``slot``, or a ValueError
        that names the first bad row and its file."""
        n = len(rows)
        x = slot.x[:n]
        if slot.x is not slot.raw:
            np.copyto(x, slot.raw[:n], casting="unsafe")
        if verified is None:
            self._check_block(slot, x, rows, 0)
        else:
            for block, lo, hi in verified.unverified(rows):
                self._check_block(slot, x[lo:hi], rows, lo)
                verified.mark(block)
        return x, self._encoded(slot, rows)

    def _targets(self, rows: np.ndarray, slot: _Slot) -> np.ndarray | None:
        """The encoded targets of ``rows``, read into ``slot`` (None without targets)."""
        if self.y_source is None:
            return None
        self.y_source.read_rows(rows, slot.y_raw[: len(rows)])
        return self._encoded(slot, rows)

    def _encoded(self, slot: _Slot, rows: np.ndarray) -> np.ndarray | None:
        """The targets read into ``slot`` for ``rows``, encoded (None without targets)."""
        if self.y_source is None:
            return None
        try:
            return self.targets(slot.y_raw[: len(rows)])
        except BadRowError as exc:
            self._refuse(self.y_source, rows, exc.position, exc.reason)

    def _check_block(self, slot: _Slot, x: np.ndarray, rows, at: int) -> None:
        """Refuses the first row of ``x``, rows at..at+len(x)-1 of ``rows``, that holds NaN or
        inf, a bounded mask at a time."""
        flat = x.reshape(len(x), -1)
        step = max(1, CHECK_ELEMENTS // max(1, flat.shape[1]))  # bounds the temporary mask
        for a in range(0, len(flat), step):
            part = flat[a : a + step]
            if not np.isfinite(part).all():
                bad = a + int(np.argmax(~np.isfinite(part).all(axis=1)))
                why = self._why_not_finite(slot, x, at + bad)  # at + bad: its place in slot
                self._refuse(self.x_source, rows, at + bad, why)

    def _refuse(self, source: Source, rows: np.ndarray, position: int, reason: str):
        row = int(rows[position])
        file, local = source.locate(row)
        raise ValueError(
            f"row {row} ({file}, row {local}): {reason}. Fix or drop that sample "
            "(checks run batch by batch as the data streams, so earlier batches trained)."
        )


class Prefetcher:
    """Fills slots in a background thread, ``fill(slot, item)`` for each item in order, as the
    loop hands slots back: ``next()`` returns a filled slot, ``release(slot)`` returns it for
    reuse, ``close()`` stops and joins the thread (also at the end, on an error, or GC).

    With k slots the reader runs up to k - (slots the loop holds) items ahead.
    """

    def __init__(self, fill, items, slots: list[_Slot], stats: IOStats) -> None:
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._ready: queue.SimpleQueue = queue.SimpleQueue()
        for slot in slots:
            self._free.put(slot)
        self._stop = threading.Event()
        self._fill, self._items, self._stats = fill, items, stats
        self.busy = False  # filling a slot now (the loop may train on fewer BLAS threads)
        self._thread = threading.Thread(target=self._read, name="minigd-prefetch", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for item in self._items:
                slot = self._free.get()
                if slot is None or self._stop.is_set():
                    return
                start = time.perf_counter()
                self.busy = True
                try:
                    self._fill(slot, item)
                finally:
                    self.busy = False
                self._stats.read_seconds += time.perf_counter() - start
                self._ready.put(slot)
        except BaseException as exc:  # raised again in the loop's thread
            self._ready.put(exc)
            return
        self._ready.put(_DONE)

    def next(self) -> _Slot:
        start = time.perf_counter()
        item = self._ready.get()
        self._stats.wait_seconds += time.perf_counter() - start
        if item is _DONE:
            self._ready.put(_DONE)
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def release(self, slot: _Slot) -> None:
        self._free.put(slot)

    def close(self) -> None:
        self._stop.set()
        self._free.put(None)  # wakes a reader waiting for a slot
        self._thread.join()


_DONE = object()


class BufferStream:
    """The (block shuffle, buffer) items a loader reads: the rest of one epoch's buffers, then
    each epoch's added while the loop trains the one before, so the reader goes on into the next
    epoch as soon as a slot is free; iteration waits for an ``add`` or the ``end``."""

    def __init__(self) -> None:
        self._epochs: queue.SimpleQueue = queue.SimpleQueue()

    def add(self, blocks, first: int = 0) -> None:
        """Buffers ``first``.. of ``blocks`` (an ``order.BlockShuffle``) follow."""
        self._epochs.put((blocks, first))

    def end(self) -> None:
        """Nothing follows what was added."""
        self._epochs.put(None)

    def __iter__(self) -> Iterator[tuple]:
        while (epoch := self._epochs.get()) is not None:
            blocks, first = epoch
            for j in range(first, len(blocks.buffers)):
                yield blocks, j


class BufferLoader:
    """A Prefetcher of shuffle buffers and the stream it reads, closed together: ending the
    stream wakes a reader waiting to learn whether another epoch follows."""

    def __init__(self, prefetcher: Prefetcher, stream: BufferStream) -> None:
        self.prefetcher, self.stream = prefetcher, stream
        self.next, self.release = prefetcher.next, prefetcher.release

    def close(self) -> None:
        self.stream.end()
        self.prefetcher.close()


def prefetch(fill, items, slots: list[_Slot], stats: IOStats) -> Iterator[tuple]:
    """Yields ``slot.batch`` for each item, filled ahead by a Prefetcher; a yielded batch is
    valid until the next one is requested."""
    reader = Prefetcher(fill, items, slots, stats)
    try:
        while True:
            try:
                slot = reader.next()
            except StopIteration:
                return
            stats.batches += 1
            yield slot.batch
            reader.release(slot)
    finally:
        reader.close()


def buffer_slots(batch_size: int, buffer_rows: int) -> int:
    """Shuffle buffers held at once: those one batch can span, plus one being read ahead."""
    return -(-batch_size // max(1, buffer_rows)) + 2


def pipeline_bytes(
    row_bytes: int, batch_size: int, buffer_rows: int, buffer_row: int | None = None
) -> int:
    """Memory of streaming at ``batch_size``: with a block shuffle, its buffers (``buffer_slots``,
    ``buffer_row`` bytes a row, default ``row_bytes``) and the batch the loop gathers into; else
    the prefetched batch slots."""
    batch = batch_size * row_bytes
    if buffer_rows:
        per_row = row_bytes if buffer_row is None else buffer_row
        return buffer_slots(batch_size, buffer_rows) * buffer_rows * per_row + batch
    return slot_count(batch) * batch


def slot_count(batch_bytes: int) -> int:
    """Slots for prefetching: ~PREFETCH_BYTES of batches ahead, at least 2, at most 16, plus the
    one the loop holds."""
    return min(MAX_AHEAD, max(2, PREFETCH_BYTES // max(1, batch_bytes))) + 1
