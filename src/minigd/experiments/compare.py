"""Batch gradient descent, mini-batch gradient descent and SGD, side by side.

Every run starts from the *same initial weights* on the same data and gets the same budget (epochs,
samples seen, or wall-clock seconds); only the batch size and its learning rate differ. Each run
records its full History, so the curves can be put on all three axes: per epoch, per sample seen,
per second.

Learning rates: given per run, or scaled from a reference (B0, lr0) = (64, 0.1). The default rule
is McCandlish et al.'s lr(B) = lr_max / (1 + B_noise / B), with the gradient noise scale measured
on the initial model: it grows linearly for small batches and levels off past the noise scale, so
it spans SGD (B = 1) to full batch (B = m) with every run stable. The linear rule (Goyal et al.,
the advisor's rule for SGD) only holds up to the critical batch size: on mnist-5k it sends full
batch to lr 6.25, which diverges; the square-root rule gives it 0.79, at the edge of stability,
where its loss rises in some epochs. ``lr_rule`` picks "noise", "sqrt", "linear" or "auto" (the
advisor's choice for the optimizer); the report says which rule ran.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minigd._io import atomic_write_text, slug
from minigd._json import dataclass_dict, to_plain
from minigd._validation import check_choice, check_float, check_int, message
from minigd.batching import resolve_batch_size
from minigd.batchsize.lr_scaling import RULES, rule_for, scale_lr
from minigd.batchsize.memory import estimate_memory
from minigd.data.files import Dataset
from minigd.data.loading import load
from minigd.distributed.comm import deal
from minigd.experiments.metrics import Target, TargetTracker, curve_noise
from minigd.nn.models import model_for_data
from minigd.noise import NoiseScale, probe_noise_scale
from minigd.optim import get_optimizer
from minigd.training.adaptive import START as ADAPTIVE_START
from minigd.training.callbacks import Callback, ProgressBar
from minigd.training.fitting import fit
from minigd.training.history import History
from minigd.training.inputs import standardize

DEFAULT_BATCH_SIZES = ("full", 64, 1)
DEFAULT_REFERENCE = (64, 0.1)


@dataclass(frozen=True)
class Budget:
    """What every run gets: a number of epochs, of samples seen, or of seconds (one of them)."""

    epochs: int | None = None
    samples: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.epochs, self.samples, self.seconds) if v is not None]
        if len(given) != 1:
            raise ValueError(
                message(
                    "the budget",
                    "exactly one of epochs, samples, seconds",
                    (self.epochs, self.samples, self.seconds),
                )
            )

    @property
    def axis(self) -> str:
        return "epochs" if self.epochs else "samples" if self.samples else "seconds"

    def __str__(self) -> str:
        return f"{self.epochs or self.samples or self.seconds} {self.axis}"


@dataclass(frozen=True)
class RunSpec:
    """One run: a batch size, and optionally its own learning rate and optimizer."""

    batch_size: int | str
    lr: float | None = None
    optimizer: str = "sgd"
    name: str | None = None

    @property
    def adaptive(self) -> bool:
        """A batch that grows with the noise scale (``training.adaptive``)."""
        return isinstance(self.batch_size, str) and self.batch_size.lower() == "adaptive"

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.adaptive:
            return "adaptive batch"
        if isinstance(self.batch_size, str) and self.batch_size.lower() == "full":
            return "batch GD (full)"
        if self.batch_size == 1:
            return "SGD (B=1)"
        return f"mini-batch (B={self.batch_size})"


@dataclass
class RunResult:
    """One finished run: its spec, the batch size in samples, the learning rate and where it came
    from, its History, and the metrics read off it (``run_metrics``)."""

    spec: RunSpec
    batch_samples: int
    lr: float
    lr_note: str
    history: History
    metrics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for results.json; the History is saved in its own file."""
        return {"label": self.spec.label, **dataclass_dict(self, exclude=("history",))}


@dataclass
class Results:
    """Every run's settings, metrics and history, plus what the experiment was.

    Attributes:
        runs: one RunResult per batch size, in the order given.
        data, model, n_train: the data set's name, the model spec, the training samples.
        budget, target, seed: what every run got, the target it raced to, the seed of the
            initial weights and of every run's batch order.
        lr_rule, reference: how learning rates not given were scaled, and from which (B0, lr0).
        batchnorm, n_params: facts about the model.
        noise_scale: the gradient noise scale at the initial weights, when the noise rule ran.
    """

    runs: list[RunResult]
    data: str
    model: str
    n_train: int
    budget: Budget
    target: Target
    seed: int
    lr_rule: str
    reference: tuple[int, float] = DEFAULT_REFERENCE
    batchnorm: bool = False
    n_params: int = 0
    noise_scale: NoiseScale | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclass_dict(self, exclude=("runs",)),
            "runs": [r.to_dict() for r in self.runs],
        }

    def save(self, folder: str | Path) -> Path:
        """Writes results.json and each run's history to ``folder/histories/``."""
        folder = Path(folder)
        for i, run in enumerate(self.runs):
            run.history.to_json(folder / "histories" / f"run{i}-{slug(run.spec.label)}.json")
        text = json.dumps(self.to_dict(), indent=2, default=to_plain)
        return atomic_write_text(folder / "results.json", text)

    def table(self) -> str:
        """A plain-text summary, one row per run."""
        cols = [
            ("run", 22, None),
            ("lr", 8, "lr"),
            ("steps", 7, "steps"),
            ("train loss", 10, "train_loss"),
            ("val loss", 9, "val_loss"),
            ("val acc", 8, "val_accuracy"),
            ("gap", 7, "generalization_gap"),
            ("noise", 7, "curve_noise"),
            ("samples/s", 10, "samples_per_second"),
            ("s", 7, "seconds"),
            ("epochs->tgt", 11, "epochs_to_target"),
        ]
        lines = ["  ".join(f"{name:>{w}}" if key else f"{name:<{w}}" for name, w, key in cols)]
        for run in self.runs:
            cells = []
            for _, w, key in cols:
                if key is None:
                    cells.append(f"{run.spec.label:<{w}}")
                elif key in TO_TARGET:
                    cells.append(f"{to_target_text(run.metrics, key):>{w}}")
                else:
                    value = run.lr if key == "lr" else run.metrics.get(key)
                    cells.append(f"{format_number(value):>{w}}")
            lines.append("  ".join(cells))
        note = fell_back_note(self)
        return "\n".join(lines + ([note] if note else []))


def format_number(value: Any) -> str:
    """How numbers appear in tables and reports, in one style (the tests compare against this):
    whole numbers and anything from 1,000 up with thousands separators (189,921), four
    significant digits below that (0.1235, 12.35), and only tiny magnitudes in e-notation."""
    if value is None:
        return "not reached"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):,}"
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if value != 0 and abs(value) < 1e-4:
        return f"{value:.2e}"
    return f"{value:.4g}"


class _LossAfterFirstEpoch(Callback):
    """The training loss evaluated at the end of epoch 1, outside the timed part: what "loss
    after one epoch" means (the epoch's mean step loss is a blend over its updates, and for
    batch GD the loss before its only step)."""

    def __init__(self, train: tuple[np.ndarray, np.ndarray]) -> None:
        self.train = train
        self.loss: float | None = None

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == 0:
            start = time.perf_counter()
            self.loss = trainer.model.evaluate_prepared(*self.train)["loss"]
            trainer.exclude(time.perf_counter() - start)


class _StopAt(Callback):
    """Ends a run when its budget in samples or seconds is spent."""

    def __init__(self, samples: int | None = None, seconds: float | None = None) -> None:
        self.samples, self.seconds = samples, seconds

    def on_step_end(self, trainer, loss):
        if (self.samples is not None and trainer.samples_seen >= self.samples) or (
            self.seconds is not None and trainer.elapsed() >= self.seconds
        ):
            trainer.stop("budget spent")


def resolve_data(data: Any, command: str = "compare") -> tuple[str, Dataset, Dataset]:
    """A dataset name, or a (train, test) pair of Datasets; ``command`` names the caller in the
    error for a file without a held-out split."""
    if isinstance(data, str):
        train, test = load(data)
        if test is None:
            raise ValueError(
                f"{command} needs a held-out split: use a dataset name or pass (train, test) "
                "Datasets."
            )
        return data, train, test
    train, test = data
    return train.name or "data", train, test


def run_lr(
    spec: RunSpec, b: int, reference: tuple[int, float], lr_rule: str, noise: float | None = None
) -> tuple[float, str]:
    """The learning rate of a run, and a sentence saying where it came from."""
    if spec.lr is not None:
        return spec.lr, "given"
    b0, lr0 = reference
    rule = rule_for(spec.optimizer) if lr_rule == "auto" else lr_rule
    scaled = scale_lr(lr0, b0, b, rule=rule, noise_scale=noise)
    return scaled.lr, f"{rule} rule from lr {lr0:g} at B={b0}"


def recommended_lr(results: Results, batch_size: int) -> tuple[float, str]:
    """The one learning rate a report recommends at ``batch_size``, and where it comes from:
    the lr a run here trained with at that batch size, else the runs' own rule scaled to it
    (never a second reference: the advisor's lr is the same rule from another starting point)."""
    ran = [r for r in results.runs if r.batch_samples == batch_size and not r.spec.adaptive]
    if ran:
        best = max(ran, key=lambda r: r.metrics.get("val_accuracy") or -math.inf)
        return best.lr, f"as {best.spec.label} ran here: {best.lr_note}"
    optimizer = results.runs[0].spec.optimizer if results.runs else "sgd"
    noise = None if results.noise_scale is None else results.noise_scale.b_simple
    reference = tuple(results.reference)
    lr, note = run_lr(RunSpec(batch_size, optimizer=optimizer), batch_size, reference,
                      results.lr_rule, noise)  # fmt: skip
    return lr, f"{note}, as the runs here"


def compare(
    model: str | Callable[[], Any],
    data: Any = "mnist-5k",
    *,
    runs: Sequence[RunSpec | int | str] | None = None,
    budget: Budget | None = None,
    target: Target | None = None,
    reference: tuple[int, float] = DEFAULT_REFERENCE,
    lr_rule: str = "noise",
    seed: int = 0,
    verbose: int = 0,
    on_run: Callable[[Results], None] | None = None,
    threads: int | None = None,
    comm=None,
    standardize_targets: bool = True,
) -> Results | None:
    """Trains the same model from the same initial weights with each batch size.

    Args:
        model: a model spec ("mlp:128", "softmax", ...) or a factory returning a Sequential.
        data: a dataset name, or (train, test) Datasets.
        runs: RunSpecs or plain batch sizes; default full batch, 64 and 1.
        budget: default 10 epochs.
        target: default validation accuracy 0.9 for classifiers, validation loss for regression.
        reference, lr_rule: how learning rates not given are scaled (module docstring).
        seed: the initial weights and every run's batch order.
        on_run: called with the Results so far after each run ends (to save them as they come,
            so a crash or an interrupt loses no finished run).
        threads: BLAS threads for every run (see ``fit``).
        comm: an MPI communicator (``mpiexec -n N minigd compare``): the runs are dealt to the
            ranks; rank 0 returns the Results one process would (timings aside), others None.
        standardize_targets: a regressor learns its targets in standard units (``fit``'s
            option), so the learning rates and losses of the runs mean the same on any data.
    """
    name, train, test = resolve_data(data)
    budget = budget or Budget(epochs=10)
    check_int("seed", seed, minimum=0)
    check_choice("lr_rule", lr_rule, RULES)
    specs = [r if isinstance(r, RunSpec) else RunSpec(r) for r in runs or DEFAULT_BATCH_SIZES]
    spec_text, initial = _initial_model(model, train, seed)
    if standardize_targets:  # before the probe and the prepared sets, which it changes
        standardize(initial, train.X, train.y)
    target = target or default_target(initial)
    # the noise scale at the initial weights, which the noise lr rule scales by
    noise = probe_noise_scale(initial, train.X, train.y, seed=seed) if lr_rule == "noise" else None
    rows, held_out = initial.prepare(train.X, train.y), initial.prepare(test.X, test.y)
    setup = _Setup(initial, train, rows, held_out, budget, target, seed, verbose, threads)
    results = Results([], name, spec_text, len(train.X), budget, target, seed, lr_rule)
    results.reference, results.noise_scale = tuple(reference), noise
    results.batchnorm, results.n_params = initial.has_batchnorm, initial.n_params
    b_noise = None if noise is None else noise.b_simple
    return _run_all(
        lambda spec: _run_one(spec, setup, reference, lr_rule, b_noise),
        specs,
        results,
        on_run,
        comm,
    )


def _run_all(run, specs, results: Results, on_run, comm) -> Results | None:
    """Every run in turn (``on_run`` after each), or dealt to the ranks of ``comm`` and gathered
    on rank 0 (None on the others)."""
    if comm is not None and comm.Get_size() > 1:
        runs_done = deal(run, specs, comm)
        if runs_done is None:  # another rank: its runs went to rank 0
            return None
        results.runs.extend(runs_done)
        return results
    for spec in specs:
        results.runs.append(run(spec))
        if on_run is not None:
            on_run(results)
    return results


def _initial_model(model, train: Dataset, seed: int) -> tuple[str, Any]:
    """(its name, the model whose weights every run starts from)."""
    if isinstance(model, str):
        return model, model_for_data(model, train.X, train.n_classes, seed=seed)
    return getattr(model, "__name__", "custom model"), model()


def default_target(model) -> Target:
    """Validation accuracy 0.9 for a classifier; the validation loss for a regressor."""
    if model.task == "classification":
        return Target("val_accuracy", 0.9)
    return Target("val_loss", 0.0)


@dataclass(frozen=True)
class _Setup:
    """What every run of one comparison shares."""

    initial: Any  # the model whose weights every run starts from
    train: Dataset
    train_rows: tuple[np.ndarray, np.ndarray]  # prepared for the model
    validation: tuple[np.ndarray, np.ndarray]  # prepared for the model
    budget: Budget
    target: Target
    seed: int
    verbose: int
    threads: int | None


def _run_one(spec: RunSpec, setup: _Setup, reference, lr_rule, noise) -> RunResult:
    """Trains a copy of the initial model with one batch size, within the budget."""
    train, budget = setup.train, setup.budget
    m = len(train.X)
    b = min(ADAPTIVE_START, m) if spec.adaptive else resolve_batch_size(spec.batch_size, m)
    lr, note = run_lr(spec, b, reference, lr_rule, noise)
    model = setup.initial.copy()
    tracker = TargetTracker(setup.target, setup.validation)
    after_first = _LossAfterFirstEpoch(setup.train_rows)
    callbacks: list[Callback] = [tracker, after_first]
    epochs = budget.epochs
    if budget.samples:
        epochs = math.ceil(budget.samples / m)
        callbacks.append(_StopAt(samples=budget.samples))
    elif budget.seconds:
        epochs = 10**6
        seconds = check_float("seconds", budget.seconds, minimum=0.0, inclusive=False)
        callbacks.append(_StopAt(seconds=seconds))
    if setup.verbose:  # each line names its run; a budget in samples or seconds has no total
        callbacks.append(ProgressBar(label=spec.label, show_total=budget.epochs is not None))
    history = fit(
        model,
        train.X,
        train.y,
        batch_size=spec.batch_size,
        epochs=epochs,
        optimizer=spec.optimizer,
        lr=lr,
        validation=setup.validation,
        seed=setup.seed,
        callbacks=callbacks,
        verbose=setup.verbose,
        threads=setup.threads,
    )
    metrics = run_metrics(model, history, train, tracker)
    metrics["loss_after_epoch_1"] = after_first.loss
    largest = max(history.steps["batch_size"], default=b)
    if spec.adaptive:  # which batch sizes it chose, when and why
        metrics["batch_schedule"] = history.meta.get("batch_schedule", [])
        metrics["largest_batch_size"] = largest
    optimizer = get_optimizer(spec.optimizer)
    metrics["memory_bytes"] = estimate_memory(
        model, largest, optimizer=optimizer, n_samples=m
    ).total
    return RunResult(spec, b, lr, note, history, metrics)


def run_metrics(model, history: History, train: Dataset, tracker: TargetTracker) -> dict:
    """Final losses and accuracies, speed, target times, curve noise and generalization gap."""
    final_train = model.evaluate(train.X, train.y)
    last = history.epochs[-1] if history.epochs else {}
    seconds = float(history.meta.get("seconds", 0.0))
    samples = int(history.meta.get("samples_seen", 0))
    out: dict[str, Any] = {
        "train_loss": final_train["loss"],
        "train_accuracy": final_train.get("accuracy", final_train.get("r2")),
        "val_loss": last.get("val_loss"),
        "val_accuracy": last.get("val_accuracy", last.get("val_r2")),
        "seconds": seconds,
        "steps": history.n_steps,
        "epochs": samples / len(train.X),
        "samples_seen": samples,
        "samples_per_second": samples / seconds if seconds > 0 else None,
        "curve_noise": curve_noise(history.steps["loss"]),
        "mean_loss_epoch_1": history.epochs[0]["loss"] if history.epochs else None,
        "stop_reason": history.meta.get("stop_reason"),
        "outcome": history.meta.get("outcome"),
    }
    if out["val_loss"] is not None:
        out["generalization_gap"] = out["val_loss"] - out["train_loss"]
    reached = tracker.reached
    out.update(
        {
            "steps_to_target": None if reached is None else reached.steps,
            "epochs_to_target": None if reached is None else reached.epochs,
            "seconds_to_target": None if reached is None else reached.seconds,
            "samples_to_target": None if reached is None else reached.samples,
            "target_at_end": tracker.value_at_end(),
            "target_held": reached is not None and tracker.target.reached(tracker.value_at_end()),
        }
    )
    return out


TO_TARGET = ("steps_to_target", "epochs_to_target", "seconds_to_target", "samples_to_target")


def to_target_text(metrics: dict, key: str) -> str:
    """A 'to target' number, starred when the run reached the target and then fell back."""
    text = format_number(metrics.get(key))
    if metrics.get(key) is not None and metrics.get("target_held") is False:
        text += "*"
    return text


def fell_back_note(results: Results) -> str | None:
    """The footnote to a starred 'to target' number: which runs fell back, to what."""
    fell = [
        f"{run.spec.label} {format_number(run.metrics['target_at_end'])}"
        for run in results.runs
        if run.metrics.get("steps_to_target") is not None
        and run.metrics.get("target_held") is False
    ]
    if not fell:
        return None
    return (
        f"* first reached {results.target} there, then fell back: "
        f"{results.target.metric} at the end was {', '.join(fell)}."
    )
