"""MiniBatches: which samples, in which order, in groups of B, for epoch e.

The division of labour, as PyTorch keeps ``Sampler`` apart from ``BatchSampler``:

1. *Order* is a pure function of ``(seed, epoch)``: epoch e is permuted by its own
   ``numpy.random.default_rng((seed, e))``. No global RNG, no state carried between epochs, so a
   resumed run can start at (epoch, batch) and see exactly the batches an uninterrupted run saw.
2. *Grouping* cuts that order into batches of B; ``last_batch`` decides what happens to the
   remainder when B does not divide m.
3. *Gathering* copies each batch's rows into a buffer that is reused from step to step.

Everything here sees samples as rows; the note's (features, samples) layout is converted once, when
the MiniBatches is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from minigd._kernels import compiled_gather
from minigd._validation import check_choice, check_int, is_int, message
from minigd.data.arrays import as_rows, targets_as_rows
from minigd.data.sources import BLOCK_BYTES, ArraySource, Source
from minigd.shuffle import (
    BlockLayout,
    BlockShuffle,
    distinct_blocks,
    resolve_shuffle,
    row_order,
    sort_within_batches,
)
from minigd.streamed_batches import StreamedEpochs, rank_share
from minigd.streaming import BatchReader, pipeline_bytes

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


class MiniBatches(StreamedEpochs):
    """The mini-batches of a data set, epoch by epoch.

    Args:
        X: array-like, (m, ...) with ``sample_axis=0`` or (n, m) with ``sample_axis=1``
            (the note's X = (784, 60000)); or a ``minigd.data.Source`` (a file on disk), whose
            batches are read, checked and prefetched as they are needed (``minigd.streaming``).
        y: optional targets, (m,) or (m, k); with ``sample_axis=1`` a 2-D y is read as (k, m).
            With a source X, a source of the same number of rows.
        batch_size: samples per batch, an int >= 1, or ``"full"`` for one batch of all m samples
            (batch gradient descent). 1 is stochastic gradient descent.
        sample_axis: 0 if samples are rows, 1 if samples are columns (arrays only).
        shuffle: ``"rows"`` (a uniform permutation each epoch), ``"blocks"`` (permute blocks of
            consecutive rows, then rows within a shuffle buffer: what a disk serves), ``"none"``;
            True means rows for data in memory and blocks for a source on disk, False none.
            See ``minigd.shuffle``.
        seed: seeds each epoch's order as ``default_rng((seed, epoch))``.
        last_batch: when B does not divide m: ``"keep"`` yields the smaller last batch, ``"drop"``
            leaves it out (those samples are skipped this epoch, others next epoch), ``"merge"``
            adds it to the batch before, so no batch is ever smaller than B (what BatchNorm needs).
        dtype: float dtype of the yielded X batches; None keeps float32/float64 and turns integer
            or boolean data into float32.
        block_rows: rows per block for ``shuffle="blocks"``; default the source's natural read
            (~1 MiB, a Parquet row group, an HDF5 chunk).
        buffer_bytes: the shuffle buffer's size for ``shuffle="blocks"`` (default 64 MiB).

    Memory: an array X is converted once to samples-as-rows, C-contiguous, of the wanted dtype.
    If it already is, it is *not* copied and MiniBatches reads the caller's array (do not modify
    it while training). With ``sample_axis=1`` one transposed copy is made here, never per step.
    Each batch is gathered into a buffer reused from step to step; an unshuffled batch is a view
    of X. A source on disk is never held whole: memory is the shuffle buffer and the prefetched
    batches (``pipeline_bytes``). A yielded batch is valid until the next batch is requested
    from this object: copy it to keep it.
    """

    def __init__(
        self,
        X: Any,
        y: Any = None,
        *,
        batch_size: int | str,
        sample_axis: int = 0,
        shuffle: bool | str = True,
        seed: int = 0,
        last_batch: str = "keep",
        dtype: Any = None,
        block_rows: int | None = None,
        buffer_bytes: int | None = None,
    ) -> None:
        layout = (block_rows, buffer_bytes)
        if isinstance(X, Source):
            stream = _stream_of(X, y, dtype)
            self._setup(None, None, batch_size, shuffle, seed, last_batch, stream, layout)
        else:
            rows = as_rows(X, sample_axis=sample_axis, dtype=dtype)
            targets = None if y is None else targets_as_rows(y, len(rows), sample_axis=sample_axis)
            self._setup(rows, targets, batch_size, shuffle, seed, last_batch, None, layout)
        self.sample_axis = sample_axis

    @classmethod
    def from_prepared(
        cls,
        rows: np.ndarray | None,
        targets: np.ndarray | None,
        *,
        batch_size: int | str,
        shuffle: bool | str = True,
        seed: int = 0,
        last_batch: str = "keep",
        stream: BatchReader | None = None,
        block_rows: int | None = None,
        buffer_bytes: int | None = None,
    ) -> MiniBatches:
        """The MiniBatches of data that was already checked and converted to C-contiguous
        samples-as-rows (by ``Sequential.prepare``): nothing is copied or scanned again. Or, with
        ``stream`` (and rows None), of a source read by that reader."""
        batches = cls.__new__(cls)
        layout = (block_rows, buffer_bytes)
        batches._setup(rows, targets, batch_size, shuffle, seed, last_batch, stream, layout)
        batches.sample_axis = 0
        return batches

    def _setup(self, rows, targets, batch_size, shuffle, seed, last_batch, stream, layout):
        self.X, self.y, self.stream = rows, targets, stream
        m = rows.shape[0] if stream is None else stream.x_source.n_rows
        if m == 0:
            raise ValueError("the data has no samples; check how it was loaded.")
        self.m = m
        self.batch_size = resolve_batch_size(batch_size, m)
        self.shuffle = resolve_shuffle(shuffle, stream is None)
        self.seed = check_int("seed", seed, minimum=0)
        self.last_batch = check_choice("last_batch", last_batch, LAST_BATCH_POLICIES)
        self._bounds = batch_bounds(m, self.batch_size, self.last_batch)
        self.first_batch_size = self.batch_size  # an adaptive run's regroup() changes batch_size
        self.blocks = None
        if self.shuffle == "blocks":
            block_rows, buffer_bytes = layout
            natural = stream.x_source.block_rows if stream is not None else 0
            row_bytes = stream.x_source.row_bytes if stream is not None else rows[:1].nbytes
            if block_rows is None:
                block_rows = natural or max(1, BLOCK_BYTES // max(1, row_bytes))
            self.blocks = BlockLayout.default(m, block_rows, row_bytes, buffer_bytes)
        self._buffers: dict[int, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = {}
        self._next_epoch = 0
        self._gather_rows = None if rows is None else compiled_gather(rows)
        # what the compiled gather reads: a 2-D view (the gather needs a C-ordered X)
        self._X_rows = rows.reshape(m, -1) if self._gather_rows is not None else None
        self._slots: list = []
        # (rank, ranks) in data-parallel training: each batch yields only this rank's share
        self.share: tuple[int, int] | None = None
        self._ahead = None  # ((epoch, start), plan, Prefetcher) read ahead at an epoch's end
        self.read_ahead = True  # the Trainer turns it off for its last epoch

    @property
    def n_samples(self) -> int:
        """m, the number of samples."""
        return self.m

    @property
    def streaming(self) -> bool:
        """True when batches are read from a source on disk as they are needed."""
        return self.stream is not None

    @property
    def batch_sizes(self) -> list[int]:
        """The size of every batch of an epoch, in order."""
        return np.diff(self._bounds).tolist()

    @property
    def samples_per_epoch(self) -> int:
        """Samples seen in one epoch: m, less the remainder with ``last_batch="drop"``."""
        return int(self._bounds[-1])

    def __len__(self) -> int:
        return len(self._bounds) - 1

    def __repr__(self) -> str:
        where = f", streaming from {self.stream.x_source.name!r}" if self.streaming else ""
        return (
            f"MiniBatches(m={self.n_samples}, batch_size={self.batch_size}, batches={len(self)}, "
            f"shuffle={self.shuffle!r}, seed={self.seed}, last_batch={self.last_batch!r}{where})"
        )

    def regroup(self, batch_size: int, at: int = 0) -> None:
        """From batch ``at`` of the current epoch on, batches of ``batch_size`` (an adaptive
        batch size growing mid-epoch); the batches before ``at`` keep their samples. The next
        epoch is cut in batches of ``batch_size`` only once ``regroup(batch_size, 0)`` is called.
        In-memory data only: a streamed source plans its reads by the epoch's batches."""
        if self.streaming or self.share is not None or self.shuffle == "blocks":
            raise ValueError(
                "a batch size that changes while training needs the data in memory, one "
                "process and shuffle='rows' or 'none'."
            )
        at = check_int("at", at, minimum=0)
        if at > len(self):
            raise ValueError(message("at", f"at most the number of batches ({len(self)})", at))
        self.batch_size = resolve_batch_size(batch_size, self.m)
        offset = int(self._bounds[at])
        left = self.m - offset
        if left and (left >= self.batch_size or self.last_batch != "drop"):
            # fewer samples left than a batch: "keep" and "merge" make them one last batch
            rest = batch_bounds(left, min(self.batch_size, left), self.last_batch) + offset
            self._bounds = np.concatenate([self._bounds[:at], rest])
        elif left:  # "drop": the epoch ends here
            self._bounds = self._bounds[: at + 1]

    # -- what the shuffle costs and buys --------------------------------------------------
    def shuffle_quality(self) -> dict[str, float]:
        """How mixed a batch is: the expected number of distinct blocks (of ``block_rows``
        consecutive rows) among a full batch's rows, against what a global row shuffle gives."""
        block = self.blocks.block_rows if self.blocks else _default_block_rows(self)
        b = self.batch_size
        rows_value = distinct_blocks(self.m, block, b)
        value = {
            "rows": rows_value,
            "blocks": distinct_blocks(self.blocks.buffer_rows, block, b) if self.blocks else 0,
            "none": float(-(-min(b, self.m) // block)),
        }[self.shuffle]
        return {"distinct_blocks": value, "rows_shuffle": rows_value, "block_rows": block}

    @property
    def pipeline_bytes(self) -> int:
        """Memory of the input pipeline beyond the model's step: the shuffle buffer (two are
        held while a batch spans them) and the prefetched batches, for a streamed source."""
        if not self.streaming:
            return 0
        row = self.stream.x_source.row_bytes + self._y_row_bytes()
        return pipeline_bytes(row, self.batch_size, self.blocks.buffer_rows if self.blocks else 0)

    def _y_row_bytes(self) -> int:
        y = self.stream.y_source if self.streaming else None
        return 0 if y is None else y.row_bytes

    # -- the order ------------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """The sample indices of epoch ``epoch`` in the order they are visited.

        The permutation decides which samples share a batch; inside each batch the indices are then
        sorted, because gathering rows in increasing address order is up to twice as fast for large
        batches (B=1024 of 784 floats: ~150 us against ~270 us), and the order of the samples
        inside a batch does not change the batch's mean gradient.
        """
        epoch = check_int("epoch", epoch, minimum=0)
        if self.shuffle == "none" or self._one_full_batch:
            return np.arange(self.n_samples, dtype=np.intp)
        if self.shuffle == "blocks":
            return BlockShuffle(self.blocks, self.seed, epoch).order(self._bounds, self.batch_size)
        order = row_order(self.n_samples, self.seed, epoch)
        if self.regular:
            sort_within_batches(order, self._bounds, self.batch_size)
        else:  # regrouped mid-epoch: the batches no longer tile the order from 0 in one size
            for lo, hi in zip(self._bounds[:-1].tolist(), self._bounds[1:].tolist(), strict=True):
                order[lo:hi].sort()
        return order

    def epoch(self, e: int, start: int = 0) -> Iterator[Any]:
        """Yields the batches of epoch e, from batch index ``start`` on.

        Yields ``(X_batch, y_batch)`` when y was given, else ``X_batch``. ``epoch(e, start=k)``
        yields exactly what ``epoch(e)`` yields after its first k batches. For a streamed
        source, close the iterator (or run it to its end) to stop its reader thread; a ``for``
        loop that breaks leaves that to the garbage collector, ``contextlib.closing`` does not.
        """
        start = check_int("start", start, minimum=0)
        if start > len(self):
            raise ValueError(
                message("start", f"at most the number of batches ({len(self)})", start)
            )
        e = check_int("epoch", e, minimum=0)
        if self.streaming:
            return self._stream(e, start)
        order = self.order(e)
        return self._iterate(order, start)

    def __iter__(self) -> Iterator[Any]:
        """Each ``for`` loop over a MiniBatches is the next epoch (0, 1, 2, ...)."""
        e = self._next_epoch
        self._next_epoch += 1
        return self.epoch(e)

    def _iterate(self, order: np.ndarray, start: int) -> Iterator[Any]:
        bounds = self._bounds.tolist()
        whole = self.shuffle == "none" or self._one_full_batch
        for lo, hi in zip(bounds[start:-1], bounds[start + 1 :], strict=True):
            lo, hi = self._mine(lo, hi)
            if whole:  # natural order, or one batch of everything: a view replaces the gather
                xb = self.X[lo:hi]
                yb = None if self.y is None else self.y[lo:hi]
            else:
                xb, yb = self._gather(order[lo:hi])
            yield xb if self.y is None else (xb, yb)

    def _mine(self, lo: int, hi: int) -> tuple[int, int]:
        """The positions of a batch [lo, hi) of the epoch's order that this process takes."""
        if self.share is None:
            return lo, hi
        a, b = rank_share(hi - lo, *self.share)
        return lo + a, lo + b

    @property
    def regular(self) -> bool:
        """True when the bounds are those of batch_size cut from the epoch's start."""
        regular = batch_bounds(self.m, self.batch_size, self.last_batch)
        return len(regular) == len(self._bounds) and bool(np.all(regular == self._bounds))

    @property
    def _one_full_batch(self) -> bool:
        """One batch of all m samples (batch gradient descent): the order inside a single full
        batch does not change its mean gradient, so the natural order replaces any shuffle."""
        return len(self) == 1 and int(self._bounds[-1]) == self.n_samples

    def _gather(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
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


def _default_block_rows(batches: MiniBatches) -> int:
    """Rows of ~1 MiB, the block a quality figure counts in when no block shuffle is set."""
    if batches.streaming:
        return batches.stream.x_source.block_rows
    return max(1, BLOCK_BYTES // max(1, batches.X[:1].nbytes))


def _stream_of(X: Source, y: Any, dtype: Any) -> BatchReader:
    """The reader of a source pair for the public MiniBatches: targets pass through as read."""
    if y is not None and not isinstance(y, Source):
        y = ArraySource(np.asarray(y), "y")
    if y is not None and y.n_rows != X.n_rows:
        raise ValueError(
            f"{X.name} holds {X.n_rows} rows but its targets {y.name} hold {y.n_rows}; "
            "they must match row for row."
        )
    want = np.dtype(dtype) if dtype is not None else None
    if want is None:
        want = X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    return BatchReader(X, y, want, lambda raw: raw.copy())
