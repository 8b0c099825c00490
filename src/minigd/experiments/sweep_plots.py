"""The two pictures of a sweep, one curve per target:

- steps to target vs batch size on log-log axes (Shallue et al. 2019's figure): the measured
  medians with the seeds' spread, the fitted S_min (1 + B_crit / B), the perfect-scaling line
  (slope -1) through the smallest batch, B_crit (dotted) and B_simple at the target (dashed);
- steps vs samples to target (McCandlish et al. 2018's figure 2): each batch size a point, the
  fitted hyperbola (S/S_min - 1)(E/E_min - 1) = 1 through them, S_min and E_min its asymptotes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minigd.experiments.plots import COLORS, _pyplot, _save


def plot_sweep(sweep, folder: str | Path) -> dict[str, dict[str, Path]]:
    """Writes steps_vs_batch and steps_vs_samples (PNG and SVG) into ``folder``."""
    plt, folder = _pyplot(), Path(folder)
    fits = sweep.fits or []
    return {
        "steps_vs_batch": _save(_steps_vs_batch(plt, sweep, fits), folder, "steps_vs_batch"),
        "steps_vs_samples": _save(_steps_vs_samples(plt, sweep, fits), folder, "steps_vs_samples"),
    }


def _measured(rows):
    rows = [r for r in rows if r.steps_to_target is not None]
    b = np.array([r.batch_size for r in rows], dtype=float)
    steps = np.array([r.steps_to_target for r in rows], dtype=float)
    spread = np.array([r.spread for r in rows], dtype=float).reshape(-1, 2)
    return b, steps, spread


def _steps_vs_batch(plt, sweep, fits):
    fig, ax = plt.subplots(figsize=(7.5, 5))
    tried = [r.batch_size for r in sweep.rows]
    span = np.geomspace(min(tried), max(tried), 200)
    for k, reading in enumerate(fits):
        color = COLORS[k % len(COLORS)]
        b, steps, spread = _measured(reading.rows)
        if not len(b):
            continue
        errors = np.abs(spread.T - steps)
        ax.errorbar(b, steps, yerr=errors, fmt="o", color=color, capsize=3,
                    label=f"{reading.target} (median, seeds' range)")  # fmt: skip
        if k == len(fits) - 1:
            ax.plot(span, steps[0] * b[0] / span, ":", color="gray",
                    label="perfect scaling (slope -1)")  # fmt: skip
        crit = reading.critical
        if crit is not None:
            ax.plot(span, crit.steps_at(span), "-", color=color, alpha=0.8,
                    label=f"fit: B_crit = {crit.b_crit:.3g}")  # fmt: skip
            ax.axvline(crit.b_crit, color=color, linestyle=":", alpha=0.7)
        if reading.noise is not None and np.isfinite(reading.noise.b_simple):
            ax.axvline(reading.noise.b_simple, color=color, linestyle="--", alpha=0.7,
                       label=f"B_simple at target = {reading.noise.b_simple:.3g}")  # fmt: skip
    if not fits:  # a sweep saved before targets had fits
        b, steps, _ = _measured(sweep.rows)
        ax.plot(b, steps, "o-", color=COLORS[0], label="measured (best lr per batch size)")
    ax.set(xscale="log", yscale="log", xlabel="batch size B",
           ylabel="steps to target (best lr per B)",
           title="Steps to target vs batch size")  # fmt: skip
    ax.set_xticks(tried, [str(v) for v in tried])
    ax.minorticks_off()
    ax.legend(fontsize=8)
    return fig


def _steps_vs_samples(plt, sweep, fits):
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for k, reading in enumerate(fits):
        color = COLORS[k % len(COLORS)]
        b, steps, _ = _measured(reading.rows)
        if not len(b):
            continue
        ax.plot(steps * b, steps, "o", color=color, label=str(reading.target))
        for x, y, size in zip(steps * b, steps, b, strict=True):
            ax.annotate(f"{size:g}", (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=color)  # fmt: skip
        crit = reading.critical
        if crit is not None:
            span = np.geomspace(crit.b_crit / 100, crit.b_crit * 100, 300)
            ax.plot(crit.samples_at(span), crit.steps_at(span), "-", color=color, alpha=0.8,
                    label=f"(S/S_min - 1)(E/E_min - 1) = 1: S_min {crit.s_min:.3g}, "
                    f"E_min {crit.e_min:.3g}")  # fmt: skip
            ax.axhline(crit.s_min, color=color, linestyle=":", alpha=0.5)
            ax.axvline(crit.e_min, color=color, linestyle=":", alpha=0.5)
    title = "Steps vs samples to target (points: batch sizes)"
    ax.set(xscale="log", yscale="log", xlabel="samples to target E (= steps x B)",
           ylabel="steps to target S", title=title)  # fmt: skip
    ax.legend(fontsize=8)
    return fig
