"""How MiniBatches reads the batches of a source on disk (the part of ``MiniBatches`` that
streams): per batch for the "rows" and "none" orders, per shuffle buffer for "blocks", through
the background reader of ``minigd.streaming``; and the share of each batch one rank of a
data-parallel run takes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from minigd._kernels import compiled_gather
from minigd.shuffle import BlockShuffle
from minigd.streaming import Prefetcher, buffer_slots, prefetch, slot_count


def rank_share(n: int, rank: int, size: int) -> tuple[int, int]:
    """The rows [lo, hi) of a batch of n that rank ``rank`` of ``size`` takes in data-parallel
    training: shares differ by at most one row (a rank may get none of a tiny batch)."""
    base, extra = divmod(n, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


class StreamedEpochs:
    """The streaming epochs of a MiniBatches (a mixin: it reads the MiniBatches' state)."""

    def _stream(self, e: int, start: int) -> Iterator[Any]:
        """Batches start.. of epoch e of a source: its rows read ahead by a background thread,
        a batch at a time (policies "rows" and "none"), or a shuffle buffer at a time."""
        if self.shuffle == "blocks" and not self._one_full_batch:
            yield from self._stream_blocks(e, start)
            return
        reader, bounds = self.stream, self._bounds
        if self.shuffle == "rows" and not self._one_full_batch:
            order = self.order(e)

            def fill(slot, b):
                lo, hi = self._mine(int(bounds[b]), int(bounds[b + 1]))
                reader.finish(slot, reader.read_index(slot, order[lo:hi]))
        else:

            def fill(slot, b):
                reader.finish(slot, reader.read_span(slot, *self._mine(bounds[b], bounds[b + 1])))

        if not self._slots:
            row = reader.x_source.row_bytes + self._y_row_bytes()
            largest = max(self.batch_sizes)
            self._slots = [reader.new_slot(largest) for _ in range(slot_count(largest * row))]
        for batch in prefetch(fill, range(start, len(self)), self._slots, reader.stats):
            yield batch if len(batch) == 2 else batch[0]

    def _stream_blocks(self, e: int, start: int) -> Iterator[Any]:
        """Policy "blocks" on a source: the reader thread loads shuffle buffers (checked, in the
        model's dtype) one ahead; each batch is gathered here from the buffers it spans. At the
        end of an epoch the next epoch's first buffer is read while the loop does its epoch-end
        work (validation, checkpoints); ``close()`` stops that read-ahead."""
        if start == len(self):
            return
        plan, loader = self._loader(e, start)
        bounds, held = self._bounds, {}  # buffer index -> its loaded slot
        finished = False
        try:
            for b in range(start, len(self)):
                parts = plan.parts(int(bounds[b]), int(bounds[b + 1]))
                for j in [k for k in held if k < parts[0][0]]:
                    loader.release(held.pop(j))
                while parts[-1][0] not in held:
                    slot = loader.next()
                    held[slot.j] = slot
                self.stream.stats.batches += 1
                xb, yb = self._gather_parts(self._my_parts(parts), held, parts[0][0])
                yield xb if yb is None else (xb, yb)
            finished = True
        finally:
            loader.close()
        if finished and self.read_ahead:  # a completed epoch reads ahead; close() stops it
            self._ahead = ((e + 1, 0), *self._loader(e + 1, 0, start_now=True))

    def _loader(self, e: int, start: int, start_now: bool = False):
        """(the block plan of epoch e, a Prefetcher of its buffers from the one holding batch
        ``start``), taken over from the read-ahead when it is for this epoch and batch."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            key, plan, loader = ahead
            if key == (e, start) and not start_now:
                return plan, loader
            loader.close()
        reader = self.stream
        if not self._slots:
            count = buffer_slots(max(self.batch_sizes), self.blocks.buffer_rows)
            self._slots = [reader.new_buffer(self.blocks.buffer_rows) for _ in range(count)]
        plan = BlockShuffle(self.blocks, self.seed, e)

        def load(slot, j):
            reader.load_buffer(slot, plan, j)
            slot.j = j

        first = plan.buffer_of(int(self._bounds[start]))
        return plan, Prefetcher(load, range(first, len(plan.buffers)), self._slots, reader.stats)

    def close(self) -> None:
        """Stops reading ahead into the next epoch (a streamed source); nothing else changes."""
        ahead, self._ahead = getattr(self, "_ahead", None), None
        if ahead is not None:
            ahead[2].close()

    def __del__(self) -> None:
        self.close()

    def _my_parts(self, parts: list) -> list:
        """This process's share of a batch given as (buffer, positions) parts."""
        if self.share is None:
            return parts
        a, b = rank_share(sum(len(p) for _, p in parts), *self.share)
        mine, at = [], 0
        for j, positions in parts:
            lo, hi = max(a - at, 0), min(b - at, len(positions))
            if hi > lo:
                mine.append((j, positions[lo:hi]))
            at += len(positions)
        return mine

    def _gather_parts(self, parts, held, first: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Copies each (buffer, positions) part of a batch into this batch size's buffers;
        ``first`` is a buffer of the batch (the shapes and dtypes, when ``parts`` is empty)."""
        n = sum(len(positions) for _, positions in parts)
        x_first, y_first, _ = held[first].batch
        out = self._buffers.get(n)
        if out is None:
            y_out = None if y_first is None else np.empty((n, *y_first.shape[1:]), y_first.dtype)
            out = self._buffers[n] = (np.empty((n, *x_first.shape[1:]), x_first.dtype), y_out)
        x_out, y_out = out
        at = 0
        for j, positions in parts:
            x, y, _ = held[j].batch
            k = len(positions)
            gather = compiled_gather(x)
            if gather is not None and k > 1:
                gather(x.reshape(len(x), -1), positions, x_out[at : at + k].reshape(k, -1))
            else:
                x.take(positions, axis=0, out=x_out[at : at + k], mode="clip")
            if y is not None:
                y.take(positions, axis=0, out=y_out[at : at + k], mode="clip")
            at += k
        return x_out, y_out
