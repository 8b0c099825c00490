"""The subcommands that train a run and use its model: train (new, resumed, replaced), evaluate
and predict. Each turns parsed arguments into library calls and results into lines of text, and
returns its exit code (EXIT_*)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from minigd._signals import Terminated
from minigd.cli.commands import (
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SIGTERM,
)
from minigd.cli.job import Job
from minigd.data import datasets, load
from minigd.data.files import hold_out
from minigd.nn import load_model
from minigd.runs import RunConfig, read_config, train_run
from minigd.runs.predict import predict_file
from minigd.training.checkpoint import list_checkpoints


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume:
        config = read_config(args.resume)
        _refuse_changes_on_resume(args, config)
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
            target=args.label,
            y_path=args.y,
            dtype=args.dtype,
            task=args.task,
            standardize_targets=args.standardize_targets,
            warmup_epochs=args.warmup_epochs,
            stream=args.stream,
            shuffle=args.shuffle,
            batchnorm_stats=args.batchnorm_stats,
            noise_every=args.noise_every,
            tensorboard=args.tensorboard,
        )
        if args.out is not None and not args.out.strip():
            raise ValueError("--out must name a folder; received ''.")
        out = Path(args.out) if args.out is not None else Path("runs") / config.default_name()
    steps, seconds = args.checkpoint_every
    job = Job.current()  # mpiexec -n N minigd train ...: one data-parallel run
    try:
        result = train_run(
            config,
            out,
            resume=bool(args.resume),
            overwrite=args.overwrite,
            verbose=0 if args.quiet else 1,
            checkpoint_every_steps=steps,
            checkpoint_every_seconds=seconds,
            announce=job.say,
            threads=args.threads,
            comm=job.comm,
        )
    except (KeyboardInterrupt, Terminated) as exc:  # after the run's graceful stop, if it began
        return _interrupted(exc, out, job)
    if not job.root:  # rank 0 reports for the job
        return _exit_code(result)
    return _train_report(result, out, args.quiet)


def _refuse_changes_on_resume(args: argparse.Namespace, config: RunConfig) -> None:
    """A resumed run continues with the settings it started with: an option that would change
    one is refused with a sentence saying what the run has, not silently ignored. Options
    repeated with the run's own values are fine (the same command line, plus --resume)."""
    written = {token.split("=", 1)[0] for token in args.argv if token.startswith("--")}
    changes = []
    for dest, options in args.run_settings.items():
        if not any(o.startswith(t) for o in options for t in written if len(t) > 2):
            continue
        given, kept = getattr(args, dest), _run_setting(config, dest, args.resume)
        if _setting_value(given, dest) != kept:
            changes.append(f"{_as_written(options, given)} (the run has {kept})")
    if changes:
        raise ValueError(
            f"{'; '.join(changes)}: a resumed run goes on with the settings in "
            f"{args.resume}/config.json. With --resume give only --epochs, --threads, "
            "--checkpoint-every or --quiet; to train with other settings, start a new run with "
            f"--out (or replace this one with --out {args.resume} --overwrite)."
        )


def _as_written(options: list[str], given) -> str:
    """An option as a command line gives it: '--lr 0.1', '--no-standardize-targets'."""
    if isinstance(given, bool):
        return options[0] if given else options[-1]
    return f"{options[0]} {given}"


def _run_setting(config: RunConfig, dest: str, folder: str):
    """A run's value for train's option ``dest``, as the option would give it."""
    if dest == "out":
        return str(Path(folder).resolve())
    return getattr(config, {"y": "y_path", "label": "target"}.get(dest, dest), None)


def _setting_value(given, dest: str):
    """An option's value as a run's config.json records it (paths absolute)."""
    if (
        dest in ("data", "y", "out")
        and given is not None
        and not (dest == "data" and given in datasets.REGISTRY)
    ):
        return str(Path(given).resolve())
    return given


def _exit_code(result) -> int:
    if result.outcome == "interrupted":  # on another rank: this one stopped with it
        return EXIT_INTERRUPTED
    return EXIT_DIVERGED if result.outcome == "diverged" else EXIT_OK


def _interrupted(exc: BaseException, out: Path, job: Job) -> int:
    """Says how to resume a run that Ctrl-C or SIGTERM stopped (its checkpoint is written);
    one stopped before it began is left to ``main``, which says "interrupted"."""
    if not (out / "config.json").exists():
        raise exc
    code = EXIT_SIGTERM if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    found = list_checkpoints(out / "checkpoints")
    where = f"checkpoint {found[-1]}" if found else "no checkpoint yet"
    model = (
        "kept the last complete model" if (out / "model.npz").exists() else "no model is written"
    )
    job.say_error(
        f"minigd train: interrupted ({'SIGTERM' if code == EXIT_SIGTERM else 'Ctrl-C'}); wrote "
        f"{where}, {model}. Resume with: minigd train --resume {out}"
    )
    return code


def _train_report(result, out: Path, quiet: bool) -> int:
    """Prints how a run ended and returns the exit code that says so."""
    meta = result.history.meta
    if result.outcome == "interrupted":
        print(
            f"minigd train: {result.stop_reason}; kept the last complete model. Resume with: "
            f"minigd train --resume {out}",
            file=sys.stderr,
        )
        return _exit_code(result)
    if quiet and result.stop_reason:  # without --quiet the progress output said it already
        print(f"minigd: {result.stop_reason}", file=sys.stderr)
    print(f"done: {meta.get('steps')} steps, {meta.get('samples_seen')} samples")
    for key, value in result.metrics.items():
        print(f"  {key:<20} {value:.4f}")
    print(f"wrote {out}/model.npz, history.json, history.csv, epochs.csv, config.json")
    return _exit_code(result)


def cmd_evaluate(args: argparse.Namespace) -> int:
    model_file = _model_file(args.run, args.model_file)
    split, sample_axis = _evaluation_data(args)
    model = load_model(model_file)
    if split.y is None:
        raise ValueError(
            f"{split.name} holds no targets, and evaluate compares predictions with them: give "
            "the targets with --y (for a .npy X), or name a table's label column with --label."
        )
    # the file's labels as written, mapped through the model's own classes (not re-numbered)
    metrics = model.evaluate(split.X, split.labels, sample_axis=sample_axis)
    print(f"{model_file} on {split.name} ({len(split.y)} samples):")
    for key, value in metrics.items():
        print(f"  {key:<10} {value:.4f}")
    if model.target_scaling is not None:
        print("  (the loss is in standard units: 1.0 is the targets' variance; rmse in theirs)")
    return 0


def _model_file(run: str | None, model_file: str | None) -> Path:
    """The model.npz a command names: a run folder's, or the file given."""
    if (run is None) == (model_file is None):
        raise ValueError("give a run folder or --model-file (one of them): the model to use.")
    if model_file is not None:
        return Path(model_file)
    if Path(run).is_file():
        return Path(run)  # a model.npz given where a run folder goes
    return Path(run) / "model.npz"


def _evaluation_data(args: argparse.Namespace):
    """(the split evaluate scores, its sample axis): --data's (a dataset's --split, a file
    whole), or without --data the data a run folder held out (never a default dataset the
    model never saw)."""
    if args.data is not None:
        train, test = load(args.data, target=args.label, y_path=args.y, task=args.task)
        return (test if (args.split == "test" and test is not None) else train), args.sample_axis
    if args.run is None or not Path(args.run).is_dir():
        raise ValueError("give --data: the data to evaluate the model on.")
    config = read_config(args.run)
    train, test = load(config.data, target=config.target, y_path=config.y_path, task=config.task)
    if test is not None:
        return (test if args.split == "test" else train), config.sample_axis
    if config.validation_split and args.split == "test":  # hold_out gives samples as rows
        return hold_out(train, config.validation_split, sample_axis=config.sample_axis)[1], 0
    if args.split == "test":
        print(f"note: the run in {args.run} held nothing out; these are its training data.")
    return train, config.sample_axis


def cmd_predict(args: argparse.Namespace) -> int:
    model_file = _model_file(args.model, None)
    out, rows = predict_file(load_model(model_file), args.data, args.out, proba=args.proba,
                             label=args.label)  # fmt: skip
    what = "class probabilities" if args.proba else "predictions"
    print(f"wrote {out}: {what} of {model_file} for {rows:,} rows of {args.data}")
    return 0
