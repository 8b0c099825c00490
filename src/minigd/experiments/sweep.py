"""Batch-size sweeps: for each batch size, the best learning rate and the steps it needs to reach a
target.

Shallue et al. 2019 ("Measuring the Effects of Data Parallelism on Neural Network Training") found
the same three regimes on every workload: steps to target first halve as the batch doubles (perfect
scaling), then fall ever more slowly, then stop falling, with the bend near the gradient noise scale
of McCandlish et al. 2018. A fair comparison tunes the learning rate per batch size, as they did;
the sweep does this over the grid it is given and reports the best per batch size.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from minigd._io import atomic_write_text
from minigd._json import dataclass_dict, to_plain
from minigd.batchsize.noise import NoiseScale, probe_noise_scale
from minigd.distributed.comm import deal
from minigd.experiments.compare import format_number, resolve_data
from minigd.experiments.metrics import Reached, Target, TargetTracker
from minigd.nn.models import model_for_data
from minigd.training.fitting import fit


@dataclass
class SweepRow:
    """One batch size of a sweep: its best learning rate, what that lr needed to reach the
    target (medians over seeds; None when not reached), and the steps of every lr tried."""

    batch_size: int
    best_lr: float | None
    steps_to_target: float | None
    epochs_to_target: float | None
    samples_to_target: float | None
    seconds_to_target: float | None
    steps_by_lr: dict[float, float | None] = field(default_factory=dict)


@dataclass
class SweepResult:
    """Every batch size's row, what the sweep raced to and over which grid, and the gradient
    noise scale at the initial weights and near the target."""

    rows: list[SweepRow]
    target: Target
    data: str
    model: str
    learning_rates: list[float]
    seeds: list[int]
    noise: NoiseScale | None = None
    noise_at_init: NoiseScale | None = None

    def table(self) -> str:
        lines = [f"{'batch':>6} {'best lr':>8} {'steps':>8} {'epochs':>8} {'seconds':>8}"]
        for r in self.rows:
            lines.append(
                f"{r.batch_size:>6} {format_number(r.best_lr):>8} "
                f"{format_number(r.steps_to_target):>8} "
                f"{format_number(r.epochs_to_target):>8} "
                f"{format_number(r.seconds_to_target):>8}"
            )
        if self.noise is not None:
            lines.append(f"gradient noise scale near the target: {self.noise}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return dataclass_dict(self)

    def save(self, folder: str | Path) -> Path:
        text = json.dumps(self.to_dict(), indent=2, default=to_plain)
        return atomic_write_text(Path(folder) / "sweep.json", text)


@dataclass
class _Trial:
    """The seeds of one (batch size, lr): median steps when every seed reached the target."""

    steps: float | None
    reached: list[Reached]
    models: list[Any]
    stop_reasons: list[str | None] = field(default_factory=list)


class _Progress:
    """One line per finished run off a terminal, a bar on one (tqdm); "diverged" lines always,
    "quiet" or not."""

    def __init__(self, stream: TextIO | None, quiet: bool, total: int) -> None:
        self.stream, self.quiet, self.bar = stream, quiet, None
        if stream is not None and not quiet and stream.isatty():
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, desc="sweep", unit="run", file=stream, leave=True)

    def __call__(self, line: str) -> None:
        if self.stream is None:
            return
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


def _trial_line(b: int, lr: float, trial: _Trial, target: Target, max_epochs: int) -> str:
    head = f"sweep: B={b} lr={lr:g}: "
    diverged = [r for r in trial.stop_reasons if r and "diverged" in r]
    if diverged:
        return head + diverged[0]
    if trial.steps is None:
        return head + f"{target} not reached in {max_epochs} epochs"
    seconds = float(np.median([r.seconds for r in trial.reached]))
    return head + f"{target} after {format_number(trial.steps)} steps ({seconds:.2f} s)"


DEFAULT_BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024)
DEFAULT_LEARNING_RATES = (0.03, 0.1, 0.3, 1.0)


def sweep(
    model: str,
    data: Any = "mnist-5k",
    *,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    learning_rates: Sequence[float] = DEFAULT_LEARNING_RATES,
    seeds: Sequence[int] = (0,),
    target: Target | None = None,
    max_epochs: int = 30,
    optimizer: str = "sgd",
    measure_noise: bool = True,
    on_row: Callable[[SweepResult], None] | None = None,
    threads: int | None = None,
    progress: TextIO | None = None,
    quiet: bool = False,
    comm=None,
) -> SweepResult | None:
    """Runs every (batch size, learning rate, seed) until the target or ``max_epochs``.

    The steps of a (batch size, lr) pair are the median over seeds, and count only when every
    seed reached the target. The best lr of a batch size is the one with the fewest steps.
    ``on_row`` is called with the result so far after each batch size (to save it as it comes);
    ``progress`` (a stream, stderr say) gets one line per (batch size, lr) as it ends, or a
    bar when it is a terminal; a run that diverged is named with its reason even when ``quiet``.
    With ``comm`` (an MPI communicator, ``mpiexec -n N minigd sweep``), the (batch size, lr)
    pairs are dealt to the ranks in turn, each training on one BLAS thread; rank 0 gathers the
    trials and returns the same result one process gives (timings aside); other ranks get None.
    """
    name, train, test = resolve_data(data, "sweep")
    target = target or Target("val_accuracy", 0.9)
    build = _warmed_builder(model, train, seeds[0], batch_sizes[0], threads)
    val = build(seeds[0]).prepare(test.X, test.y)
    result = SweepResult([], target, name, model, list(learning_rates), list(seeds))
    best_model = None

    def run(b: int, lr: float) -> _Trial:
        return _trial(build, train, val, b, lr, seeds, target, max_epochs, optimizer, threads)

    done = _dealt(run, batch_sizes, learning_rates, comm)
    if done is None:  # a rank other than 0: its trials went to rank 0
        return None
    report = _Progress(progress, quiet, len(batch_sizes) * len(learning_rates))
    for b in batch_sizes:
        trials = {}
        for lr in learning_rates:
            trials[lr] = done[(b, lr)] if done else run(b, lr)
            report(_trial_line(b, lr, trials[lr], target, max_epochs))
        row, models = _best_row(b, trials)
        result.rows.append(row)
        if best_model is None and models:
            best_model = models[0]
        if on_row is not None:
            on_row(result)
    report.close()
    if measure_noise:
        _measure_noise(result, build(seeds[0]), best_model, train)
    return result


def _measure_noise(result: SweepResult, initial, best_model, train) -> None:
    """The noise scale at the initial weights, and near the target: on the smallest batch's best
    run, stopped where it reached the target."""
    result.noise_at_init = probe_noise_scale(initial, train.X, train.y)
    if best_model is not None:
        result.noise = probe_noise_scale(best_model, train.X, train.y)


def _warmed_builder(model: str, train, seed: int, b: int, threads):
    """The model factory of a sweep, after an untimed warm-up epoch that takes the one-time costs
    (buffers, BLAS threads, page faults) out of the first run's seconds."""

    def build(seed: int):
        return model_for_data(model, train.X, train.n_classes, seed=seed)

    warm = min(len(train.X), 8 * b)
    fit(build(seed), train.X[:warm], train.y[:warm], batch_size=b, epochs=1, verbose=0,
        threads=threads)  # fmt: skip
    return build


def _dealt(run, batch_sizes, learning_rates, comm) -> dict | None:
    """{} on one process (each trial then runs in turn, reported as it ends); with several
    ranks, every (b, lr) trial dealt to the ranks and gathered on rank 0 (None elsewhere)."""
    if comm is None or comm.Get_size() < 2:
        return {}
    pairs = [(b, lr) for b in batch_sizes for lr in learning_rates]
    trials = deal(lambda pair: run(*pair), pairs, comm)
    return None if trials is None else dict(zip(pairs, trials, strict=True))


def _trial(build, train, val, b, lr, seeds, target, max_epochs, optimizer, threads) -> _Trial:
    """Trains one (batch size, lr) once per seed, each stopping at the target."""
    reached, models, reasons = [], [], []
    for seed in seeds:
        net = build(seed)
        tracker = TargetTracker(target, val, stop=True)
        history = fit(
            net,
            train.X,
            train.y,
            batch_size=b,
            epochs=max_epochs,
            optimizer=optimizer,
            lr=lr,
            seed=seed,
            callbacks=[tracker],
            verbose=0,
            threads=threads,
        )
        reached.append(tracker.reached)
        models.append(net)
        reasons.append(history.meta.get("stop_reason"))
    if any(r is None for r in reached):
        return _Trial(None, [], models, reasons)
    return _Trial(float(np.median([r.steps for r in reached])), reached, models, reasons)


def _best_row(b: int, trials: dict[float, _Trial]) -> tuple[SweepRow, list[Any]]:
    """The row of batch size b (its fastest lr), and that lr's trained models."""
    steps_by_lr = {lr: t.steps for lr, t in trials.items()}
    finished = {lr: t for lr, t in trials.items() if t.steps is not None}
    if not finished:
        return SweepRow(b, None, None, None, None, None, steps_by_lr), []
    best_lr = min(finished, key=lambda lr: finished[lr].steps)
    best = finished[best_lr]

    def median(attr: str) -> float:
        return float(np.median([getattr(r, attr) for r in best.reached]))

    row = SweepRow(
        b,
        best_lr,
        best.steps,
        median("epochs"),
        median("samples"),
        median("seconds"),
        steps_by_lr,
    )
    return row, best.models
