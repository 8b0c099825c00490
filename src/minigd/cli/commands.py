"""The subcommands: each turns parsed arguments into library calls and results into lines of text,
and returns its exit code (EXIT_*). No logic lives here beyond that."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from minigd._io import ensure_writable, slug
from minigd.batching import MiniBatches, streaming_pipeline
from minigd.batchsize import advise, find_batch_size, noise_scale, parse_bytes, read_evidence
from minigd.batchsize.memory import format_bytes
from minigd.cli.job import Job
from minigd.data import datasets, describe_layout, load
from minigd.data.convert import convert
from minigd.data.files import hold_out, npz_headers_and_targets
from minigd.data.formats import is_streamable, label_column
from minigd.data.formats import open_source as open_data
from minigd.data.opening import on_disk_bytes, read_manifest, sample
from minigd.experiments import Budget, RunSpec, compare, sweep, write_report
from minigd.experiments.compare import recommended_lr
from minigd.experiments.sweep_report import write_sweep_report
from minigd.rules import rule_for_m
from minigd.runs import RunConfig, should_stream
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
EXIT_CODES_UNTRAINED = (  # the commands that write no run: no divergence, no checkpoint
    f"exit codes: {EXIT_OK} done, {EXIT_ERROR} unexpected error, {EXIT_USAGE} bad input, "
    f"{EXIT_INTERRUPTED} interrupted by Ctrl-C, {EXIT_SIGTERM} by SIGTERM."
)


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
    if is_streamable(args.data):
        return _info_source(args)
    if Path(args.data).suffix.lower() == ".npz" and Path(args.data).is_file():
        train, test, values = npz_headers_and_targets(args.data, task=args.task), None, False
    else:
        train, test = load(args.data, target=args.label, task=args.task)
        values = True
    for split in (train, test):
        if split is not None:
            _info_split(split, values)
    _say_label_column(args)
    if np.ndim(train.X) == 2:
        m, layout = describe_layout(train.X, train.y)
        print(f"  {layout}")
        print(f"  the note's rule: {rule_for_m(m)}")
    return 0


def _say_label_column(args: argparse.Namespace) -> None:
    """Which column of a table is the label, and why (a wrong guess trains on the wrong
    target without a word otherwise)."""
    how = label_column(args.data, args.label)
    if how is not None:
        print(f"  {how}; --label chooses another")


def _info_split(split, values: bool) -> None:
    """Shapes, the range of X's values (when they were read) and the targets of one split."""
    X = np.asarray(split.X)
    if values:
        print(f"{split.name}: X {X.shape} {X.dtype}, min {X.min():.4g}, max {X.max():.4g}")
    else:
        print(f"{split.name}: X {X.shape} {X.dtype} (from its header: info reads no features)")
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


def _info_source(args: argparse.Namespace) -> int:
    """Info of a file or shard folder from its headers and targets: the features are not read."""
    data = open_data(args.data, y=args.y, target=args.label, task=args.task)
    X, m = data.X, len(data)
    size = on_disk_bytes(args.data)
    print(f"{data.name}: X {X.shape} {X.dtype}, {format_bytes(size)} on disk ({X.name})")
    _say_label_column(args)
    if data.y is not None:
        if data.classes is not None:
            shown = ", ".join(map(str, data.classes[:12].tolist()))
            more = ", ..." if len(data.classes) > 12 else ""
            print(f"  y {data.y.shape}, {len(data.classes)} classes ({shown}{more})")
        else:
            print(f"  y {data.y.shape} {data.y.dtype}, regression targets")
        if data.task_reason:
            print(f"  task: {data.task_reason} (--task overrides)")
    print(f"  the note's rule: {rule_for_m(m)}")
    for b in (64, 1024):
        if b > m:
            continue
        batches = MiniBatches(X, batch_size=b, shuffle="blocks")
        q = batches.shuffle_quality()
        print(
            f"  block shuffle at B={b}: "
            f"{min(batches.blocks.buffer_blocks, batches.blocks.n_blocks)} blocks of "
            f"{q['block_rows']} rows per {format_bytes(batches.blocks.buffer_rows * X.row_bytes)} "
            f"buffer; a batch holds rows of ~{q['distinct_blocks']:.1f} distinct blocks "
            f"(a global row shuffle: ~{q['rows_shuffle']:.1f})"
        )
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    out = convert(
        args.input,
        args.output,
        y=args.y,
        target=args.label,
        task=args.task,
        shard_bytes=_size("--shard-size", args.shard_size),
        dtype=args.dtype,
        overwrite=args.overwrite,
        progress=False if args.quiet else None,
    )
    data = open_data(out)
    what = "regression" if data.classes is None else f"{len(data.classes)} classes"
    shards = len(read_manifest(out)["shards"])
    print(
        f"wrote {out}: {len(data):,} rows of {data.X.row_shape} {data.X.dtype} in {shards} "
        f"shards ({format_bytes(on_disk_bytes(out))}), {what}. Train with: "
        f"minigd train --data {out}"
    )
    return 0


def _size(option: str, text: str) -> int:
    """A size option ("128MB", "2GiB") in bytes, or a sentence naming the option."""
    try:
        return parse_bytes(text)
    except ValueError:
        raise ValueError(
            f"{option} takes a size such as 128MB or 1GiB; received {text!r}."
        ) from None


def _model_and_data(args):
    """(model, training data in memory, the streamed set's options for the advisor). A file
    larger than memory is measured on a sample of it (``data.opening.sample``); the advisor then
    counts its m and the pipeline's memory, not the data's."""
    config = RunConfig(
        data=args.data, model=args.model, seed=args.seed, sample_axis=args.sample_axis
    )
    if not should_stream(args.data):
        train, _ = load(args.data, target=args.label, y_path=args.y, task=args.task)
        return config.build_model(train), train, {}
    data = open_data(args.data, y=args.y, target=args.label, task=args.task)
    train = sample(data)
    model = config.build_model(train)
    pipeline = streaming_pipeline(data.X, data.y, model.dtype)
    streamed = {"n_samples": len(data), "pipeline": pipeline}
    print(
        f"{args.data} streams from disk: measuring on {len(train.X):,} of its {len(data):,} rows; "
        "memory counts the shuffle buffer and prefetched batches, not the data.",
        flush=True,
    )
    return model, train, streamed


def cmd_advise(args: argparse.Namespace) -> int:
    evidence = None if args.evidence is None else read_evidence(args.evidence)
    model, train, streamed = _model_and_data(args)
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
        evidence=evidence,
        **streamed,
    )
    print(f"advice for {args.model} on {args.data} ({advice.n_samples} samples):")
    print(advice)
    return 0


def cmd_find_batch_size(args: argparse.Namespace) -> int:
    model, train, streamed = _model_and_data(args)
    if not args.quiet:  # the table comes at the end, once: no row printed twice
        print("measuring throughput and peak memory per batch size ...", flush=True)
    result = find_batch_size(
        model,
        train.X,
        train.y,
        candidates=args.candidates,
        memory_budget_bytes=parse_bytes(args.memory) if args.memory else None,
        optimizer=args.optimizer,
        sample_axis=args.sample_axis,
        progress=False,
        pipeline=streamed.get("pipeline"),
    )
    print(result.table())
    print(f"knee: {result.knee} (the smallest batch within 10% of the best throughput)")
    return 0


def cmd_noise_scale(args: argparse.Namespace) -> int:
    model, train, _ = _model_and_data(args)
    if args.epochs:
        history = fit(
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
        if history.meta.get("outcome") == "diverged":  # the model is its last finite state
            raise ValueError(
                f"the training before the measurement diverged ({history.meta['stop_reason']}); "
                "a noise scale measured there would describe no model you train. Lower --lr."
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


def _experiment_data(args: argparse.Namespace):
    """(train, held-out) for compare and sweep: a dataset's own split, or a file's last
    --validation-split (default 0.2), samples as rows."""
    train, test = load(args.data, target=args.label, y_path=args.y, task=args.task)
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
    job = Job.current()  # mpiexec -n N: runs dealt to the ranks
    train, test = _experiment_data(args)
    model = RunConfig(data=args.data, model=args.model, seed=args.seed).build_model(train)
    if not args.quiet:
        job.say("measuring throughput and the noise scale for the advisor ...")
    advice = None
    if job.root:  # measured once, on an otherwise idle machine, and shared
        advice = advise(model, train.X, train.y, optimizer=args.optimizer, progress=not args.quiet)
    advice = job.share(advice)
    sizes = args.batch_sizes
    if args.use_advice:
        sizes = [advice.batch_size if s not in ("full", 1) else s for s in sizes]
    runs = [RunSpec(s, lr=args.lr, optimizer=args.optimizer) for s in sizes]
    out = (
        Path(args.out) if args.out else Path("reports") / slug(f"compare-{args.data}-{args.model}")
    )
    if job.root:
        ensure_writable(out)  # before minutes of training, not after
    job.say(
        f"comparing batch sizes {', '.join(str(s) for s in sizes)} for {args.model} on "
        f"{args.data}, {budget} each, same initial weights"
        + (f", on {job.comm.Get_size()} MPI ranks" if job.comm is not None else "")
        + " ..."
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
        verbose=0 if args.quiet or not job.root else 1,
        on_run=lambda partial: partial.save(out),  # each finished run is on disk at once
        threads=job.threads(args.threads),
        comm=job.comm,
        standardize_targets=args.standardize_targets,
    )
    if results is None:  # another rank: rank 0 writes the report
        return 0
    paths = write_report(results, out, advice=advice)
    if args.quiet:  # without --quiet each run's progress already said why it stopped
        _say_what_diverged([(run.spec.label, run.metrics) for run in results.runs])
    print(results.table())
    lr, source = recommended_lr(results, advice.batch_samples)
    print(f"advisor: batch size {advice.batch_size}, lr {lr:.4g} ({source})")
    print(f"report: {paths['html']}")
    return 0


def _say_what_diverged(runs) -> None:
    """A run that diverged inside compare or sweep is named with its reason, not just stored."""
    for label, metrics in runs:
        if metrics.get("outcome") == "diverged":
            print(f"minigd: {label}: {metrics['stop_reason']}", file=sys.stderr)


def cmd_sweep(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path("reports") / slug(f"sweep-{args.data}-{args.model}")
    job = Job.current()  # mpiexec -n N: runs dealt to the ranks
    if job.root:
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
        max_extensions=args.max_extensions,
        optimizer=args.optimizer,
        on_row=lambda partial: partial.save(out, "results.json"),  # each round on disk at once
        threads=job.threads(args.threads),
        progress=sys.stderr,
        quiet=args.quiet,
        comm=job.comm,
        standardize_targets=args.standardize_targets,
    )
    if result is None:  # another rank: rank 0 writes the report
        return 0
    paths = write_sweep_report(result, out)
    print(result.table())
    print(f"wrote {paths['results']}; report: {paths['html']}")
    return 0
