"""The report of a sweep: results.json, the two figures, report.md and a self-contained
report.html, which say per target what the curve shows: B_crit with its interval, B_simple where
the reference run reached the target, their ratio, and which batch sizes sit in which regime."""

from __future__ import annotations

import html
from pathlib import Path

from minigd._io import atomic_write_text
from minigd.experiments.compare import format_number
from minigd.experiments.plots import as_data_uri
from minigd.experiments.report import STYLE
from minigd.experiments.sweep_plots import plot_sweep

FIGURES = (
    ("steps_vs_batch", "Steps to target vs batch size, best learning rate per batch size: "
     "measured (median and range over seeds), the fitted S_min (1 + B_crit/B), the "
     "perfect-scaling line, B_crit (dotted) and B_simple at the target (dashed)."),
    ("steps_vs_samples", "Steps vs samples to target: each point a batch size, the curve the "
     "fitted hyperbola (S/S_min - 1)(E/E_min - 1) = 1 (McCandlish et al. 2018, figure 2)."),
)  # fmt: skip


def write_sweep_report(result, folder: str | Path) -> dict[str, Path]:
    """Writes results.json, the plots, report.md and report.html into ``folder``."""
    folder = Path(folder)
    figures = plot_sweep(result, folder / "plots")
    paths = {"results": result.save(folder, "results.json")}
    paths["markdown"] = atomic_write_text(folder / "report.md", _markdown(result, figures, folder))
    paths["html"] = atomic_write_text(folder / "report.html", _html(result, figures))
    return paths | {name: figures[name]["png"] for name in figures}


def readings(result) -> list[str]:
    """One paragraph per target, in words and numbers."""
    out = []
    for reading in result.fits:
        crit = reading.critical
        if crit is None:
            out.append(f"{reading.target}: no fit ({reading.note})")
            continue
        text = (
            f"{reading.target}: B_crit = {crit.b_crit:.3g} ({crit.interval_text(3, 'to')}), "
            f"S_min = {crit.s_min:.3g} steps, E_min = {crit.e_min:.3g} samples; the fit is "
            f"{crit.residual_rms:.0%} off the medians (rms, log scale). Perfect scaling "
            f"(slope -1) lasts up to B ~ {crit.perfect_scaling_up_to:.3g}; the plateau starts "
            f"near B ~ {crit.plateau_from:.3g}. " + _regimes(crit)
        )
        if not crit.bounded:
            text += " B_crit lies at the edge of what these batch sizes can tell: a bound only."
        if reading.noise is not None:
            n_lo, n_hi = reading.noise.interval
            text += (
                f" Measured B_simple where {reading.reference} reached the target: "
                f"{reading.noise.b_simple:.3g} (95% CI {n_lo:.3g} to {n_hi:.3g}); "
                f"B_crit / B_simple = {format_number(reading.ratio)}."
            )
        out.append(text)
    return out


def _regimes(crit) -> str:
    groups: dict[str, list[str]] = {}
    for b, name in crit.regimes.items():
        groups.setdefault(name, []).append(str(b))
    slopes = ", ".join(f"{s:.2f}" for s in crit.local_slopes)
    parts = "; ".join(f"{name}: B = {', '.join(sizes)}" for name, sizes in groups.items())
    return f"By the fit, {parts}. Measured slopes between neighbouring batch sizes: {slopes}."


def _edge_note(result) -> str:
    edges = [r.batch_size for r in result.rows if r.best_lr is not None and not r.interior]
    grid = "; ".join(
        f"B={b}: {', '.join(f'{lr:g}' for lr in lrs)}" for b, lrs in result.lr_grid.items()
    )
    head = f"Learning rates tried ({len(result.seeds)} seeds each): {grid}."
    if edges:
        return head + f" Best rate still at the grid's edge for B = {edges} (extension limit)."
    return head + " Every best rate is interior: a rate above and one below did worse."


def _markdown(result, figures, folder: Path) -> str:
    lines = [f"# minigd sweep: {result.model} on {result.data}", "", _edge_note(result), ""]
    lines += ["```", result.table(readings=False), "```", "", "## The critical batch size", ""]
    lines += [f"- {text}" for text in readings(result)]
    lines += [""]
    for name, caption in FIGURES:
        rel = figures[name]["png"].relative_to(folder)
        lines += [f"![{caption}]({rel.as_posix()})", ""]
    return "\n".join(lines)


def _html(result, figures) -> str:
    esc = html.escape
    title = f"minigd sweep: {result.model} on {result.data}"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1><p>{esc(_edge_note(result))}</p>",
        f'<div class="scroll"><pre>{esc(result.table(readings=False))}</pre></div>',
        "<h2>The critical batch size</h2><ul>",
        *[f"<li>{esc(text)}</li>" for text in readings(result)],
        "</ul>",
    ]
    for name, caption in FIGURES:
        src = as_data_uri(figures[name]["png"])
        parts.append(
            f'<figure><img src="{src}" alt="{esc(caption)}"><figcaption>{esc(caption)}'
            "</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
