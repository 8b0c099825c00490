"""A rank's share of each global batch in data-parallel training.

``batch_size`` always means the global batch: rank r of N takes the rows [lo_r, hi_r) of each
batch, shares differing by at most one row, so N ranks together see exactly the batch one process
sees (``minigd.distributed``). ``MiniBatches.shard(rank, size)`` is built with the share; the row
stores read only those rows.
"""

from __future__ import annotations

import numpy as np

from minigd._validation import check_int


def rank_share(n: int, rank: int, size: int) -> tuple[int, int]:
    """The rows [lo, hi) of a batch of n that rank ``rank`` of ``size`` takes in data-parallel
    training: shares differ by at most one row (a rank may get none of a tiny batch)."""
    base, extra = divmod(n, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def check_share(rank: int, size: int) -> tuple[int, int]:
    """(rank, size), checked: 0 <= rank < size."""
    size = check_int("size", size, minimum=1)
    rank = check_int("rank", rank, minimum=0)
    if rank >= size:
        raise ValueError(f"rank {rank} does not exist among {size} ranks (0 to {size - 1}).")
    return rank, size


def share_of_parts(parts: list[tuple[int, np.ndarray]], share) -> list[tuple[int, np.ndarray]]:
    """A rank's share of a batch given as (buffer, positions) parts (the block shuffle's
    batches span buffers): the same rows ``rank_share`` gives of the batch laid end to end."""
    if share is None:
        return parts
    a, b = rank_share(sum(len(p) for _, p in parts), *share)
    mine, at = [], 0
    for j, positions in parts:
        lo, hi = max(a - at, 0), min(b - at, len(positions))
        if hi > lo:
            mine.append((j, positions[lo:hi]))
        at += len(positions)
    return mine
