"""The data formats minigd reads: one table, and the three ways every command reads a path.

    format    suffixes        holds                                   open      read whole
    npy       .npy            X; its targets in a second .npy (y=)    lazily    np.load
    npz       .npz            arrays X and y                          whole     np.load
    csv       .csv            a row per sample, a target column       whole     pyarrow / csv
    parquet   .parquet        a row per sample, a target column       lazily    pyarrow
    hdf5      .h5, .hdf5      datasets X and y                        lazily    its source
    shards    (a folder)      .npy shards written by minigd convert   lazily    its source

- ``open_source(path)``: the path's sources, nothing loaded (``SourceData``); what training
  streams. Formats read only whole (npz, csv) are read and held in memory.
- ``load_arrays(path)``: the whole data in memory (``Dataset``). Formats that open lazily and
  have no reader of their own are read whole through their source.
- ``read_chunks(path)``: (X, y) a chunk at a time, whatever the size: what ``convert`` writes
  shards from.

Adding a format is a row here and its reader (a Source in ``sources``/``columnar`` for a format
read lazily, a function in ``files`` for one read whole). Help texts and error messages list
the formats from this table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minigd._validation import check_choice
from minigd.data import chunks, files, opening
from minigd.data.files import Dataset
from minigd.data.opening import SourceData

Chunks = tuple[Iterator[tuple[Any, Any]], int | None, list[str] | None]


@dataclass(frozen=True)
class Format:
    """One row of the table: a format's suffixes, and how it is opened, read whole and chunked.

    Every reader takes the same arguments, ``open(path, y, target, task)``,
    ``read(path, y, target, header, task)`` and ``chunks(path, y, target)`` (the targets' file
    of a ``.npy``, a table's target column, CSV's header, the task), and ignores those its
    format has no use for."""

    name: str
    suffixes: tuple[str, ...]
    lazy: bool  # opened without reading the data (else read whole and held in memory)
    open: Callable[..., SourceData]
    read: Callable[..., Dataset]
    chunks: Callable[..., Chunks]


def _held_in_memory(path: Path, y, target, task) -> SourceData:
    """The sources of a format read only whole: the data read, then held in memory."""
    return opening.in_memory(load_arrays(path, target=target, task=task), path)


def _read_through_source(path: Path, y, target, header, task) -> Dataset:
    return opening.read_whole(open_source(path, y=y, target=target, task=task))


def _chunks_of_source(path: Path, y, target) -> Chunks:
    return chunks.of_source(open_source(path, y=y, target=target, task="regression"))


FORMATS: tuple[Format, ...] = (
    # name    suffixes   lazy   open as a source  read whole  read in chunks
    Format("npy", (".npy",), True, opening.open_npy, files.read_npy, _chunks_of_source),
    Format("npz", (".npz",), False, _held_in_memory, files.read_npz_file, chunks.of_npz),
    Format("csv", (".csv",), False, _held_in_memory, files.read_csv_file, chunks.of_csv),
    Format("parquet", (".parquet",), True, opening.open_parquet, files.read_parquet_file,
           _chunks_of_source),
    Format("hdf5", (".h5", ".hdf5"), True, opening.open_hdf5, _read_through_source,
           _chunks_of_source),
)  # fmt: skip
SHARDS = Format("shards", (), True, opening.open_shards, _read_through_source, _chunks_of_source)
BY_SUFFIX = {suffix: f for f in FORMATS for suffix in f.suffixes}


def suffixes(lazy_only: bool = False) -> str:
    """ ".npy/.npz/.csv/.parquet/.h5/.hdf5": the suffixes minigd reads, for help texts."""
    return "/".join(s for f in FORMATS if f.lazy or not lazy_only for s in f.suffixes)


def format_of(path: str | os.PathLike) -> Format:
    """The Format of a path (a folder is a shard folder), or a sentence listing them."""
    p = Path(path)
    if p.is_dir():
        return SHARDS
    found = BY_SUFFIX.get(p.suffix.lower())
    if found is None:
        raise ValueError(
            f"{p.name}: minigd reads a {suffixes()} file or a shard folder; convert other "
            "formats to one of those (a table to .csv or .parquet, arrays to .npz)."
        )
    return found


def is_streamable(path: str | os.PathLike) -> bool:
    """Whether ``open_source`` reads this path lazily (not by loading it into memory)."""
    p = Path(path)
    if p.is_dir():
        return (p / opening.MANIFEST).exists()
    kind = BY_SUFFIX.get(p.suffix.lower())
    return kind is not None and kind.lazy


def open_source(
    path: str | os.PathLike,
    *,
    y: str | os.PathLike | None = None,
    target: int | str | None = None,
    task: str = "auto",
) -> SourceData:
    """The sources of a data file or shard folder, with its classes; nothing is loaded from a
    format opened lazily (see the table above).

    Args:
        path: a data file or a shard folder.
        y: for ``.npy``, the ``.npy`` file of targets.
        target: for a table (Parquet, CSV), the target column by name or index; default the last.
        task: "auto" (minigd's rule, ``files.decide_task``), "classification" or "regression".
    """
    check_choice("task", task, ("auto", "classification", "regression"))
    p = _existing(path)
    kind = format_of(p)
    _check_targets_file(kind, p, y)
    return kind.open(p, y, target, task)


def load_arrays(
    path: str | os.PathLike,
    *,
    y_path: str | os.PathLike | None = None,
    target: int | str | None = None,
    header: bool | None = None,
    task: str = "auto",
) -> Dataset:
    """Loads features and targets from a data file or shard folder, whole.

    Args:
        path: a file of a format in the table above, or a shard folder.
        y_path: for ``.npy``, the file that holds y (optional: X alone is allowed).
        target: the target column of a table, by name or index (negative counts from the end);
            default the last column.
        header: for CSV, whether the first row holds column names; None detects it (a first row
            with any non-numeric field is a header).
        task: ``"auto"`` (``decide_task``'s rule), ``"classification"`` or ``"regression"``.

    Returns:
        A Dataset with samples as rows. X keeps the file's layout; pass ``sample_axis=1`` to
        MiniBatches or fit if the file holds the note's (features, samples) layout.
    """
    check_choice("task", task, ("auto", "classification", "regression"))
    p = _existing(path)
    kind = format_of(p)
    _check_targets_file(kind, p, y_path)
    return kind.read(p, y_path, target, header, task)


def read_chunks(
    path: str | os.PathLike, y: str | os.PathLike | None = None, target: int | str | None = None
) -> Chunks:
    """(an iterator of (X chunk, y chunk or None) as stored, the total rows if known, the feature
    names if the format has them): any format, a chunk in memory at a time."""
    p = _existing(path)
    kind = format_of(p)
    _check_targets_file(kind, p, y)
    return kind.chunks(p, y, target)


def table_columns(path: str | os.PathLike) -> list[str] | None:
    """A table's column names (CSV, Parquet), from its header alone; None for other formats,
    which hold their targets apart from their features."""
    p = Path(path)
    kind = p.suffix.lower()
    if not p.is_file() or kind not in (".csv", ".parquet"):
        return None
    return files.table_columns(p) if kind == ".csv" else opening.parquet_columns(p)


def label_column(path: str | os.PathLike, label: int | str | None = None) -> str | None:
    """Which column of a table is the label and why, as one phrase for what a command prints
    first; None for a format that is not a table."""
    names = table_columns(path)
    if names is None:
        return None
    index, how = files.label_index(names, label)
    return f"label column {names[index]!r} ({how})"


def _existing(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"no such data file or folder: {p}. Check the path, or use a dataset name such as "
            "'digits' or 'mnist-5k'."
        )
    return p


def _check_targets_file(kind: Format, path: Path, y) -> None:
    if y is not None and kind.name != "npy":
        raise ValueError(f"y= gives the targets of a .npy X; {path.name} holds its own targets.")
