"""Plots of compared runs and sweeps (matplotlib, Agg backend, imported only when plotting).

Each figure is written as PNG and SVG. The step-loss plot draws every run's raw per-step loss
faintly and its bias-corrected moving average on top: the note's "less smooth, but trending down".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minigd._extras import require
from minigd._io import atomic_write
from minigd.experiments.metrics import trend

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


def _pyplot():
    matplotlib = require("matplotlib", "plot", "plotting")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, folder: Path, name: str) -> dict[str, Path]:
    paths = {}
    for ext in ("png", "svg"):
        dpi = 110 if ext == "png" else None

        def draw(f, ext=ext, dpi=dpi) -> None:
            fig.savefig(f, format=ext, dpi=dpi, bbox_inches="tight")

        paths[ext] = atomic_write(folder / f"{name}.{ext}", draw)
    _pyplot().close(fig)
    return paths


def _thin(x: np.ndarray, y: np.ndarray, most: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Every k-th point, so a 100000-step SGD curve does not make a 30 MB SVG."""
    step = max(1, len(x) // most)
    return x[::step], y[::step]


def plot_results(results, folder: str | Path, advice=None) -> dict[str, dict[str, Path]]:
    """Writes loss vs step, epoch, seconds and samples, accuracy vs epoch and vs seconds, and,
    with the advisor's measurements, samples/s and memory vs batch size."""
    plt, folder, runs = _pyplot(), Path(folder), results.runs
    out = {"loss_vs_step": _save(_loss_vs_step(plt, runs), folder, "loss_vs_step")}
    for column, label, name in (
        ("samples_seen", "samples seen", "loss_vs_samples"),
        ("seconds", "seconds", "loss_vs_seconds"),
    ):
        out[name] = _save(_loss_vs(plt, runs, column, label), folder, name)
    out["loss_vs_epoch"] = _save(_loss_vs_epoch(plt, runs), folder, "loss_vs_epoch")
    figure = _metric_vs_epoch(plt, runs, results.target)
    out["accuracy_vs_epoch"] = _save(figure, folder, "accuracy_vs_epoch")
    figure = _metric_vs_epoch(plt, runs, results.target, x="elapsed")
    out["accuracy_vs_seconds"] = _save(figure, folder, "accuracy_vs_seconds")
    if advice is not None and any(c.samples_per_second for c in advice.candidates):
        out["throughput_vs_batch"] = _save(_throughput(plt, advice), folder, "throughput_vs_batch")
    return out


def _throughput(plt, advice):
    """The advisor's measured samples/s and estimated step memory at each batch size."""
    rows = [c for c in advice.candidates if c.samples_per_second]
    b = [c.batch_size for c in rows]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    ax.plot(b, [c.samples_per_second for c in rows], "o-", color=COLORS[0], label="samples/s")
    ax.set(xscale="log", xlabel="batch size", ylabel="samples per second",
           title="Throughput and memory vs batch size (the advisor's measurements)")  # fmt: skip
    ax.set_xticks(b, [str(v) for v in b])
    ax.minorticks_off()
    memory = ax.twinx()
    memory.plot(b, [c.estimated_bytes / 2**20 for c in rows], "s--", color=COLORS[1],
                label="step memory (MiB)")  # fmt: skip
    memory.set_ylabel("estimated memory of a step (MiB)")
    lines = ax.get_legend_handles_labels()[0] + memory.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], loc="upper left")
    return fig


def _loss_vs_step(plt, runs):
    """Every run's raw step loss, faint, under its smoothed trend; log-log."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    low, high = np.inf, 0.0
    for color, run in zip(COLORS, runs, strict=False):
        h = run.history
        steps = np.arange(1, h.n_steps + 1)
        x, raw = _thin(steps, h.column("loss"))
        ax.plot(x, raw, color=color, alpha=0.18, linewidth=0.6)
        x, smooth = _thin(steps, trend(h))
        label = f"{run.spec.label}, noise {run.metrics['curve_noise']:.3g}"
        ax.plot(x, smooth, color=color, linewidth=1.8, label=label)
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
    return fig


def _loss_vs(plt, runs, column: str, label: str):
    """The smoothed loss against another per-step column (samples seen, seconds)."""
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
    return fig


def _loss_vs_epoch(plt, runs):
    """Train (solid) and validation (dashed) loss per epoch."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for color, run in zip(COLORS, runs, strict=False):
        h = run.history
        epochs = np.arange(1, len(h.epochs) + 1)
        label = f"{run.spec.label} train"
        ax.plot(epochs, h.epoch_column("loss"), color=color, marker="o", markersize=3, label=label)
        if h.epochs and "val_loss" in h.epochs[0]:
            label = f"{run.spec.label} validation"
            ax.plot(epochs, h.epoch_column("val_loss"), color=color, linestyle="--", label=label)
    ax.set(yscale="log", xlabel="epoch", ylabel="loss", title="Loss per epoch")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # off the curves
    return fig


def _metric_vs_epoch(plt, runs, target, x: str = "epoch"):
    """Validation accuracy (or R^2) at each epoch's end, against the epoch or (``x="elapsed"``)
    the training seconds, with the target marked."""
    has_accuracy = any("val_accuracy" in e for r in runs for e in r.history.epochs)
    metric = "val_accuracy" if has_accuracy else "val_r2"
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for color, run in zip(COLORS, runs, strict=False):
        h = run.history
        xs = np.arange(1, len(h.epochs) + 1) if x == "epoch" else h.epoch_column("elapsed")
        values = h.epoch_column(metric)
        ax.plot(xs, values, color=color, marker="o", markersize=3, label=run.spec.label)
    if target.metric == metric:
        ax.axhline(target.value, color="gray", linestyle=":", label=str(target))
    name = metric.replace("val_", "validation ")
    if x == "epoch":
        ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=f"{name} per epoch")
    else:
        ax.set(xscale="log", xlabel="training seconds (depends on the machine's load)",
               ylabel=metric.replace("_", " "), title=f"{name} vs seconds")  # fmt: skip
    ax.legend()
    return fig


def as_data_uri(path: Path) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
