"""The learning-rate grid of a sweep, extended per batch size until its best rate is interior.

Shallue et al. 2019 count a batch size's steps-to-target only at a learning rate that beat a rate
above it and a rate below it: a best rate at the edge of the grid means a better one may lie
beyond, and the steps would be overstated. So when a batch size's best rate (for any target) is
the largest or the smallest tried, the next rate out (one grid ratio further) is tried too, up to
``max_extensions`` times per side. A rate that diverged or never reached the target counts as
tried and worse. When no rate reached a target at all, the grid grows on both sides (one rate
too large stalls at a noise floor or diverges, one too small is too slow), or only downward
when its largest rate diverged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def grid_ratio(learning_rates: Sequence[float]) -> float:
    """The geometric step of a grid (its mean ratio between neighbours); sqrt(10) for one rate."""
    rates = sorted(set(learning_rates))
    if len(rates) < 2:
        return math.sqrt(10.0)
    return (rates[-1] / rates[0]) ** (1.0 / (len(rates) - 1))


def best_rate(steps_by_lr: Mapping[float, float | None]) -> float | None:
    """The rate with the fewest steps to the target (None when none reached it)."""
    finished = {lr: s for lr, s in steps_by_lr.items() if s is not None}
    return min(finished, key=finished.get) if finished else None


def is_interior(steps_by_lr: Mapping[float, float | None]) -> bool:
    """True when the best rate has a tried rate above it and one below it."""
    best = best_rate(steps_by_lr)
    return best is not None and min(steps_by_lr) < best < max(steps_by_lr)


def extensions(
    steps_by_target: Sequence[Mapping[float, float | None]],
    ratio: float,
    added: Mapping[str, int],
    max_extensions: int,
    top_diverged: bool = False,
) -> list[tuple[str, float]]:
    """The (side, rate) pairs to try next for one batch size: one step beyond an edge where a
    target's best rate sits (both edges, or only the lower after ``top_diverged``, when no rate
    reached it), unless that side has been extended ``max_extensions`` times (``added`` counts
    "up" and "down")."""
    sides = set()
    for steps_by_lr in steps_by_target:
        best = best_rate(steps_by_lr)
        if best is None:
            sides |= {"down"} if top_diverged else {"up", "down"}
            continue
        if best == max(steps_by_lr):
            sides.add("up")
        if best == min(steps_by_lr):
            sides.add("down")
    rates = steps_by_target[0] if steps_by_target else {}
    new = []
    if "down" in sides and added.get("down", 0) < max_extensions:
        new.append(("down", rounded(min(rates) / ratio)))
    if "up" in sides and added.get("up", 0) < max_extensions:
        new.append(("up", rounded(max(rates) * ratio)))
    return new


def rounded(lr: float) -> float:
    """A rate kept to 6 significant digits, so grids extended on different ranks agree."""
    return float(f"{lr:.6g}")
