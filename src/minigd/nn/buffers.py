"""Scratch arrays kept per (tag, shape, dtype): what lets a train step allocate nothing.

Layers and losses write every intermediate into a buffer created the first time a batch size is
seen and reused at every later step of that size. The number kept is bounded (a few batch sizes,
a few tags each), so a run that sees many sizes (the finder, the last partial batch) cannot grow
without limit: the oldest buffer goes first.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np


def _fill_ones(arr: np.ndarray) -> None:
    arr.fill(1)


class Buffers:
    """Arrays by (tag, shape, dtype), created once and then reused."""

    def __init__(self, limit: int = 32) -> None:
        self.limit = limit
        self._arrays: dict[tuple, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Scratch is not state: a pickled model carries none (and no read-only copies)."""
        return {"limit": self.limit, "_arrays": {}}

    def get(
        self,
        tag: Hashable,
        shape: tuple[int, ...],
        dtype: Any,
        init: Callable[[np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """The buffer for ``tag`` of this shape and dtype; ``init`` fills a new one once."""
        key = (tag, shape, dtype)
        arr = self._arrays.get(key)
        if arr is None:
            if len(self._arrays) >= self.limit:
                self._arrays.pop(next(iter(self._arrays)))
            arr = np.empty(shape, dtype=dtype)
            if init is not None:
                init(arr)
            self._arrays[key] = arr
        return arr

    def ones(self, n: int, dtype: Any) -> np.ndarray:
        """A vector of n ones: ``ones @ dy`` sums a batch by BLAS, 3x faster than ``np.sum``."""
        return self.get("ones", (n,), dtype, _fill_ones)
