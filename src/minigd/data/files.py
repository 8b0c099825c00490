"""Reading X and y whole from .npy, .npz, .csv and .parquet files (``formats`` picks the reader),
and the rules by which targets are read.

Class labels of any type (strings, ints, bools) are mapped to 0..K-1 and the class list is kept, so
a prediction can be turned back into a label. Float targets stay floats (regression). ``np.load`` is
always called with ``allow_pickle=False``: a data file can never execute code.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from minigd._extras import require
from minigd._validation import check_choice, is_int, message
from minigd.data.arrays import as_rows, held_out_count, one_hot_labels
from minigd.data.npz import npz_headers, read_npz, read_numpy


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features and targets of one split, samples as rows.

    Attributes:
        X: (m, n) float array.
        y: (m,) int labels in 0..K-1 for classification, (m,) or (m, k) floats for regression,
            or None.
        classes: the original label of each class index, or None for regression.
        name: where it came from, for messages and reports.
        task_reason: why the targets were read as class labels or regression values.
    """

    X: np.ndarray
    y: np.ndarray | None
    classes: np.ndarray | None = None
    name: str = ""
    feature_names: tuple[str, ...] | None = field(default=None, repr=False)
    task_reason: str = field(default="", repr=False)  # why the targets were read as they were

    @property
    def task(self) -> str:
        return "classification" if self.classes is not None else "regression"

    @property
    def labels(self) -> np.ndarray | None:
        """The targets as given: original class labels (``classes[y]``) or regression values."""
        if self.y is None or self.classes is None:
            return self.y
        return self.classes[self.y]

    @property
    def n_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    def __repr__(self) -> str:
        y = "None" if self.y is None else f"{self.y.shape}"
        k = "" if self.classes is None else f", classes={len(self.classes)}"
        return f"Dataset({self.name!r}, X={self.X.shape} {self.X.dtype}, y={y}{k})"


def hold_out(data: Dataset, fraction: float, *, sample_axis: int = 0) -> tuple[Dataset, Dataset]:
    """(train, test) of a file's Dataset: the last ``fraction`` of the samples are held out, as
    ``validation_split`` does (taken from the end, as Keras does: shuffle a sorted file first)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(message("validation_split", "a fraction in (0, 1)", fraction))
    X = as_rows(data.X, sample_axis=sample_axis)
    y = data.y if data.y is None or sample_axis == 0 or data.y.ndim == 1 else data.y.T
    keep = len(X) - held_out_count(len(X), fraction)

    def part(rows: slice, suffix: str) -> Dataset:
        return Dataset(
            X[rows],
            None if y is None else y[rows],
            data.classes,
            f"{data.name}/{suffix}",
            data.feature_names,
            data.task_reason,
        )

    return part(slice(0, keep), "train"), part(slice(keep, None), "held-out")


def encode_labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps labels of any type to 0..K-1; returns (codes as intp, sorted class list).

    Labels that arrive as Python objects (pyarrow's and pandas' text columns) become the array
    NumPy infers for them (text as ``<U``, numbers as numbers), so the class list is of one
    dtype whatever the reader, and saves with the model."""
    y = np.asarray(y).ravel()
    if y.dtype.hasobject:
        y = np.array(y.tolist())
        y = y.astype(str) if y.dtype.hasobject else y
    classes, codes = np.unique(y, return_inverse=True)
    return codes.astype(np.intp), classes


TARGET_BYTES_PER_SAMPLE = 8 << 10  # the most target bytes one sample may have (1024 float64s)
MAX_WHOLE_FLOAT_CLASSES = 100  # whole-number floats with more distinct values are quantities


def decide_task(y: np.ndarray) -> tuple[str, str]:
    """(task, why): the one rule by which minigd reads targets, in files and on the command line.

    1. Text, booleans and integers are class labels.
    2. Floats that are all whole numbers, with at most 100 distinct values, are class labels
       written as floats (0.0 .. 9.0), as scikit-learn's ``type_of_target`` reads them.
    3. Other floats are regression targets.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "fc":
        return "classification", f"the targets are {_kind_name(y)}: class labels"
    finite = np.isfinite(y).all()
    whole = finite and bool(np.all(y == np.round(y)))
    distinct = len(np.unique(y)) if whole else 0
    if whole and distinct <= MAX_WHOLE_FLOAT_CLASSES:
        return "classification", (
            f"the targets are whole-number floats with {distinct} distinct values: class labels"
        )
    return "regression", "the targets are fractional (or many distinct) numbers: regression"


def _kind_name(y: np.ndarray) -> str:
    return {"b": "booleans", "i": "integers", "u": "integers"}.get(y.dtype.kind, "text")


def labels_from_columns(y: np.ndarray) -> np.ndarray:
    """1-D labels from the 2-D ways people store them: (m, 1) or (1, m) (the note's Y = (1, m))
    as they are, and one-hot rows (m, k) or one-hot columns (k, m) as the index of their 1."""
    y = np.asarray(y)
    if y.ndim != 2:
        return y
    if 1 in y.shape:
        return y.reshape(-1)
    for rows in (y, y.T):  # one-hot rows (m, k), or one-hot columns (k, m)
        labels = one_hot_labels(rows)
        if labels is not None:
            return labels
    raise ValueError(
        message(
            "class labels",
            "one label per sample: shape (m,), (m, 1), (1, m), or one-hot (m, k) or (k, m)",
            y,
            "Pass --task regression if these are regression targets.",
        )
    )


def _flat_or_none(y: np.ndarray) -> np.ndarray | None:
    """The labels of y if it can hold one label per sample, else None (2-D regression)."""
    try:
        return labels_from_columns(y)
    except ValueError:
        return None


def prepare_targets(y: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Encodes targets for ``task``: class labels to 0..K-1 with the class list, or regression
    values as float64 with None. ``task="auto"`` applies ``decide_task``."""
    check_choice("task", task, ("auto", "classification", "regression"))
    y = np.asarray(y)
    if task == "auto":
        task = decide_task(_flat_or_none(y))[0] if _flat_or_none(y) is not None else "regression"
    if task == "classification":
        return encode_labels(labels_from_columns(y))
    try:
        return y.astype(np.float64), None
    except ValueError as exc:
        raise ValueError(
            f"regression targets must be numbers; {exc}. Use task='classification' "
            "for class labels."
        ) from exc


def read_npy(path: Path, y_path: str | os.PathLike | None, target, header, task: str) -> Dataset:
    """X from a ``.npy`` file, and y from ``y_path`` if given."""
    X = read_numpy(path)
    y = None if y_path is None else read_numpy(y_path)
    return _dataset(X, y, task, path.name)


def read_npz_file(path: Path, y, target, header, task: str) -> Dataset:
    """Arrays ``X`` and (optionally) ``y`` of an ``.npz`` archive."""
    archive = read_npz(path, {"X": None, "y": None})  # other members are never decompressed
    if "X" not in archive:
        raise KeyError(
            f"{path} must hold an array named 'X' (and optionally 'y'); it "
            f"holds {sorted(archive)}. Save with np.savez(path, X=X, y=y)."
        )
    return _dataset(archive["X"], archive.get("y"), task, path.name)


def npz_headers_and_targets(path: str | os.PathLike, task: str = "auto") -> Dataset:
    """An ``.npz``'s X as its header says (a read-only view of zeros of that shape, which takes
    no memory) and its targets read: what ``minigd info`` shows without decompressing features
    that may be far larger than the file."""
    path = Path(path)
    shapes = npz_headers(path)
    if "X" not in shapes:
        raise KeyError(
            f"{path} must hold an array named 'X' (and optionally 'y'); it holds "
            f"{sorted(shapes)}. Save with np.savez(path, X=X, y=y)."
        )
    shape, dtype = shapes["X"]
    X = np.broadcast_to(np.zeros((), dtype), shape)
    most = max(shape, default=1) * TARGET_BYTES_PER_SAMPLE
    y = read_npz(path, {"y": most}).get("y") if "y" in shapes else None
    return _dataset(X, y, task, path.name)


def read_csv_file(path: Path, y, target, header: bool | None, task: str) -> Dataset:
    """A CSV table, one row per sample; ``header`` None detects a row of column names."""
    names, columns = _read_csv(path, header)
    return _from_table(names, columns, target, task, path.name)


def read_parquet_file(path: Path, y, target, header, task: str) -> Dataset:
    """A Parquet table, one row per sample, read whole."""
    names, columns = _read_parquet(path)
    return _from_table(names, columns, target, task, path.name)


def _dataset(X: Any, y: Any, task: str, name: str, features=None) -> Dataset:
    X = np.asarray(X)
    if y is None:
        return Dataset(X, None, None, name, features)
    y = np.asarray(y)
    flat = _flat_or_none(y)
    why = (
        f"task={task} was asked for"
        if task != "auto"
        else (
            decide_task(flat)[1]
            if flat is not None
            else "the targets have several columns: regression"
        )
    )
    codes, classes = prepare_targets(y, task)
    return Dataset(X, codes, classes, name, features, why)


def _read_csv(path: Path, header: bool | None) -> tuple[list[str], list[np.ndarray]]:
    """(column names, typed columns) of a CSV file: pyarrow's reader when installed, else the
    standard csv module with NumPy's conversions. Either way a column is int64 if every field is
    a whole number, float64 if every field is a number, and text otherwise."""
    first = _first_row(path)
    if header is None:  # a first row with any non-numeric field holds the column names
        header = not all(_is_number(v) for v in first)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        names, columns = _read_csv_numpy(path, header, len(first))
    else:
        names, columns = _read_csv_arrow(path, header, len(first))
    if not len(columns[0]):
        raise ValueError(f"{path} has a header but no samples.")
    return names, columns


def _first_row(path: Path) -> list[str]:
    for row in _csv_rows(path):
        return row
    raise ValueError(f"{path} is empty; it must hold one row per sample.")


def _csv_rows(path: Path):
    """The non-empty rows of a CSV file, with a sentence naming the file when it is not UTF-8."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            yield from (row for row in csv.reader(f) if row)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8 CSV."
        ) from None


def _ragged(path: Path, width: int) -> ValueError:
    """The error for the first line whose field count differs from the first row's."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if row and len(row) != width:
                return ValueError(
                    f"{path} line {line} has {len(row)} fields; expected {width} like the first "
                    "row. Fix or remove that line."
                )
    return ValueError(f"{path} is not a readable CSV file.")


def _read_csv_arrow(path: Path, header: bool, width: int) -> tuple[list[str], list[np.ndarray]]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = None if header else [str(i) for i in range(width)]
    try:
        table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=names))
    except pa.ArrowInvalid as exc:
        if "columns, got" in str(exc):
            raise _ragged(path, width) from None
        raise ValueError(f"{path} is not a readable CSV file: {exc}") from None
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_binary(column.type):
            raise ValueError(f"{path} is not UTF-8 text (column {name!r}); save it as UTF-8 CSV.")
    columns = [c.to_numpy(zero_copy_only=False) for c in table.columns]
    return [n.strip() for n in table.column_names], columns


def _read_csv_numpy(path: Path, header: bool, width: int) -> tuple[list[str], list[np.ndarray]]:
    rows = list(_csv_rows(path))
    names = [v.strip() for v in rows[0]] if header else [str(i) for i in range(width)]
    body = rows[1:] if header else rows
    if any(len(row) != width for row in body):
        raise _ragged(path, width)
    text = np.array([[v.strip() for v in row] for row in body], dtype=str).reshape(-1, width)
    return names, [_typed(text[:, j]) for j in range(width)]


def _typed(column: np.ndarray) -> np.ndarray:
    """A text column as int64 if every field is a whole number, float64 if a number, else text."""
    for dtype in (np.int64, np.float64):
        try:
            return column.astype(dtype)
        except ValueError:
            continue
    return column


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_parquet(path: Path) -> tuple[list[str], list[np.ndarray]]:
    pq = require("pyarrow.parquet", "data", "reading Parquet")
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(f"{path} is not a readable Parquet file ({exc}).") from None
    return list(table.column_names), [c.to_numpy(zero_copy_only=False) for c in table.columns]


def _from_table(names, columns, target, task, name) -> Dataset:
    index = label_index(names, target)[0]
    y = None if index is None else columns[index]
    feature_cols = [c for j, c in enumerate(columns) if j != index]
    if not feature_cols:
        raise ValueError(f"{name} has only the target column; it needs feature columns too.")
    for j, (column_name, column) in enumerate(zip(names, columns, strict=True)):
        if j != index and np.asarray(column).dtype.kind not in "iufb":
            raise ValueError(
                f"{name}: every column but the target must be numeric; column "
                f"{column_name!r} holds text. Encode text features as numbers first, or pass "
                f"target={column_name!r} if it is the target."
            )
    X = np.column_stack([np.asarray(c, dtype=np.float64) for c in feature_cols])
    features = tuple(n for j, n in enumerate(names) if j != index)
    return _dataset(X, y, task, name, features)


LABEL_NAMES = ("label", "labels", "target", "class", "y", "digit")  # what a label column is called


def label_index(names: list[str], target: int | str | bool | None) -> tuple[int | None, str]:
    """(the index of a table's label column, how it was chosen): the column ``target`` names;
    else the one column whose name says it is the label (``LABEL_NAMES``: Kaggle's train.csv has
    ``label`` first); else the last column. ``target=False``: the table has none (None)."""
    if target is False:  # a table of features only (new data to predict)
        return None, "no label column"
    if target is not None:
        return column_index(names, target), "chosen with --label"
    named = [i for i, name in enumerate(names) if str(name).strip().lower() in LABEL_NAMES]
    if len(named) == 1:
        return named[0], "its name says it is the label"
    if named:
        return len(names) - 1, "the last column; several are named like a label: pass --label"
    return len(names) - 1, "the last column: no column is named label, target, class or y"


def table_columns(path: Path) -> list[str]:
    """The column names of a CSV file (its first row when that is a header, else 0, 1, ...)."""
    first = _first_row(path)
    header = not all(_is_number(v) for v in first)
    return [v.strip() for v in first] if header else [str(i) for i in range(len(first))]


def column_index(names: list[str], target: int | str) -> int:
    """The index of a table's target column, by name or index; a string of digits that names no
    column is an index (``--target 0`` on the command line)."""
    if isinstance(target, str) and target not in names and target.lstrip("-").isdigit():
        target = int(target)
    if is_int(target):
        if not -len(names) <= target < len(names):
            raise IndexError(
                message("target", f"a column index in [-{len(names)}, {len(names)})", target)
            )
        return int(target) % len(names)
    if target not in names:
        raise KeyError(
            message(
                "target",
                f"a column name, one of {names[:10]}",
                target,
                "Pass header=True if the first row holds the names.",
            )
        )
    return names.index(target)
