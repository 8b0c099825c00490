"""One epoch's plan: which rows each batch holds, handed by MiniBatches to its row store.

MiniBatches decides the order and the cut (``order``, ``sizes``); a row store (``memory`` for
arrays, ``disk`` for a source on disk) only reads what the plan says. Keeping the plan as plain
data keeps the two apart: the store never reads MiniBatches' state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minigd.batching.order import BlockShuffle
from minigd.batching.shard import rank_share, share_of_parts


@dataclass(frozen=True, eq=False)
class EpochPlan:
    """The batches of one epoch.

    Attributes:
        epoch: the epoch's number.
        bounds: batch i is positions [bounds[i], bounds[i + 1]) of the epoch's order.
        order: the rows in visiting order; None when the natural order is the order (no
            shuffle, or one batch of everything) or when ``blocks`` gives it.
        blocks: the block shuffle, for a store that reads whole shuffle buffers.
        share: (rank, size) in data-parallel training: each batch yields this rank's rows only.
        read_ahead: a completed epoch may start reading the next one (not after the last).
    """

    epoch: int
    bounds: np.ndarray
    order: np.ndarray | None = None
    blocks: BlockShuffle | None = None
    share: tuple[int, int] | None = None
    read_ahead: bool = True

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def batch(self, b: int) -> tuple[int, int]:
        """The positions [lo, hi) of batch b that this process takes."""
        lo, hi = int(self.bounds[b]), int(self.bounds[b + 1])
        if self.share is None:
            return lo, hi
        a, z = rank_share(hi - lo, *self.share)
        return lo + a, lo + z

    def parts(self, b: int) -> list[tuple[int, np.ndarray]]:
        """Batch b of a block shuffle as (buffer, sorted positions in it), whole: which buffers
        must be held to gather it."""
        return self.blocks.parts(int(self.bounds[b]), int(self.bounds[b + 1]))

    def my_parts(self, parts: list[tuple[int, np.ndarray]]) -> list[tuple[int, np.ndarray]]:
        """This process's share of a batch's parts."""
        return share_of_parts(parts, self.share)
