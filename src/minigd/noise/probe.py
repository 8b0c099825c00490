"""The gradient noise scale measured offline, at a model's current parameters: the batch size past
which bigger batches stop paying.

McCandlish et al. 2018 ("An Empirical Model of Large-Batch Training") show that the batch size at
which training is efficient in both steps and samples is about the *simple noise scale*

    B_simple = tr(Sigma) / |G|^2,

with G the true gradient and Sigma the covariance of one sample's gradient. Below it, doubling the
batch nearly halves the steps needed (perfect scaling); far above it, steps barely fall and the
extra samples are wasted.

A mini-batch gradient G_B has E|G_B|^2 = |G|^2 + tr(Sigma)/B. Measuring |G_B|^2 at two sizes b_small
and b_big gives unbiased estimates of both terms (their Appendix A):

    |G|^2    ~ (b_big |G_big|^2 - b_small |G_small|^2) / (b_big - b_small)
    tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1/b_small - 1/b_big)

Both are averaged over many batches *before* the ratio is taken: the ratio of averages is
consistent, the average of ratios is not. A bootstrap over the batches gives a confidence interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from minigd._json import dataclass_dict
from minigd._validation import check_int, message
from minigd.noise.estimator import B_SIMPLE, GRAD_NORM_SQ, TRACE_SIGMA, estimate_components, norm_sq
from minigd.rules import NOISE_PROBE_BATCHES, noise_probe


@dataclass(frozen=True)
class NoiseScale:
    """B_simple and its two components, with a bootstrap confidence interval."""

    b_simple: float
    grad_norm_sq: float  # |G|^2
    trace_sigma: float  # tr(Sigma)
    interval: tuple[float, float]  # 95% bootstrap interval of b_simple
    b_small: int
    b_big: int
    n_batches: int

    def __str__(self) -> str:
        lo, hi = self.interval
        return (
            f"B_simple = {self.b_simple:.4g} (95% CI {lo:.4g} .. {hi:.4g}); "
            f"|G|^2 = {self.grad_norm_sq:.4g}, tr(Sigma) = {self.trace_sigma:.4g}; "
            f"from {self.n_batches} batch pairs of {self.b_small} and {self.b_big}"
        )

    def columns(self) -> dict[str, float]:
        """The noise columns of a History record (``noise.estimator.COLUMNS``)."""
        return {
            B_SIMPLE: self.b_simple,
            GRAD_NORM_SQ: self.grad_norm_sq,
            TRACE_SIGMA: self.trace_sigma,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclass_dict(self)


def noise_scale(
    model,
    X: Any,
    y: Any,
    *,
    b_small: int = NOISE_PROBE_BATCHES[0],
    b_big: int = NOISE_PROBE_BATCHES[1],
    n_batches: int = 50,
    seed: int = 0,
    sample_axis: int = 0,
    bootstrap: int = 1000,
) -> NoiseScale:
    """Measures the simple noise scale of ``model`` at its current parameters on (X, y).

    Each of ``n_batches`` rounds draws b_big samples without replacement (from
    ``default_rng((seed, round))``); the gradient on all of them is G_big and the gradient on an
    independent draw of b_small samples is G_small. Gradients are taken in training mode on a copy
    of the model, so the model's BatchNorm statistics and dropout draws are left as they were.
    """
    rows, targets = model.prepare(X, y, sample_axis=sample_axis)

    def draw(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return rows[index], targets[index]

    sizes = (b_small, b_big, n_batches)
    return _measure(model, draw, len(rows), sizes, seed, bootstrap)


def noise_scale_of(
    model, batches, *, b_small: int, b_big: int, n_batches: int, seed: int = 0, bootstrap: int = 200
) -> NoiseScale:
    """``noise_scale`` on a MiniBatches' training data, in memory or streamed from disk: each
    drawn batch is read through ``batches.take`` (a file is read, checked and encoded as it
    streams), never the whole set."""

    def draw(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return batches.take(np.sort(index))

    sizes = (b_small, b_big, n_batches)
    return _measure(model, draw, batches.n_samples, sizes, seed, bootstrap)


def _measure(model, draw, m: int, sizes, seed: int, bootstrap: int) -> NoiseScale:
    """The probe itself: ``draw(index)`` -> (rows, targets) of m prepared samples."""
    b_small, b_big, n_batches = _checked_sizes(*sizes, m)
    probe = model.copy().train()
    if probe.has_batchnorm and b_small < 2:
        raise ValueError("with BatchNorm, b_small must be at least 2.")
    small_sq = np.empty(n_batches)
    big_sq = np.empty(n_batches)
    with np.errstate(all="ignore"):
        for i in range(n_batches):
            rng = np.random.default_rng((seed, i))
            big = rng.choice(m, size=b_big, replace=False)
            small = rng.choice(m, size=b_small, replace=False)
            probe.loss_and_grad(*draw(big))
            big_sq[i] = norm_sq(probe.grads)
            probe.loss_and_grad(*draw(small))
            small_sq[i] = norm_sq(probe.grads)
    g2, trace = estimate_components(
        float(np.mean(small_sq)), float(np.mean(big_sq)), b_small, b_big, m
    )
    lo, hi = _bootstrap(small_sq, big_sq, (b_small, b_big, m), bootstrap, seed)
    return NoiseScale(
        trace / g2 if g2 > 0 else float("inf"), g2, trace, (lo, hi), b_small, b_big, n_batches
    )


def _checked_sizes(b_small, b_big, n_batches, m: int) -> tuple[int, int, int]:
    b_small = check_int("b_small", b_small, minimum=1)
    b_big = check_int("b_big", b_big, minimum=1)
    n_batches = check_int("n_batches", n_batches, minimum=2)
    if not b_small < b_big <= m:
        raise ValueError(
            message(
                "(b_small, b_big)",
                f"with b_small < b_big <= m = {m}",
                (b_small, b_big),
                "Pick b_big well above b_small, e.g. 8x.",
            )
        )
    return b_small, b_big, n_batches


def probe_noise_scale(model, X: Any, y: Any, *, seed: int = 0) -> NoiseScale:
    """``noise_scale`` with rule 4's standard probe for the data's size (``rules.noise_probe``):
    what the advisor, compare and sweep measure."""
    probe = noise_probe(len(X))
    return noise_scale(
        model,
        X,
        y,
        b_small=probe.b_small,
        b_big=probe.b_big,
        n_batches=probe.n_batches,
        seed=seed,
    )


def _bootstrap(small_sq, big_sq, sizes, rounds, seed) -> tuple[float, float]:
    if rounds < 1:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng((seed, 2**31 - 1))
    picks = rng.integers(0, len(small_sq), size=(rounds, len(small_sq)))
    g2, trace = estimate_components(
        small_sq[picks].mean(axis=1), big_sq[picks].mean(axis=1), *sizes
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(g2 > 0, trace / g2, np.inf)
    lo, hi = np.percentile(ratio, [2.5, 97.5])
    return float(lo), float(hi)
