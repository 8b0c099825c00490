"""Batch-size sweeps: for each batch size, the best learning rate and the steps it needs to reach
each target, and the critical batch size those steps imply.

Shallue et al. 2019 ("Measuring the Effects of Data Parallelism on Neural Network Training") found
the same three regimes on every workload: steps to target first halve as the batch doubles (perfect
scaling), then fall ever more slowly, then stop falling, with the bend near the gradient noise scale
of McCandlish et al. 2018. A fair comparison tunes the learning rate per batch size, as they did:
the grid given is extended per batch size until the best rate is interior (``lr_grid``), every
(batch size, rate) runs once per seed, and steps are the median over seeds (their spread kept).
Steps to target are interpolated between validation checks about 2% apart (``TargetTracker``).

For each target, S(B) = S_min (1 + B_crit / B) is fitted with a bootstrap interval
(``batchsize.critical``), and the noise scale B_simple is measured where the smallest batch size's
best run reached that target (``noise.probe``): the paper predicts B_crit ~ B_noise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from minigd._io import atomic_write_text
from minigd._json import dataclass_dict, to_plain
from minigd._validation import check_int
from minigd.batchsize.critical import CriticalBatch, fit_critical_batch
from minigd.distributed.comm import deal
from minigd.experiments.compare import format_number, resolve_data
from minigd.experiments.lr_grid import best_rate, extensions, grid_ratio, is_interior
from minigd.experiments.metrics import Reached, Target, TargetTracker
from minigd.nn.models import model_for_data
from minigd.noise import NoiseScale, probe_noise_scale
from minigd.training.fitting import fit
from minigd.training.inputs import standardize


@dataclass
class SweepRow:
    """One batch size of a sweep, for one target: its best learning rate, what that lr needed to
    reach the target (medians over seeds; None when not reached), the steps of every seed at that
    lr and of every lr tried, and whether the best lr is interior (beat a rate above and below)."""

    batch_size: int
    best_lr: float | None
    steps_to_target: float | None
    epochs_to_target: float | None
    samples_to_target: float | None
    seconds_to_target: float | None
    steps_by_lr: dict[float, float | None] = field(default_factory=dict)
    steps_by_seed: list[float] = field(default_factory=list)
    interior: bool = False

    @property
    def spread(self) -> tuple[float, float] | None:
        """(fewest, most) steps over the seeds at the best lr."""
        return (min(self.steps_by_seed), max(self.steps_by_seed)) if self.steps_by_seed else None


@dataclass
class TargetFit:
    """One target's reading: its rows, the fitted critical batch size, the noise scale where the
    reference run (the smallest batch size's best) reached it, and B_crit / B_simple."""

    target: Target
    rows: list[SweepRow]
    critical: CriticalBatch | None = None
    noise: NoiseScale | None = None
    reference: str | None = None
    ratio: float | None = None
    note: str = ""

    def summary(self) -> str:
        head = f"{self.target}: "
        if self.critical is None:
            return head + (self.note or "no fit")
        text = head + str(self.critical)
        if self.noise is not None:
            lo, hi = self.noise.interval
            text += (
                f"; B_simple at the target {self.noise.b_simple:.4g} (95% CI {lo:.4g} .. "
                f"{hi:.4g}, on {self.reference}); B_crit / B_simple = {format_number(self.ratio)}"
            )
        return text


@dataclass
class SweepResult:
    """Every batch size's row for the main target (the last given), what the sweep raced to and
    over which grid, each target's fit, and the gradient noise scale at the initial weights and
    near the main target."""

    rows: list[SweepRow]
    target: Target
    data: str
    model: str
    learning_rates: list[float]
    seeds: list[int]
    noise: NoiseScale | None = None
    noise_at_init: NoiseScale | None = None
    targets: list[Target] = field(default_factory=list)
    fits: list[TargetFit] = field(default_factory=list)
    lr_grid: dict[int, list[float]] = field(default_factory=dict)  # every lr tried, per batch

    def table(self, readings: bool = True) -> str:
        """The rows as text; with ``readings``, each target's fit and the noise scale below."""
        lines = [
            f"{'batch':>6} {'best lr':>8} {'steps':>8} {'seeds min-max':>15} {'epochs':>8} "
            f"{'seconds':>8}  where the best lr sits"
        ]
        for r in self.rows:
            spread = r.spread
            seeds = "" if spread is None else "-".join(map(format_number, spread))
            edge = "" if r.best_lr is None else "interior" if r.interior else "at grid edge"
            lines.append(
                f"{r.batch_size:>6} {format_number(r.best_lr):>8} "
                f"{format_number(r.steps_to_target):>8} {seeds:>15} "
                f"{format_number(r.epochs_to_target):>8} "
                f"{format_number(r.seconds_to_target):>8}  {edge}"
            )
        if not readings:
            return "\n".join(lines)
        lines += [fit.summary() for fit in self.fits]
        if self.noise is not None:
            lines.append(f"gradient noise scale near the target: {self.noise}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return dataclass_dict(self)

    def save(self, folder: str | Path, name: str = "sweep.json") -> Path:
        text = json.dumps(self.to_dict(), indent=2, default=to_plain)
        return atomic_write_text(Path(folder) / name, text)


@dataclass
class _Trial:
    """The seeds of one (batch size, lr): per seed, when each target was reached (None: not);
    the model state where each target was reached by the first seed, when kept (a reference
    run measured for the noise scale)."""

    reached: list[list[Reached | None]]
    stop_reasons: list[str | None] = field(default_factory=list)
    states: list[dict | None] = field(default_factory=list)

    def per_seed(self, i: int) -> list[Reached] | None:
        """Target i's Reached of every seed, or None unless every seed reached it."""
        got = [r[i] for r in self.reached]
        return None if any(r is None for r in got) else got

    @property
    def diverged(self) -> bool:
        return any(r and "diverged" in r for r in self.stop_reasons)

    def steps(self, i: int) -> float | None:
        got = self.per_seed(i)
        return None if got is None else float(np.median([r.steps for r in got]))


@dataclass
class _Plan:
    pairs: int  # (batch size, lr) pairs in the grid as given
    text: str  # what the sweep will run, said before anything runs


def _plan(batch_sizes, learning_rates, seeds, max_epochs: int, targets: list[Target]) -> _Plan:
    pairs = len(batch_sizes) * len(learning_rates)
    return _Plan(
        pairs,
        f"sweep: {len(batch_sizes)} batch sizes x {len(learning_rates)} learning rates x "
        f"{len(seeds)} seeds = {pairs * len(seeds)} runs of up to {max_epochs} epochs (more if "
        "a best lr sits at the grid's edge), racing to " + ", ".join(map(str, targets)),
    )


class _Progress:
    """One line per finished run off a terminal, a bar on one (tqdm); "diverged" lines always,
    "quiet" or not. It opens with what will run, and after the first (batch size, lr) pair says
    about how long the grid will take."""

    def __init__(self, stream: TextIO | None, quiet: bool, total: int, plan: str = "") -> None:
        self.stream, self.quiet, self.bar = stream, quiet, None
        self.total, self.done, self.started = total, 0, time.perf_counter()
        if stream is not None and not quiet and plan:
            print(plan, file=stream, flush=True)
        if stream is not None and not quiet and stream.isatty():
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, desc="sweep", unit="run", file=stream, leave=True)

    def begin(self) -> None:
        """The clock of the estimate starts here (after the warm-up)."""
        self.started = time.perf_counter()

    def __call__(self, line: str) -> None:
        if self.stream is None:
            return
        self.done += 1
        if self.done == 1 and not self.quiet and self.total > 1:
            each = time.perf_counter() - self.started
            left = each * (self.total - 1)
            print(f"sweep: the first pair took {each:.1f} s; the grid's other "
                  f"{self.total - 1} pairs: about {_duration(left)}, more if the grid grows.",
                  file=self.stream, flush=True)  # fmt: skip
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(line.removeprefix("sweep: "), refresh=True)
            if "diverged" not in line:
                return
        if not self.quiet or "diverged" in line:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _trial_line(b: int, lr: float, trial: _Trial, targets: list[Target], max_epochs: int) -> str:
    """The progress line of a finished (batch size, lr): each target's steps, or why not."""
    head = f"sweep: B={b} lr={lr:g}: "
    diverged = [r for r in trial.stop_reasons if r and "diverged" in r]
    if diverged:
        return head + diverged[0]
    parts = []
    for i, target in enumerate(targets):
        got = trial.per_seed(i)
        if got is None:
            parts.append(f"{target} not reached in {max_epochs} epochs")
            continue
        seconds = float(np.median([r.seconds for r in got]))
        parts.append(f"{target} after {format_number(trial.steps(i))} steps ({seconds:.2f} s)")
    return head + "; ".join(parts)


DEFAULT_BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024)
DEFAULT_LEARNING_RATES = (0.03, 0.1, 0.3, 1.0)
DEFAULT_SEEDS = (0, 1, 2)


def sweep(
    model: str,
    data: Any = "mnist-5k",
    *,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    learning_rates: Sequence[float] = DEFAULT_LEARNING_RATES,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    target: Target | Sequence[Target] | None = None,
    max_epochs: int = 30,
    optimizer: str = "sgd",
    measure_noise: bool = True,
    max_extensions: int = 3,
    on_row: Callable[[SweepResult], None] | None = None,
    threads: int | None = None,
    progress: TextIO | None = None,
    quiet: bool = False,
    comm=None,
    standardize_targets: bool = True,
) -> SweepResult | None:
    """Runs every (batch size, learning rate, seed) until every target or ``max_epochs``.

    ``target``: one Target or several (each gets its own fit; the last is the main one, whose
    rows ``result.rows`` holds). A pair's steps are the median over seeds, counted only when
    every seed reached the target; a batch size's best lr has the fewest, and the grid grows
    past an edge best (up to ``max_extensions`` rates a side, ``lr_grid``). ``on_row`` gets the
    result after each round of runs (to save it as it comes); ``progress`` (stderr, say) a line
    per finished pair, or a bar on a terminal; a diverged run is named even when ``quiet``.
    With ``comm`` (``mpiexec -n N minigd sweep``) each round is dealt to the ranks, one BLAS
    thread each; rank 0 returns what one process would (timings aside), the others None.
    ``standardize_targets``: a regressor learns its targets in standard units (``fit``'s).
    """
    name, train, test = resolve_data(data, "sweep")
    targets = _targets(target)
    max_extensions = check_int("max_extensions", max_extensions, minimum=0)
    root = comm is None or comm.Get_rank() == 0
    plan = _plan(batch_sizes, learning_rates, seeds, max_epochs, targets)
    report = _Progress(progress if root else None, quiet, plan.pairs, plan.text)
    build = _warmed_builder(model, train, seeds[0], batch_sizes[0], threads, standardize_targets)
    report.begin()  # the estimate counts the pairs, not the warm-up
    val = build(seeds[0]).prepare(test.X, test.y)
    runner = _Runner(build, train, val, list(seeds), targets, max_epochs, optimizer, threads)
    rates = {b: sorted(learning_rates) for b in batch_sizes}
    grid = _Grid(rates, grid_ratio(learning_rates), max_extensions)

    def result(trials) -> SweepResult:
        return _result(trials, grid, targets, name, model, learning_rates, seeds)

    def partial(trials) -> None:
        if on_row is not None:
            on_row(result(trials))

    trials = _rounds(runner, grid, comm, report, partial)
    report.close()
    if not root:
        return None
    done = result(trials)
    if measure_noise:
        _measure_noise(done, runner)
    return done


@dataclass
class _Runner:
    """What every trial of one sweep shares: the model factory, the data and the settings."""

    build: Callable[[int], Any]  # seed -> a fresh model
    train: Any
    val: Any  # the held-out set, prepared once
    seeds: list[int]
    targets: list[Target]
    max_epochs: int
    optimizer: str
    threads: int | None

    def __call__(self, pair: tuple[int, float]) -> _Trial:
        return self.trial(*pair)

    def trial(self, b: int, lr: float, keep: bool = False) -> _Trial:
        """Trains (b, lr) once per seed, each stopping once it reached every target; with
        ``keep``, once (the first seed), keeping the model's state where it reached each."""
        seeds = self.seeds[:1] if keep else self.seeds
        reached, reasons, states = [], [], [None] * len(self.targets)
        for seed in seeds:
            tracker = TargetTracker(self.targets, self.val, stop=True, keep_states=keep)
            history = fit(
                self.build(seed),
                self.train.X,
                self.train.y,
                batch_size=b,
                epochs=self.max_epochs,
                optimizer=self.optimizer,
                lr=lr,
                seed=seed,
                callbacks=[tracker],
                verbose=0,
                threads=self.threads,
            )
            reached.append(list(tracker.reached_all))
            reasons.append(history.meta.get("stop_reason"))
            states = tracker.states if keep else states
        return _Trial(reached, reasons, states)


@dataclass
class _Grid:
    """The learning rates tried at each batch size, grown past an edge best (``lr_grid``)."""

    rates: dict[int, list[float]]
    ratio: float  # the geometric step between neighbouring rates
    max_extensions: int  # the most rates added beyond each edge
    added: dict[int, dict[str, int]] = field(default_factory=dict)  # b -> side -> count

    def items(self):
        return self.rates.items()

    def grow(self, trials, n_targets: int) -> list[tuple[int, float]]:
        """The next round: for each batch size whose best rate (for any target) sits at an edge
        of what it tried, the next rate beyond that edge."""
        pending = []
        for b, rates in self.rates.items():
            tables = [{lr: trials[(b, lr)].steps(i) for lr in rates} for i in range(n_targets)]
            top_diverged = trials[(b, max(rates))].diverged
            added = self.added.setdefault(b, {})
            beyond = extensions(tables, self.ratio, added, self.max_extensions, top_diverged)
            for side, lr in beyond:
                if lr not in rates:
                    added[side] = added.get(side, 0) + 1
                    rates.append(lr)
                    pending.append((b, lr))
            rates.sort()
        return pending


def _rounds(runner: _Runner, grid: _Grid, comm, report, partial) -> dict:
    """Runs the grid's pairs, then round after round the rates ``grid.grow`` adds, until none;
    with ``comm``, each round is dealt to the ranks and rank 0 decides (and broadcasts) the
    next. The trials by (batch size, lr) on rank 0; {} on the others."""
    pending = [(b, lr) for b, rates in grid.items() for lr in rates]
    trials: dict[tuple[int, float], _Trial] = {}
    while pending:
        done = _round(runner, pending, comm, report)
        if done is not None:  # rank 0 (or one process): decide the next round
            trials.update(done)
            pending = grid.grow(trials, len(runner.targets))
            partial(trials)
        if comm is not None and comm.Get_size() > 1:
            pending = comm.bcast(pending, root=0)
    return trials


def _targets(target) -> list[Target]:
    if target is None:
        return [Target("val_accuracy", 0.9)]
    return [target] if isinstance(target, Target) else list(target)


def _round(runner: _Runner, pairs, comm, report) -> dict | None:
    """Every pair's trial: in turn on one process (each reported as it ends), dealt to the ranks
    of ``comm`` otherwise (gathered on rank 0; None on the others)."""
    targets, max_epochs = runner.targets, runner.max_epochs
    if comm is None or comm.Get_size() < 2:
        done = {}
        for pair in pairs:
            done[pair] = runner(pair)
            report(_trial_line(*pair, done[pair], targets, max_epochs))
        return done
    trials = deal(runner, pairs, comm)
    if trials is None:
        return None
    for pair, trial in zip(pairs, trials, strict=True):
        report(_trial_line(*pair, trial, targets, max_epochs))
    return dict(zip(pairs, trials, strict=True))


def _result(trials, grid: _Grid, targets, name, model, learning_rates, seeds) -> SweepResult:
    """The result of the trials so far: each target's rows and fit, the main target's rows."""
    fits = []
    for i, target in enumerate(targets):
        rows = [
            _row(b, i, {lr: trials[(b, lr)] for lr in rates if (b, lr) in trials})
            for b, rates in grid.items()
        ]
        fits.append(_fit(target, rows))
    return SweepResult(
        fits[-1].rows, targets[-1], name, model, list(learning_rates), list(seeds),
        targets=list(targets), fits=fits, lr_grid={b: list(r) for b, r in grid.items()},
    )  # fmt: skip


def _fit(target: Target, rows: list[SweepRow]) -> TargetFit:
    """The critical batch size of one target's rows (or why there is none)."""
    fit_rows = TargetFit(target, rows)
    steps = {r.batch_size: r.steps_by_seed for r in rows if r.steps_by_seed}
    try:
        fit_rows.critical = fit_critical_batch(steps)
    except ValueError as exc:
        fit_rows.note = str(exc)
    return fit_rows


def _measure_noise(result: SweepResult, runner: _Runner) -> None:
    """The noise scale at the initial weights, and, for each target, where the reference run
    reached it: the best run (first seed) of the smallest batch size that reached the target,
    run again (it is deterministic) keeping the model where it passed each target. The main
    target's is ``result.noise``."""
    train, seed = runner.train, runner.seeds[0]
    result.noise_at_init = probe_noise_scale(runner.build(seed), train.X, train.y)
    reruns: dict[tuple[int, float], _Trial] = {}
    for i, reading in enumerate(result.fits):
        row = next((r for r in reading.rows if r.best_lr is not None), None)
        if row is None:
            continue
        pair = (row.batch_size, row.best_lr)
        if pair not in reruns:
            reruns[pair] = runner.trial(*pair, keep=True)
        state = reruns[pair].states[i]
        if state is None:
            continue
        model = runner.build(seed)
        model.load_state(state)
        reading.noise = probe_noise_scale(model, train.X, train.y)
        reading.reference = f"B={row.batch_size}, lr={row.best_lr:g}, seed {seed}"
        if reading.critical is not None and reading.noise.b_simple > 0:
            reading.ratio = reading.critical.b_crit / reading.noise.b_simple
    result.noise = result.fits[-1].noise


def _warmed_builder(model: str, train, seed: int, b: int, threads, standardize_targets: bool):
    """The model factory of a sweep, after an untimed warm-up epoch that takes the one-time costs
    (buffers, BLAS threads, page faults) out of the first run's seconds. With
    ``standardize_targets`` every model a regressor gets the one scaling of the training set."""
    first = model_for_data(model, train.X, train.n_classes, seed=seed)
    if standardize_targets:
        standardize(first, train.X, train.y)

    def build(seed: int):
        built = model_for_data(model, train.X, train.n_classes, seed=seed)
        built.target_scaling = first.target_scaling
        return built

    warm = min(len(train.X), 8 * b)
    fit(build(seed), train.X[:warm], train.y[:warm], batch_size=b, epochs=1, verbose=0,
        threads=threads)  # fmt: skip
    return build


def _row(b: int, i: int, trials: dict[float, _Trial]) -> SweepRow:
    """The row of batch size b for target i: its fastest lr, and whether that lr is interior."""
    steps_by_lr = {lr: t.steps(i) for lr, t in trials.items()}
    best_lr = best_rate(steps_by_lr)
    if best_lr is None:
        return SweepRow(b, None, None, None, None, None, steps_by_lr)
    got = trials[best_lr].per_seed(i)

    def median(attr: str) -> float:
        return float(np.median([getattr(r, attr) for r in got]))

    return SweepRow(
        b,
        best_lr,
        steps_by_lr[best_lr],
        median("epochs"),
        median("samples"),
        median("seconds"),
        steps_by_lr,
        [r.steps for r in got],
        is_interior(steps_by_lr),
    )
