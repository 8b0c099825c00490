"""Rows read from a source on disk: the row store MiniBatches holds for a file.

Per batch for the "rows" and "none" orders, per shuffle buffer for "blocks", through the
background reader of ``batching.reader``. Memory is the shuffle buffers and the prefetched batch
slots (``pipeline_bytes``), whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from minigd._kernels import compiled_gather
from minigd.batching.order import BlockLayout, BlockShuffle
from minigd.batching.plan import EpochPlan
from minigd.batching.reader import (
    BatchReader,
    BufferLoader,
    BufferStream,
    Prefetcher,
    VerifiedBlocks,
    buffer_slots,
    pipeline_bytes,
    prefetch,
    slot_count,
)
from minigd.data.sources import BLOCK_BYTES, runs


def streaming_pipeline(X, y=None, dtype=np.float32) -> Callable[[int], int]:
    """Bytes of the input pipeline at each batch size when sources X (and y) are streamed with
    the block shuffle a run uses, for a model of ``dtype``: what the advisor and the finder count
    instead of the data."""
    reader = BatchReader(X, y, dtype, targets=None)
    buffer_row = reader.buffer_row_bytes
    block_rows = X.block_rows or max(1, BLOCK_BYTES // max(1, X.row_bytes))
    layout = BlockLayout.default(len(X), block_rows, buffer_row)
    row = X.row_bytes + (0 if y is None else y.row_bytes)
    held = buffer_row + reader.cast_row_bytes
    return lambda b: pipeline_bytes(row, b, layout.buffer_rows, held)


class DiskRows:
    """The rows of a ``BatchReader``'s source, read, checked and prefetched as batches need them.

    A yielded batch is valid until the next is requested. Under the block shuffle, the next
    epoch's first buffer is read while the loop trains this epoch's last and does its epoch-end
    work (validation, checkpoints), so an epoch after the first never waits to begin;
    ``close()`` stops that read-ahead.
    """

    streaming = True

    def __init__(self, reader: BatchReader) -> None:
        self.reader = reader
        self.n_rows = reader.x_source.n_rows
        self._slots: list = []
        self._slot_rows = 0  # rows each slot was made for (a batch, or a shuffle buffer)
        self._out: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self._index = np.empty(0, np.intp)  # a batch part's global rows (_global_rows)
        self._ahead = None  # ((epoch, start, largest batch), BufferLoader): reading on
        self._verified: VerifiedBlocks | None = None  # blocks whose features were checked
        self._buffers: Prefetcher | None = None  # the newest shuffle-buffer reader
        self._map = None  # the features mapped under a read lease (data.leased_map), or None
        self._map_tried = False
        self.mapped = False  # the last run's features were mapped

    @property
    def reading(self) -> bool:
        """Whether the reader is copying a shuffle buffer's features now (not when they are
        mapped: it then reads the targets and checks a block the first time, a few percent
        of a buffer's steps, and the loop keeps its threads)."""
        buffers = self._buffers
        return buffers is not None and buffers.busy and self._map is None

    @property
    def name(self) -> str:
        return self.reader.x_source.name

    @property
    def x_row_bytes(self) -> int:
        """Bytes of one row of X as stored (what blocks are cut by)."""
        return self.reader.x_source.row_bytes

    @property
    def row_bytes(self) -> int:
        """Bytes of one row of X and its target as stored."""
        y = self.reader.y_source
        return self.reader.x_source.row_bytes + (0 if y is None else y.row_bytes)

    @property
    def block_rows(self) -> int:
        """The source's natural read (~1 MiB, a Parquet row group, an HDF5 chunk)."""
        return self.reader.x_source.block_rows

    @property
    def stats(self):
        return self.reader.stats

    def io(self) -> dict[str, float]:
        """What History.meta records of a streamed run: time waiting on the disk, bytes read,
        whether the features were gathered from a map (``data.leased_map``)."""
        return {**self.reader.stats.as_dict(), "features_mapped": self.mapped}

    @property
    def buffer_row_bytes(self) -> int:
        """One shuffle-buffer row's memory by the data, indexes and encoded targets included
        (what the buffer's size is counted in)."""
        return self.reader.buffer_row_bytes

    def pipeline_bytes(self, batch_size: int, buffer_rows: int) -> int:
        """The shuffle buffers (two held while a batch spans them) or the prefetched batches."""
        held = self.buffer_row_bytes + self.reader.cast_row_bytes
        return pipeline_bytes(self.row_bytes, batch_size, buffer_rows, held)

    def batches(self, plan: EpochPlan, start: int) -> Iterator[tuple]:
        """(X batch, y batch or None) for batches start.. of the plan, read ahead by a thread."""
        if plan.blocks is not None:
            return self._by_buffer(plan, start)
        return self._by_batch(plan, start)

    def take(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The rows at a sorted ``index``, read, checked and encoded now (a measurement's
        sample, not a training batch): fresh arrays."""
        slot = self.reader.new_slot(len(index))
        self.reader.finish(slot, self.reader.read_index(slot, np.asarray(index)))
        x, *y = slot.batch
        return x, (y[0] if y else None)

    # -- per batch: "rows" and "none" -----------------------------------------------------
    def _by_batch(self, plan: EpochPlan, start: int) -> Iterator:
        reader = self.reader
        if plan.order is not None:

            def fill(slot, b):
                lo, hi = plan.batch(b)
                reader.finish(slot, reader.read_index(slot, plan.order[lo:hi]))
        else:

            def fill(slot, b):
                reader.finish(slot, reader.read_span(slot, *plan.batch(b)))

        largest = plan.bounds.largest()
        slots = self._slots_for(largest, lambda: slot_count(largest * self.row_bytes), False)
        for batch in prefetch(fill, range(start, len(plan)), slots, reader.stats):
            yield batch if len(batch) == 2 else (batch[0], None)

    # -- per shuffle buffer: "blocks" -----------------------------------------------------
    def _by_buffer(self, plan: EpochPlan, start: int) -> Iterator:
        """The reader thread loads shuffle buffers (checked, in the model's dtype) one ahead,
        on into the next epoch's first while the loop trains this one's last; each batch is
        gathered here from the buffers it spans."""
        if start == len(plan):
            return
        loader = self._loader(plan, start)
        if plan.read_ahead:  # the reader may go on into the next epoch
            loader.stream.add(BlockShuffle(plan.blocks.layout, plan.blocks.seed, plan.epoch + 1))
        else:
            loader.stream.end()
        held = {}  # buffer index -> its loaded slot
        handed_on = False
        stats = self.reader.stats
        try:
            for parts in plan.walk(start):
                first = parts[0][0]
                if len(held) > 1 or first not in held:
                    for j in [k for k in held if k < first]:
                        loader.release(held.pop(j))
                while parts[-1][0] not in held:
                    slot = loader.next()
                    held[slot.j] = slot
                stats.batches += 1
                yield self._gather_parts(plan.my_parts(parts), held, first)
            if plan.read_ahead:  # a completed epoch hands its reader on; close() stops it
                for slot in held.values():
                    loader.release(slot)
                self._ahead = ((plan.epoch + 1, 0, plan.bounds.largest()), loader)
                handed_on = True
        finally:
            if not handed_on:
                loader.close()

    def _loader(self, plan: EpochPlan, start: int) -> BufferLoader:
        """A loader of the plan's buffers from the one holding batch ``start``: the previous
        epoch's, when it read on into this epoch from its first batch and its slots hold this
        plan's largest batch (an epoch regrouped to larger batches after the read-ahead began
        spans more buffers: with too few slots, loop and reader would wait for each other)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            (epoch, first, largest), loader = ahead
            if (epoch, first) == (plan.epoch, start) and plan.bounds.largest() <= largest:
                return loader
            loader.close()
        return self._start_loader(plan, start)

    def _start_loader(self, plan: EpochPlan, start: int) -> BufferLoader:
        """Loads the plan's buffers from the one holding batch ``start`` on, then those of each
        epoch added to its stream; with an owner (rank, size), only that rank's blocks of each."""
        reader, owner, layout = self.reader, plan.owner, plan.blocks.layout
        largest = plan.bounds.largest()
        rows = layout.buffer_rows
        slots = self._slots_for(rows, lambda: buffer_slots(largest, rows), True)
        verified = self._verified_for(layout)

        leased = self._leased_map(verified)
        # a file no larger than the buffers a read would fill stays mapped whole: unmapping it
        # would save nothing the run was counted for, and mapping it again costs 4% an epoch
        unmap = leased is not None and reader.x_source.nbytes > self.pipeline_bytes(largest, rows)

        def load(slot, item):
            blocks, j = item
            mine = blocks.rows(j) if owner is None else blocks.owned(j, *owner)[0]
            if leased is None:
                reader.load_buffer(slot, mine, verified)
            else:
                if unmap:
                    self._drop_mapped(slot, leased)
                if not reader.load_mapped(slot, mine, verified, leased):
                    reader.load_buffer(slot, mine, verified)
            slot.j = j

        stream = BufferStream()
        stream.add(plan.blocks, plan.blocks.buffer_of(int(plan.bounds[start])))
        self._buffers = Prefetcher(load, iter(stream), slots, reader.stats)
        return BufferLoader(self._buffers, stream)

    def _leased_map(self, verified: VerifiedBlocks | None):
        """The features mapped under a read lease, where the source offers one and its rows
        are the model's dtype (batches are then gathered from the page cache, without the
        reader's copy into a buffer); asked for once a run. Needs ``verified``: a mapped block
        is checked once, like a read one."""
        if not self._map_tried:
            self._map_tried = True
            source = self.reader.x_source
            if verified is not None and source.dtype == self.reader.dtype:
                self._map = source.leased_map()
            self.mapped = self._map is not None
        return self._map

    @staticmethod
    def _drop_mapped(slot, leased) -> None:
        """Unmaps the rows a slot's buffer mapped last (whole blocks): resident memory stays
        the buffers in use, not the file."""
        batch = slot.batch
        if len(batch) == 3 and batch[0] is None:
            rows = batch[2]
            starts, ends = runs(rows)
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
                leased.drop(int(rows[a]), int(rows[b - 1]) + 1)

    def _verified_for(self, layout) -> VerifiedBlocks | None:
        """The blocks already checked in this run, kept while the block cut stays the same;
        None where the source cannot promise a block read again is the block checked."""
        if not self.reader.x_source.unchanging:
            return None
        verified = self._verified
        if verified is None or verified.block_rows != layout.block_rows:
            verified = self._verified = VerifiedBlocks(layout.block_rows, self.n_rows)
        return verified

    def _slots_for(self, rows: int, count, buffers: bool) -> list:
        """The reused slots: ``count()`` of them of ``rows`` rows each, made once and added to
        when a regrouped epoch's batches span more buffers (too few slots, and the reader would
        wait for one the loop holds while the loop waits for the reader)."""
        make = self.reader.new_buffer if buffers else self.reader.new_slot
        if not self._slots or self._slot_rows != rows:
            self._slots, self._slot_rows = [], rows
        self._slots += [make(rows) for _ in range(count() - len(self._slots))]
        return self._slots

    def _gather_parts(self, parts, held, first: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Copies each (buffer, positions) part of a batch into this batch size's buffers;
        ``first`` is a buffer of the batch (the shapes and dtypes, when ``parts`` is empty)."""
        n = len(parts[0][1]) if len(parts) == 1 else sum(len(p) for _, p in parts)
        y_first = held[first].batch[1]
        out = self._out.get(n)
        if out is None:
            y_out = None if y_first is None else np.empty((n, *y_first.shape[1:]), y_first.dtype)
            x_shape = (n, *self.reader.x_source.row_shape)
            out = self._out[n] = (np.empty(x_shape, self.reader.dtype), y_out)
        x_out, y_out = out
        if len(parts) == 1:  # most batches: one buffer's rows
            ((j, positions),) = parts
            self._gather_part(held[j], positions, x_out, y_out)
            return x_out, y_out
        at = 0
        for j, positions in parts:
            k = len(positions)
            y_part = None if y_out is None else y_out[at : at + k]
            self._gather_part(held[j], positions, x_out[at : at + k], y_part)
            at += k
        return x_out, y_out

    def _gather_part(self, slot, positions: np.ndarray, x_out, y_out) -> None:
        """A buffer's rows at ``positions``: features from the map or the buffer, targets from
        the buffer."""
        x, y, rows = slot.batch
        if x is None and not self._gather_mapped(self._global_rows(rows, positions), x_out):
            # the lease broke: read the buffer (the reads name a changed file)
            self.reader.load_buffer(slot, rows, self._verified)
            x, y, _ = slot.batch
        if x is not None:
            _gather(x, positions, x_out)
        if y is not None:
            y.take(positions, axis=0, out=y_out, mode="clip")

    def _global_rows(self, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """``rows[positions]``, into the front of one kept index array (a batch's parts come in
        every size up to the batch: the step allocates no data)."""
        k = len(positions)
        if len(self._index) < k or self._index.dtype != rows.dtype:
            self._index = np.empty(k, rows.dtype)
        return np.take(rows, positions, out=self._index[:k], mode="clip")

    def _gather_mapped(self, rows: np.ndarray, out: np.ndarray) -> bool:
        """Gathers global ``rows`` from the map into ``out``; False once the map's lease is
        broken (or the map closed: the run ended)."""
        leased = self._map
        if leased is None:
            return False
        mapped = leased.acquire()
        try:
            if mapped is not None:
                _gather(mapped, rows, out)
        finally:
            leased.release()
        return mapped is not None

    def close(self) -> None:
        """Stops reading ahead into the next epoch and releases the map (a run's end)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead[1].close()
        leased, self._map, self._map_tried = self._map, None, False
        if leased is not None:
            leased.close()

    def __del__(self) -> None:
        self.close()


def _gather(x: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """out[i] = x[index[i]]: the compiled gather where it applies."""
    k = len(index)
    gather = compiled_gather(x)
    if gather is not None and k > 1:
        gather(x.reshape(len(x), -1), index, out.reshape(k, -1))
    else:
        x.take(index, axis=0, out=out, mode="clip")
