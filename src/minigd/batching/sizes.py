"""Batch sizes as users write them, and how an epoch of m samples is cut into batches of B.

``batch_bounds`` is the grouping step of the data path: the order of an epoch (``order``) is cut
at these offsets; ``last_batch`` decides what happens to a remainder when B does not divide m.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minigd._validation import is_int, message

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
