"""The ``minigd`` argument parser: subcommands and their options, with help and defaults; the
types that turn an option's text into a value are in ``cli.argtypes``."""

from __future__ import annotations

import argparse

from minigd._threads import usable_cores
from minigd._version import __version__
from minigd.batching import LAST_BATCH_POLICIES, SHUFFLES
from minigd.batchsize.lr_scaling import RULES as LR_RULES
from minigd.cli import argtypes
from minigd.cli.commands import (
    EXIT_CODES,
    EXIT_CODES_UNTRAINED,
    cmd_advise,
    cmd_compare,
    cmd_convert,
    cmd_datasets,
    cmd_find_batch_size,
    cmd_info,
    cmd_noise_scale,
    cmd_sweep,
)
from minigd.cli.run_commands import cmd_evaluate, cmd_predict, cmd_train
from minigd.data import datasets, formats
from minigd.experiments.sweep import DEFAULT_BATCH_SIZES, DEFAULT_LEARNING_RATES
from minigd.optim import OPTIMIZERS
from minigd.rules import NOISE_PROBE_BATCHES
from minigd.runs.config import STREAM_CHOICES

DATASET_NAMES = ", ".join(datasets.names())


def _data_arguments(
    p: argparse.ArgumentParser, old_label: str = "--target", default: str | None = "mnist-5k"
) -> None:
    """--data and how to read it (``old_label``: the label option's former name, still taken)."""
    p.add_argument(
        "--data",
        default=default,
        help=f"dataset name ({DATASET_NAMES}), a {formats.suffixes()} file or a shard folder",
    )
    p.add_argument(
        "--sample-axis",
        type=int,
        choices=(0, 1),
        default=0,
        help="1 if the file holds samples as columns: the note's X = (784, m)",
    )
    _label_argument(p, old_label)
    p.add_argument("--y", default=None, help="targets file for an .npy X")
    _task_argument(p)


def _label_argument(p: argparse.ArgumentParser, old_name: str = "--target") -> None:
    """--label: a table's label column, the one name for it in every command. Its former name
    is still taken, unlisted (compare and sweep use --target for the race's METRIC:VALUE)."""
    p.add_argument(
        "--label",
        default=None,
        metavar="COLUMN",
        help="the label column of a CSV/Parquet table, by name or index (default: the one column "
        "named label, target, class, y or digit, else the last)",
    )
    p.add_argument(old_name, dest="label", default=None, help=argparse.SUPPRESS)


def _threads_argument(p: argparse.ArgumentParser, trains: bool = False) -> None:
    default = (
        f"training tries 1 and the {usable_cores()} cores this process may use on its own "
        "steps and keeps the faster, again when its steps slow down"
        if trains
        else f"the {usable_cores()} cores this process may use; use 1 when other processes are busy"
    )
    p.add_argument(
        "--threads",
        type=argtypes.positive_int,
        default=None,
        help=f"BLAS threads (default: {default})",
    )


def _experiment_data_arguments(p: argparse.ArgumentParser) -> None:
    """The data options of compare and sweep: train's, plus the held-out part of a file
    (--target is the race's METRIC:VALUE there)."""
    _data_arguments(p, old_label="--target-column")
    p.add_argument(
        "--validation-split",
        type=float,
        default=None,
        help="fraction of a file's samples held out, taken from the end; 0.2 when not given",
    )
    _target_scaling_argument(p)


def _task_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task",
        choices=("auto", "classification", "regression"),
        default="auto",
        help="how to read the targets; auto: text, integers and whole-number floats (at most "
        "100 values) are class labels, other numbers regression",
    )


def _target_scaling_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--standardize-targets",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="regression: learn (y - mean) / std of the training targets, save the two with the "
        "model and predict in y's units; losses are then in standard units (1.0 = the "
        "targets' variance). Off: learn y as given",
    )


def _tool_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="mlp:128", help="model spec, as for train")
    _optimizer_argument(p, "the optimizer you will train with")
    p.add_argument(
        "--memory", default=None, help="memory budget, e.g. 2GB (default: half the free RAM)"
    )
    p.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    _threads_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines")


# what a resumed run may be given; every other option of train is a setting the run keeps
# (--overwrite with --resume gets its own sentence from the run folder: pick one)
KEPT_ON_RESUME = {"help", "debug", "resume", "epochs", "threads", "checkpoint_every", "quiet"}
NOT_A_SETTING = {"overwrite"}


def _optimizer_argument(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--optimizer",
        type=str.lower,
        choices=tuple(OPTIMIZERS),
        default="sgd",
        metavar="NAME",
        help=f"{what}: {', '.join(OPTIMIZERS)}",
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
    _add_datasets(sub)
    _add_info(sub)
    _add_convert(sub)
    _add_train(sub)
    _add_advise(sub)
    _add_find_batch_size(sub)
    _add_noise_scale(sub)
    _add_compare(sub)
    _add_sweep(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    for choice in sub._choices_actions:  # each subcommand's one-line help is its description
        sub.choices[choice.dest].description = choice.help[0].upper() + choice.help[1:] + "."
    return parser


def _add_datasets(sub) -> None:
    p = sub.add_parser("datasets", help="list the named datasets and whether they load offline")
    p.set_defaults(func=cmd_datasets)


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="shapes, dtype, classes and layout of a dataset or file")
    p.add_argument(
        "data",
        help=f"a dataset name ({DATASET_NAMES}), a {formats.suffixes()} file or a shard folder",
    )
    _label_argument(p)
    p.add_argument("--y", default=None, help="targets file for an .npy X")
    _task_argument(p)
    p.set_defaults(func=cmd_info)


def _add_convert(sub) -> None:
    p = sub.add_parser(
        "convert", help="write a data file as a folder of .npy shards, the fastest to stream"
    )
    p.add_argument(
        "input", help=f"a {formats.suffixes()} file (.npy with --y), or a shard folder to recut"
    )
    p.add_argument("output", help="the shard folder to write (created whole, or not at all)")
    p.add_argument("--y", default=None, help="targets file for an .npy input")
    _label_argument(p)
    _task_argument(p)
    p.add_argument(
        "--dtype",
        default=None,
        help="store features as this dtype, e.g. float32 (default: the file's; numbers read "
        "from a CSV are float32)",
    )
    p.add_argument("--shard-size", default="128MB", help="feature bytes per shard")
    p.add_argument("--overwrite", action="store_true", help="replace an existing shard folder")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_convert)


def _watch_arguments(p: argparse.ArgumentParser) -> None:
    """What train measures and logs beyond its history: the noise scale, TensorBoard."""
    p.add_argument(
        "--noise-every",
        type=argtypes.positive_int,
        default=None,
        metavar="N",
        help="measure the gradient noise scale B_simple every N steps from the step's own batch "
        "(History column b_simple; a measured step costs up to 2x); --batch-size adaptive "
        "measures it anyway",
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="write TensorBoard event files (step loss, lr, batch size, B_simple, epoch "
        "metrics) to OUT/tensorboard; needs the tensorboard extra",
    )


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model by mini-batch gradient descent", epilog=EXIT_CODES
    )
    _data_arguments(p)
    p.add_argument(
        "--model",
        default="mlp:128",
        help="softmax, logistic, linear, mlp:128, mlp:256,128+bn, mlp:128+dropout0.2",
    )
    _optimizer_argument(p, "the optimizer")
    p.add_argument("--lr", type=float, default=None, help="learning rate (optimizer default)")
    _batch_arguments(p)
    p.add_argument(
        "--epochs", type=argtypes.positive_int, default=None, help="epochs (10 for a new run)"
    )
    p.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    p.add_argument(
        "--validation-split",
        type=float,
        default=0.0,
        help="fraction held out for validation when DATA is a file",
    )
    p.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32", help="parameters' precision"
    )
    _target_scaling_argument(p)
    p.add_argument(
        "--warmup-epochs",
        type=int,
        default=0,
        help="raise the learning rate linearly over this many epochs first (what the advisor "
        "recommends when linear scaling makes it large)",
    )
    _streaming_arguments(p)
    _watch_arguments(p)
    _run_folder_arguments(p)
    _threads_argument(p, trains=True)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    settings: dict[str, list[str]] = {}  # dest -> every option string that sets it
    for action in p._actions:
        if action.dest not in KEPT_ON_RESUME | NOT_A_SETTING:
            settings.setdefault(action.dest, []).extend(action.option_strings)
    p.set_defaults(func=cmd_train, run_settings=settings)


def _batch_arguments(p: argparse.ArgumentParser) -> None:
    """The batch size, what happens to a last batch it does not fill, and BatchNorm's batch."""
    p.add_argument(
        "--batch-size",
        type=argtypes.batch_size,
        default=64,
        help='samples per step; "full" for batch gradient descent, 1 for SGD, "adaptive" to '
        "move it to the size with the most goodput (measured speed x the noise scale's "
        "statistical efficiency), the lr following by AdaScale from the lr given for 32",
    )
    p.add_argument(
        "--last-batch",
        choices=LAST_BATCH_POLICIES,
        default="keep",
        help="when the batch size does not divide m: keep the small last batch, drop it, or "
        "merge it into the one before (what BatchNorm needs)",
    )
    p.add_argument(
        "--batchnorm-stats",
        choices=("global", "per-rank"),
        default="global",
        help="under mpiexec: BatchNorm statistics over the global batch (synchronized: N ranks "
        "train what one process trains) or over each rank's share (PyTorch DDP's default)",
    )


def _streaming_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stream",
        choices=STREAM_CHOICES,
        default="auto",
        help="read the data from disk batch by batch instead of loading it; auto: for a shard "
        f"folder, and a {formats.suffixes(lazy_only=True)} file larger than a quarter of the free "
        "memory",
    )
    p.add_argument(
        "--shuffle",
        choices=("auto", *SHUFFLES),
        default="auto",
        help="each epoch's order: rows (a global permutation), blocks (permute blocks of rows, "
        "then rows in a 64 MiB buffer: what a disk serves), none; auto: rows in memory, blocks "
        "when streaming",
    )


def _run_folder_arguments(p: argparse.ArgumentParser) -> None:
    """Where train writes, and how it continues or replaces a run there."""
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
        type=argtypes.checkpoint_every,
        default="60s",  # argparse passes a text default through the type: (None, 60.0)
        metavar="N|Ns|Nm",
        help="write a checkpoint every N steps or N seconds/minutes of training, and at each "
        "epoch's end (so a kill loses at most about a minute)",
    )


def _add_advise(sub) -> None:
    p = sub.add_parser("advise", help="recommend a batch size and learning rate, with reasons")
    _data_arguments(p)
    _tool_arguments(p)
    p.add_argument(
        "--no-measure", action="store_true", help="skip the throughput and noise-scale measurements"
    )
    p.add_argument(
        "--reference",
        type=argtypes.reference,
        default=None,
        metavar="B0:LR0",
        help="a batch size and learning rate known to work, e.g. 64:0.1",
    )
    p.add_argument(
        "--from",
        dest="evidence",
        default=None,
        metavar="RUN_OR_SWEEP",
        help="what an earlier run (its folder: the noise scale it measured as it trained) or "
        "sweep (its folder: the fitted critical batch size) found, used instead of guessing",
    )
    p.set_defaults(func=cmd_advise)


def _add_find_batch_size(sub) -> None:
    p = sub.add_parser("find-batch-size", help="throughput and peak memory per batch size")
    _data_arguments(p)
    _tool_arguments(p)
    p.add_argument(
        "--candidates",
        type=argtypes.whole_batch_sizes,
        default=None,
        help="comma-separated batch sizes",
    )
    p.set_defaults(func=cmd_find_batch_size)


def _add_noise_scale(sub) -> None:
    p = sub.add_parser("noise-scale", help="the gradient noise scale B_simple (McCandlish 2018)")
    _data_arguments(p)
    _tool_arguments(p)
    small, big = NOISE_PROBE_BATCHES
    p.add_argument("--b-small", type=int, default=small, help="the small batch of each pair")
    p.add_argument("--b-big", type=int, default=big, help="the big batch of each pair")
    p.add_argument("--n-batches", type=int, default=50, help="batch pairs averaged")
    p.add_argument("--epochs", type=int, default=0, help="train this many epochs first")
    p.add_argument(
        "--train-batch-size", type=argtypes.batch_size, default=64, help="that training's batch"
    )
    p.add_argument(
        "--lr", type=float, default=None, help="learning rate of that training (optimizer's)"
    )
    p.set_defaults(func=cmd_noise_scale)


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="batch GD vs mini-batch GD vs SGD, with a report")
    _experiment_data_arguments(p)
    p.add_argument("--model", default="mlp:128", help="model spec, as for train")
    p.add_argument(
        "--batch-sizes",
        type=argtypes.batch_sizes,
        default="full,64,1",
        help="comma-separated; full = all m",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--epochs", type=int, default=10, help="budget in epochs (default 10)")
    group.add_argument("--seconds", type=float, default=None, help="budget in seconds per run")
    group.add_argument("--samples", type=int, default=None, help="budget in samples seen")
    _optimizer_argument(p, "the optimizer of every run")
    p.add_argument("--lr", type=float, default=None, help="one lr for every run (else scaled)")
    p.add_argument(
        "--reference",
        type=argtypes.reference,
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
        type=argtypes.target,
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
    _threads_argument(p, trains=True)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_compare)


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="steps to target vs batch size, best lr per batch size")
    _experiment_data_arguments(p)
    p.add_argument("--model", default="mlp:128", help="model spec, as for train")
    p.add_argument(
        "--batch-sizes",
        type=argtypes.whole_batch_sizes,
        default=",".join(map(str, DEFAULT_BATCH_SIZES)),
        help="comma-separated batch sizes to sweep",
    )
    p.add_argument(
        "--lrs",
        type=argtypes.learning_rates,
        default=",".join(map(str, DEFAULT_LEARNING_RATES)),
        help="comma-separated learning rates tried at every batch size (the best one counts)",
    )
    p.add_argument(
        "--seeds",
        type=argtypes.seeds,
        default="0,1,2",
        help="comma-separated seeds; steps are the median over them, their range is shown",
    )
    p.add_argument(
        "--target",
        type=argtypes.targets,
        default=None,
        metavar="METRIC:VALUE[,VALUE...]",
        help="what each run races to, one fit per value (val_accuracy:0.8,0.85,0.9; the last "
        "is the main one; default val_accuracy:0.9)",
    )
    p.add_argument(
        "--max-epochs", type=int, default=30, help="a run that has not reached it by then fails"
    )
    p.add_argument(
        "--max-extensions",
        type=argtypes.count,
        default=3,
        help="learning rates added beyond each edge of --lrs while the best is at that edge",
    )
    _optimizer_argument(p, "the optimizer of every run")
    p.add_argument("--out", default=None, help="folder for results.json, the plots and the report")
    _threads_argument(p, trains=True)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_sweep)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics of a saved model on a dataset or file")
    p.add_argument(
        "run",
        nargs="?",
        default=None,
        help="a run folder: its model, and by default the data it held out (a dataset's test "
        "split, or its --validation-split)",
    )
    p.add_argument("--model-file", default=None, help="a model.npz (instead of a run folder)")
    _data_arguments(p, default=None)
    p.add_argument(
        "--split",
        choices=("test", "train"),
        default="test",
        help="which split of a named dataset (a file is evaluated whole)",
    )
    p.set_defaults(func=cmd_evaluate)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="a saved model's predictions for a data file")
    p.add_argument("model", help="a run folder, or a model.npz written by minigd train")
    p.add_argument(
        "data", help=f"a {formats.suffixes()} file or a shard folder (read a chunk at a time)"
    )
    p.add_argument("--out", required=True, help="where to write them: a .npy, .csv or .parquet")
    p.add_argument(
        "--proba", action="store_true", help="a probability per class instead of the class"
    )
    _label_argument(p)
    p.set_defaults(func=cmd_predict)


def _subparser(parent: argparse.ArgumentParser):
    """Subcommand parsers that take --debug too, and list the exit codes in their help."""

    class Sub(argparse.ArgumentParser):
        def __init__(self, **kwargs):
            kwargs.setdefault("parents", [parent])
            kwargs.setdefault("epilog", EXIT_CODES_UNTRAINED)
            kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
            if "help" in kwargs:  # the subcommand's line in `minigd --help`, as its description
                kwargs.setdefault(
                    "description", kwargs["help"][0].upper() + kwargs["help"][1:] + "."
                )
            super().__init__(**kwargs)

    return Sub
