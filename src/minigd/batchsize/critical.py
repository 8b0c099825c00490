"""The critical batch size, fitted from steps-to-target measured at several batch sizes.

McCandlish et al. 2018 model the steps S and samples E needed to reach a given loss as

    (S / S_min - 1) (E / E_min - 1) = 1,  so  S(B) = S_min (1 + B_crit / B),
                                              E(B) = E_min (1 + B / B_crit),  B_crit = E_min/S_min.

On log-log axes S(B) has slope -B_crit / (B + B_crit): -1 (perfect scaling: double the batch,
halve the steps) well below B_crit, 0 (a plateau: more samples per step buy nothing) well above.
Shallue et al. 2019 see the same three regimes on every workload they measure.

The fit is least squares in log S (the errors of a step count are relative): for a fixed B_crit
the best log S_min is the mean residual, leaving one variable, searched on a grid over log B_crit
and then on a finer grid around the best. The confidence interval is a bootstrap that resamples
the batch sizes (grid points) and, at each, the seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minigd._json import dataclass_dict

PERFECT_SLOPE = -0.9  # "slope -1" ends where the fitted slope rises past this: B = B_crit / 9
PLATEAU_SLOPE = -0.1  # and the plateau starts here: B = 9 B_crit
GRID_REACH = 30.0  # B_crit is searched from B_min / 30 to B_max * 30


@dataclass
class CriticalBatch:
    """S_min, B_crit and E_min with 95% bootstrap intervals, and how the curve reads."""

    s_min: float
    b_crit: float
    e_min: float
    s_min_interval: tuple[float, float]
    b_crit_interval: tuple[float, float]
    e_min_interval: tuple[float, float]
    batch_sizes: list[int]
    steps: list[float]  # per batch size, the median over seeds
    residual_rms: float  # of log S: 0.1 is ~10% off the curve on average
    local_slopes: list[float]  # d log S / d log B between neighbouring batch sizes
    perfect_scaling_up_to: float  # B_crit / 9, where the fitted slope passes -0.9
    plateau_from: float  # 9 B_crit, where it passes -0.1
    bounded: bool  # False when B_crit sits at the edge of what the batch sizes can tell
    regimes: dict[int, str] = field(default_factory=dict)

    def steps_at(self, b: Any) -> Any:
        return self.s_min * (1.0 + self.b_crit / np.asarray(b, dtype=float))

    def samples_at(self, b: Any) -> Any:
        return self.e_min * (1.0 + np.asarray(b, dtype=float) / self.b_crit)

    def interval_text(self, digits: int = 4, to: str = "..") -> str:
        """ "95% CI lo .. hi" of B_crit, or why there is none: with one seed at the fewest batch
        sizes every resample is the same fit, and a zero-width "interval" would claim a
        certainty the sweep does not have."""
        lo, hi = self.b_crit_interval
        if not (lo < hi):
            return "no interval: one seed at these batch sizes leaves nothing to resample"
        return f"95% CI {lo:.{digits}g} {to} {hi:.{digits}g}"

    def __str__(self) -> str:
        edge = "" if self.bounded else " (at the edge of the batch sizes tried: a bound only)"
        return (
            f"B_crit = {self.b_crit:.4g} ({self.interval_text()}){edge}, "
            f"S_min = {self.s_min:.4g}, E_min = {self.e_min:.4g}; perfect scaling up to "
            f"B ~ {self.perfect_scaling_up_to:.3g}, plateau from B ~ {self.plateau_from:.3g}"
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclass_dict(self)


def fit_critical_batch(
    steps_by_batch: Mapping[int, Sequence[float]],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> CriticalBatch:
    """Fits S(B) = S_min (1 + B_crit / B) to steps-to-target per batch size.

    ``steps_by_batch`` maps each batch size to its steps to the target, one per seed (at that
    batch size's best learning rate); the curve is fitted to the median over seeds, and the
    intervals come from ``bootstrap`` resamples of batch sizes and seeds. At least three batch
    sizes are needed (two parameters, and one point to disagree).
    """
    points = {
        int(b): [float(s) for s in v if s is not None and math.isfinite(s) and s > 0]
        for b, v in steps_by_batch.items()
    }
    points = {b: v for b, v in sorted(points.items()) if v}
    if len(points) < 3:
        raise ValueError(
            f"fitting the critical batch size needs steps at 3 or more batch sizes; got "
            f"{len(points)}. Sweep more batch sizes, or raise max_epochs so more reach the target."
        )
    b = np.array(list(points), dtype=float)
    steps = np.array([np.median(v) for v in points.values()])
    log_b_crit, log_s_min, rms = _fit_logs(b, steps)
    lo_b, hi_b = math.log(b[0] / GRID_REACH), math.log(b[-1] * GRID_REACH)
    bounded = lo_b + 0.05 < log_b_crit < hi_b - 0.05
    draws = _bootstrap(points, bootstrap, seed)
    s_min, b_crit = math.exp(log_s_min), math.exp(log_b_crit)
    slopes = np.diff(np.log(steps)) / np.diff(np.log(b))
    return CriticalBatch(
        s_min=s_min,
        b_crit=b_crit,
        e_min=s_min * b_crit,
        s_min_interval=_interval(draws[:, 1]),
        b_crit_interval=_interval(draws[:, 0]),
        e_min_interval=_interval(draws[:, 0] * draws[:, 1]),
        batch_sizes=[int(v) for v in b],
        steps=steps.tolist(),
        residual_rms=rms,
        local_slopes=slopes.tolist(),
        perfect_scaling_up_to=where_slope(PERFECT_SLOPE, b_crit),
        plateau_from=where_slope(PLATEAU_SLOPE, b_crit),
        bounded=bounded,
        regimes={int(v): regime(v, b_crit) for v in b},
    )


def regime(b: float, b_crit: float) -> str:
    """Which part of the curve batch size b is on, by the fitted slope -B_crit/(B + B_crit)."""
    slope = -b_crit / (b + b_crit)
    if slope <= PERFECT_SLOPE:
        return "perfect scaling"
    if slope >= PLATEAU_SLOPE:
        return "plateau"
    return "diminishing returns"


def where_slope(slope: float, b_crit: float) -> float:
    """The batch size at which the fitted curve's log-log slope is ``slope`` (in (-1, 0))."""
    return b_crit * (1.0 + slope) / -slope


def _fit_logs(b: np.ndarray, steps: np.ndarray) -> tuple[float, float, float]:
    """(log B_crit, log S_min, rms residual of log S) of the least-squares fit."""
    log_s = np.log(steps)

    def costs(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shape = np.log1p(np.exp(grid)[:, None] / b[None, :])
        log_s_min = np.mean(log_s - shape, axis=1)
        return np.sum((log_s - log_s_min[:, None] - shape) ** 2, axis=1), log_s_min

    grid = np.linspace(math.log(b[0] / GRID_REACH), math.log(b[-1] * GRID_REACH), 241)
    i = int(np.argmin(costs(grid)[0]))
    fine = np.linspace(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)], 201)
    total, log_s_min = costs(fine)
    j = int(np.argmin(total))
    return float(fine[j]), float(log_s_min[j]), math.sqrt(float(total[j]) / len(b))


def _bootstrap(points: dict[int, list[float]], rounds: int, seed: int) -> np.ndarray:
    """(B_crit, S_min) of each resample of the batch sizes, and of the seeds at each."""
    rng = np.random.default_rng((seed, 17))
    sizes = list(points)
    draws = []
    for _ in range(rounds):
        picked = rng.choice(len(sizes), size=len(sizes), replace=True)
        if len(set(picked.tolist())) < 3:  # two distinct sizes cannot fit two parameters
            continue
        b, steps = [], []
        for i in picked:
            runs = points[sizes[i]]
            b.append(sizes[i])
            steps.append(np.median(rng.choice(runs, size=len(runs), replace=True)))
        order = np.argsort(b, kind="stable")
        b_arr, s_arr = np.array(b, float)[order], np.array(steps)[order]
        log_b_crit, log_s_min, _ = _fit_logs(b_arr, s_arr)
        draws.append((math.exp(log_b_crit), math.exp(log_s_min)))
    return np.array(draws) if draws else np.full((1, 2), np.nan)


def _interval(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return (math.nan, math.nan)
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)
