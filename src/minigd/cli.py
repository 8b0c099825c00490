"""The ``minigd`` command: argparse subcommands that parse, call the library, and print.

No logic lives here beyond turning arguments into library calls and results into lines of text.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from minigd._version import __version__


def _load_data(spec: str, sample_axis: int = 0, target=None):
    """A dataset name gives (train, test); a file gives (data, None)."""
    from minigd.data import datasets, load_arrays

    if spec in datasets.REGISTRY:
        return datasets.load(spec)
    if not Path(spec).exists():
        raise SystemExit(
            f"minigd: {spec!r} is neither a dataset ({', '.join(datasets.names())}) "
            "nor an existing file."
        )
    data = load_arrays(spec, target=target)
    if sample_axis == 1:
        from dataclasses import replace

        data = replace(data, X=np.ascontiguousarray(np.asarray(data.X).T))
    return data, None


def cmd_datasets(args: argparse.Namespace) -> int:
    from minigd.data import datasets

    print(f"{'name':<10} {'train':>7} {'test':>7} {'features':>8} {'classes':>7}  offline  source")
    for info in datasets.REGISTRY.values():
        offline = "yes" if info.available else "no"
        print(
            f"{info.name:<10} {info.n_train:>7} {info.n_test:>7} {info.n_features:>8} "
            f"{info.n_classes:>7}  {offline:<7}  {info.description} (needs {info.needs})"
        )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    train, test = _load_data(args.data, target=args.target)
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
    X = np.asarray(train.X)
    if X.ndim == 2:
        m, n = X.shape
        if train.y is not None and len(train.y) == n != m:
            print(
                f"  layout: y has {n} entries, as many as X has columns: samples are columns "
                f"(the note's X = (features, samples)); pass --sample-axis 1."
            )
            m, n = n, m
        elif m < n:
            print(
                f"  layout hint: {m} rows and {n} columns; if columns are samples (the note's "
                f"X = (features, samples)), pass --sample-axis 1."
            )
        else:
            print(f"  layout: {m} samples as rows, {n} features (sample_axis=0).")
        rule = (
            "m <= ~2000: batch gradient descent (--batch-size full)"
            if m <= 2000
            else ("m > 2000: mini-batches, a power of two from 32 to 1024")
        )
        print(f"  the note's rule for m = {m}: {rule}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minigd",
        description="Mini-batch gradient descent, and which batch size to use.",
    )
    parser.add_argument("--version", action="version", version=f"minigd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("datasets", help="list the named datasets and whether they load offline")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("info", help="shapes, dtype, classes and layout of a dataset or file")
    p.add_argument("data", help="a dataset name (digits, mnist-5k, mnist) or a data file")
    p.add_argument("--target", default=None, help="target column of a CSV/Parquet file")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (ValueError, TypeError, KeyError, OSError, ImportError) as exc:
        print(f"minigd {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
