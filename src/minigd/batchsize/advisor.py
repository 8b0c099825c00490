"""The batch-size advisor: the note's rules, a memory model, measurements, and the noise scale.

Rules, applied in order (each reason in the advice names its rule):

1. Small training set: m <= ~2000 -> full batch (batch gradient descent), as the note says, when it
   fits in memory.
2. Otherwise a power of two from 32 to 1024 (the note's typical range) that fits the memory budget
   with all of its buffers (``estimate_memory``).
3. Hardware: prefer the knee of the throughput curve, the smallest batch within 10% of the best
   samples/s (measured by the finder when ``measure=True``).
4. Noise: when the gradient noise scale is known, do not go far above it: past it, larger batches
   cut the number of steps less than they add samples (McCandlish et al. 2018).
5. BatchNorm: very small batches estimate batch statistics badly; warn, and pick the
   ``last_batch`` policy that avoids a tiny last batch.
6. Learning rate: scale from a reference (B0, lr0), linearly for SGD and momentum, by the square
   root for Adam and RMSprop (``lr_scaling``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minigd.batchsize.finder import FinderResult, find_batch_size
from minigd.batchsize.lr_scaling import rule_for, scale_lr
from minigd.batchsize.memory import estimate_memory, format_bytes, memory_budget
from minigd.batchsize.noise import NoiseScale, noise_scale
from minigd.optim import get_optimizer

SMALL_SET = 2000  # the note's "m <= ~2000"
POWERS = (32, 64, 128, 256, 512, 1024)  # the note's "32 -> 1024, powers of 2"
BN_MIN_BATCH = 16  # below this, batch mean and variance are poor estimates
NOISE_SLACK = 2.0  # "far above" the noise scale: more than this factor


@dataclass
class Reason:
    rule: int
    title: str
    text: str

    def __str__(self) -> str:
        return f"rule {self.rule} ({self.title}): {self.text}"


@dataclass
class Candidate:
    batch_size: int
    steps_per_epoch: int
    estimated_bytes: int
    fits: bool
    samples_per_second: float | None = None


@dataclass
class Advice:
    """What the advisor recommends, and why."""

    batch_size: int | str
    lr: float
    lr_rule: str
    last_batch: str
    n_samples: int
    reasons: list[Reason]
    warnings: list[str]
    candidates: list[Candidate]
    budget: int
    finder: FinderResult | None = None
    noise: NoiseScale | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_samples(self) -> int:
        return self.n_samples if self.batch_size == "full" else int(self.batch_size)

    def table(self) -> str:
        lines = [f"{'batch':>7} {'steps/epoch':>11} {'memory':>10} {'fits':>5} {'samples/s':>11}"]
        for c in self.candidates:
            chosen = c.batch_size == self.batch_samples
            rate = "-" if c.samples_per_second is None else f"{c.samples_per_second:,.0f}"
            label = "full" if c.batch_size == self.n_samples else str(c.batch_size)
            lines.append(
                f"{label:>7} {c.steps_per_epoch:>11} "
                f"{format_bytes(c.estimated_bytes):>10} {'yes' if c.fits else 'no':>5} "
                f"{rate:>11}{'  <- advice' if chosen else ''}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        head = (
            f"batch size: {self.batch_size}"
            + (f" (all {self.n_samples} samples)" if self.batch_size == "full" else "")
            + f"\nlearning rate: {self.lr:.4g} ({self.lr_rule})"
            + f"\nlast_batch: {self.last_batch!r}"
        )
        body = "\n".join(f"- {r}" for r in self.reasons)
        warn = "".join(f"\nwarning: {w}" for w in self.warnings)
        return (
            f"{head}\n\nwhy:\n{body}{warn}\n\ncandidates (budget "
            f"{format_bytes(self.budget)}):\n{self.table()}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "lr": self.lr,
            "lr_rule": self.lr_rule,
            "last_batch": self.last_batch,
            "n_samples": self.n_samples,
            "reasons": [r.__dict__ for r in self.reasons],
            "warnings": self.warnings,
            "candidates": [c.__dict__ for c in self.candidates],
            "budget": self.budget,
            "noise": None if self.noise is None else self.noise.to_dict(),
            "knee": None if self.finder is None else self.finder.knee,
        }


def advise(
    model,
    X: Any,
    y: Any = None,
    *,
    optimizer=None,
    memory_budget_bytes: int | None = None,
    measure: bool = True,
    noise: NoiseScale | float | None = None,
    reference: tuple[int, float] | None = None,
    sample_axis: int = 0,
    progress: bool = False,
) -> Advice:
    """Recommends a batch size, a learning rate and a last-batch policy, with reasons.

    Args:
        model: the Sequential to train.
        X, y: the training data (y is needed for measurements).
        optimizer: name or Optimizer you will train with (default "sgd"); it decides the memory of
            the optimizer state and the learning-rate scaling rule.
        memory_budget_bytes: memory one train step may take; default half the free RAM.
        measure: time candidates with the finder and measure the gradient noise scale.
        noise: a known noise scale (a NoiseScale or a number) instead of measuring it.
        reference: (B0, lr0), a batch size and the learning rate known to work with it; default
            (32, the optimizer's default lr).
    """
    opt = get_optimizer(optimizer or "sgd")
    rows, targets = model.prepare(X, y, sample_axis=sample_axis)
    m = len(rows)
    budget = memory_budget() if memory_budget_bytes is None else int(memory_budget_bytes)
    reasons: list[Reason] = []
    warnings: list[str] = []

    def candidate(b: int) -> Candidate:
        est = estimate_memory(model, b, optimizer=opt, n_samples=m).total
        return Candidate(b, -(-m // b), est, est <= budget)

    powers = [candidate(b) for b in POWERS if b <= m]
    full = candidate(m)
    table = [*powers, full] if all(c.batch_size != m for c in powers) else powers
    finder = None
    measured_noise = _known_noise(noise)

    # Rule 1: a small training set takes batch gradient descent.
    if m <= SMALL_SET and full.fits:
        chosen: int | str = "full"
        reasons.append(
            Reason(
                1,
                "small training set",
                f"m = {m} <= ~{SMALL_SET}: use batch "
                f"gradient descent (one step per epoch on all {m} samples); it "
                f"fits in memory (~{format_bytes(full.estimated_bytes)}).",
            )
        )
    else:
        if m <= SMALL_SET:
            reasons.append(
                Reason(
                    1,
                    "small training set",
                    f"m = {m} would call for full batch, "
                    f"but it needs ~{format_bytes(full.estimated_bytes)}, over "
                    f"the budget of {format_bytes(budget)}: mini-batches instead.",
                )
            )
        fitting = [c for c in powers if c.fits]
        if not fitting:
            chosen = _largest_fitting_power(model, opt, budget, m)
            warnings.append(f"even batch size 32 exceeds the memory budget; {chosen} fits.")
            reasons.append(
                Reason(
                    2,
                    "fits in memory",
                    f"no power of two from 32 to 1024 fits "
                    f"{format_bytes(budget)}; {chosen} is the largest that does.",
                )
            )
        else:
            reasons.append(
                Reason(
                    2,
                    "powers of two that fit",
                    f"m = {m} > ~{SMALL_SET}: "
                    f"mini-batches, a power of two from 32 to 1024; "
                    f"{', '.join(str(c.batch_size) for c in fitting)} fit the "
                    f"budget of {format_bytes(budget)}.",
                )
            )
            chosen, finder = _rule_3(
                model, rows, targets, fitting, opt, budget, measure, progress, reasons
            )
            if measure and targets is not None and measured_noise is None:
                measured_noise = noise_scale(
                    model,
                    rows,
                    targets,
                    b_small=min(32, m // 8),
                    b_big=min(1024, m // 2),
                    n_batches=30,
                )
            chosen = _rule_4(chosen, measured_noise, fitting, reasons)
    b = m if chosen == "full" else int(chosen)

    # Rule 5: BatchNorm needs batches big enough to estimate their statistics.
    last_batch = "keep"
    if model.has_batchnorm:
        rest = m % b
        if b < BN_MIN_BATCH:
            warnings.append(
                f"batch size {b} is small for BatchNorm: its batch mean and variance "
                f"are noisy estimates (the note: very small batches lead to poor "
                f"estimates); prefer {BN_MIN_BATCH} or more."
            )
        if 0 < rest < BN_MIN_BATCH:
            last_batch = "merge"
            reasons.append(
                Reason(
                    5,
                    "BatchNorm statistics",
                    f"{m} = {m // b} x {b} + {rest}: "
                    f"the last batch of {rest} would give BatchNorm poor "
                    f"statistics; last_batch='merge' folds it into the batch "
                    f"before (or 'drop' skips it).",
                )
            )
        else:
            reasons.append(
                Reason(
                    5,
                    "BatchNorm statistics",
                    f"every batch has at least "
                    f"{min(b, rest or b)} samples: enough for batch statistics.",
                )
            )

    # Rule 6: the learning rate follows the batch size.
    b0, lr0 = reference if reference is not None else (32, opt.lr)
    scaled = scale_lr(lr0, b0, b, optimizer=opt)
    reasons.append(
        Reason(
            6,
            "learning rate",
            f"{scaled.explanation}, from the reference "
            f"lr {lr0:g} at batch {b0} ({'yours' if reference else 'default'}; "
            f"{rule_for(opt)} for {type(opt).__name__}).",
        )
    )
    for c in table:
        if finder is not None:
            match = [r for r in finder.rows if r.batch_size == c.batch_size]
            c.samples_per_second = match[0].samples_per_second if match else None
    return Advice(
        chosen,
        scaled.lr,
        scaled.rule + " scaling",
        last_batch,
        m,
        reasons,
        warnings,
        table,
        budget,
        finder,
        measured_noise,
        {"warmup_epochs": scaled.warmup_epochs},
    )


def _known_noise(noise) -> NoiseScale | None:
    if noise is None or isinstance(noise, NoiseScale):
        return noise
    value = float(noise)
    return NoiseScale(value, float("nan"), float("nan"), (value, value), 0, 0, 0)


def _largest_fitting_power(model, opt, budget, m) -> int:
    b = 16
    while b > 1 and estimate_memory(model, b, optimizer=opt).total > budget:
        b //= 2
    return min(b, m)


def _rule_3(model, rows, targets, fitting, opt, budget, measure, progress, reasons):
    """Rule 3: the knee of measured throughput; 64 (a common start) when not measured."""
    sizes = [c.batch_size for c in fitting]
    if not measure or targets is None:
        pick = 64 if 64 in sizes else sizes[-1]
        why = "measure=False" if not measure else "no targets to train on"
        reasons.append(
            Reason(
                3,
                "hardware throughput",
                f"not measured ({why}); {pick} is a "
                f"common starting point. Run the finder to see where throughput "
                f"levels off.",
            )
        )
        return pick, None
    result = find_batch_size(
        model,
        rows,
        targets,
        candidates=sizes,
        memory_budget_bytes=budget,
        warmup=2,
        optimizer=opt,
        progress=progress,
    )
    best = result.best
    knee = result.knee or sizes[0]
    reasons.append(
        Reason(
            3,
            "hardware throughput",
            f"throughput levels off at {knee}: it "
            f"trains {_rate(result, knee):,.0f} samples/s, within 10% of the best "
            f"({best.samples_per_second:,.0f} at {best.batch_size}); larger "
            f"batches buy little speed.",
        )
    )
    return knee, result


def _rate(result: FinderResult, b: int) -> float:
    return next(r.samples_per_second for r in result.rows if r.batch_size == b)


def _rule_4(chosen: int, noise: NoiseScale | None, fitting, reasons) -> int:
    if noise is None or not np.isfinite(noise.b_simple):
        return chosen
    b_noise = noise.b_simple
    if chosen > NOISE_SLACK * b_noise:
        sizes = [c.batch_size for c in fitting]
        capped = max(
            [b for b in sizes if b <= max(NOISE_SLACK * b_noise, sizes[0])], default=sizes[0]
        )
        reasons.append(
            Reason(
                4,
                "gradient noise scale",
                f"the noise scale is ~{b_noise:.0f} "
                f"(McCandlish et al. 2018): batches far above it cut the steps "
                f"less than they add samples, so {chosen} is lowered to {capped}.",
            )
        )
        return capped
    reasons.append(
        Reason(
            4,
            "gradient noise scale",
            f"the noise scale is ~{b_noise:.0f}; "
            f"{chosen} is not far above it, so no sample is wasted (it grows as "
            f"training goes on: measure again later to go larger).",
        )
    )
    return chosen
