"""Sources: the rows of a training set wherever they live, read by index or by range.

MiniBatches reads through this small protocol, so one batching, shuffling and checking path serves
an array in memory, one ``.npy`` file, a folder of ``.npy`` shards, Parquet and HDF5::

    n_rows, row_shape, dtype      what the rows are, known without reading them
    read_rows(index, out)         the rows at a sorted index -> out, shape (len(index), *row_shape)
    read_range(lo, hi, out)       rows lo..hi-1 -> out
    block_rows                    rows one cheap read serves (a chunk, a row group, ~1 MiB)
    locate(row)                   (file, row within it) of a global row, for error messages
    in_memory                     True when reading costs no I/O
    unchanging                    True when the same rows read again are the same bytes, or an
                                  error (the reader checks a block's values once, not each epoch)

On-disk ``.npy`` data is read with positioned reads (``os.preadv``) straight into the caller's
buffers. Nothing is memory-mapped: the pages of a map that an epoch touches count in the process's
resident memory and grow with the file, while explicit reads keep it at the buffers' size
(``benchmarks/bench_streaming.py`` measures both). ``preadv`` releases the GIL, so a reader thread
overlaps the disk with the train step.
"""

from __future__ import annotations

import mmap
import os
import threading
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from minigd.data.arrays import one_hot_labels
from minigd.data.leased_map import LeasedMap, open_leased, stamp_of
from minigd.data.npz import CorruptFileError, read_npy_header

BLOCK_BYTES = 1 << 20  # a block of ~1 MiB of consecutive rows: one read that a disk serves well


class Source:
    """The protocol MiniBatches reads through (see the module docstring); subclasses define
    ``n_rows``, ``row_shape``, ``dtype``, ``name`` and ``read_rows``."""

    n_rows: int
    row_shape: tuple[int, ...]
    dtype: np.dtype
    name: str
    in_memory = False
    unchanging = False  # a source that cannot tell a file edited under it: check every read

    @cached_property
    def row_bytes(self) -> int:
        # cached: the hot read loop asks for it once per run of rows
        return int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        """Bytes of the rows as an array (on disk a file may add headers or compression)."""
        return self.n_rows * self.row_bytes

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_rows, *self.row_shape)

    @property
    def block_rows(self) -> int:
        return max(1, BLOCK_BYTES // max(1, self.row_bytes))

    def __len__(self) -> int:
        return self.n_rows

    def read_rows(self, index: np.ndarray, out: np.ndarray) -> None:
        raise NotImplementedError

    def read_range(self, lo: int, hi: int, out: np.ndarray) -> None:
        self.read_rows(np.arange(lo, hi, dtype=np.intp), out)

    def read(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Rows lo..hi-1 as a new array (for small parts: a sample, a batch, a test)."""
        hi = self.n_rows if hi is None else hi
        out = np.empty((hi - lo, *self.row_shape), self.dtype)
        self.read_range(lo, hi, out)
        return out

    def locate(self, row: int) -> tuple[str, int]:
        """(the file that holds global row ``row``, its row within that file)."""
        return self.name, row

    def subset(self, lo: int, hi: int) -> Source:
        return Subset(self, lo, hi)

    def leased_map(self) -> LeasedMap | None:
        """The rows mapped into memory under a read lease (``data.leased_map``), or None: this
        source is read by positioned reads only."""
        return None

    def close(self) -> None:
        """Releases open files; reading again reopens them."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, shape={self.shape}, dtype={self.dtype})"


def runs(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs of consecutive values in a sorted index, as positions in it:
    [3, 4, 5, 9, 10] -> starts [0, 3], ends [3, 5]. One read per run, not per row."""
    if len(index) == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    return np.concatenate(([0], breaks)), np.concatenate((breaks, [len(index)]))


class ArraySource(Source):
    """An array in memory, samples as rows (today's fast path reads the array directly)."""

    in_memory = True

    def __init__(self, array: np.ndarray, name: str = "array") -> None:
        self.array = np.ascontiguousarray(array)
        self.n_rows, self.row_shape = self.array.shape[0], self.array.shape[1:]
        self.dtype, self.name = self.array.dtype, name

    def read_rows(self, index, out):
        self.array.take(index, axis=0, out=out, mode="clip")

    def read_range(self, lo, hi, out):
        out[...] = self.array[lo:hi]


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of a ``.npy`` file, read from its header only,
    with a sentence naming the file if the header is unreadable or declares more than it holds."""
    try:
        with open(path, "rb") as f:
            header = read_npy_header(f)
            if header is None:
                raise ValueError("format 3.0 (structured arrays) is not one of numeric rows")
            shape, fortran, dtype = header
            offset = f.tell()
    except (ValueError, OSError, EOFError) as exc:
        raise CorruptFileError(
            f"{path} is not a readable .npy file ({exc}); write it with np.save or minigd convert."
        ) from None
    if dtype.hasobject:
        raise ValueError(
            f"{path} holds an object array (a pickle); minigd never loads pickles from files. "
            "Re-save it with numeric arrays only."
        )
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    held = path.stat().st_size - offset
    if declared > held:
        row = max(1, declared // max(1, shape[0])) if shape else declared
        raise CorruptFileError(
            f"{path} is truncated: its header declares shape {shape} ({declared} bytes of "
            f"{dtype}) but it holds {max(held, 0)} bytes, about {max(held, 0) // row} whole rows. "
            "Write it again (minigd convert writes shards atomically)."
        )
    return tuple(shape), dtype, fortran, offset


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # not on this platform: assume the file fits
        return 1 << 62


ALIGN = 4096  # O_DIRECT reads: offsets, lengths and memory aligned to the logical block
SCRATCH = 4 << 20


class NpySource(Source):
    """One ``.npy`` file on disk, read with positioned reads into the caller's buffers.

    A file larger than half the machine's memory is read with ``O_DIRECT``: the page cache could
    not keep it for the next epoch anyway, and passing 30 GB through it cost the 2-core machine
    more CPU in the kernel (copying, then evicting under memory pressure) than the reads
    themselves (``benchmarks/bench_streaming.py``). Direct reads go through a small aligned scratch
    buffer per reading thread; where the file system refuses ``O_DIRECT``, plain reads are used.

    Args:
        path: the file; its header is read and checked here, the data only when asked for.
        direct: read with ``O_DIRECT``; default: when the file is larger than half the memory.
        map_rows: let a streamed run map the rows under a read lease (``leased_map``); False
            reads them into buffers always.
    """

    unchanging = True  # a read from a file written to or replaced since it was opened raises

    def __init__(
        self, path: str | os.PathLike, *, direct: bool | None = None, map_rows: bool = True
    ) -> None:
        self._fd: int | None = None
        self._pid = 0
        self._local = threading.local()
        self.path = Path(path)
        shape, self.dtype, fortran, self.offset = npy_header(self.path)
        if not shape:
            raise ValueError(f"{self.path} holds a single number; expected one row per sample.")
        if fortran and len(shape) > 1:
            raise ValueError(
                f"{self.path} is stored in Fortran (column-major) order, so a sample's values are "
                "not contiguous on disk. Re-save it with np.save(path, np.ascontiguousarray(X))."
            )
        self.n_rows, self.row_shape = shape[0], shape[1:]
        self.name = str(self.path)
        self._stamp = stamp_of(os.stat(self.path))
        if direct is None:
            direct = self.path.stat().st_size > _physical_memory() // 2
        self.direct = bool(direct) and hasattr(os, "O_DIRECT")
        self.map_rows = bool(map_rows)

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own
            self._fd, self._pid = None, os.getpid()
            if self.direct:
                try:
                    self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT)
                except OSError:  # tmpfs and some network file systems refuse it
                    self.direct = False
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def _check_unchanged(self, fd: int) -> None:
        """After a read (so a file cut short is named by its row first): refuses rows from a
        file written to or replaced since it was opened. One fstat, ~0.3 us a read."""
        now = stamp_of(os.fstat(fd))
        if now == self._stamp:
            return
        if now[0] < self._stamp[0]:
            rows = max(now[0] - self.offset, 0) // self.row_bytes
            raise CorruptFileError(
                f"{self.path} ended early: row {rows} of {self.n_rows} on can no longer be read "
                "(the file was truncated while training)."
            )
        raise CorruptFileError(
            f"{self.path} changed while it was being read: its size, modification time or "
            "identity differs from when the run opened it. A run must not train on data "
            "that changes under it; restore the file (or convert it again) and resume."
        )

    def leased_map(self) -> LeasedMap | None:
        """A new map of the file's rows under a read lease, or None where it cannot be had or
        should not be: a file read with O_DIRECT (larger than the page cache could keep, where
        a map would fault in the loop what the reader thread reads now)."""
        if self.direct or not self.map_rows:
            return None
        shape = (self.n_rows, *self.row_shape)
        return open_leased(self.path, self.offset, shape, self.dtype, self._stamp)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_fd": None, "_local": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _local=threading.local())

    def _pread(self, view: memoryview, row: int, fd: int) -> None:
        """Fills ``view`` from global row ``row`` on; a short read means the file shrank."""
        offset = self.offset + row * self.row_bytes
        read = self._read_direct if self.direct else os.preadv
        done = read(fd, [view], offset)
        while done < len(view):  # a read the kernel cut short, or the end of the file
            got = read(fd, [view[done:]], offset + done)
            if got == 0:
                raise CorruptFileError(
                    f"{self.path} ended early: row {row + done // self.row_bytes} of "
                    f"{self.n_rows} could not be read (the file is shorter than its header "
                    "says; was it truncated while training?)."
                )
            done += got

    def _read_direct(self, fd: int, views: list[memoryview], offset: int) -> int:
        """``os.preadv`` for an O_DIRECT file: reads the aligned span around what is wanted into
        this thread's aligned scratch (an anonymous map is page-aligned), copies out the part
        asked for, at most SCRATCH bytes a call; returns the bytes copied (0 at the end)."""
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = memoryview(mmap.mmap(-1, SCRATCH + ALIGN))
        view = views[0]
        start = offset - offset % ALIGN
        take = min(len(view), SCRATCH - (offset - start))
        end = -(-(offset + take) // ALIGN) * ALIGN
        got = os.preadv(fd, [scratch[: end - start]], start) - (offset - start)
        if got <= 0:
            return 0
        take = min(take, got)
        view[:take] = scratch[offset - start : offset - start + take]
        return take

    def read_rows(self, index, out):
        if len(index) == 0:
            return
        flat = memoryview(out.reshape(len(index), -1)).cast("B")
        size, fd = self.row_bytes, self._file()
        starts, ends = runs(index)
        first = index[starts].tolist()
        for a, b, row in zip(starts.tolist(), ends.tolist(), first, strict=True):
            self._pread(flat[a * size : b * size], row, fd)
        self._check_unchanged(fd)

    def read_range(self, lo, hi, out):
        if hi > lo:
            fd = self._file()
            self._pread(memoryview(out.reshape(hi - lo, -1)).cast("B"), lo, fd)
            self._check_unchanged(fd)


class ConcatSource(Source):
    """Several sources of the same row shape and dtype, one after the other (the shards of a
    folder); a read is split at the shard boundaries."""

    def __init__(self, parts: list[Source], name: str) -> None:
        if not parts:
            raise ValueError(f"{name} holds no shards.")
        first = parts[0]
        for part in parts[1:]:
            if part.row_shape != first.row_shape or part.dtype != first.dtype:
                raise ValueError(
                    f"{part.name} holds rows of shape {part.row_shape} and dtype {part.dtype}; "
                    f"{first.name} holds {first.row_shape} {first.dtype}. Every shard of {name} "
                    "must match."
                )
        self.parts, self.name = parts, name
        self.row_shape, self.dtype = first.row_shape, first.dtype
        self.offsets = np.cumsum([0] + [p.n_rows for p in parts])
        self.n_rows = int(self.offsets[-1])
        self.unchanging = all(p.unchanging for p in parts)

    @property
    def block_rows(self) -> int:
        return self.parts[0].block_rows

    def _split(self, lo: int, hi: int):
        """(part, global start within [lo, hi), local lo, local hi) for each part touched."""
        first = int(np.searchsorted(self.offsets, lo, side="right")) - 1
        for i in range(first, len(self.parts)):
            start = int(self.offsets[i])
            if start >= hi:
                break
            a, b = max(lo, start), min(hi, int(self.offsets[i + 1]))
            if b > a:
                yield self.parts[i], a, a - start, b - start

    def read_range(self, lo, hi, out):
        for part, a, local_lo, local_hi in self._split(lo, hi):
            part.read_range(local_lo, local_hi, out[a - lo : a - lo + local_hi - local_lo])

    def read_rows(self, index, out):
        cuts = np.searchsorted(index, self.offsets)
        for i, part in enumerate(self.parts):
            a, b = int(cuts[i]), int(cuts[i + 1])
            if b > a:
                part.read_rows(index[a:b] - int(self.offsets[i]), out[a:b])

    def locate(self, row):
        i = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return self.parts[i].locate(row - int(self.offsets[i]))

    def close(self):
        for part in self.parts:
            part.close()


class Subset(Source):
    """Rows lo..hi-1 of another source (a validation split taken from the end of a file)."""

    def __init__(self, source: Source, lo: int, hi: int) -> None:
        if not 0 <= lo <= hi <= source.n_rows:
            raise ValueError(f"rows {lo}..{hi} are not within the {source.n_rows} of {source}.")
        self.source, self.lo = source, lo
        self.n_rows, self.row_shape, self.dtype = hi - lo, source.row_shape, source.dtype
        self.name, self.in_memory = source.name, source.in_memory
        self.unchanging = source.unchanging

    @property
    def block_rows(self) -> int:
        return self.source.block_rows

    def read_rows(self, index, out):
        self.source.read_rows(index + self.lo, out)

    def read_range(self, lo, hi, out):
        self.source.read_range(lo + self.lo, hi + self.lo, out)

    def locate(self, row):
        return self.source.locate(row + self.lo)

    def close(self):
        self.source.close()


class LabelTable(Source):
    """Text labels stored as integer codes (by ``minigd convert``): reads the codes and returns
    the labels they stand for, so a shard folder's targets read like the file they came from."""

    def __init__(self, codes: Source, names: np.ndarray) -> None:
        self.codes, self.names = codes, names
        self.n_rows, self.row_shape, self.dtype = codes.n_rows, (), names.dtype
        self.name = codes.name

    def read_rows(self, index, out):
        scratch = np.empty(len(index), self.codes.dtype)
        self.codes.read_rows(index, scratch)
        self._decode(scratch, out)

    def read_range(self, lo, hi, out):
        scratch = np.empty(hi - lo, self.codes.dtype)
        self.codes.read_range(lo, hi, scratch)
        self._decode(scratch, out)

    def _decode(self, codes: np.ndarray, out: np.ndarray) -> None:
        if len(codes) and (codes.min() < 0 or codes.max() >= len(self.names)):
            bad = int(np.argmax((codes < 0) | (codes >= len(self.names))))
            raise CorruptFileError(
                f"{self.codes.locate(0)[0]}: a label code ({codes[bad]}) is outside the "
                f"manifest's {len(self.names)} labels; convert the data again."
            )
        np.take(self.names, codes, out=out)

    def locate(self, row):
        return self.codes.locate(row)


class OneHotLabels(Source):
    """One-hot target rows (m, k) read as their class index, as loading them whole reads them
    (``arrays.one_hot_labels``); a row that is not one-hot is an error naming it."""

    def __init__(self, rows: Source) -> None:
        self.rows = rows
        self.n_rows, self.row_shape, self.dtype = rows.n_rows, (), np.dtype(np.intp)
        self.name = rows.name

    def read_rows(self, index, out):
        scratch = np.empty((len(index), *self.rows.row_shape), self.rows.dtype)
        self.rows.read_rows(index, scratch)
        out[...] = self._labels(scratch, int(index[0]) if len(index) else 0)

    def read_range(self, lo, hi, out):
        scratch = np.empty((hi - lo, *self.rows.row_shape), self.rows.dtype)
        self.rows.read_range(lo, hi, scratch)
        out[...] = self._labels(scratch, lo)

    def _labels(self, rows: np.ndarray, first: int) -> np.ndarray:
        labels = one_hot_labels(rows)
        if labels is None:
            raise ValueError(
                f"{self.name}: the targets are one-hot rows, but a row from {first} on is not "
                "(each row must hold one 1 and zeros). Fix the file, or pass "
                "--task regression if these are values."
            )
        return labels

    def locate(self, row):
        return self.rows.locate(row)

    def close(self):
        self.rows.close()
