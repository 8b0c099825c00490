"""Reading a data file a chunk at a time, whatever its size: what ``convert`` writes shards from.

A format opened lazily is read through its source, a range of rows at a time; an ``.npz`` member
is decompressed as a stream and a CSV file is parsed a block at a time (pyarrow's streaming
reader, or the csv module). Memory is one chunk.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from minigd.data.files import column_index
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
    """X and y members of an .npz archive, streamed: only a chunk is decompressed at a time."""
    with zipfile.ZipFile(src) as archive:
        members = set(archive.namelist())
        if "X.npy" not in members:
            raise KeyError(f"{src} must hold an array named 'X' (and optionally 'y').")
        with archive.open("X.npy") as fx:
            fy = archive.open("y.npy") if "y.npy" in members else None
            try:
                xs, ys = (
                    _npy_stream(fx, f"{src}:X"),
                    None if fy is None else _npy_stream(fy, f"{src}:y"),
                )
                for x in xs:
                    yield x, None if ys is None else next(ys)
            finally:
                if fy is not None:
                    fy.close()


def _npy_stream(f, where: str) -> Iterator[np.ndarray]:
    """Chunks of CHUNK_ROWS rows of a .npy stream (an open file or zip member)."""
    header = read_npy_header(f)
    if header is None:
        raise ValueError(f"{where} is a structured array (.npy format 3.0); save numeric rows.")
    shape, fortran, dtype = header
    if dtype.hasobject or (fortran and len(shape) > 1) or not shape:
        raise ValueError(f"{where} is not an array of numeric rows in C order; re-save it.")
    row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    for lo in range(0, shape[0], CHUNK_ROWS):
        n = min(CHUNK_ROWS, shape[0] - lo)
        data = f.read(n * row)
        if len(data) != n * row:
            raise CorruptFileError(f"{where} is truncated at row {lo + len(data) // max(row, 1)}.")
        yield np.frombuffer(data, dtype).reshape(n, *shape[1:])


def of_csv(src: Path, y, target) -> tuple[Iterator, None, list[str]]:
    try:
        import pyarrow.csv as pacsv
    except ImportError:
        return _csv_module_chunks(src, target)
    reader = pacsv.open_csv(src, read_options=pacsv.ReadOptions(block_size=8 << 20))
    names = list(reader.schema.names)
    index = len(names) - 1 if target is None else column_index(names, target)

    def chunks():
        for batch in reader:
            cols = [c.to_numpy(zero_copy_only=False) for c in batch.columns]
            yv = cols.pop(index)
            yield np.column_stack(cols).astype(np.float32, copy=False), yv

    return chunks(), None, [n for j, n in enumerate(names) if j != index]


def _csv_module_chunks(src: Path, target) -> tuple[Iterator, None, list[str]]:
    import csv

    f = open(src, newline="", encoding="utf-8")  # noqa: SIM115 - closed by the generator
    reader = csv.reader(f)
    names = next(reader)
    index = len(names) - 1 if target is None else column_index(names, target)

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
