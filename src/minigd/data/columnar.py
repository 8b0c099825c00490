"""Sources over chunked formats: Parquet (pyarrow) and HDF5 (h5py).

Both formats store rows in chunks that are decoded whole (a Parquet row group, an HDF5 chunk), so
each source reports its chunk as ``block_rows``: a block shuffle then reads whole chunks, and a read
by index decodes each chunk it touches once (the last one decoded is kept for the next read).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from minigd._extras import require
from minigd.data.sources import Source, runs


def parquet_file(path: Path):
    """pyarrow's ParquetFile of ``path``, or a sentence saying the file is not one."""
    pq = require("pyarrow.parquet", "data", "reading Parquet")
    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(f"{path} is not a readable Parquet file ({exc}).") from None


class ParquetSource(Source):
    """Columns of a Parquet file as rows: several numeric columns make a feature row, one column
    a target. Row groups are the blocks; one decoded group is cached.

    Args:
        path: the file.
        columns: the column names to read, in order.
    """

    def __init__(self, path: str | os.PathLike, columns: list[str]) -> None:
        self.path, self.columns = Path(path), list(columns)
        self._file = parquet_file(self.path)
        meta = self._file.metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self.offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        self.n_rows = int(self.offsets[-1])
        self.name = str(self.path)
        schema = self._file.schema_arrow
        types = [schema.field(c).type for c in self.columns]
        sample = [np.empty(0, dtype=t.to_pandas_dtype()) for t in types]
        self.dtype = np.result_type(*sample) if len(sample) > 1 else sample[0].dtype
        if len(self.columns) > 1 and self.dtype.kind not in "iufb":
            raise ValueError(f"{self.path}: feature columns must be numeric.")
        self.row_shape = (len(self.columns),) if len(self.columns) > 1 else ()
        self._cached: tuple[int, np.ndarray] | None = None

    @property
    def block_rows(self) -> int:
        return max(1, int(np.max(np.diff(self.offsets)))) if self.n_rows else 1

    def _group(self, i: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != i:
            try:
                table = self._file.read_row_group(i, columns=self.columns)
            except (OSError, ValueError) as exc:
                raise ValueError(
                    f"{self.path}: row group {i} (rows {self.offsets[i]}..) cannot be read "
                    f"({exc}); the file is corrupt."
                ) from None
            cols = [c.to_numpy(zero_copy_only=False) for c in table.columns]
            block = np.column_stack(cols) if len(cols) > 1 else cols[0]
            self._cached = (i, block)
        return self._cached[1]

    def read_rows(self, index, out):
        cuts = np.searchsorted(index, self.offsets)
        for i in range(len(self.offsets) - 1):
            a, b = int(cuts[i]), int(cuts[i + 1])
            if b > a:
                out[a:b] = self._group(i)[index[a:b] - self.offsets[i]]

    def read_range(self, lo, hi, out):
        self.read_rows(np.arange(lo, hi, dtype=np.int64), out)


class HDF5Source(Source):
    """One dataset of an HDF5 file (``X`` or ``y``), read by ranges of its chunks.

    Args:
        path: the file.
        key: the dataset's name in it.
    """

    def __init__(self, path: str | os.PathLike, key: str) -> None:
        require("h5py", "hdf5", "reading HDF5")
        self.path, self.key = Path(path), key
        self.name = f"{self.path}:{key}"
        with self._open() as f:
            if key not in f:
                raise KeyError(
                    f"{self.path} has no dataset {key!r}; it holds {sorted(f.keys())}. "
                    "minigd reads the features from 'X' and the targets from 'y'."
                )
            data = f[key]
            if data.dtype.kind not in "iufbSU" or not data.shape:
                raise ValueError(
                    f"{self.name} holds {data.dtype} of shape {data.shape}; expected numeric "
                    "rows, one per sample."
                )
            self.n_rows, self.row_shape = data.shape[0], tuple(data.shape[1:])
            self.dtype = data.dtype
            self._chunk = data.chunks[0] if data.chunks else None
        self._handle = None
        self._pid = 0

    def _open(self):
        try:
            return require("h5py", "hdf5", "reading HDF5").File(self.path, "r")
        except OSError as exc:
            raise ValueError(f"{self.path} is not a readable HDF5 file ({exc}).") from None

    def _data(self):
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = self._open(), os.getpid()
        return self._handle[self.key]

    @property
    def block_rows(self) -> int:
        return self._chunk or super().block_rows

    def read_range(self, lo, hi, out):
        if hi > lo:
            try:
                self._data().read_direct(out, np.s_[lo:hi], np.s_[0 : hi - lo])
            except (OSError, ValueError) as exc:
                raise ValueError(
                    f"{self.name}: rows {lo}..{hi - 1} cannot be read ({exc}); the file is "
                    "corrupt or truncated."
                ) from None

    def read_rows(self, index, out):
        starts, ends = runs(index)
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            lo = int(index[a])
            self.read_range(lo, lo + (b - a), out[a:b])

    def close(self):
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None
