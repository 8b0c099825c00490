"""One epoch's plan: which rows each batch holds, handed by MiniBatches to its row store.

MiniBatches decides the order and the cut (``order``, ``sizes``); a row store (``memory`` for
arrays, ``disk`` for a source on disk) only reads what the plan says. Keeping the plan as plain
data keeps the two apart: the store never reads MiniBatches' state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from minigd.batching.order import BlockShuffle
from minigd.batching.shard import rank_share, share_of_parts
from minigd.batching.sizes import Cut


@dataclass(frozen=True, eq=False)
class EpochPlan:
    """The batches of one epoch.

    Attributes:
        epoch: the epoch's number.
        bounds: batch i is positions [bounds[i], bounds[i + 1]) of the epoch's order (a
            ``sizes.Cut``: no array, whatever the number of batches).
        order: the rows in visiting order; None when the natural order is the order (no
            shuffle, or one batch of everything) or when ``blocks`` gives it.
        blocks: the block shuffle, for a store that reads whole shuffle buffers.
        share: (rank, size) in data-parallel training: each batch yields this rank's rows only.
        read_ahead: a completed epoch may start reading the next one (not after the last).
        by_blocks: under a block shuffle, a rank's share of a batch is its rows that come from
            the blocks it reads (``BlockShuffle.owned``), so each rank reads ~1/size of the
            bytes; else the positions ``rank_share`` gives, for which every rank reads every
            buffer (what BatchNorm needs: rows on every rank in every batch).
    """

    epoch: int
    bounds: Cut
    order: np.ndarray | None = None
    blocks: BlockShuffle | None = None
    share: tuple[int, int] | None = None
    read_ahead: bool = True
    by_blocks: bool = False

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def batch(self, b: int) -> tuple[int, int]:
        """The positions [lo, hi) of batch b that this process takes."""
        lo, hi = int(self.bounds[b]), int(self.bounds[b + 1])
        if self.share is None:
            return lo, hi
        a, z = rank_share(hi - lo, *self.share)
        return lo + a, lo + z

    def walk(self, start: int) -> Iterator[list[tuple[int, np.ndarray]]]:
        """Batches start, start + 1, ... of a block shuffle, each whole as (buffer, sorted
        positions in it): which buffers must be held to gather it."""
        return self.blocks.walk(self.bounds.spans(start))

    @property
    def owner(self) -> tuple[int, int] | None:
        """(rank, size) when this rank reads only its own blocks of each buffer."""
        return self.share if self.by_blocks and self.blocks is not None else None

    def my_parts(self, parts: list[tuple[int, np.ndarray]]) -> list[tuple[int, np.ndarray]]:
        """This process's share of a batch's parts: positions in the buffers as this rank
        holds them (its own blocks only, when it reads by blocks)."""
        if self.owner is None:
            return share_of_parts(parts, self.share)
        mine = []
        for j, positions in parts:
            local = self.blocks.owned(j, *self.owner)[1][positions]
            local = local[local >= 0]
            if len(local):
                mine.append((j, local))
        return mine
