"""Reading a data file a chunk at a time, whatever its size: what ``convert`` writes shards from.

A format opened lazily is read through its source, a range of rows at a time; an ``.npz`` member
is decompressed as a stream and a CSV file is parsed a block at a time (pyarrow's streaming
reader, or the csv module). Memory is one chunk.
"""

from __future__ import annotations

import contextlib
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from minigd.data.files import label_index
from minigd.data.npz import CorruptFileError, read_npy_header
from minigd.data.opening import SourceData

CHUNK_ROWS = 1 << 16


def of_source(data: SourceData) -> tuple[Iterator, int, list[str] | None]:
    """(X, y) chunks of CHUNK_ROWS rows of an open source, the rows, the feature names."""
    total = data.X.n_rows

    def chunks():
        for lo in range(0, total, CHUNK_ROWS):
            hi = min(total, lo + CHUNK_ROWS)
            yield data.X.read(lo, hi), None if data.y is None else data.y.read(lo, hi)

    names = None if data.feature_names is None else list(data.feature_names)
    return chunks(), total, names


def of_npz(src: Path, y, target) -> tuple[Iterator, None, None]:
    """X and y members of an .npz archive, streamed: only a chunk is decompressed at a time."""
    return _npz_chunks(src), None, None


def _npz_chunks(src: Path) -> Iterator:
    """X and y members of an .npz archive, streamed: only a chunk is decompressed at a time.
    A damaged archive gets a sentence naming the file, whenever the damage is met."""
    try:
        yield from _npz_members(src)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise CorruptFileError(
            f"{src} is not a readable .npz archive ({exc}): it is truncated or not an npz. "
            "Save it again with np.savez(path, X=X, y=y)."
        ) from None


def _npz_members(src: Path) -> Iterator:
    """The rows of X and y, after both headers are read and their row counts compared: X and y
    of different lengths are refused before a chunk is yielded, so before a shard is written."""
    with zipfile.ZipFile(src) as archive, contextlib.ExitStack() as members:
        names = set(archive.namelist())
        if "X.npy" not in names:
            raise KeyError(f"{src} must hold an array named 'X' (and optionally 'y').")
        fx = members.enter_context(archive.open("X.npy"))
        x_shape, x_dtype = _npy_header(fx, f"{src}:X")
        ys = None
        if "y.npy" in names:
            fy = members.enter_context(archive.open("y.npy"))
            y_shape, y_dtype = _npy_header(fy, f"{src}:y")
            if y_shape[0] != x_shape[0]:
                raise ValueError(
                    f"{src}: X holds {x_shape[0]} rows but y holds {y_shape[0]}; they must "
                    "match row for row (one target per sample, in the first axis)."
                )
            ys = _npy_rows(fy, y_shape, y_dtype, f"{src}:y")
        for x in _npy_rows(fx, x_shape, x_dtype, f"{src}:X"):
            yield x, None if ys is None else next(ys)


def _npy_header(f, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a .npy stream (an open file or zip member), which must hold numeric rows
    in C order."""
    header = read_npy_header(f)
    if header is None:
        raise ValueError(f"{where} is a structured array (.npy format 3.0); save numeric rows.")
    shape, fortran, dtype = header
    if dtype.hasobject or (fortran and len(shape) > 1) or not shape:
        raise ValueError(f"{where} is not an array of numeric rows in C order; re-save it.")
    return shape, dtype


def _npy_rows(f, shape: tuple[int, ...], dtype: np.dtype, where: str) -> Iterator[np.ndarray]:
    """Chunks of CHUNK_ROWS rows of a .npy stream whose header has been read."""
    row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    for lo in range(0, shape[0], CHUNK_ROWS):
        n = min(CHUNK_ROWS, shape[0] - lo)
        data = f.read(n * row)
        if len(data) != n * row:
            raise CorruptFileError(f"{where} is truncated at row {lo + len(data) // max(row, 1)}.")
        yield np.frombuffer(data, dtype).reshape(n, *shape[1:])


def of_csv(src: Path, y, target) -> tuple[Iterator, None, list[str]]:
    """A CSV file's rows a block at a time (pyarrow's streaming reader, else the csv module);
    a parse error names the file."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:
        return _csv_module_chunks(src, target)
    try:
        reader = pacsv.open_csv(src, read_options=pacsv.ReadOptions(block_size=8 << 20))
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{src} is not a readable CSV file: {exc}") from None
    names = list(reader.schema.names)
    index = label_index(names, target)[0]

    def chunks():
        try:
            for batch in reader:
                cols = [c.to_numpy(zero_copy_only=False) for c in batch.columns]
                yv = cols.pop(index)
                yield np.column_stack(cols).astype(np.float32, copy=False), yv
        except (pa.ArrowInvalid, ValueError) as exc:
            raise ValueError(f"{src} is not a readable CSV file: {exc}") from None

    return chunks(), None, [n for j, n in enumerate(names) if j != index]


def _csv_module_chunks(src: Path, target) -> tuple[Iterator, None, list[str]]:
    import csv

    f = open(src, newline="", encoding="utf-8")  # noqa: SIM115 - closed by the generator
    reader = csv.reader(f)
    names = next(reader)
    index = label_index(names, target)[0]

    def chunks():
        with f:
            rows = []
            for row in reader:
                rows.append(row)
                if len(rows) == CHUNK_ROWS:
                    yield _csv_block(rows, index)
                    rows = []
            if rows:
                yield _csv_block(rows, index)

    return chunks(), None, [n for j, n in enumerate(names) if j != index]


def _csv_block(rows: list[list[str]], index: int):
    y = np.array([r[index] for r in rows])
    try:
        y = y.astype(np.float64)
        y = y.astype(np.int64) if np.all(y == np.round(y)) else y
    except ValueError:
        pass
    x = np.array([[v for j, v in enumerate(r) if j != index] for r in rows], dtype=np.float32)
    return x, y
