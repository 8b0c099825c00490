"""Rows held in memory: the row store MiniBatches holds for arrays.

Each batch's rows are gathered into a buffer reused from step to step (one per batch size); an
epoch in the natural order, or one batch of everything, yields views instead of copies.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from minigd._kernels import compiled_gather
from minigd.batching.plan import EpochPlan
from minigd.batching.reader import buffer_row_bytes


class MemoryRows:
    """Samples as C-contiguous rows ``X`` and their targets ``y`` (or None), read by index.

    Args:
        X: (m, ...) rows, already converted (``data.as_rows``); read, never copied whole.
        y: (m, ...) targets, or None.
    """

    streaming = False
    mapped = False  # nothing to map: the rows are in memory
    reading = False  # nothing is read while training

    def __init__(self, X: np.ndarray, y: np.ndarray | None) -> None:
        self.X, self.y = X, y
        self.n_rows = X.shape[0]
        self._gather_rows = compiled_gather(X)
        # what the compiled gather reads: a 2-D view (the gather needs a C-ordered X)
        self._X_rows = X.reshape(self.n_rows, -1) if self._gather_rows is not None else None
        self._buffers: dict[int, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = {}

    @property
    def name(self) -> str:
        return "arrays in memory"

    @property
    def x_row_bytes(self) -> int:
        return self.X[:1].nbytes

    @property
    def block_rows(self) -> int:
        """Arrays have no natural read: blocks are cut by size (``MiniBatches``)."""
        return 0

    @property
    def buffer_row_bytes(self) -> int:
        """One shuffle-buffer row by the data, as ``DiskRows`` counts it, so that arrays and the
        same rows on disk are cut into the same buffers."""
        if self.y is None:
            return buffer_row_bytes(self.x_row_bytes)
        return buffer_row_bytes(self.x_row_bytes, self.y[:1].nbytes, self.y[:1].size)

    def batches(self, plan: EpochPlan, start: int) -> Iterator[tuple]:
        """(X batch, y batch or None) for batches start.. of the plan."""
        for b in range(start, len(plan)):
            lo, hi = plan.batch(b)
            if plan.order is None:  # natural order: a view replaces the gather
                yield self.X[lo:hi], None if self.y is None else self.y[lo:hi]
            else:
                yield self.take(plan.order[lo:hi])

    def take(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Copies the rows ``index`` of X and y into this batch size's buffers. The indices come
        from a permutation of range(m), so neither path checks them (mode="clip" makes
        ``take`` ~3x faster than its default)."""
        n = len(index)
        bufs = self._buffers.get(n)
        if bufs is None:
            bufs = self._buffers[n] = self._new_buffers(n)
        xbuf, xbuf_rows, ybuf = bufs
        if xbuf_rows is not None:
            self._gather_rows(self._X_rows, index, xbuf_rows)
        else:
            self.X.take(index, axis=0, out=xbuf, mode="clip")
        if ybuf is not None:
            self.y.take(index, axis=0, out=ybuf, mode="clip")
        return xbuf, ybuf

    def _new_buffers(self, n: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """A batch buffer for X (and its 2-D view for the compiled gather) and one for y."""
        xbuf = np.empty((n, *self.X.shape[1:]), dtype=self.X.dtype)
        xbuf_rows = None
        if self._gather_rows is not None and n > 1:
            xbuf_rows = xbuf.reshape(n, -1)
        ybuf = None if self.y is None else np.empty((n, *self.y.shape[1:]), self.y.dtype)
        return xbuf, xbuf_rows, ybuf

    def pipeline_bytes(self, batch_size: int, buffer_rows: int) -> int:
        """Memory beyond the arrays themselves: none (batches are gathered into the step's own
        buffers, which the memory model counts)."""
        return 0

    def io(self) -> dict[str, float]:
        """What reading cost (nothing to report in memory)."""
        return {}

    def close(self) -> None:
        """Nothing reads ahead in memory."""
