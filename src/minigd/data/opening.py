"""Opening a path as sources of its features and targets, nothing loaded (``formats`` picks the
opener by the path's format):

    big.npy (+ labels.npy)       NpySource, read with positioned reads
    a folder of shards           ConcatSource of NpySources (written by ``minigd convert``)
    table.parquet                ParquetSource: feature columns and the target column
    data.h5 / data.hdf5          HDF5Source: datasets "X" and "y"
    .npz, .csv                   read into memory (ArraySource): convert large ones first

Only the targets are scanned, once, to find the classes (a target column is a small part of a
data set, 1/784 of MNIST-shaped rows); a shard folder's manifest records them, so it is not.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minigd.data.arrays import one_hot_labels
from minigd.data.columnar import HDF5Source, ParquetSource, parquet_file
from minigd.data.files import MAX_WHOLE_FLOAT_CLASSES, Dataset, label_index
from minigd.data.fingerprint import fingerprint
from minigd.data.npz import CorruptFileError
from minigd.data.sources import (
    ArraySource,
    ConcatSource,
    LabelTable,
    NpySource,
    OneHotLabels,
    Source,
)

MANIFEST = "minigd-shards.json"
SHARDS_FORMAT = "minigd-shards-1"
SCAN_ROWS = 1 << 20  # targets are scanned a million rows at a time


@dataclass(frozen=True, eq=False)
class SourceData:
    """The features and targets of a training set as sources (see ``Dataset`` for arrays).

    Attributes:
        X: rows of features. y: rows of targets as stored (original labels), or None.
        classes: the sorted class labels, or None for regression.
        task_reason: why the targets were read as classes or values.
    """

    X: Source
    y: Source | None
    classes: np.ndarray | None = None
    name: str = ""
    task_reason: str = ""
    feature_names: tuple[str, ...] | None = None

    @property
    def task(self) -> str:
        return "classification" if self.classes is not None else "regression"

    @property
    def n_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    @property
    def in_memory(self) -> bool:
        return self.X.in_memory

    def __len__(self) -> int:
        return self.X.n_rows

    def split(self, n_val: int) -> tuple[SourceData, SourceData]:
        """(all but the last n_val rows, the last n_val rows): a validation split from the end."""
        keep = len(self) - n_val

        def part(lo: int, hi: int) -> SourceData:
            y = None if self.y is None else self.y.subset(lo, hi)
            return SourceData(self.X.subset(lo, hi), y, self.classes, self.name, self.task_reason)

        return part(0, keep), part(keep, len(self))

    def __repr__(self) -> str:
        k = "" if self.classes is None else f", classes={len(self.classes)}"
        return f"SourceData({self.name!r}, X={self.X.shape} {self.X.dtype}{k})"


SAMPLE_ROWS = 1 << 15  # rows a measurement on a streamed set reads into memory


def sample(data: SourceData, rows: int = SAMPLE_ROWS) -> Dataset:
    """Up to ``rows`` rows of a source in memory, as evenly spread whole blocks (one read each):
    what the batch-size finder and the noise probe measure on when the set is larger than RAM."""
    n = min(rows, len(data))
    block = max(1, min(data.X.block_rows, n))
    count = -(-n // block)
    starts = np.unique(np.linspace(0, len(data) - block, count).astype(np.int64))
    index = np.unique(np.concatenate([np.arange(s, s + block) for s in starts]))[:n]
    X = np.empty((len(index), *data.X.row_shape), data.X.dtype)
    data.X.read_rows(index, X)
    raw = None
    if data.y is not None:
        raw = np.empty((len(index), *data.y.row_shape), data.y.dtype)
        data.y.read_rows(index, raw)
    return _dataset(data, X, raw)


def _dataset(data: SourceData, X: np.ndarray, raw_y: np.ndarray | None) -> Dataset:
    """A Dataset of rows read from ``data``: targets as stored become codes of its classes."""
    if raw_y is None:
        return Dataset(X, None, None, data.name, data.feature_names, data.task_reason)
    y = raw_y.astype(np.float64) if data.classes is None else _codes(raw_y, data.classes)
    return Dataset(X, y, data.classes, data.name, data.feature_names, data.task_reason)


def _codes(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    labels = labels.reshape(-1)
    return np.searchsorted(classes, labels.astype(str) if labels.dtype.kind == "O" else labels)


def on_disk_bytes(path: str | os.PathLike) -> int:
    """Bytes a data file, or every file of a shard folder, takes on disk."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.iterdir() if f.is_file())
    return p.stat().st_size


def open_npy(path: Path, y: str | os.PathLike | None, target, task: str) -> SourceData:
    """A ``.npy`` X (and its targets' ``.npy``), read with positioned reads."""
    ys = None if y is None else NpySource(y)
    return source_data(feature_rows(NpySource(path)), ys, task, path.name)


def feature_rows(X: NpySource) -> NpySource:
    """A 1-D .npy of features as rows of one feature, as loading it whole reads it: the bytes are
    the same, so only the row shape changes."""
    if not X.row_shape:
        X.row_shape = (1,)
    return X


def in_memory(data: Dataset, path: Path) -> SourceData:
    """The sources of data read whole (a format with no chunked reads: .npz, CSV)."""
    y_source = None if data.y is None else ArraySource(data.labels, f"{path}:y")
    X = ArraySource(np.ascontiguousarray(data.X), str(path))
    return SourceData(X, y_source, data.classes, path.name, data.task_reason, data.feature_names)


def read_whole(data: SourceData) -> Dataset:
    """Every row of a source in memory, targets coded as ``Dataset`` holds them: what loading
    a format read lazily (HDF5, a shard folder) is."""
    raw = None if data.y is None else data.y.read(0, len(data))
    return _dataset(data, data.X.read(0, len(data)), raw)


def source_data(X: Source, y: Source | None, task: str, name: str, features=None) -> SourceData:
    """The SourceData of a feature source and its targets, the classes found by a scan."""
    if X.dtype.kind not in "iufb":
        raise TypeError(f"{X.name} holds {X.dtype}; features must be numbers.")
    if y is None:
        return SourceData(X, None, None, name, "", features)
    if y.n_rows != X.n_rows:
        raise ValueError(
            f"{X.name} holds {X.n_rows} rows but the targets {y.name} hold {y.n_rows}; they "
            "must match row for row."
        )
    if task != "regression" and _one_hot(y):
        y = OneHotLabels(y)
    classes, why = scan_targets(y, task)
    return SourceData(X, y, classes, name, why, features)


def _one_hot(y: Source) -> bool:
    """Whether y holds one-hot rows, judged on its first rows (every later row is checked as
    it is read)."""
    if len(y.row_shape) != 1 or y.row_shape[0] < 2 or y.n_rows == 0:
        return False
    return one_hot_labels(y.read(0, min(y.n_rows, SCAN_ROWS))) is not None


class LabelSet:
    """The distinct targets seen chunk by chunk, and whether they can be class labels, by
    ``decide_task``'s rule: text, booleans and integers are labels; whole-number floats with at
    most 100 distinct values are labels; other floats are regression values."""

    def __init__(self) -> None:
        self.values: set = set()
        self.kind = ""
        self.fractional = False  # a float that is not whole, NaN/inf, or too many distinct
        self.columns = 1  # values per sample

    def add(self, y: np.ndarray) -> None:
        self.kind = self.kind or y.dtype.kind
        if self.fractional:
            return
        if y.ndim == 2 and y.shape[1] > 1:  # several values per sample (one-hot rows are read
            self.fractional = True  # as labels before this): regression, as loading reads them
            self.columns = y.shape[1]
            return
        y = y.reshape(-1)
        if y.dtype.kind == "f" and (not np.isfinite(y).all() or not np.all(y == np.round(y))):
            self.fractional = True
            return
        self.values.update(np.unique(y).tolist())
        if y.dtype.kind == "f" and len(self.values) > MAX_WHOLE_FLOAT_CLASSES:
            self.fractional = True

    def summary(self, task: str) -> tuple[list | None, str]:
        """(sorted classes or None, why) for ``task`` ("auto" applies the rule)."""
        if task == "regression":
            return None, "task=regression was asked for"
        several = self.columns > 1
        if task == "auto" and self.fractional:
            if several:
                return None, "the targets have several columns: regression"
            return None, "the targets are fractional (or many distinct) numbers: regression"
        if self.fractional:
            what = f"{self.columns} values per sample" if several else "fractional values"
            raise ValueError(f"task=classification, but the targets hold {what}.")
        values = {str(v) for v in self.values} if self.kind in "OSU" else self.values
        classes = sorted(values)
        if task == "classification":
            return classes, "task=classification was asked for"
        what = {"b": "booleans", "i": "integers", "u": "integers", "f": "whole-number floats"}
        detail = f" with {len(classes)} distinct values" if self.kind == "f" else ""
        return classes, f"the targets are {what.get(self.kind, 'text')}{detail}: class labels"


def scan_targets(y: Source, task: str) -> tuple[np.ndarray | None, str]:
    """(sorted classes or None, why) from one pass over the targets (``LabelSet``'s rule)."""
    labels = LabelSet()
    if task != "regression":
        for lo in range(0, y.n_rows, SCAN_ROWS):
            labels.add(y.read(lo, min(y.n_rows, lo + SCAN_ROWS)))
            if labels.fractional and task == "auto":
                break
    classes, why = labels.summary(task)
    return (None if classes is None else np.array(classes)), why


def parquet_columns(p: Path) -> list[str]:
    return list(parquet_file(p).schema_arrow.names)


def open_parquet(p: Path, y, target, task: str) -> SourceData:
    """A Parquet table's feature columns and target column, read a row group at a time."""
    names = parquet_columns(p)
    index = label_index(names, target)[0]
    features = [n for j, n in enumerate(names) if j != index]
    if not features:
        raise ValueError(f"{p.name} has only the target column; it needs feature columns too.")
    X = ParquetSource(p, features)
    y = None if index is None else ParquetSource(p, [names[index]])
    return source_data(X, y, task, p.name, tuple(features))


def open_hdf5(p: Path, y, target, task: str) -> SourceData:
    """Datasets "X" and (optionally) "y" of an HDF5 file, read a chunk at a time."""
    X = HDF5Source(p, "X")
    try:
        y = HDF5Source(p, "y")
    except KeyError:
        y = None
    return source_data(X, y, task, p.name)


def open_shards(folder: Path, y, target, task: str) -> SourceData:
    """A folder written by ``minigd convert``: its shards, and the classes its manifest records."""
    manifest = read_manifest(folder)
    xs, ys = [], []
    for i, shard in enumerate(manifest["shards"]):
        for role, parts in (("x", xs), ("y", ys)):
            if shard.get(role) is None:
                continue
            path = _shard_path(folder, shard[role])
            source = NpySource(path)
            if source.n_rows != shard["rows"]:
                raise CorruptFileError(
                    f"{source.path} holds {source.n_rows} rows; the manifest of {folder} says "
                    f"shard {i} has {shard['rows']}. The folder is incomplete or was edited: "
                    "convert the data again."
                )
            _check_unchanged(path, shard.get("sha256", {}).get(role))
            parts.append(feature_rows(source) if role == "x" else source)
    X = ConcatSource(xs, str(folder))
    y = ConcatSource(ys, f"{folder} (targets)") if ys else None
    if y is not None and manifest.get("label_table"):
        y = LabelTable(y, np.array(manifest["label_table"]))
    classes = manifest.get("classes")
    why = manifest.get("task_reason", "")
    if y is not None and classes is None and task == "classification":
        classes, why = scan_targets(y, task)[0], "task=classification was asked for"
    elif classes is not None and task == "regression":
        classes, why = None, "task=regression was asked for"
    classes = None if classes is None else np.array(classes)
    features = manifest.get("feature_names")
    return SourceData(
        X, y, classes, folder.name, why, None if features is None else tuple(features)
    )


def _check_unchanged(path: Path, sha256: str | None) -> None:
    """Refuses a shard whose content is not what ``convert`` wrote (its digest in the manifest:
    the whole file up to 64 MiB, 64 blocks of 64 KiB beyond, so opening stays cheap)."""
    if sha256 is not None and fingerprint(path)["sha256"] != sha256:
        raise CorruptFileError(
            f"{path} is not the shard minigd convert wrote: its content changed since. Convert "
            "the data again (a run must not train on edited data without knowing it)."
        )


def _shard_path(folder: Path, name: str) -> Path:
    """A shard's file, which must be a plain name inside the folder."""
    if not isinstance(name, str) or Path(name).name != name:
        raise CorruptFileError(f"{folder / MANIFEST} names a shard outside its folder: {name!r}.")
    path = folder / name
    if not path.exists():
        raise CorruptFileError(
            f"{path} is missing; the manifest of {folder} lists it. Convert the data again."
        )
    return path


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.exists():
        raise FileNotFoundError(
            f"{folder} is a folder without {MANIFEST}; pass a data file, or a shard folder "
            "written by minigd convert."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptFileError(
            f"{path} is not valid JSON ({exc}); convert the data again."
        ) from None
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != SHARDS_FORMAT
        or not isinstance(shards, list)
        or not all(isinstance(s, dict) and isinstance(s.get("rows"), int) for s in shards)
    ):
        raise CorruptFileError(f"{path} is not a {SHARDS_FORMAT} manifest; convert the data again.")
    return manifest
