"""Plots of compared runs and sweeps (matplotlib, Agg backend, imported only when plotting).

Each figure is written as PNG and SVG. The step-loss plot draws every run's raw per-step loss
faintly and its bias-corrected moving average on top: the note's "less smooth, but trending down".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minigd.experiments.metrics import trend

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install 'minigd[plot]'") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, folder: Path, name: str) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for ext in ("png", "svg"):
        path = folder / f"{name}.{ext}"
        fig.savefig(path, dpi=110 if ext == "png" else None, bbox_inches="tight")
        paths[ext] = path
    _pyplot().close(fig)
    return paths


def _thin(x: np.ndarray, y: np.ndarray, most: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Every k-th point, so a 100000-step SGD curve does not make a 30 MB SVG."""
    step = max(1, len(x) // most)
    return x[::step], y[::step]


def plot_results(results, folder: str | Path) -> dict[str, dict[str, Path]]:
    """Writes loss vs step, epoch, seconds and samples, and accuracy vs epoch."""
    plt = _pyplot()
    folder = Path(folder)
    out = {}
    runs = results.runs

    fig, ax = plt.subplots(figsize=(8, 4.8))
    low, high = np.inf, 0.0
    for color, run in zip(COLORS, runs, strict=False):
        h = run.history
        steps = np.arange(1, h.n_steps + 1)
        x, raw = _thin(steps, h.column("loss"))
        ax.plot(x, raw, color=color, alpha=0.18, linewidth=0.6)
        x, smooth = _thin(steps, trend(h))
        ax.plot(
            x,
            smooth,
            color=color,
            linewidth=1.8,
            label=f"{run.spec.label}, noise {run.metrics['curve_noise']:.3g}",
        )
        finite = smooth[np.isfinite(smooth) & (smooth > 0)]
        if finite.size:
            low, high = min(low, finite.min()), max(high, finite.max())
    if np.isfinite(low) and high > 0:
        # single-sample losses reach 1e-6 and below: frame the trends, not the extremes
        ax.set_ylim(low / 4, high * 3)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="step (one per mini-batch)",
        ylabel="loss",
        title="Loss per step: raw (faint) and smoothed",
    )
    ax.legend()
    out["loss_vs_step"] = _save(fig, folder, "loss_vs_step")

    axes = [
        ("samples_seen", "samples seen", "loss_vs_samples"),
        ("seconds", "seconds", "loss_vs_seconds"),
    ]
    for column, label, name in axes:
        fig, ax = plt.subplots(figsize=(8, 4.8))
        for color, run in zip(COLORS, runs, strict=False):
            h = run.history
            x, smooth = _thin(h.column(column), trend(h))
            ax.plot(x, smooth, color=color, linewidth=1.6, label=run.spec.label)
        ax.set(
            xscale="log" if column == "samples_seen" else "linear",
            yscale="log",
            xlabel=label,
            ylabel="loss (smoothed)",
            title=f"Loss vs {label}",
        )
        ax.legend()
        out[name] = _save(fig, folder, name)

    fig, ax = plt.subplots(figsize=(8, 4.8))
    for color, run in zip(COLORS, runs, strict=False):
        h = run.history
        epochs = np.arange(1, len(h.epochs) + 1)
        ax.plot(
            epochs,
            h.epoch_column("loss"),
            color=color,
            marker="o",
            markersize=3,
            label=f"{run.spec.label} train",
        )
        if h.epochs and "val_loss" in h.epochs[0]:
            ax.plot(
                epochs,
                h.epoch_column("val_loss"),
                color=color,
                linestyle="--",
                label=f"{run.spec.label} validation",
            )
    ax.set(yscale="log", xlabel="epoch", ylabel="loss", title="Loss per epoch")
    ax.legend(fontsize=8)
    out["loss_vs_epoch"] = _save(fig, folder, "loss_vs_epoch")

    metric = (
        "val_accuracy"
        if any("val_accuracy" in e for r in runs for e in r.history.epochs)
        else "val_r2"
    )
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for color, run in zip(COLORS, runs, strict=False):
        h = run.history
        ax.plot(
            np.arange(1, len(h.epochs) + 1),
            h.epoch_column(metric),
            color=color,
            marker="o",
            markersize=3,
            label=run.spec.label,
        )
    if results.target.metric == metric:
        ax.axhline(results.target.value, color="gray", linestyle=":", label=str(results.target))
    ax.set(
        xlabel="epoch",
        ylabel=metric.replace("_", " "),
        title=f"{metric.replace('val_', 'validation ')} per epoch",
    )
    ax.legend()
    out["accuracy_vs_epoch"] = _save(fig, folder, "accuracy_vs_epoch")
    return out


def plot_sweep(sweep, folder: str | Path) -> dict[str, dict[str, Path]]:
    """Steps to target vs batch size on log-log axes, with the perfect-scaling line (steps halve
    as the batch doubles) through the smallest batch, and the measured noise scale marked."""
    plt = _pyplot()
    rows = [r for r in sweep.rows if r.steps_to_target is not None]
    fig, ax = plt.subplots(figsize=(7, 4.8))
    if rows:
        b = np.array([r.batch_size for r in rows], dtype=float)
        steps = np.array([r.steps_to_target for r in rows], dtype=float)
        ax.plot(b, steps, "o-", color=COLORS[0], label="measured (best lr per batch size)")
        ax.plot(
            b, steps[0] * b[0] / b, ":", color="gray", label="perfect scaling (steps x B constant)"
        )
    noise = sweep.noise
    if noise is not None and np.isfinite(noise.b_simple):
        ax.axvline(
            noise.b_simple,
            color=COLORS[1],
            linestyle="--",
            label=f"noise scale B_simple ~ {noise.b_simple:.0f}",
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="batch size",
        ylabel=f"steps to {sweep.target}",
        title="Steps to target vs batch size",
    )
    ax.legend()
    return {"steps_vs_batch": _save(fig, Path(folder), "steps_vs_batch")}


def as_data_uri(path: Path) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
