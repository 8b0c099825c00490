"""The ``minigd`` command: argparse subcommands that parse, call the library, and print.

No logic lives here beyond turning arguments into library calls and results into lines of text.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from minigd import _signals
from minigd._io import ensure_writable
from minigd._threads import blas_threads, usable_cores
from minigd._version import __version__
from minigd.batching import parse_batch_size
from minigd.batchsize import advise, find_batch_size, noise_scale, parse_bytes
from minigd.batchsize.lr_scaling import RULES as LR_RULES
from minigd.batchsize.rules import rule_for_m
from minigd.data import datasets, describe_layout, load
from minigd.data.files import hold_out
from minigd.experiments import Budget, RunSpec, Target, compare, sweep, write_report
from minigd.experiments.plots import plot_sweep
from minigd.experiments.runs import RunConfig, read_config, slug, train_run
from minigd.experiments.sweep import DEFAULT_BATCH_SIZES, DEFAULT_LEARNING_RATES
from minigd.nn import load_model
from minigd.training import fit

EXIT_OK = 0
EXIT_ERROR = 1  # an unexpected error (a bug, or memory): --debug shows the traceback
EXIT_USAGE = 2  # bad input: arguments, data or files; the message says what to fix
EXIT_DIVERGED = 3  # training diverged; the model written is the last good one
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); a checkpoint to resume from was written
EXIT_SIGTERM = 143  # SIGTERM (128 + SIGTERM), likewise
EXIT_CODES = (
    f"exit codes: {EXIT_OK} done, {EXIT_ERROR} unexpected error, {EXIT_USAGE} bad input, "
    f"{EXIT_DIVERGED} training diverged, {EXIT_INTERRUPTED} interrupted by Ctrl-C, "
    f"{EXIT_SIGTERM} by SIGTERM (a checkpoint to resume from is written first)."
)


def _batch_size(text: str) -> int | str:
    try:
        return parse_batch_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_datasets(args: argparse.Namespace) -> int:
    print(f"{'name':<10} {'train':>7} {'test':>7} {'features':>8} {'classes':>7}  offline  source")
    for info in datasets.REGISTRY.values():
        offline = "yes" if info.available else "no"
        print(
            f"{info.name:<10} {info.n_train:>7} {info.n_test:>7} {info.n_features:>8} "
            f"{info.n_classes:>7}  {offline:<7}  {info.description} (needs {info.needs})"
        )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    train, test = load(args.data, target=args.target, task=args.task)
    for split in (train, test):
        if split is None:
            continue
        X = np.asarray(split.X)
        print(f"{split.name}: X {X.shape} {X.dtype}, min {X.min():.4g}, max {X.max():.4g}")
        if split.y is not None:
            if split.classes is not None:
                counts = np.bincount(split.y, minlength=len(split.classes))
                shown = ", ".join(
                    f"{c}: {n}" for c, n in zip(split.classes[:12], counts[:12], strict=True)
                )
                print(f"  y {split.y.shape}, {len(split.classes)} classes ({shown})")
            else:
                print(f"  y {split.y.shape} float, regression targets")
            if split.task_reason:
                print(f"  task: {split.task_reason} (--task overrides)")
    if np.ndim(train.X) == 2:
        m, layout = describe_layout(train.X, train.y)
        print(f"  {layout}")
        print(f"  the note's rule: {rule_for_m(m)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume:
        config = read_config(args.resume)
        if args.epochs is not None:
            config = replace(config, epochs=args.epochs)
        out = Path(args.resume)
    else:
        config = RunConfig(
            data=args.data,
            model=args.model,
            optimizer=args.optimizer,
            lr=args.lr,
            batch_size=args.batch_size,
            epochs=10 if args.epochs is None else args.epochs,
            seed=args.seed,
            sample_axis=args.sample_axis,
            last_batch=args.last_batch,
            validation_split=args.validation_split,
            target=args.target,
            y_path=args.y,
            dtype=args.dtype,
            task=args.task,
            warmup_epochs=args.warmup_epochs,
        )
        if args.out is not None and not args.out.strip():
            raise ValueError("--out must name a folder; received ''.")
        out = Path(args.out) if args.out is not None else Path("runs") / config.default_name()
    steps, seconds = args.checkpoint_every
    result = train_run(
        config,
        out,
        resume=bool(args.resume),
        overwrite=args.overwrite,
        verbose=0 if args.quiet else 1,
        checkpoint_every_steps=steps,
        checkpoint_every_seconds=seconds,
        announce=lambda line: print(line, flush=True),
        threads=args.threads,
    )
    return _train_report(result, out, args.quiet)


def _train_report(result, out: Path, quiet: bool) -> int:
    """Prints how a run ended and returns the exit code that says so."""
    meta = result.history.meta
    if result.outcome == "interrupted":
        where = f"checkpoint {result.checkpoint}" if result.checkpoint else "no checkpoint"
        print(
            f"minigd train: {result.stop_reason}; wrote {where}, kept the last complete model. "
            f"Resume with: minigd train --resume {out}",
            file=sys.stderr,
        )
        return EXIT_SIGTERM if result.signal == signal.SIGTERM else EXIT_INTERRUPTED
    if quiet and result.stop_reason:  # without --quiet the progress output said it already
        print(f"minigd: {result.stop_reason}", file=sys.stderr)
    print(f"done: {meta.get('steps')} steps, {meta.get('samples_seen')} samples")
    for key, value in result.metrics.items():
        print(f"  {key:<20} {value:.4f}")
    print(f"wrote {out}/model.npz, history.json, history.csv, epochs.csv, config.json")
    return EXIT_DIVERGED if result.outcome == "diverged" else EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    model = load_model(args.model_file)
    train, test = load(args.data, target=args.target, y_path=args.y, task=args.task)
    split = test if (args.split == "test" and test is not None) else train
    # the file's labels as written, mapped through the model's own classes (not re-numbered)
    metrics = model.evaluate(split.X, split.labels, sample_axis=args.sample_axis)
    print(f"{args.model_file} on {split.name or args.data} ({len(split.y)} samples):")
    for key, value in metrics.items():
        print(f"  {key:<10} {value:.4f}")
    return 0


def _model_and_data(args):
    train, _ = load(args.data, target=args.target, y_path=args.y, task=args.task)
    config = RunConfig(
        data=args.data, model=args.model, seed=args.seed, sample_axis=args.sample_axis
    )
    return config.build_model(train), train


def cmd_advise(args: argparse.Namespace) -> int:
    model, train = _model_and_data(args)
    advice = advise(
        model,
        train.X,
        train.y,
        optimizer=args.optimizer,
        memory_budget_bytes=parse_bytes(args.memory) if args.memory else None,
        measure=not args.no_measure,
        reference=args.reference,
        sample_axis=args.sample_axis,
        progress=not args.quiet,
    )
    print(f"advice for {args.model} on {args.data} ({advice.n_samples} samples):")
    print(advice)
    return 0


def cmd_find_batch_size(args: argparse.Namespace) -> int:
    model, train = _model_and_data(args)
    candidates = args.candidates
    result = find_batch_size(
        model,
        train.X,
        train.y,
        candidates=candidates,
        memory_budget_bytes=parse_bytes(args.memory) if args.memory else None,
        optimizer=args.optimizer,
        sample_axis=args.sample_axis,
        progress=not args.quiet,
    )
    print(result.table())
    print(f"knee: {result.knee} (the smallest batch within 10% of the best throughput)")
    return 0


def cmd_noise_scale(args: argparse.Namespace) -> int:
    model, train = _model_and_data(args)
    if args.epochs:
        fit(
            model,
            train.X,
            train.y,
            batch_size=args.train_batch_size,
            epochs=args.epochs,
            optimizer=args.optimizer,
            lr=args.lr,
            sample_axis=args.sample_axis,
            seed=args.seed,
            verbose=0 if args.quiet else 1,
            threads=args.threads,
        )
    result = noise_scale(
        model,
        train.X,
        train.y,
        b_small=args.b_small,
        b_big=args.b_big,
        n_batches=args.n_batches,
        seed=args.seed,
        sample_axis=args.sample_axis,
    )
    when = f"after {args.epochs} epochs" if args.epochs else "at initialization"
    print(f"gradient noise scale of {args.model} on {args.data}, {when}:")
    print(
        f"  B_simple   = {result.b_simple:.4g}  (95% CI {result.interval[0]:.4g} .. "
        f"{result.interval[1]:.4g})"
    )
    print(f"  |G|^2      = {result.grad_norm_sq:.4g}")
    print(f"  tr(Sigma)  = {result.trace_sigma:.4g}")
    print(f"  from {result.n_batches} batch pairs of {result.b_small} and {result.b_big} samples")
    return 0


def _target(text: str):
    metric, _, value = text.partition(":")
    if not value:
        raise argparse.ArgumentTypeError("a target is METRIC:VALUE, e.g. val_accuracy:0.9")
    return Target(metric, float(value))


def _experiment_data(args: argparse.Namespace):
    """(train, held-out) for compare and sweep: a dataset's own split, or a file's last
    --validation-split (default 0.2), samples as rows."""
    train, test = load(args.data, target=args.target_column, y_path=args.y, task=args.task)
    if test is not None:
        if args.validation_split is not None:
            raise ValueError(
                f"--validation-split applies to a data file; the dataset {args.data!r} brings "
                "its own test split. Leave the option out."
            )
        return train, test
    split = 0.2 if args.validation_split is None else args.validation_split
    return hold_out(train, split, sample_axis=args.sample_axis)


def cmd_compare(args: argparse.Namespace) -> int:
    budget = Budget(
        epochs=args.epochs if not (args.seconds or args.samples) else None,
        seconds=args.seconds,
        samples=args.samples,
    )
    train, test = _experiment_data(args)
    model = RunConfig(data=args.data, model=args.model, seed=args.seed).build_model(train)
    if not args.quiet:
        print("measuring throughput and the noise scale for the advisor ...", flush=True)
    advice = advise(model, train.X, train.y, optimizer=args.optimizer, progress=not args.quiet)
    sizes = args.batch_sizes
    if args.use_advice:
        sizes = [advice.batch_size if s not in ("full", 1) else s for s in sizes]
    runs = [RunSpec(s, lr=args.lr, optimizer=args.optimizer) for s in sizes]
    out = (
        Path(args.out) if args.out else Path("reports") / slug(f"compare-{args.data}-{args.model}")
    )
    ensure_writable(out)  # before minutes of training, not after
    print(
        f"comparing batch sizes {', '.join(str(s) for s in sizes)} for {args.model} on "
        f"{args.data}, {budget} each, same initial weights ...",
        flush=True,
    )
    results = compare(
        args.model,
        (train, test),
        runs=runs,
        budget=budget,
        target=args.target,
        reference=args.reference,
        lr_rule=args.lr_rule,
        seed=args.seed,
        verbose=0 if args.quiet else 1,
        on_run=lambda partial: partial.save(out),  # each finished run is on disk at once
        threads=args.threads,
    )
    paths = write_report(results, out, advice=advice)
    if args.quiet:  # without --quiet each run's progress already said why it stopped
        _say_what_diverged([(run.spec.label, run.metrics) for run in results.runs])
    print(results.table())
    print(f"advisor: batch size {advice.batch_size}, lr {advice.lr:.4g} ({advice.lr_rule})")
    print(f"report: {paths['html']}")
    return 0


def _say_what_diverged(runs) -> None:
    """A run that diverged inside compare or sweep is named with its reason, not just stored."""
    for label, metrics in runs:
        if metrics.get("outcome") == "diverged":
            print(f"minigd: {label}: {metrics['stop_reason']}", file=sys.stderr)


def cmd_sweep(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path("reports") / slug(f"sweep-{args.data}-{args.model}")
    ensure_writable(out)  # before minutes of training, not after
    data = _experiment_data(args)
    result = sweep(
        args.model,
        data,
        batch_sizes=args.batch_sizes,
        learning_rates=args.lrs,
        seeds=args.seeds,
        target=args.target,
        max_epochs=args.max_epochs,
        optimizer=args.optimizer,
        on_row=lambda partial: partial.save(out),  # each finished batch size is on disk at once
        threads=args.threads,
        progress=sys.stderr,
        quiet=args.quiet,
    )
    result.save(out)
    plot = plot_sweep(result, out)["steps_vs_batch"]["png"]
    print(result.table())
    print(f"wrote {out / 'sweep.json'} and {plot}")
    return 0


def _data_arguments(p: argparse.ArgumentParser, default: str | None = "mnist-5k") -> None:
    p.add_argument(
        "--data",
        default=default,
        help="dataset name (digits, mnist-5k, mnist) or a .npy/.npz/.csv/.parquet file",
    )
    p.add_argument(
        "--sample-axis",
        type=int,
        choices=(0, 1),
        default=0,
        help="1 if the file holds samples as columns: the note's X = (784, m)",
    )
    p.add_argument("--target", default=None, help="target column of a CSV/Parquet file")
    p.add_argument("--y", default=None, help="targets file for an .npy X")
    _task_argument(p)


def _threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help=f"BLAS threads (default: the {usable_cores()} cores this process may use; use 1 "
        "when other processes are busy, or several minigd commands run at once)",
    )


def _experiment_data_arguments(p: argparse.ArgumentParser) -> None:
    """The data options of compare and sweep: train's, plus the held-out part of a file
    (--target is the race's target there, so a table's label column is --target-column)."""
    p.add_argument(
        "--data",
        default="mnist-5k",
        help="dataset name (digits, mnist-5k, mnist) or a .npy/.npz/.csv/.parquet file",
    )
    p.add_argument(
        "--sample-axis",
        type=int,
        choices=(0, 1),
        default=0,
        help="1 if the file holds samples as columns: the note's X = (784, m)",
    )
    p.add_argument("--target-column", default=None, help="label column of a CSV/Parquet file")
    p.add_argument("--y", default=None, help="targets file for an .npy X")
    p.add_argument(
        "--validation-split",
        type=float,
        default=None,
        help="fraction of a file's samples held out, taken from the end; 0.2 when not given",
    )
    _task_argument(p)


def _task_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task",
        choices=("auto", "classification", "regression"),
        default="auto",
        help="how to read the targets; auto: text, integers and whole-number floats (at most "
        "100 values) are class labels, other numbers regression",
    )


def _tool_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="mlp:128", help="model spec, as for train")
    p.add_argument("--optimizer", default="sgd", help="the optimizer you will train with")
    p.add_argument(
        "--memory", default=None, help="memory budget, e.g. 2GB (default: half the free RAM)"
    )
    p.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    _threads_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _comma_list(parse, what: str):
    """An argparse type for "a,b,c": each item through ``parse``; a sentence on a bad one."""

    def parse_list(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}; received {text!r}")
        try:
            return [parse(t) for t in items]
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what}; {exc} in {text!r}"
            ) from None

    parse_list.__name__ = what
    return parse_list


def _number(kind, minimum: float, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {what}") from None
        if not value >= minimum or value != value or abs(value) == float("inf"):
            raise ValueError(f"{text!r} is not {what}")
        return value

    return parse


def _reference(text: str) -> tuple[int, float]:
    """ "64:0.1" -> (64, 0.1): a batch size and a learning rate known to work with it."""
    b0, sep, lr0 = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return _number(int, 1, "")(b0), _number(float, 1e-300, "")(lr0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected B0:LR0, a batch size >= 1 and a learning rate > 0 such as 64:0.1; "
            f"received {text!r}"
        ) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1; received {text!r}")
    return value


def _checkpoint_every(text: str) -> tuple[int | None, float | None]:
    """ "500" (steps), "90s" or "5m" (seconds of wall time) -> (steps, seconds)."""
    raw = text.strip().lower()
    try:
        if raw.endswith(("s", "m")):
            seconds = float(raw[:-1]) * (60 if raw.endswith("m") else 1)
            if seconds > 0:
                return None, seconds
        elif int(raw) >= 1:
            return int(raw), None
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(
        f"expected a number of steps (500) or of seconds (90s, 5m); received {text!r}"
    )


def build_parser() -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    parser = argparse.ArgumentParser(
        prog="minigd",
        description="Mini-batch gradient descent, and which batch size to use.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"minigd {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_subparser(debug))

    p = sub.add_parser("datasets", help="list the named datasets and whether they load offline")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("info", help="shapes, dtype, classes and layout of a dataset or file")
    p.add_argument("data", help="a dataset name (digits, mnist-5k, mnist) or a data file")
    p.add_argument("--target", default=None, help="target column of a CSV/Parquet file")
    _task_argument(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train a model by mini-batch gradient descent")
    _data_arguments(p)
    p.add_argument(
        "--model",
        default="mlp:128",
        help="softmax, logistic, linear, mlp:128, mlp:256,128+bn, mlp:128+dropout0.2",
    )
    p.add_argument(
        "--optimizer", default="sgd", help="sgd, momentum, nesterov, rmsprop, adam, adamw"
    )
    p.add_argument("--lr", type=float, default=None, help="learning rate (optimizer default)")
    p.add_argument(
        "--batch-size",
        type=_batch_size,
        default=64,
        help='samples per step; "full" for batch gradient descent, 1 for SGD',
    )
    p.add_argument("--epochs", type=_positive_int, default=None, help="epochs (10 for a new run)")
    p.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    p.add_argument(
        "--last-batch",
        choices=("keep", "drop", "merge"),
        default="keep",
        help="when the batch size does not divide m: keep the small last batch, drop it, or "
        "merge it into the one before (what BatchNorm needs)",
    )
    p.add_argument(
        "--validation-split",
        type=float,
        default=0.0,
        help="fraction held out for validation when DATA is a file",
    )
    p.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32", help="parameters' precision"
    )
    p.add_argument(
        "--warmup-epochs",
        type=int,
        default=0,
        help="raise the learning rate linearly over this many epochs first (what the advisor "
        "recommends when linear scaling makes it large)",
    )
    p.add_argument("--out", default=None, help="run folder (default runs/<data>-<model>-...)")
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN",
        help="continue the run in this folder at its next batch",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    p.add_argument(
        "--checkpoint-every",
        type=_checkpoint_every,
        default=(None, 60.0),
        metavar="N|Ns|Nm",
        help="write a checkpoint every N steps or N seconds/minutes of training, and at each "
        "epoch's end (default: 60s, so a kill loses at most about a minute)",
    )
    _threads_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("advise", help="recommend a batch size and learning rate, with reasons")
    _data_arguments(p)
    _tool_arguments(p)
    p.add_argument(
        "--no-measure", action="store_true", help="skip the throughput and noise-scale measurements"
    )
    p.add_argument(
        "--reference",
        type=_reference,
        default=None,
        metavar="B0:LR0",
        help="a batch size and learning rate known to work, e.g. 64:0.1",
    )
    p.set_defaults(func=cmd_advise)

    p = sub.add_parser("find-batch-size", help="throughput and peak memory per batch size")
    _data_arguments(p)
    _tool_arguments(p)
    p.add_argument(
        "--candidates",
        type=_comma_list(_number(int, 1, "a batch size >= 1"), "batch sizes"),
        default=None,
        help="comma-separated batch sizes",
    )
    p.set_defaults(func=cmd_find_batch_size)

    p = sub.add_parser("noise-scale", help="the gradient noise scale B_simple (McCandlish 2018)")
    _data_arguments(p)
    _tool_arguments(p)
    p.add_argument("--b-small", type=int, default=32, help="the small batch of each pair")
    p.add_argument("--b-big", type=int, default=1024, help="the big batch of each pair")
    p.add_argument("--n-batches", type=int, default=50, help="batch pairs averaged")
    p.add_argument("--epochs", type=int, default=0, help="train this many epochs first")
    p.add_argument(
        "--train-batch-size", type=_batch_size, default=64, help="batch size of that training"
    )
    p.add_argument(
        "--lr", type=float, default=None, help="learning rate of that training (optimizer's)"
    )
    p.set_defaults(func=cmd_noise_scale)

    p = sub.add_parser("compare", help="batch GD vs mini-batch GD vs SGD, with a report")
    _experiment_data_arguments(p)
    p.add_argument("--model", default="mlp:128", help="model spec, as for train")
    p.add_argument(
        "--batch-sizes",
        type=_comma_list(parse_batch_size, "batch sizes"),
        default="full,64,1",
        help="comma-separated; full = all m",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--epochs", type=int, default=10, help="budget in epochs (default 10)")
    group.add_argument("--seconds", type=float, default=None, help="budget in seconds per run")
    group.add_argument("--samples", type=int, default=None, help="budget in samples seen")
    p.add_argument("--optimizer", default="sgd", help="sgd, momentum, nesterov, rmsprop, adam")
    p.add_argument("--lr", type=float, default=None, help="one lr for every run (else scaled)")
    p.add_argument(
        "--reference",
        type=_reference,
        default="64:0.1",
        metavar="B0:LR0",
        help="scale learning rates from this batch size and lr (default 64:0.1)",
    )
    p.add_argument(
        "--lr-rule",
        choices=LR_RULES,
        default="noise",
        help="how lrs are scaled from the reference (default: McCandlish's noise rule)",
    )
    p.add_argument(
        "--target",
        type=_target,
        default=None,
        metavar="METRIC:VALUE",
        help="e.g. val_accuracy:0.9 (the default for classifiers)",
    )
    p.add_argument(
        "--use-advice",
        action="store_true",
        help="run the advisor's batch size instead of the mini-batch size given",
    )
    p.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    p.add_argument("--out", default=None, help="report folder (default reports/compare-...)")
    _threads_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("sweep", help="steps to target vs batch size, best lr per batch size")
    _experiment_data_arguments(p)
    p.add_argument("--model", default="mlp:128", help="model spec, as for train")
    p.add_argument(
        "--batch-sizes",
        type=_comma_list(_number(int, 1, "a batch size >= 1"), "batch sizes"),
        default=",".join(map(str, DEFAULT_BATCH_SIZES)),
        help="comma-separated batch sizes to sweep",
    )
    p.add_argument(
        "--lrs",
        type=_comma_list(_number(float, 1e-300, "a learning rate > 0"), "learning rates"),
        default=",".join(map(str, DEFAULT_LEARNING_RATES)),
        help="comma-separated learning rates tried at every batch size (the best one counts)",
    )
    p.add_argument(
        "--seeds",
        type=_comma_list(_number(int, 0, "a seed >= 0"), "seeds"),
        default="0",
        help="comma-separated seeds; steps are the median over them",
    )
    p.add_argument(
        "--target",
        type=_target,
        default=None,
        metavar="METRIC:VALUE",
        help="what each run races to (val_accuracy:0.9 for classifiers)",
    )
    p.add_argument(
        "--max-epochs", type=int, default=30, help="a run that has not reached it by then fails"
    )
    p.add_argument("--optimizer", default="sgd", help="sgd, momentum, nesterov, rmsprop, adam")
    p.add_argument("--out", default=None, help="folder for sweep.json and the plot")
    _threads_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("evaluate", help="metrics of a saved model on a dataset or file")
    p.add_argument("--model-file", required=True, help="a model.npz written by minigd train")
    _data_arguments(p)
    p.add_argument(
        "--split",
        choices=("test", "train"),
        default="test",
        help="which split of a named dataset (a file is evaluated whole)",
    )
    p.set_defaults(func=cmd_evaluate)
    for choice in sub._choices_actions:  # each subcommand's one-line help is its description
        sub.choices[choice.dest].description = choice.help[0].upper() + choice.help[1:] + "."
    return parser


def _subparser(parent: argparse.ArgumentParser):
    """Subcommand parsers that take --debug too, and list the exit codes in their help."""

    class Sub(argparse.ArgumentParser):
        def __init__(self, **kwargs):
            kwargs.setdefault("parents", [parent])
            kwargs.setdefault("epilog", EXIT_CODES)
            kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
            if "help" in kwargs:  # the subcommand's line in `minigd --help`, as its description
                kwargs.setdefault(
                    "description", kwargs["help"][0].upper() + kwargs["help"][1:] + "."
                )
            super().__init__(**kwargs)

    return Sub


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns its exit code (see EXIT_CODES). No traceback reaches the user
    unless --debug or MINIGD_DEBUG=1 asks for it."""
    parser = build_parser()
    if threading.current_thread() is threading.main_thread():
        previous = _signals.install()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        debug = args.debug or bool(os.environ.get("MINIGD_DEBUG"))
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return _run(args, debug)
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training began
        _signals.take_pending()
        print("\nminigd: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _signals.Terminated:
        _signals.take_pending()
        print("minigd: terminated", file=sys.stderr)
        return EXIT_SIGTERM
    except BrokenPipeError:  # `minigd info x | head -2`: the reader left; nothing to say
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (so the exit flush cannot fail)
        return EXIT_OK
    finally:
        if threading.current_thread() is threading.main_thread():
            _signals.restore(previous)


def _run(args: argparse.Namespace, debug: bool) -> int:
    try:
        if not hasattr(args, "threads"):
            return args.func(args)
        with blas_threads(args.threads):  # measurements and training alike
            return args.func(args)
    except (KeyboardInterrupt, BrokenPipeError, _signals.Terminated):
        raise
    except (ValueError, TypeError, KeyError, LookupError, ImportError) as exc:
        _error(args, _text(exc), debug)
        return EXIT_USAGE
    except OSError as exc:
        _error(args, os_error_text(exc), debug)
        return EXIT_USAGE
    except MemoryError:
        _error(args, "out of memory. Use a smaller batch size, model or data set.", debug)
        return EXIT_ERROR
    except Exception as exc:
        _error(args, f"unexpected {type(exc).__name__}: {exc}", debug)
        return EXIT_ERROR


def _text(exc: BaseException) -> str:
    # KeyError's str() is the repr of its argument: show the sentence, not its quotes
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def os_error_text(exc: OSError) -> str:
    """An OS error as a sentence naming the path and what to do, not an errno alone."""
    path = exc.filename or ""
    what = {
        errno.ENOSPC: "the disk is full; free space or choose another folder",
        errno.EDQUOT: "the disk quota is exhausted; free space or choose another folder",
        errno.EACCES: "permission denied; choose a folder you can write to",
        errno.EPERM: "permission denied; choose a folder you can write to",
        errno.EROFS: "the file system is read-only; choose another folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EISDIR: "it is a folder, not a file",
    }.get(exc.errno)
    if what is None or (exc.strerror and "MINIGD_DATA" in exc.strerror):
        return f"{path}: {exc.strerror}." if path and exc.strerror else str(exc)
    return f"{path}: {what}." if path else f"{what}."


def _error(args: argparse.Namespace, text: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    hint = "" if debug else " (run with --debug for the traceback)"
    unexpected = text.startswith(("unexpected ", "out of memory"))
    print(f"minigd {args.command}: error: {text}{hint if unexpected else ''}", file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"minigd: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
