"""What a comparison's numbers say: a conclusion, and the note's rules checked one by one.

Each rule of the note gets a verdict from this run's numbers, never a restatement: "agrees",
"disagrees" or "cannot tell", followed by the numbers that decided it and, where a rule is
contradicted, the likely reason (a full batch that is undertrained generalizes "well" because it
has not fit the training set; under a time budget the smallest batches are overhead-bound).
Runs are read from the smallest batch to the largest.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from minigd import rules
from minigd.batchsize.memory import available_memory, format_bytes
from minigd.experiments.compare import Results, format_number
from minigd.experiments.metrics import trend
from minigd.nn.losses import higher_is_better

AGREES, DISAGREES, UNKNOWN = "agrees", "disagrees", "cannot tell"


@dataclass(frozen=True)
class Observation:
    """One rule of the note, this run's verdict on it, and the numbers behind the verdict."""

    rule: str
    verdict: str
    evidence: str


def conclusion(results: Results, busy: bool = False) -> str:
    """One paragraph: which batch size won on which axis, in numbers. ``busy``: other processes
    kept the cores busy while measuring (the advisor saw it), so no run is crowned on seconds
    or samples/s: contended timings rank the load, not the batch sizes."""
    runs = results.runs
    parts = []
    best = _best(runs, "val_accuracy", higher=True) or _best(runs, "val_loss", higher=False)
    if best is not None:
        key = "val_accuracy" if best.metrics.get("val_accuracy") is not None else "val_loss"
        parts.append(f"the best {key.replace('_', ' ')} was {best.spec.label}'s "
                     f"({format_number(best.metrics[key])})")  # fmt: skip
    timed = () if busy else (("seconds_to_target", "in the fewest seconds", "s"),)
    for key, what, unit in (
        ("epochs_to_target", "reached the target in the fewest epochs", "epochs"),
        *timed,
    ):
        run = _best(runs, key, higher=False)
        if run is not None:
            held = ""
            if run.metrics.get("target_held") is False:
                held = f", then fell back to {format_number(run.metrics['target_at_end'])}"
            parts.append(
                f"{run.spec.label} {what} ({format_number(run.metrics[key])} {unit}{held})"
            )
    fast = None if busy else _best(runs, "samples_per_second", higher=True)
    if fast is not None:
        parts.append(f"{fast.spec.label} processed the most samples per second "
                     f"({format_number(fast.metrics['samples_per_second'])})")  # fmt: skip
    smooth = _best(runs, "curve_noise", higher=False)
    if smooth is not None:
        parts.append(f"{smooth.spec.label} had the smoothest loss curve")
    if not parts:
        return "No run produced comparable numbers."
    text = f"Within the same budget ({results.budget}), " + "; ".join(parts) + "."
    if busy:
        return text + (
            " The machine was busy while these ran (other processes on the cores), so no run "
            "is ranked on seconds or samples/s: measure again on a quiet machine to compare them."
        )
    return text + " Seconds and samples/s depend on how busy the machine was while it ran."


def _best(runs, key: str, *, higher: bool):
    scored = [r for r in runs if _finite(r.metrics.get(key))]
    if not scored:
        return None
    return (max if higher else min)(scored, key=lambda r: r.metrics[key])


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _ordered(values: list[float], increasing: bool) -> str:
    """AGREES when the values (by batch size, small to large) move as the rule says."""
    finite = [v for v in values if _finite(v)]
    if len(finite) < 2:
        return UNKNOWN
    pairs = list(itertools.pairwise(finite))
    ok = all(b > a for a, b in pairs) if increasing else all(b < a for a, b in pairs)
    return AGREES if ok else DISAGREES


def _list(runs, key: str) -> str:
    return ", ".join(f"{r.spec.label} {format_number(r.metrics.get(key))}" for r in runs)


def note_observations(results: Results, advice=None, sweep=None) -> list[Observation]:
    """The note's rules, each with this run's verdict and numbers (see the module docstring)."""
    # an adaptive run has no one batch size to order by: the rules compare the fixed ones
    runs = sorted((r for r in results.runs if not r.spec.adaptive), key=lambda r: r.batch_samples)
    out = [
        _smoothness(runs),
        _progress_per_epoch(runs, results),
        _hardware(runs, results),
        _generalization(runs),
        _learning_rates(runs, results),
        _small_set(runs, results, advice),
        _memory(runs),
        _batchnorm(runs, results),
    ]
    if sweep is not None:
        out.append(_steps_to_target(sweep))
    return out


def _smoothness(runs) -> Observation:
    noise = [r.metrics.get("curve_noise") for r in runs]
    ends = ", ".join(
        f"{r.spec.label} {trend(r.history)[-1] / max(r.history.steps['loss'][0], 1e-12):.2f}x"
        for r in runs
        if r.history.n_steps
    )
    verdict = _ordered(noise, increasing=False)
    return Observation(
        "The loss curve is less smooth with smaller batches, but still trends down.",
        verdict,
        f"Curve noise (spread of log-loss around its moving trend), small batch to large: "
        f"{_list(runs, 'curve_noise')}. Smoothed final loss relative to the first step: {ends}.",
    )


def _progress_per_epoch(runs, results) -> Observation:
    after = [r.metrics.get("loss_after_epoch_1") for r in runs]
    return Observation(
        "Mini-batches make more progress per epoch than the full batch.",
        _ordered(after, increasing=True),
        f"Training loss after one epoch (evaluated at the epoch's end): "
        f"{_list(runs, 'loss_after_epoch_1')}. Epochs to reach {results.target}: "
        f"{_list(runs, 'epochs_to_target')}.",
    )


def _hardware(runs, results) -> Observation:
    verdict = _ordered([r.metrics.get("samples_per_second") for r in runs], increasing=True)
    why = ""
    if verdict == DISAGREES and results.budget.seconds:
        why = " Under a time budget the small batches are overhead-bound, and a busy machine " \
              "moves every rate; compare the rates within one run only."  # fmt: skip
    return Observation(
        "Larger batches use parallel hardware better.",
        verdict,
        f"Samples per second: {_list(runs, 'samples_per_second')} (on this machine, at its "
        f"load while running).{why}",
    )


def _generalization(runs) -> Observation:
    gaps = [r.metrics.get("generalization_gap") for r in runs]
    verdict = _ordered(gaps, increasing=True)  # the smaller the batch, the smaller the gap
    train = [r.metrics.get("train_loss") for r in runs if _finite(r.metrics.get("train_loss"))]
    why = ""
    if verdict == DISAGREES and train:
        worst = max(runs, key=lambda r: r.metrics.get("train_loss") or -1)
        if worst.metrics["train_loss"] > 2 * min(train):
            why = (f" {worst.spec.label} has the highest train loss "
                   f"({format_number(worst.metrics['train_loss'])}): it is undertrained, and a "
                   f"model that has not fit its training set shows a small gap for that reason, "
                   f"not because it generalizes better.")  # fmt: skip
    return Observation(
        "Smaller batches are noisier, which can regularize and help generalization.",
        verdict,
        f"Generalization gap (validation minus train loss): {_list(runs, 'generalization_gap')}; "
        f"validation accuracy: {_list(runs, 'val_accuracy')}.{why}",
    )


def _learning_rates(runs, results) -> Observation:
    given = all(r.lr_note == "given" for r in runs)
    verdict = UNKNOWN if given else _ordered([r.lr for r in runs], increasing=True)
    lrs = ", ".join(f"{r.spec.label} {r.lr:.4g}" for r in runs)
    how = "given" if given else f"scaled by the {results.lr_rule} rule, so by construction"
    return Observation(rules.RULES[6].note, verdict, f"Learning rates used ({how}): {lrs}.")


def _small_set(runs, results, advice) -> Observation:
    m = results.n_train
    small = rules.is_small_set(m)
    key = "val_accuracy" if any(_finite(r.metrics.get("val_accuracy")) for r in runs) else None
    full = [r for r in runs if r.batch_samples == m]
    text = f"m = {m}: the rule says {'full batch' if small else 'mini-batches'}."
    if key is None or not full:
        return Observation(rules.RULES[1].note, UNKNOWN, text + " No full-batch run to compare.")
    best = _best(runs, key, higher=higher_is_better(key))
    won = best in full if small else best not in full
    text += (f" Best {key.replace('_', ' ')}: {best.spec.label} "
             f"({format_number(best.metrics[key])}); full batch "
             f"{format_number(full[0].metrics.get(key))}.")  # fmt: skip
    if advice is not None:
        text += f" The advisor recommends batch size {advice.batch_size}."
    return Observation(rules.RULES[1].note, AGREES if won else DISAGREES, text)


def _memory(runs) -> Observation:
    free = available_memory()
    fits = all(r.metrics["memory_bytes"] < free for r in runs)
    mem = ", ".join(f"{r.spec.label} {format_bytes(r.metrics['memory_bytes'])}" for r in runs)
    return Observation(
        "The mini-batch must fit in memory (RAM or VRAM).",
        AGREES if fits else DISAGREES,
        f"Estimated memory of one train step: {mem}; free RAM {format_bytes(free)}.",
    )


def _batchnorm(runs, results) -> Observation:
    smallest = runs[0].batch_samples if runs else 0
    if not results.batchnorm:
        return Observation(
            rules.RULES[5].note,
            UNKNOWN,
            f"This model has no BatchNorm. With it, batches under {rules.BN_MIN_BATCH} estimate "
            f"mean and variance poorly, and a batch of 1 cannot train it at all.",
        )
    return Observation(
        rules.RULES[5].note,
        UNKNOWN if smallest >= rules.BN_MIN_BATCH else DISAGREES,
        f"The smallest batch here is {smallest}; compare its validation accuracy with the "
        f"others': {_list(runs, 'val_accuracy')}.",
    )


def _steps_to_target(sweep) -> Observation:
    reached = [r for r in sweep.rows if r.steps_to_target is not None]
    steps = [r.steps_to_target for r in reached]
    pairs = ", ".join(f"B={r.batch_size}: {format_number(r.steps_to_target)}" for r in reached)
    ns = sweep.noise.b_simple if sweep.noise is not None else float("nan")
    verdict = UNKNOWN if len(steps) < 2 else (AGREES if steps[-1] < steps[0] else DISAGREES)
    return Observation(
        "Bigger batches need fewer steps, until they stop paying.",
        verdict,
        f"Steps to {sweep.target} at the best lr: {pairs or 'none reached it'}; measured noise "
        f"scale near the target ~{ns:.0f}.",
    )
