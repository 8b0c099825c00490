"""The two-batch-size estimator of the gradient noise scale (McCandlish et al. 2018, appendix
A.1), shared by every measurement: the offline probe (``noise.probe``), the two halves of a
step's batch (``noise.halves``) and data-parallel training (``distributed``), where each rank's
gradient is the small batch and the reduced one the big.

    |G|^2     ~ (b_big |G_big|^2 - b_small |G_small|^2) / (b_big - b_small)
    tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1/b_small - 1/b_big)
    B_simple  = tr(Sigma) / |G|^2

Batches drawn without replacement from a training set of m samples see less variance than draws
from an endless stream: E|G_b|^2 = |G|^2 + c tr(Sigma) (1/b - 1/m) with c = m/(m-1). The 1/m terms
cancel in the difference, but the |G|^2 estimate comes out low by c tr(Sigma)/m, which inflates
B_simple by about B_simple/m (10% at B_simple = 500 on 5000 samples). Given m, both components are
corrected; Sigma is then the per-sample covariance over the training set.
"""

from __future__ import annotations

import math

import numpy as np

# The one vocabulary of the noise scale, in History (per step and per epoch), TensorBoard,
# results files and reports: B_simple and the two estimated components it is the ratio of.
B_SIMPLE = "b_simple"  # tr(Sigma) / |G|^2
GRAD_NORM_SQ = "grad_norm_sq"  # |G|^2, the true gradient's squared norm
TRACE_SIGMA = "trace_sigma"  # tr(Sigma), one sample's gradient variance summed over parameters
COLUMNS = (B_SIMPLE, GRAD_NORM_SQ, TRACE_SIGMA)


def norm_sq(g: np.ndarray) -> float:
    """:math:`|g|^2` as one BLAS dot in the gradient's own dtype: no float64 copy of the parameters.
    (A float32 dot's rounding, ~1e-7 relative per term, is far below the estimator's sampling
    error, which averages many batches.)"""
    return float(np.dot(g, g))


def estimate_components(small_mean, big_mean, b_small: float, b_big: float, m: int | None = None):
    r"""(:math:`|G|^2`, :math:`\operatorname{tr}\Sigma`) from the mean squared gradient norms at
    the two batch sizes (numbers, or arrays of them for a bootstrap); ``m``: the training set's
    size, when batches are drawn from it without replacement (see the module docstring)."""
    g2 = (b_big * big_mean - b_small * small_mean) / (b_big - b_small)
    trace = (small_mean - big_mean) / (1.0 / b_small - 1.0 / b_big)
    if m is not None and m > 1:
        g2 = g2 + trace / m
        trace = trace * (m - 1) / m
    return g2, trace


class RunningNoiseScale:
    """B_simple from one pair of norms per step, each component smoothed by a bias-corrected
    exponential moving average before the ratio (a ratio of averages is consistent, an
    average of ratios is not), as History smooths the loss."""

    def __init__(self, beta: float = 0.98) -> None:
        self.beta, self.steps = beta, 0
        self.g2 = self.trace = 0.0
        self.last_g2 = self.last_trace = math.nan  # the last step's own estimates

    def update(
        self, small_sq: float, big_sq: float, b_small: float, b_big: float, m: int | None = None
    ) -> float:
        r"""Adds one step's norms; returns the smoothed B_simple (nan while :math:`|G|^2 \le 0`)."""
        g2, trace = estimate_components(small_sq, big_sq, b_small, b_big, m)
        self.last_g2, self.last_trace = g2, trace
        if math.isfinite(g2) and math.isfinite(trace):
            self.steps += 1
            self.g2 = self.beta * self.g2 + (1.0 - self.beta) * g2
            self.trace = self.beta * self.trace + (1.0 - self.beta) * trace
        return self.value

    def state(self) -> dict[str, float]:
        """What a checkpoint keeps, so a resumed run goes on averaging where it stood."""
        return {"beta": self.beta, "steps": self.steps, "g2": self.g2, "trace": self.trace}

    def load_state(self, state: dict[str, float]) -> None:
        self.beta, self.steps = float(state["beta"]), int(state["steps"])
        self.g2, self.trace = float(state["g2"]), float(state["trace"])

    def skip(self) -> None:
        """A step that measured nothing: its own components are nan, the average stays."""
        self.last_g2 = self.last_trace = math.nan

    def columns(self) -> dict[str, float]:
        """The noise columns of a step's History record: the running B_simple, and the two
        components this step measured (nan when it measured nothing; one step's estimates are
        noisy and may be negative, which is why B_simple is the ratio of their averages)."""
        return {
            B_SIMPLE: self.value,
            GRAD_NORM_SQ: self.last_g2,
            TRACE_SIGMA: self.last_trace,
        }

    @property
    def value(self) -> float:
        if not self.steps or self.g2 <= 0:
            return math.nan
        return self.trace / self.g2  # the bias corrections of both cancel in the ratio
