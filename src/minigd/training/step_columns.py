"""History's per-step columns: the recent steps in memory, the older ones in files.

A run records about nine numbers a step. As Python lists they cost ~32 bytes each, so ten
million steps held ~3 GB, and every checkpoint carried all of them again. Given a folder
(``History.keep_on_disk``; the Checkpoint callback gives its own), each column keeps the last
``window`` steps in memory and appends older ones, ``chunk`` steps at a time, to one raw
little-endian float64 file (``<folder>/<column>.f64``): memory and checkpoints stay the same
size however long the run. A checkpoint records how many steps the files hold (``stored``) and
carries the steps after them; values a file holds past ``stored`` belong to steps a resumed run
takes again, and are cut off when it starts writing.

Without a folder a column is a plain list in memory, as for any short run. Either way a column
reads like a list: ``len``, indexes and slices (``column[-20:]`` from memory), iteration, ``==``
and ``np.asarray``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from minigd._io import fsync_dir

SUFFIX = ".f64"
NAME = re.compile(r"[a-z][a-z0-9_]{0,63}$")  # column names that may become file names
CHUNK = 4096  # steps appended to the files at once
WINDOW = 4096  # steps kept in memory after an append (what callbacks read: the last few)
READ = 1 << 16  # values read from a file at once when a whole column is iterated
ITEM = 8


class ColumnFiles:
    """The stored steps of every column: one float64 file per column in ``folder``, of which
    the first ``stored`` values are valid."""

    def __init__(self, folder: str | os.PathLike, stored: int = 0) -> None:
        self.folder = Path(folder)
        self.stored = int(stored)

    def path(self, name: str) -> Path:
        if not NAME.match(name):
            raise ValueError(f"{name!r} cannot name a history column stored in a file.")
        return self.folder / f"{name}{SUFFIX}"

    def check(self, names: Iterable[str]) -> None:
        """Raises the sentence that says which column's file is missing or short."""
        for name in names:
            path = self.path(name)
            try:
                size = path.stat().st_size
            except OSError:
                size = -1
            if size < self.stored * ITEM:
                held = "is missing" if size < 0 else f"holds {size // ITEM} steps"
                raise ValueError(
                    f"the history's {name} column should hold {self.stored} steps in {path}, "
                    f"but that file {held}."
                )

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        """Values [start, stop) of a column, stop <= stored."""
        if stop <= start:
            return np.zeros(0)
        with open(self.path(name), "rb") as f:
            f.seek(start * ITEM)
            data = f.read((stop - start) * ITEM)
        if len(data) != (stop - start) * ITEM:
            raise ValueError(f"{self.path(name)} was cut short while the run was reading it.")
        return np.frombuffer(data, dtype="<f8")

    def start_writing(self, names: Iterable[str]) -> None:
        """Makes the folder and cuts every file to the stored steps (what follows them belongs
        to steps this run takes again); a column new to the files starts as NaN."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            path = self.path(name)
            if path.exists():
                os.truncate(path, self.stored * ITEM)
            else:
                self._fill_nan(path, self.stored)
        fsync_dir(self.folder)

    def add(self, name: str) -> None:
        """A column that appears mid-run: NaN for the steps already stored."""
        self._fill_nan(self.path(name), self.stored)

    def append(self, chunks: dict[str, np.ndarray]) -> None:
        """Appends one chunk (equal lengths) to every column's file."""
        for name, values in chunks.items():
            with open(self.path(name), "r+b") as f:
                f.seek(self.stored * ITEM)
                f.write(np.ascontiguousarray(values, dtype="<f8").tobytes())
        self.stored += len(next(iter(chunks.values())))

    def sync(self, names: Iterable[str]) -> None:
        """Makes the stored steps durable before a checkpoint says they are there."""
        for name in names:
            fd = os.open(self.path(name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def copy_to(self, other: ColumnFiles, names: Iterable[str]) -> None:
        """Copies the stored steps into ``other``'s folder (a run resumed into a new one)."""
        other.folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            with open(other.path(name), "wb") as out:
                for start in range(0, self.stored, READ):
                    stop = min(self.stored, start + READ)
                    out.write(self.read(name, start, stop).tobytes())
        other.stored = self.stored
        fsync_dir(other.folder)

    @staticmethod
    def _fill_nan(path: Path, count: int) -> None:
        with open(path, "wb") as f:
            for start in range(0, count, READ):
                f.write(np.full(min(READ, count - start), np.nan, "<f8").tobytes())


class StepColumn(Sequence):
    """One per-step column: ``stored`` values in a file (see ``ColumnFiles``), then ``tail``
    in memory. Reads like a list; integer columns give back ints."""

    __slots__ = ("files", "integer", "name", "tail")

    def __init__(
        self,
        values: Iterable = (),
        *,
        name: str = "",
        files: ColumnFiles | None = None,
        integer: bool = False,
    ) -> None:
        self.name, self.files, self.integer = name, files, integer
        self.tail = list(values)

    @property
    def stored(self) -> int:
        return 0 if self.files is None else self.files.stored

    def append(self, value) -> None:
        self.tail.append(value)

    def __len__(self) -> int:
        return self.stored + len(self.tail)

    def __getitem__(self, index):
        stored = self.stored
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step > 0 and start >= stored:
                return self.tail[start - stored : stop - stored : step]
            return self.python_values(np.asarray(self)[index])
        i = index + len(self) if index < 0 else index
        if not 0 <= i < len(self):
            raise IndexError(f"step {index} of a history column of {len(self)}")
        if i >= stored:
            return self.tail[i - stored]
        return self.python_values(self.files.read(self.name, i, i + 1))[0]

    def __iter__(self) -> Iterator:
        for chunk in self.chunks():
            yield from chunk

    def chunks(self, size: int = READ) -> Iterator[list]:
        """The values as lists of at most ``size`` (the stored ones read a piece at a time)."""
        for start in range(0, self.stored, size):
            stop = min(self.stored, start + size)
            yield self.python_values(self.files.read(self.name, start, stop))
        for start in range(0, len(self.tail), size):
            yield self.tail[start : start + size]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        stored = self.files.read(self.name, 0, self.stored) if self.stored else np.zeros(0)
        whole = np.concatenate([stored, np.asarray(self.tail, dtype=np.float64)])
        if self.integer:
            whole = whole.astype(np.int64)
        return whole if dtype is None else whole.astype(dtype)

    def tolist(self) -> list:
        return list(self)

    def __eq__(self, other) -> bool:
        """Equal values at every step, NaN equal to NaN (a step that measured nothing)."""
        if not isinstance(other, StepColumn | list | tuple):
            return NotImplemented
        if len(self) != len(other):
            return False
        mine, theirs = np.asarray(self, np.float64), np.asarray(other, np.float64)
        return bool(np.array_equal(mine, theirs, equal_nan=True))

    __hash__ = None  # mutable, like a list

    def python_values(self, array: np.ndarray) -> list:
        """``array`` as this column's Python numbers (ints for an integer column)."""
        return array.astype(np.int64).tolist() if self.integer else array.tolist()

    def __repr__(self) -> str:
        where = f", {self.stored} in {self.files.folder}" if self.stored else ""
        return f"StepColumn({self.name!r}, {len(self)} steps{where})"
