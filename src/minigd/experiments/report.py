"""The report of a comparison: report.html (self-contained), report.md, results.json, histories.

The HTML inlines its images as base64 PNG, so the one file can be mailed or archived. Its metrics
table is written from the same numbers as results.json, formatted by ``format_number``; a test reads
the table back and compares. The section "The note, observed" ties each rule of the note this
project grew from to the numbers this run measured.
"""

from __future__ import annotations

import html
from pathlib import Path

from minigd._io import atomic_write_text
from minigd.batchsize import rules
from minigd.batchsize.memory import available_memory, format_bytes
from minigd.experiments.compare import Results, format_number
from minigd.experiments.metrics import trend
from minigd.experiments.plots import as_data_uri, plot_results, plot_sweep

COLUMNS = (
    ("batch_samples", "batch size"),
    ("lr", "lr"),
    ("steps", "steps"),
    ("epochs", "epochs"),
    ("seconds", "seconds"),
    ("samples_per_second", "samples/s"),
    ("first_epoch_loss", "loss after epoch 1"),
    ("train_loss", "train loss"),
    ("train_accuracy", "train acc"),
    ("val_loss", "val loss"),
    ("val_accuracy", "val acc"),
    ("generalization_gap", "gap (val - train loss)"),
    ("curve_noise", "curve noise"),
    ("epochs_to_target", "epochs to target"),
    ("steps_to_target", "steps to target"),
    ("seconds_to_target", "seconds to target"),
)
FIGURES = (
    ("loss_vs_step", "Loss per step, raw and smoothed: the note's noisier mini-batch curves."),
    ("loss_vs_epoch", "Loss per epoch, train (solid) and validation (dashed)."),
    ("loss_vs_samples", "Loss vs samples seen: progress per unit of data."),
    ("loss_vs_seconds", "Loss vs wall-clock seconds: progress per unit of time."),
    ("accuracy_vs_epoch", "Validation accuracy per epoch."),
    ("steps_vs_batch", "Steps to target vs batch size (sweep)."),
)


def cell(run, key: str) -> str:
    """The text of one table cell, as both report.html and report.md show it."""
    value = (
        run.lr
        if key == "lr"
        else run.batch_samples
        if key == "batch_samples"
        else run.metrics.get(key)
    )
    return format_number(value)


def note_observations(results: Results, advice=None, sweep=None) -> list[tuple[str, str]]:
    """(rule of the note, what this experiment measured) pairs, with numbers."""
    runs = sorted(results.runs, key=lambda r: r.batch_samples)
    out = [
        _smoothness(runs),
        _progress_per_epoch(runs, results),
        (
            "Larger batches use parallel hardware better.",
            f"Samples per second: {_each(runs, 'samples_per_second')}.",
        ),
        _generalization(runs),
        _learning_rates(runs, results),
        _small_set(results, advice),
    ]
    if advice is not None:
        out.append(
            (
                rules.RULES[2].note,
                f"The advisor's pick: {advice.batch_size}; its candidate table is above.",
            )
        )
    out.append(_memory(runs))
    out.append(_batchnorm(runs, results))
    if sweep is not None:
        out.extend(_steps_to_target(sweep))
    return out


def _each(runs, key: str) -> str:
    return ", ".join(f"{r.spec.label} {format_number(r.metrics.get(key))}" for r in runs)


def _smoothness(runs) -> tuple[str, str]:
    noise = ", ".join(f"{r.spec.label} {r.metrics['curve_noise']:.3g}" for r in runs)
    trends = ", ".join(
        f"{r.spec.label} {trend(r.history)[-1] / max(r.history.steps['loss'][0], 1e-12):.2f}x"
        for r in runs
        if r.history.n_steps
    )
    return (
        "The loss curve is less smooth with smaller batches, but still trends down.",
        f"Curve noise (spread of log-loss around its moving trend): {noise}. Smoothed "
        f"final loss relative to the first step: {trends}.",
    )


def _progress_per_epoch(runs, results) -> tuple[str, str]:
    return (
        "On a large training set mini-batches learn faster per epoch than the full batch.",
        f"Train loss after one epoch: {_each(runs, 'first_epoch_loss')}. Epochs to reach "
        f"{results.target}: {_each(runs, 'epochs_to_target')}.",
    )


def _generalization(runs) -> tuple[str, str]:
    gaps = ", ".join(
        f"{r.spec.label} {format_number(r.metrics.get('generalization_gap'))} "
        f"(val acc {format_number(r.metrics.get('val_accuracy'))})"
        for r in runs
    )
    return (
        "Smaller batches are noisier, which can regularize and help generalization.",
        f"Generalization gap (validation minus train loss) and validation accuracy: {gaps}.",
    )


def _learning_rates(runs, results) -> tuple[str, str]:
    lrs = ", ".join(f"{r.spec.label} {r.lr:.4g} ({r.lr_note})" for r in runs)
    return (
        rules.RULES[6].note,
        f"Learning rates used ({results.lr_rule} scaling unless given): {lrs}.",
    )


def _small_set(results, advice) -> tuple[str, str]:
    m = results.n_train
    verdict = "full-batch gradient descent" if rules.is_small_set(m) else "mini-batches"
    text = f"This training set has m = {m} samples, so the rule says {verdict}."
    if advice is not None:
        text += (
            f" The advisor recommends batch size {advice.batch_size} "
            f"(rules {', '.join(str(r.rule) for r in advice.reasons)})."
        )
    return rules.RULES[1].note, text


def _memory(runs) -> tuple[str, str]:
    mem = ", ".join(f"{r.spec.label} {format_bytes(r.metrics['memory_bytes'])}" for r in runs)
    return (
        "The mini-batch must fit in memory (RAM or VRAM).",
        f"Estimated memory of one train step: {mem}; free RAM {format_bytes(available_memory())}.",
    )


def _batchnorm(runs, results) -> tuple[str, str]:
    smallest = runs[0].batch_samples if runs else 0
    low = rules.BN_MIN_BATCH
    if results.batchnorm:
        bn = (
            f"This model uses BatchNorm; the smallest batch here is {smallest}. Batches under "
            f"{low} estimate its statistics poorly, and a batch of 1 cannot train it at all."
        )
    else:
        bn = (
            f"This model has no BatchNorm, so even batch size {smallest} is sound; with "
            f"BatchNorm, batches under {low} estimate mean and variance poorly."
        )
    return rules.RULES[5].note, bn


def _steps_to_target(sweep) -> list[tuple[str, str]]:
    reached = [r for r in sweep.rows if r.steps_to_target is not None]
    if not reached:
        return []
    pairs = ", ".join(f"B={r.batch_size}: {format_number(r.steps_to_target)}" for r in reached)
    ns = sweep.noise.b_simple if sweep.noise is not None else float("nan")
    return [
        (
            "Bigger batches need fewer steps, until they stop paying.",
            f"Steps to {sweep.target} at the best lr: {pairs}; measured noise "
            f"scale near the target ~{ns:.0f}.",
        )
    ]


def write_report(
    results: Results, folder: str | Path, *, advice=None, sweep=None, title: str | None = None
) -> dict[str, Path]:
    """Writes plots, results.json, histories, report.md and report.html into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    figures = plot_results(results, folder / "plots")
    if sweep is not None:
        figures.update(plot_sweep(sweep, folder / "plots"))
        sweep.save(folder)
    results_path = results.save(folder)
    observations = note_observations(results, advice, sweep)
    title = title or f"minigd compare: {results.model} on {results.data}"
    html_path = atomic_write_text(
        folder / "report.html", _html(results, figures, observations, advice, sweep, title)
    )
    md_path = atomic_write_text(
        folder / "report.md",
        _markdown(results, figures, observations, advice, sweep, title, folder),
    )
    return {
        "html": html_path,
        "markdown": md_path,
        "results": results_path,
        **{name: paths["png"] for name, paths in figures.items()},
    }


def _summary(results: Results) -> str:
    noise = results.noise_scale
    measured = "" if noise is None else f" (noise scale at init ~{noise.b_simple:.0f})"
    b0, lr0 = results.reference
    return (
        f"{results.n_train} training samples, model {results.model} "
        f"({results.n_params} parameters), budget {results.budget}, "
        f"target {results.target}, seed {results.seed}; every run starts from the same "
        f"initial weights. Learning rates: {results.lr_rule} scaling from lr "
        f"{lr0:g} at B={b0}{measured} unless given."
    )


def _html(results, figures, observations, advice, sweep, title) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(label)}</th>" for _, label in COLUMNS)
    rows = []
    for run in results.runs:
        cells = "".join(f'<td data-key="{key}">{esc(cell(run, key))}</td>' for key, _ in COLUMNS)
        rows.append(
            f'<tr data-run="{esc(run.spec.label)}"><th>{esc(run.spec.label)}</th>{cells}</tr>'
        )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;"
        "padding:.3em .5em;text-align:right}th{background:#f4f4f4}figure{margin:1.5em 0}"
        "img{max-width:100%}li{margin:.4em 0}pre{background:#f8f8f8;padding:.6em}</style>",
        "</head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>{esc(_summary(results))}</p>",
        "<h2>Metrics</h2>",
        f'<table id="metrics"><thead><tr><th>run</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>",
        "<p>Curve noise: standard deviation of log(step loss) around its centered moving "
        "average over 11 steps. Targets are checked at geometrically spaced steps.</p>",
    ]
    if advice is not None:
        reasons = "".join(f"<li>{esc(str(r))}</li>" for r in advice.reasons)
        warnings = "".join(f"<li>warning: {esc(w)}</li>" for w in advice.warnings)
        parts += [
            "<h2>The advisor's recommendation</h2>",
            f"<p>Batch size <b>{esc(str(advice.batch_size))}</b>, learning rate "
            f"<b>{advice.lr:.4g}</b> ({esc(advice.lr_rule)}), last_batch "
            f"<b>{esc(advice.last_batch)}</b>.</p>",
            f"<ul>{reasons}{warnings}</ul>",
            f"<pre>{esc(advice.table())}</pre>",
        ]
    parts.append("<h2>The note, observed</h2><ul>")
    parts += [f"<li><b>{esc(rule)}</b> {esc(seen)}</li>" for rule, seen in observations]
    parts.append("</ul><h2>Plots</h2>")
    for name, caption in FIGURES:
        if name in figures:
            parts.append(
                f'<figure><img alt="{esc(name)}" src="{as_data_uri(figures[name]["png"])}">'
                f"<figcaption>{esc(caption)}</figcaption></figure>"
            )
    if sweep is not None:
        parts.append(f"<h2>Batch-size sweep</h2><pre>{esc(sweep.table())}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _markdown(results, figures, observations, advice, sweep, title, folder: Path) -> str:
    lines = [f"# {title}", "", _summary(results), "", "## Metrics", ""]
    lines.append("| run | " + " | ".join(label for _, label in COLUMNS) + " |")
    lines.append("|---|" + "---|" * len(COLUMNS))
    for run in results.runs:
        lines.append(f"| {run.spec.label} | " + " | ".join(cell(run, k) for k, _ in COLUMNS) + " |")
    if advice is not None:
        lines += ["", "## The advisor's recommendation", "", "```", str(advice), "```"]
    lines += ["", "## The note, observed", ""]
    lines += [f"- **{rule}** {seen}" for rule, seen in observations]
    lines += ["", "## Plots", ""]
    for name, caption in FIGURES:
        if name in figures:
            rel = figures[name]["png"].relative_to(folder)
            lines.append(f"![{caption}]({rel.as_posix()})")
            lines.append("")
    if sweep is not None:
        lines += ["## Batch-size sweep", "", "```", sweep.table(), "```"]
    return "\n".join(lines) + "\n"
