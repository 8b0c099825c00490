"""Goodput: training progress per second = throughput x statistical efficiency (Pollux, OSDI 2021).

The note's trade in two measured curves. Throughput: a step on a batch of b samples takes about
``a + c b`` seconds (a fixed cost per step, a cost per sample), so samples/s = b / (a + c b) rises
with b and saturates. Statistical efficiency: McCandlish et al. 2018 show that a step on b samples
makes the progress of ``gain(b)`` steps at a reference batch b0. With ``Sigma`` the covariance of
a gradient taken on b0 samples and s = b / b0 (AdaScale's gain, Johnson et al. 2020)::

    gain(b)       = (tr(Sigma) + |G|^2) / (tr(Sigma) / s + |G|^2)
    efficiency(b) = gain(b) / s = (B_noise + b0) / (B_noise + b),    B_noise = b0 tr(Sigma) / |G|^2

(B_noise is the noise scale B_simple: per-sample variance over |G|^2, ``noise.estimator``). Each
sample at b is worth ``efficiency(b)`` of a sample at b0: 1 at b0, falling as b passes the noise
scale. Goodput(b) = samples/s x efficiency(b) is progress (in b0-samples) per second; the batch
that maximises it is where the two curves trade evenly: b* = sqrt(a B_noise / c) for the linear
step-time model (d log goodput / d b = 0, whatever b0). AdaScale turns the same gain into a
learning rate: SGD at b takes ``gain(b)`` times the rate that suits b0; Adam and RMSprop, whose
steps are normalized per coordinate, the square root of it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

SWITCH_GAIN = 1.05  # a new batch must promise 5% more goodput: without a margin the choice flaps


def gain(b: float, b0: float, b_noise: float) -> float:
    """Steps at ``b0`` that one step at ``b`` is worth: ``s efficiency(b)``, 1 at b0, rising
    toward ``1 + B_noise / b0`` as b grows past the noise scale."""
    return b / b0 * efficiency(b, b0, b_noise)


def adascale_gain(b: float, b0: float, grad_norm_sq: float, trace_sigma_b0: float) -> float:
    """AdaScale's gain from its own terms: |G|^2 and ``trace_sigma_b0``, the trace of the
    covariance of a gradient on b0 samples (per-sample tr(Sigma) / b0). Equal to ``gain``."""
    s = b / b0
    return (trace_sigma_b0 + grad_norm_sq) / (trace_sigma_b0 / s + grad_norm_sq)


def efficiency(b: float, b0: float, b_noise: float) -> float:
    """Progress per sample at ``b`` relative to ``b0``: 1 at b0, falling as b passes
    B_noise. A negative estimate (a noisy measurement of a tiny variance) counts as none."""
    b_noise = max(b_noise, 0.0)
    return (b_noise + b0) / (b_noise + b)


WINDOW = 32  # the step times of each size the model keeps: their median is that size's time


class StepTimes:
    """Seconds per step as ``a + c b``, fitted by least squares to the steps timed so far.

    Each batch size keeps its last ``window`` step times and counts as their median: recent
    steps only, so the model follows a machine that gets busier, and a median, because a shared
    machine's steps come with spikes (one step in a few hundred at 3-6x the typical time here),
    which moved a running mean right before a decision: a move from 32 to 91 on mnist-5k was
    promised 1.61x the samples per second where the loop gives 1.31x. The line is fitted through
    one point per batch size, weighted by how often each was timed (capped, so a size trained
    for thousands of steps does not silence the others). Sizes timed only by a seed pass (before
    training) count with the loop's own cost per step added: the median of (trained - seed) over
    the sizes timed both ways. Until two sizes are timed the model takes the step time
    proportional to b (a = 0): no reason to move.
    """

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.recent: dict[int, list[float]] = {}
        self.counts: dict[int, int] = {}
        self.seeds: dict[int, float] = {}

    def observe(self, b: int, seconds: float) -> None:
        """A trained step of ``b`` samples took ``seconds``."""
        if not (seconds > 0 and math.isfinite(seconds)):
            return
        b = int(b)
        times = self.recent.setdefault(b, [])
        times.append(float(seconds))
        if len(times) > self.window:
            del times[0]
        self.counts[b] = self.counts.get(b, 0) + 1

    def seed(self, b: int, seconds: float) -> None:
        """A bare step of ``b`` samples, timed before training, took ``seconds``."""
        if seconds > 0 and math.isfinite(seconds):
            self.seeds[int(b)] = float(seconds)

    def typical(self) -> dict[int, float]:
        """Each trained size's step seconds: the median of its recent steps."""
        return {b: statistics.median(times) for b, times in self.recent.items()}

    def points(self) -> tuple[list[float], list[float], list[float]]:
        """(sizes, seconds, weights) the line is fitted to."""
        trained = self.typical()
        both = [trained[b] - self.seeds[b] for b in self.seeds if b in trained]
        overhead = statistics.median(both) if both else 0.0
        merged = {b: (t + overhead, 1) for b, t in self.seeds.items()}
        merged |= {b: (t, min(self.counts[b], 50)) for b, t in trained.items()}
        sizes = sorted(merged)
        times = [merged[b][0] for b in sizes]
        return [float(b) for b in sizes], times, [math.sqrt(merged[b][1]) for b in sizes]

    def fit(self) -> tuple[float, float]:
        """(a, c): seconds per step and per sample, both >= 0. In plain Python floats: a handful
        of points, fitted at every decision, where NumPy's per-call cost was 50 us a fit."""
        sizes, times, weights = self.points()
        if not sizes:
            return 0.0, 1.0
        if len(sizes) == 1:
            return 0.0, times[0] / sizes[0]
        c, a = _weighted_line(sizes, times, [w * w for w in weights])
        if c <= 0:  # no cost per sample measured (a tiny model): every step costs the same
            return _dot(weights, times) / math.fsum(weights), 0.0
        if a < 0:  # a line through the origin instead
            return 0.0, _dot(sizes, times) / _dot(sizes, sizes)
        return a, c

    @property
    def empty(self) -> bool:
        """Nothing timed yet, neither by training nor by a seed pass."""
        return not (self.recent or self.seeds)

    def state(self) -> dict:
        return {
            "window": self.window,
            "recent": {str(b): list(v) for b, v in self.recent.items()},
            "counts": {str(b): n for b, n in self.counts.items()},
            "seeds": {str(b): v for b, v in self.seeds.items()},
        }

    def load_state(self, state: dict) -> None:
        if "recent" not in state:  # a checkpoint from before the window: its running means
            recent = {b: [t] for b, t in state["means"].items()}
            state = state | {"window": WINDOW, "recent": recent}
        self.window = int(state["window"])
        self.recent = {int(b): [float(t) for t in v] for b, v in state["recent"].items()}
        self.counts = {int(b): int(n) for b, n in state["counts"].items()}
        self.seeds = {int(b): float(v) for b, v in state["seeds"].items()}


@dataclass(frozen=True)
class Choice:
    """The batch with the most predicted goodput, and the prediction for each candidate."""

    batch_size: int
    goodput: dict[int, float]  # b -> predicted b0-samples of progress per second
    step_time: tuple[float, float] = (0.0, 1.0)  # (a, c) of the step seconds it assumed

    def gain_over(self, b: int) -> float:
        """How much more goodput the choice promises than batch ``b`` (a candidate)."""
        here = self.goodput.get(b)
        return math.inf if not here else self.goodput[self.batch_size] / here


def candidates(smallest: int, largest: int, per_octave: int = 4) -> list[int]:
    """Batch sizes spaced geometrically from ``smallest`` to ``largest`` (both included), about
    ``per_octave`` per doubling, each rounded to a whole number and listed once."""
    if largest <= smallest:
        return [int(smallest)]
    count = max(2, round(math.log2(largest / smallest) * per_octave) + 1)
    sizes = np.geomspace(smallest, largest, count)
    return sorted({round(float(b)) for b in sizes} | {int(smallest), int(largest)})


def choose(sizes: list[int], times: StepTimes, b_noise: float, b0: float) -> Choice:
    """The candidate that maximises throughput x efficiency."""
    a, c = times.fit()
    goodput = {b: b / (a + c * b) * efficiency(b, b0, b_noise) for b in sizes}
    best = max(goodput, key=lambda b: (goodput[b], -b))  # a tie goes to the smaller batch
    return Choice(best, goodput, (a, c))


def _weighted_line(x: list[float], y: list[float], w: list[float]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through (x, y) with weights w."""
    total = math.fsum(w)
    mx, my = _dot(w, x) / total, _dot(w, y) / total
    spread = math.fsum(wi * (xi - mx) ** 2 for wi, xi in zip(w, x, strict=True))
    moment = math.fsum(wi * (xi - mx) * (yi - my) for wi, xi, yi in zip(w, x, y, strict=True))
    slope = moment / spread if spread > 0 else 0.0
    return slope, my - slope * mx


def _dot(u: list[float], v: list[float]) -> float:
    return math.fsum(a * b for a, b in zip(u, v, strict=True))
