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
from minigd.experiments.compare import (
    TO_TARGET,
    Results,
    fell_back_note,
    format_number,
    recommended_lr,
    to_target_text,
)
from minigd.experiments.observations import conclusion, note_observations
from minigd.experiments.plots import as_data_uri, plot_results
from minigd.experiments.sweep_plots import plot_sweep
from minigd.rules import LR_RULE

COLUMNS = (  # what fits an 800-pixel page; results.json holds every metric
    ("batch_samples", "batch size"),
    ("lr", "lr"),
    ("steps", "steps"),
    ("seconds", "seconds"),
    ("samples_per_second", "samples/s"),
    ("loss_after_epoch_1", "train loss after epoch 1"),
    ("train_loss", "train loss"),
    ("val_accuracy", "val acc"),
    ("generalization_gap", "gap (val - train loss)"),
    ("curve_noise", "curve noise"),
    ("epochs_to_target", "epochs to target"),
    ("seconds_to_target", "seconds to target"),
)
FIGURES = (  # name, caption, alt text that says what the picture shows
    ("loss_vs_step", "Loss per step, raw and smoothed: the note's noisier mini-batch curves.",
     "Log-log plot of the training loss at every step for each batch size: faint raw curves "
     "under bold smoothed ones; the smaller the batch, the wider the raw band."),
    ("loss_vs_epoch", "Loss per epoch, train (solid) and validation (dashed).",
     "Training and validation loss after each epoch, one colour per batch size."),
    ("loss_vs_samples", "Loss vs samples seen: progress per unit of data.",
     "Smoothed training loss against the number of samples seen, one curve per batch size."),
    ("loss_vs_seconds", "Loss vs wall-clock seconds: progress per unit of time.",
     "Smoothed training loss against training seconds, one curve per batch size."),
    ("accuracy_vs_epoch", "Validation accuracy per epoch.",
     "Validation accuracy after each epoch for each batch size, with the target as a line."),
    ("accuracy_vs_seconds", "Validation accuracy vs seconds (seconds depend on machine load).",
     "Validation accuracy at each epoch's end against training seconds, log scale."),
    ("throughput_vs_batch", "Samples/s and step memory vs batch size (the advisor's table).",
     "Measured samples per second and estimated memory of one step at each batch size tried."),
    ("steps_vs_batch", "Steps to target vs batch size (sweep).",
     "Log-log plot of the steps each batch size needed to reach the target at its best "
     "learning rate, with the perfect-scaling line and the noise scale marked."),
)  # fmt: skip


def cell(run, key: str) -> str:
    """The text of one table cell, as both report.html and report.md show it."""
    if key == "batch_samples" and run.spec.adaptive:
        return f"{run.batch_samples} to {format_number(run.metrics.get('largest_batch_size'))}"
    if key in TO_TARGET:
        return to_target_text(run.metrics, key)
    value = (
        run.lr
        if key == "lr"
        else run.batch_samples
        if key == "batch_samples"
        else run.metrics.get(key)
    )
    return format_number(value)


DOUBLING = (
    "grew the batch to the largest power of two below the running noise scale B_simple each "
    "time B_simple passed twice the batch (McCandlish et al. 2018: the batch that spends steps "
    "and samples best is about B_noise)"
)
GOODPUT = (
    "moved the batch to the size with the most predicted goodput (samples per second as "
    "measured on this machine x each sample's worth at the running noise scale; Pollux, OSDI "
    "2021), the learning rate scaled with it by AdaScale's gain"
)


def adaptive_notes(results: Results) -> list[str]:
    """What each adaptive run chose, when, and why, one sentence per run."""
    notes = []
    for run in results.runs:
        if not run.spec.adaptive:
            continue
        changes = run.metrics.get("batch_schedule") or []
        steps = "; ".join(
            f"at step {c['step']} (epoch {c['epoch'] + 1}) {c['from']} -> {c['batch_size']}, "
            + (c["reason"] if "reason" in c else f"B_simple {c['b_simple']:.0f}")
            for c in changes
        )
        policy = GOODPUT if any("reason" in c for c in changes) or not changes else DOUBLING
        notes.append(
            f"{run.spec.label}: started at B={run.batch_samples} with lr {run.lr:.4g} and "
            f"{policy}. "
            + (f"Changes: {steps}." if changes else "No other size promised 5% more goodput.")
        )
    return notes


def _reasons(advice) -> list[str]:
    """The advisor's reasons, but its learning rate's: the report recommends one lr, with its
    own source (``_recommendation``)."""
    kept = [str(r) for r in advice.reasons if r.rule != LR_RULE]
    return kept + [f"warning: {w}" for w in advice.warnings]


def _recommendation(results: Results, advice) -> str:
    """The advisor's batch size with the one learning rate the report recommends for it."""
    lr, source = recommended_lr(results, advice.batch_samples)
    return (
        f"Batch size {advice.batch_size}, learning rate {lr:.4g} ({source}), last_batch "
        f"{advice.last_batch!r}."
    )


def write_report(
    results: Results, folder: str | Path, *, advice=None, sweep=None, title: str | None = None
) -> dict[str, Path]:
    """Writes plots, results.json, histories, report.md and report.html into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    figures = plot_results(results, folder / "plots", advice=advice)
    if sweep is not None:
        figures.update(plot_sweep(sweep, folder / "plots"))
        sweep.save(folder)
    results_path = results.save(folder)
    observations = note_observations(results, advice, sweep)
    busy = advice is not None and advice.finder is not None and advice.finder.machine_busy
    summary = conclusion(results, busy=busy)
    title = title or f"minigd compare: {results.model} on {results.data}"
    html_path = atomic_write_text(
        folder / "report.html", _html(results, figures, observations, advice, sweep, title, summary)
    )
    md_path = atomic_write_text(
        folder / "report.md",
        _markdown(results, figures, observations, advice, sweep, title, folder, summary),
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


def _html(results, figures, observations, advice, sweep, title, summary) -> str:
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
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="conclusion">{esc(summary)}</p>',
        f"<p>{esc(_summary(results))}</p>",
        "<h2>Metrics</h2>",
        f'<div class="scroll"><table id="metrics"><thead><tr><th>run</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>",
        *([f"<p>{esc(fell_back_note(results))}</p>"] if fell_back_note(results) else []),
        "<p>Curve noise: standard deviation of log(step loss) around its centered moving "
        "average over 11 steps. Seconds and samples/s depend on the machine's load while the "
        "runs ran. Every metric is in results.json.</p>",
    ]
    if adaptive_notes(results):
        parts.append("<h2>The adaptive batch size</h2>")
        parts += [f"<p>{esc(note)}</p>" for note in adaptive_notes(results)]
    if advice is not None:
        parts += _advice_html(results, advice)
    parts.append("<h2>The note, observed</h2><ul>")
    parts += [
        f'<li><b>{esc(o.rule)}</b> <span class="verdict {o.verdict.replace(" ", "-")}">'
        f"{esc(o.verdict)}</span>: {esc(o.evidence)}</li>"
        for o in observations
    ]
    parts.append("</ul><h2>Plots</h2>")
    for name, caption, alt in FIGURES:
        if name in figures:
            parts.append(
                f'<figure><img alt="{esc(alt)}" src="{as_data_uri(figures[name]["png"])}">'
                f"<figcaption>{esc(caption)}</figcaption></figure>"
            )
    if sweep is not None:
        parts.append(
            f'<h2>Batch-size sweep</h2><div class="scroll"><pre>{esc(sweep.table())}</pre></div>'
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _advice_html(results, advice) -> list[str]:
    esc = html.escape
    reasons = "".join(f"<li>{esc(r)}</li>" for r in _reasons(advice))
    return [
        "<h2>The advisor's recommendation</h2>",
        f"<p><b>{esc(_recommendation(results, advice))}</b></p>",
        f"<ul>{reasons}</ul>",
        f'<div class="scroll"><pre>{esc(advice.table())}</pre></div>',
    ]


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;"
    "line-height:1.4}.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.78em}"
    "td,th{border:1px solid #ccc;padding:.25em .3em;text-align:right}"
    "thead th{background:#f4f4f4;white-space:normal;vertical-align:bottom;min-width:3.5em}"
    "tbody th{text-align:left}figure{margin:1.5em 0}img{max-width:100%}"
    "li{margin:.5em 0}pre{background:#f8f8f8;padding:.6em;font-size:.85em}"
    ".conclusion{font-size:1.05em;background:#f3f7ff;border-left:4px solid #1f77b4;"
    "padding:.6em .8em}.verdict{font-weight:bold;padding:0 .3em;border-radius:3px}"
    ".agrees{background:#e3f4e3}.disagrees{background:#fbe3e3}.cannot-tell{background:#eee}"
)


def _markdown(results, figures, observations, advice, sweep, title, folder: Path, summary) -> str:
    lines = [f"# {title}", "", summary, "", _summary(results), "", "## Metrics", ""]
    lines.append("| run | " + " | ".join(label for _, label in COLUMNS) + " |")
    lines.append("|---|" + "---|" * len(COLUMNS))
    for run in results.runs:
        lines.append(f"| {run.spec.label} | " + " | ".join(cell(run, k) for k, _ in COLUMNS) + " |")
    if fell_back_note(results):
        lines += ["", fell_back_note(results).replace("*", "\\*", 1)]
    if adaptive_notes(results):
        lines += ["", "## The adaptive batch size", "", *adaptive_notes(results)]
    if advice is not None:
        lines += ["", "## The advisor's recommendation", "", _recommendation(results, advice), ""]
        lines += [f"- {r}" for r in _reasons(advice)]
        lines += ["", "```", advice.table(), "```"]
    lines += ["", "## The note, observed", ""]
    lines += [f"- **{o.rule}** *{o.verdict}*: {o.evidence}" for o in observations]
    lines += ["", "## Plots", ""]
    for name, caption, _ in FIGURES:
        if name in figures:
            rel = figures[name]["png"].relative_to(folder)
            lines.append(f"![{caption}]({rel.as_posix()})")
            lines.append("")
    if sweep is not None:
        lines += ["## Batch-size sweep", "", "```", sweep.table(), "```"]
    return "\n".join(lines) + "\n"
