"""The batch-size advisor: the note's rules, a memory model, measurements, and the noise scale.

``advise`` runs the rules of ``minigd.rules`` in order over one ``Context``; each rule
is a function ``(context) -> (choice, reason)`` that decides one thing (the batch size, the last
batch policy or the learning rate) and says why, naming its rule:

1. Small training set: m <= ~2000 -> full batch (batch gradient descent), when it fits in memory.
2. Otherwise a power of two from 32 to 1024 that fits the memory budget with all of its buffers
   (``estimate_memory``).
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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minigd import rules
from minigd._json import dataclass_dict
from minigd.batching import resolve_batch_size
from minigd.batchsize.evidence import Evidence
from minigd.batchsize.finder import FinderResult, find_batch_size
from minigd.batchsize.lr_scaling import ScaledLR, rule_for, scale_lr
from minigd.batchsize.memory import estimate_memory, format_bytes, memory_budget
from minigd.noise import NoiseScale, probe_noise_scale
from minigd.optim import Optimizer, get_optimizer


@dataclass
class Reason:
    """Why the advisor chose something: the rule's number and title, and the sentence."""

    rule: int
    title: str
    text: str

    @classmethod
    def of(cls, number: int, text: str) -> Reason:
        return cls(number, rules.RULES[number].title, text)

    def __str__(self) -> str:
        return f"rule {self.rule} ({self.title}): {self.text}"


@dataclass
class Candidate:
    """A batch size the advisor considered: its steps per epoch, memory, and speed if measured."""

    batch_size: int
    steps_per_epoch: int
    estimated_bytes: int
    fits: bool
    samples_per_second: float | None = None


@dataclass
class Advice:
    """What the advisor recommends, and why.

    Attributes:
        batch_size: an int, or "full" for batch gradient descent.
        lr, lr_rule, warmup_epochs: the learning rate for that batch size, the scaling rule that
            gave it, and the epochs of linear warmup the rule asks for (0 for none).
        last_batch: the MiniBatches policy for the remainder.
        reasons, warnings: the rules applied, in order, and what to watch out for.
        candidates, budget: the batch sizes considered and the memory budget they were held to.
        finder, noise: the throughput and noise-scale measurements, when made.
    """

    batch_size: int | str
    lr: float
    lr_rule: str
    last_batch: str
    n_samples: int
    reasons: list[Reason]
    warnings: list[str]
    candidates: list[Candidate]
    budget: int
    warmup_epochs: int = 0
    finder: FinderResult | None = None
    noise: NoiseScale | None = None
    adaptive: str | None = None  # why batch_size="adaptive" would do better, when it would

    @property
    def batch_samples(self) -> int:
        return resolve_batch_size(self.batch_size, self.n_samples)

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
        if self.adaptive:
            warn += f"\n\nbetter still, batch_size='adaptive': {self.adaptive}"
        return (
            f"{head}\n\nwhy:\n{body}{warn}\n\ncandidates (budget "
            f"{format_bytes(self.budget)}):\n{self.table()}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (``minigd._json.to_plain`` handles the NumPy values)."""
        return dataclass_dict(self)


@dataclass
class Context:
    """What the rules read, and what the earlier ones chose."""

    model: Any
    rows: np.ndarray
    targets: np.ndarray | None
    optimizer: Optimizer
    budget: int
    measure: bool
    progress: bool
    reference: tuple[int, float] | None
    noise: NoiseScale | None
    n_samples: int | None = None  # m of the whole set when ``rows`` is a sample of a source
    pipeline: Callable[[int], int] | None = None  # streaming memory at batch size b
    candidates: list[Candidate] = field(default_factory=list)
    full: Candidate | None = None
    batch_size: int | str | None = None
    last_batch: str = "keep"
    lr: ScaledLR | None = None
    finder: FinderResult | None = None
    warnings: list[str] = field(default_factory=list)
    evidence: Evidence | None = None  # an earlier run's noise scale, a sweep's B_crit

    @property
    def m(self) -> int:
        return len(self.rows) if self.n_samples is None else self.n_samples

    @property
    def fitting(self) -> list[Candidate]:
        return [c for c in self.candidates if c.fits]

    def estimate(self, b: int) -> int:
        """Bytes of a train step at b: the model's, plus the streaming pipeline's, if any."""
        if self.pipeline is None:
            return estimate_memory(self.model, b, optimizer=self.optimizer, n_samples=self.m).total
        return estimate_memory(
            self.model, b, optimizer=self.optimizer, pipeline_bytes=self.pipeline(b)
        ).total

    def candidate(self, b: int) -> Candidate:
        est = self.estimate(b)
        return Candidate(b, -(-self.m // b), est, est <= self.budget)


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
    n_samples: int | None = None,
    pipeline: Callable[[int], int] | None = None,
    evidence: Evidence | None = None,
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
            (``rules.REFERENCE_BATCH`` = 32, the optimizer's default lr).
        n_samples, pipeline: for data streamed from disk, X and y are a sample of it (for the
            measurements); ``n_samples`` is the whole set's m and ``pipeline(b)`` the bytes its
            shuffle buffer and prefetched batches take at batch size b, which the memory model
            counts instead of the data.
        evidence: what an earlier run or sweep measured (``read_evidence``): a run's noise
            scale late in training replaces the probe at the initial weights, a sweep's B_crit
            bounds the batch (rule 4), and a noise scale that grew during the run, with the
            finder's step times, says whether ``batch_size="adaptive"`` would do better.
    """
    rows, targets = model.prepare(X, y, sample_axis=sample_axis)
    budget = memory_budget() if memory_budget_bytes is None else int(memory_budget_bytes)
    ctx = Context(
        model,
        rows,
        targets,
        get_optimizer(optimizer or "sgd"),
        budget,
        measure,
        progress,
        reference,
        _known_noise(noise, evidence),
        n_samples,
        pipeline,
    )
    ctx.evidence = evidence
    ctx.candidates = [ctx.candidate(b) for b in rules.powers_up_to(ctx.m)]
    ctx.full = ctx.candidate(ctx.m)
    return _advice(ctx, _apply_rules(ctx))


def _apply_rules(ctx: Context) -> list[Reason]:
    """Runs the rules in order, each setting its choice on the context; their reasons."""
    reasons: list[Reason] = []
    for decide, choice in RULE_ORDER:
        value, reason = decide(ctx)
        setattr(ctx, choice, value)
        if reason is not None:
            reasons.append(reason)
    return reasons


def _advice(ctx: Context, reasons: list[Reason]) -> Advice:
    """The Advice of a context every rule has run over."""
    table = ctx.candidates
    if all(c.batch_size != ctx.m for c in table):
        table = [*table, ctx.full]
    _add_throughput(table, ctx.finder)
    return Advice(
        adaptive=adaptive_note(ctx),
        batch_size=ctx.batch_size,
        lr=ctx.lr.lr,
        lr_rule=ctx.lr.rule + " scaling",
        last_batch=ctx.last_batch,
        n_samples=ctx.m,
        reasons=reasons,
        warnings=ctx.warnings,
        candidates=table,
        budget=ctx.budget,
        warmup_epochs=ctx.lr.warmup_epochs,
        finder=ctx.finder,
        noise=ctx.noise,
    )


def _known_noise(noise, evidence: Evidence | None = None) -> NoiseScale | None:
    """The noise scale given, else an earlier run's late one, as a NoiseScale (or None)."""
    if noise is None and evidence is not None and evidence.noise_end is not None:
        noise = evidence.noise_end
    if noise is None or isinstance(noise, NoiseScale):
        return noise
    value = float(noise)
    return NoiseScale(value, float("nan"), float("nan"), (value, value), 0, 0, 0)


def _add_throughput(table: list[Candidate], finder: FinderResult | None) -> None:
    if finder is None:
        return
    rates = {r.batch_size: r.samples_per_second for r in finder.rows}
    for c in table:
        c.samples_per_second = rates.get(c.batch_size)


# -- the rules, in the order they apply -------------------------------------------------------
def small_training_set(ctx: Context) -> tuple[int | str | None, Reason | None]:
    """Rule 1: a small training set takes batch gradient descent, if it fits in memory."""
    m, full = ctx.m, ctx.full
    if not rules.is_small_set(m):
        return None, None
    if full.fits:
        return "full", Reason.of(
            1,
            f"m = {m} <= ~{rules.SMALL_SET}: use batch gradient descent (one step per epoch on "
            f"all {m} samples); it fits in memory (~{format_bytes(full.estimated_bytes)}).",
        )
    return None, Reason.of(
        1,
        f"m = {m} would call for full batch, but it needs ~{format_bytes(full.estimated_bytes)}, "
        f"over the budget of {format_bytes(ctx.budget)}: mini-batches instead.",
    )


def powers_that_fit(ctx: Context) -> tuple[int | str | None, Reason | None]:
    """Rule 2: a power of two from 32 to 1024 that fits; below 32 only when none does."""
    if ctx.batch_size == "full":
        return "full", None
    fitting = ctx.fitting
    if fitting:
        sizes = ", ".join(str(c.batch_size) for c in fitting)
        return None, Reason.of(
            2,
            f"m = {ctx.m} > ~{rules.SMALL_SET}: mini-batches, a power of two from "
            f"{rules.POWERS[0]} to {rules.POWERS[-1]}; {sizes} fit the budget of "
            f"{format_bytes(ctx.budget)}.",
        )
    b = rules.POWERS[0] // 2
    while b > 1 and ctx.estimate(b) > ctx.budget:
        b //= 2
    b = min(b, ctx.m)
    ctx.warnings.append(f"even batch size {rules.POWERS[0]} exceeds the memory budget; {b} fits.")
    return b, Reason.of(
        2,
        f"no power of two from {rules.POWERS[0]} to {rules.POWERS[-1]} fits "
        f"{format_bytes(ctx.budget)}; {b} is the largest that does.",
    )


def hardware_throughput(ctx: Context) -> tuple[int | str | None, Reason | None]:
    """Rule 3: the knee of measured throughput; 64 (a common start) when not measured."""
    if ctx.batch_size is not None:
        return ctx.batch_size, None
    sizes = [c.batch_size for c in ctx.fitting]
    if not ctx.measure or ctx.targets is None:
        pick = 64 if 64 in sizes else sizes[-1]
        why = "measure=False" if not ctx.measure else "no targets to train on"
        return pick, Reason.of(
            3,
            f"not measured ({why}); {pick} is a common starting point. Run the finder to see "
            f"where throughput levels off.",
        )
    ctx.finder = result = find_batch_size(
        ctx.model,
        ctx.rows,
        ctx.targets,
        candidates=sizes,
        memory_budget_bytes=ctx.budget,
        warmup=2,
        optimizer=ctx.optimizer,
        progress=ctx.progress,
        pipeline=ctx.pipeline,
    )
    best, knee = result.best, result.knee or sizes[0]
    rate = next(r.samples_per_second for r in result.rows if r.batch_size == knee)
    if result.machine_busy:
        ctx.warnings.append(result.busy_note())
    return knee, Reason.of(
        3,
        f"throughput levels off at {knee}: it trains {rate:,.0f} samples/s, within "
        f"{rules.KNEE_WITHIN:.0%} of the best ({best.samples_per_second:,.0f} at "
        f"{best.batch_size}); larger batches buy little speed"
        + (" (measured on a busy machine)." if result.machine_busy else "."),
    )


def gradient_noise_scale(ctx: Context) -> tuple[int | str | None, Reason | None]:
    """Rule 4: do not go far above the gradient noise scale (measured when ``measure``)."""
    chosen = ctx.batch_size
    if chosen == "full" or ctx.batch_size is None:
        return chosen, None
    if ctx.evidence is not None and ctx.evidence.critical is not None and ctx.fitting:
        return critical_batch(ctx)
    if ctx.noise is None and ctx.measure and ctx.targets is not None and ctx.fitting:
        ctx.noise = probe_noise_scale(ctx.model, ctx.rows, ctx.targets)
    if ctx.noise is None or not np.isfinite(ctx.noise.b_simple) or not ctx.fitting:
        return chosen, None
    b_noise, slack = ctx.noise.b_simple, rules.NOISE_SLACK
    where_measured = ""
    if ctx.evidence is not None and ctx.evidence.noise_end is not None:
        where_measured = f" (late in the run {ctx.evidence.source})"
    if chosen <= slack * b_noise:
        where = "below it" if chosen <= b_noise else "not far above it"
        return chosen, Reason.of(
            4,
            f"the noise scale is ~{b_noise:.0f}{where_measured}; {chosen} is {where}, so no "
            f"sample is wasted (it grows as training goes on: measure again later to go larger).",
        )
    sizes = [c.batch_size for c in ctx.fitting]
    capped = max([b for b in sizes if b <= max(slack * b_noise, sizes[0])], default=sizes[0])
    return capped, Reason.of(
        4,
        f"the noise scale is ~{b_noise:.0f}{where_measured} (McCandlish et al. 2018): batches "
        f"far above it cut the steps less than they add samples, so {chosen} is lowered to "
        f"{capped}.",
    )


def critical_batch(ctx: Context) -> tuple[int, Reason]:
    """Rule 4 from a sweep: its fitted B_crit is where doubling the batch stops halving the
    steps, measured on this problem to its target (the noise scale only predicts it)."""
    evidence, chosen = ctx.evidence, ctx.batch_size
    b_crit = evidence.critical
    sizes = [c.batch_size for c in ctx.fitting]
    capped = max([b for b in sizes if b <= max(b_crit, sizes[0])], default=sizes[0])
    size = min(chosen, capped)
    verb = f"{chosen} is lowered to {size}" if size < chosen else f"{size} stays"
    return size, Reason.of(
        4,
        f"the sweep {evidence.source} fitted a critical batch size B_crit = {b_crit:.0f} to "
        f"{evidence.target}: beyond it doubling the batch no longer halves the steps "
        f"(McCandlish et al. 2018), so {verb}.",
    )


def adaptive_note(ctx: Context) -> str | None:
    """When a run's noise scale grew enough that the batch with the most goodput (finder's
    step times x statistical efficiency) moved at least 2x during it, why following it with
    ``batch_size="adaptive"`` beats any fixed batch, with the goodput it predicts."""
    evidence, finder = ctx.evidence, ctx.finder
    if evidence is None or evidence.noise_start is None or finder is None or not finder.rows:
        return None
    rows = [r for r in finder.rows if r.ms_per_step > 0]
    b0 = rows[0].batch_size

    def goodput(row, noise: float) -> float:
        return row.batch_size / row.ms_per_step * 1e3 * (noise + b0) / (noise + row.batch_size)

    start = max(rows, key=lambda r: goodput(r, evidence.noise_start))
    end = max(rows, key=lambda r: goodput(r, evidence.noise_end))
    if end.batch_size < 2 * start.batch_size:
        return None
    fixed = next((r for r in rows if r.batch_size == ctx.batch_size), None)
    against = ""
    late = evidence.noise_end
    if fixed is not None and fixed is not end:
        against = f" against {goodput(fixed, late):,.0f} at the fixed {fixed.batch_size}"
    return (
        f"the noise scale grew from {evidence.noise_start:.0f} to {late:.0f} during the run "
        f"{evidence.source}, and the batch with the most goodput with it, from "
        f"{start.batch_size} to {end.batch_size} (predicted {goodput(end, late):,.0f} "
        f"b0-samples/s late in training{against}): no fixed batch is right for the whole run."
    )


def batchnorm_statistics(ctx: Context) -> tuple[str, Reason | None]:
    """Rule 5: with BatchNorm, warn about small batches and merge a tiny last batch."""
    if not ctx.model.has_batchnorm:
        return "keep", None
    m = ctx.m
    b = resolve_batch_size(ctx.batch_size, m)
    rest = m % b
    if rules.bn_batch_too_small(b):
        ctx.warnings.append(
            f"batch size {b} is small for BatchNorm: its batch mean and variance are noisy "
            f"estimates (the note: very small batches lead to poor estimates); prefer "
            f"{rules.BN_MIN_BATCH} or more."
        )
    if rest and rules.bn_batch_too_small(rest):
        return "merge", Reason.of(
            5,
            f"{m} = {m // b} x {b} + {rest}: the last batch of {rest} would give BatchNorm poor "
            f"statistics; last_batch='merge' folds it into the batch before (or 'drop' skips it).",
        )
    return "keep", Reason.of(
        5, f"every batch has at least {min(b, rest or b)} samples: enough for batch statistics."
    )


def learning_rate(ctx: Context) -> tuple[ScaledLR, Reason]:
    """Rule 6: scale the reference learning rate to the chosen batch size."""
    b = resolve_batch_size(ctx.batch_size, ctx.m)
    default = (rules.REFERENCE_BATCH, ctx.optimizer.lr)
    b0, lr0 = ctx.reference if ctx.reference is not None else default
    scaled = scale_lr(lr0, b0, b, optimizer=ctx.optimizer)
    whose = "yours" if ctx.reference else "default"
    return scaled, Reason.of(
        rules.LR_RULE,
        f"{scaled.explanation}, from the reference lr {lr0:g} at batch {b0} ({whose}; "
        f"{rule_for(ctx.optimizer)} for {type(ctx.optimizer).__name__}).",
    )


RULE_ORDER = (
    (small_training_set, "batch_size"),
    (powers_that_fit, "batch_size"),
    (hardware_throughput, "batch_size"),
    (gradient_noise_scale, "batch_size"),
    (batchnorm_statistics, "last_batch"),
    (learning_rate, "lr"),
)
