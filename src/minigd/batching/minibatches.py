"""MiniBatches: which samples, in which order, in groups of B, for epoch e.

The division of labour, as PyTorch keeps ``Sampler`` apart from ``BatchSampler``:

1. *Order* is a pure function of ``(seed, epoch)`` (``batching.order``): epoch e is permuted by
   its own ``numpy.random.default_rng((seed, e))``. No global RNG, no state carried between
   epochs, so a resumed run can start at (epoch, batch) and see exactly the batches an
   uninterrupted run saw.
2. *Grouping* cuts that order into batches of B (``batching.sizes``); ``last_batch`` decides what
   happens to the remainder when B does not divide m.
3. *Reading* is the row store's: MiniBatches hands it each epoch's ``EpochPlan`` and it yields
   the batches, gathered from arrays in memory (``batching.memory``) or read from a file on
   disk with prefetch (``batching.disk``). In data-parallel training each rank's MiniBatches is
   built for its share (``shard``) and the store reads only that share.

Everything here sees samples as rows; the note's (features, samples) layout is converted once, when
the MiniBatches is built.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import numpy as np

from minigd._validation import check_choice, check_int, message
from minigd.batching.disk import DiskRows
from minigd.batching.memory import MemoryRows
from minigd.batching.order import (
    BlockLayout,
    BlockShuffle,
    distinct_blocks,
    resolve_shuffle,
    row_order,
    sort_within_batches,
)
from minigd.batching.plan import EpochPlan
from minigd.batching.reader import BatchReader
from minigd.batching.shard import check_share
from minigd.batching.sizes import LAST_BATCH_POLICIES, Cut, resolve_batch_size
from minigd.data.arrays import as_rows, targets_as_rows
from minigd.data.sources import BLOCK_BYTES, ArraySource, Source


class MiniBatches:
    """The mini-batches of a data set, epoch by epoch.

    Args:
        X: array-like, (m, ...) with ``sample_axis=0`` or (n, m) with ``sample_axis=1``
            (the note's X = (784, 60000)); or a ``minigd.data.Source`` (a file on disk), whose
            batches are read, checked and prefetched as they are needed (``batching.disk``).
        y: optional targets, (m,) or (m, k); with ``sample_axis=1`` a 2-D y is read as (k, m).
            With a source X, a source of the same number of rows.
        batch_size: samples per batch, an int >= 1, or ``"full"`` for one batch of all m samples
            (batch gradient descent). 1 is stochastic gradient descent.
        sample_axis: 0 if samples are rows, 1 if samples are columns (arrays only).
        shuffle: ``"rows"`` (a uniform permutation each epoch), ``"blocks"`` (permute blocks of
            consecutive rows, then rows within a shuffle buffer: what a disk serves), ``"none"``;
            True means rows for data in memory and blocks for a source on disk, False none.
            See ``batching.order``.
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
        if isinstance(X, Source):
            store = DiskRows(_stream_of(X, y, dtype))
            has_y = y is not None
        else:
            rows = as_rows(X, sample_axis=sample_axis, dtype=dtype)
            targets = None if y is None else targets_as_rows(y, len(rows), sample_axis=sample_axis)
            store, has_y = MemoryRows(rows, targets), targets is not None
        self._setup(store, has_y, batch_size, shuffle, seed, last_batch, (block_rows, buffer_bytes))
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
        if stream is not None:
            store, has_y = DiskRows(stream), stream.y_source is not None
        else:
            store, has_y = MemoryRows(rows, targets), targets is not None
        layout = (block_rows, buffer_bytes)
        batches._setup(store, has_y, batch_size, shuffle, seed, last_batch, layout)
        batches.sample_axis = 0
        return batches

    def _setup(self, store, has_y, batch_size, shuffle, seed, last_batch, layout):
        self.rows, self._has_y = store, has_y
        m = store.n_rows
        if m == 0:
            raise ValueError("the data has no samples; check how it was loaded.")
        self.m = m
        self.batch_size = resolve_batch_size(batch_size, m)
        self.shuffle = resolve_shuffle(shuffle, not store.streaming)
        self.seed = check_int("seed", seed, minimum=0)
        self.last_batch = check_choice("last_batch", last_batch, LAST_BATCH_POLICIES)
        self._bounds = Cut.regular(m, self.batch_size, self.last_batch)
        self.first_batch_size = self.batch_size  # the size it was built with (regroup changes)
        self.blocks = None
        if self.shuffle == "blocks":
            block_rows, buffer_bytes = layout
            row_bytes = store.x_row_bytes
            if block_rows is None:  # the source's natural read, else ~1 MiB
                block_rows = store.block_rows or max(1, BLOCK_BYTES // max(1, row_bytes))
            buffer_row = store.buffer_row_bytes  # what a buffer's rows cost, not the features alone
            self.blocks = BlockLayout.default(m, block_rows, buffer_row, buffer_bytes)
        self._next_epoch = 0
        self.share: tuple[int, int] | None = None  # (rank, ranks): see shard()
        self.by_blocks = False  # a streamed block shuffle's share: the rank's own blocks
        self._last_permutation: tuple[tuple[int, int, int], np.ndarray] | None = None

    def keep_layout(self, block_rows: int, buffer_blocks: int) -> None:
        """Cuts the block shuffle as a run that started elsewhere did (its checkpoint says how):
        the buffer's size follows the memory a row costs, which a newer minigd may count
        differently, and an exact resume needs the run's own cut."""
        if self.blocks is not None:
            self.blocks = BlockLayout(self.m, block_rows, buffer_blocks)

    # -- what it holds --------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        """m, the number of samples."""
        return self.m

    @property
    def streaming(self) -> bool:
        """True when batches are read from a source on disk as they are needed."""
        return self.rows.streaming

    @property
    def reading(self) -> bool:
        """True while a streamed source's reader is copying a shuffle buffer's features."""
        return self.rows.reading

    @property
    def features_mapped(self) -> bool:
        """True when a streamed file's features are gathered from a map (``data.leased_map``):
        the reader copies no features, and a step costs what it costs in memory."""
        return self.rows.mapped

    @property
    def X(self) -> np.ndarray | None:  # noqa: N802 (the data's name everywhere)
        """The rows in memory (None for a source on disk)."""
        return None if self.streaming else self.rows.X

    @property
    def y(self) -> np.ndarray | None:
        """The targets in memory (None without targets, or for a source on disk)."""
        return None if self.streaming else self.rows.y

    @property
    def batch_sizes(self) -> list[int]:
        """The size of every batch of an epoch, in order (global batches, also in a shard): a
        list as long as the epoch; ``size_of``, ``smallest_batch`` and ``largest_batch`` are
        what the loop asks of a long one."""
        return np.diff(np.asarray(self._bounds)).tolist()

    def size_of(self, b: int) -> int:
        """Batch b's number of samples (the global batch, also in a shard)."""
        return self._bounds.size_of(b)

    @property
    def smallest_batch(self) -> int:
        return self._bounds.smallest()

    @property
    def largest_batch(self) -> int:
        return self._bounds.largest()

    @property
    def samples_per_epoch(self) -> int:
        """Samples seen in one epoch: m, less the remainder with ``last_batch="drop"``."""
        return int(self._bounds[-1])

    def __len__(self) -> int:
        return len(self._bounds) - 1

    def __repr__(self) -> str:
        where = f", streaming from {self.rows.name!r}" if self.streaming else ""
        share = "" if self.share is None else f", rank {self.share[0]} of {self.share[1]}"
        return (
            f"MiniBatches(m={self.n_samples}, batch_size={self.batch_size}, batches={len(self)}, "
            f"shuffle={self.shuffle!r}, seed={self.seed}, last_batch={self.last_batch!r}"
            f"{where}{share})"
        )

    def take(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(X rows, targets or None) at a sorted ``index`` of samples, whatever the store: what
        a measurement on the training data draws (``noise.noise_scale_of``). Valid until the
        next batch is requested."""
        return self.rows.take(np.asarray(index, dtype=np.intp))

    def io(self) -> dict[str, float]:
        """What reading has cost so far (a streamed source: time waiting on the disk, bytes)."""
        return self.rows.io()

    # -- data parallel --------------------------------------------------------------------
    def shard(self, rank: int, size: int, *, by_blocks: bool = True) -> MiniBatches:
        """These batches as rank ``rank`` of ``size`` reads them: the same global batches, in the
        same order, of which this rank's store reads its share (``batching.shard``).
        ``batch_sizes`` stays the global batches' sizes.

        From disk under the block shuffle with ``by_blocks``, a rank's share of a batch is the
        batch's rows from the blocks it owns (``BlockShuffle.owned``): each rank reads ~1/size
        of the bytes, shares differ by the luck of the draw (a rank may get no row of a small
        batch), and the batches themselves stay those one process takes. Without it (a model
        with BatchNorm, which needs rows on every rank), shares are even and every rank reads
        every buffer."""
        sharded = copy.copy(self)
        sharded.share = check_share(rank, size)
        sharded.by_blocks = bool(by_blocks) and self.streaming and self.shuffle == "blocks"
        return sharded

    # -- regrouping (an adaptive batch size) ----------------------------------------------
    def regroup(self, batch_size: int, at: int = 0) -> None:
        """From batch ``at`` of the current epoch on, batches of ``batch_size`` (an adaptive
        batch size growing mid-epoch); the batches before ``at`` keep their samples. The next
        epoch is cut in batches of ``batch_size`` only once ``regroup(batch_size, 0)`` is called.
        Any store, shuffle and share: the order is a function of (seed, epoch) and positions, and
        a reader restarted at batch ``at`` reads the new cut (the Trainer restarts it)."""
        at = check_int("at", at, minimum=0)
        if at > len(self):
            raise ValueError(message("at", f"at most the number of batches ({len(self)})", at))
        self.batch_size = resolve_batch_size(batch_size, self.m)
        self._bounds = self._bounds.regrouped(at, self.batch_size, self.m, self.last_batch)

    # -- what the shuffle costs and buys --------------------------------------------------
    def shuffle_quality(self) -> dict[str, float]:
        """How mixed a batch is: the expected number of distinct blocks (of ``block_rows``
        consecutive rows) among a full batch's rows, against what a global row shuffle gives."""
        block = self.blocks.block_rows if self.blocks else self._quality_block_rows
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
        buffer_rows = self.blocks.buffer_rows if self.blocks else 0
        return self.rows.pipeline_bytes(self.batch_size, buffer_rows)

    # -- the order ------------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """The sample indices of epoch ``epoch`` in the order they are visited.

        The permutation decides which samples share a batch; inside each batch the indices are then
        sorted, because gathering rows in increasing address order is up to twice as fast for large
        batches (B=1024 of 784 floats: ~150 us against ~270 us), and the order of the samples
        inside a batch does not change the batch's mean gradient.
        """
        epoch = check_int("epoch", epoch, minimum=0)
        if self._natural_order:
            return np.arange(self.n_samples, dtype=np.intp)
        if self.shuffle == "blocks":
            return BlockShuffle(self.blocks, self.seed, epoch).order(self._bounds)
        order = self._permutation(epoch).copy()
        sort_within_batches(order, self._bounds)
        return order

    def _permutation(self, epoch: int) -> np.ndarray:
        """``row_order`` of the epoch, kept for the next call: an epoch regrouped mid-way (an
        adaptive batch) is ordered again, and a fresh permutation of 65536 rows took 0.7 of
        the 2-3 ms the first step after a move cost."""
        key = (self.n_samples, self.seed, epoch)
        if self._last_permutation is None or self._last_permutation[0] != key:
            self._last_permutation = (key, row_order(self.n_samples, self.seed, epoch))
        return self._last_permutation[1]

    def plan(self, e: int, read_ahead: bool = True) -> EpochPlan:
        """Epoch e's plan for the row store: the cut, and the order or the block shuffle."""
        order = blocks = None
        if self.streaming and self.shuffle == "blocks" and not self._one_full_batch:
            blocks = BlockShuffle(self.blocks, self.seed, e)  # read per buffer, never whole
        elif not self._natural_order:
            order = self.order(e)
        return EpochPlan(e, self._bounds, order, blocks, self.share, read_ahead, self.by_blocks)

    def epoch(self, e: int, start: int = 0, *, read_ahead: bool = True) -> Iterator[Any]:
        """Yields the batches of epoch e, from batch index ``start`` on.

        Yields ``(X_batch, y_batch)`` when y was given, else ``X_batch``. ``epoch(e, start=k)``
        yields exactly what ``epoch(e)`` yields after its first k batches. For a streamed
        source, close the iterator (or run it to its end) to stop its reader thread; a ``for``
        loop that breaks leaves that to the garbage collector, ``contextlib.closing`` does not.
        ``read_ahead=False``: a streamed source reads nothing of the next epoch when this one
        ends (the last epoch of a run).
        """
        start = check_int("start", start, minimum=0)
        if start > len(self):
            raise ValueError(
                message("start", f"at most the number of batches ({len(self)})", start)
            )
        e = check_int("epoch", e, minimum=0)
        return self._yield(self.rows.batches(self.plan(e, read_ahead), start))

    def _yield(self, batches: Iterator) -> Iterator[Any]:
        with contextlib.closing(batches):
            if self._has_y:
                yield from batches
            else:
                for xb, _ in batches:
                    yield xb

    def __iter__(self) -> Iterator[Any]:
        """Each ``for`` loop over a MiniBatches is the next epoch (0, 1, 2, ...)."""
        e = self._next_epoch
        self._next_epoch += 1
        return self.epoch(e)

    def close(self) -> None:
        """Stops reading ahead into the next epoch (a streamed source); nothing else changes."""
        self.rows.close()

    @property
    def regular(self) -> bool:
        """True when the bounds are those of batch_size cut from the epoch's start."""
        return self._bounds == Cut.regular(self.m, self.batch_size, self.last_batch)

    @property
    def _quality_block_rows(self) -> int:
        """Rows of a block that a quality figure counts in when no block shuffle is set."""
        return self.rows.block_rows or max(1, BLOCK_BYTES // max(1, self.rows.x_row_bytes))

    @property
    def _natural_order(self) -> bool:
        return self.shuffle == "none" or self._one_full_batch

    @property
    def _one_full_batch(self) -> bool:
        """One batch of all m samples (batch gradient descent): the order inside a single full
        batch does not change its mean gradient, so the natural order replaces any shuffle."""
        return len(self) == 1 and int(self._bounds[-1]) == self.n_samples


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
