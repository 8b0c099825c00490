"""Safe ``.npz`` files: written atomically, read without pickles.

Writing goes through ``minigd._io.atomic_write``, so a process killed at any instant leaves either
the old file or the new one, never a torn one. Reading refuses object arrays
(``allow_pickle=False``) and says so in words.
"""

from __future__ import annotations

import errno
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from minigd._io import atomic_write


def atomic_savez(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Saves ``arrays`` to ``path`` (``.npz`` appended if missing) atomically; returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    for name, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise TypeError(f"{name} is an object array; only numeric and text arrays are saved.")
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Saves one numeric array to a ``.npy`` file atomically (the shards of a converted set)."""
    return atomic_write(Path(path), lambda f: np.save(f, array, allow_pickle=False))


DEFLATE_MAX_RATIO = 1100  # deflate cannot expand data more than ~1032:1


Limits = dict[str, "int | None"]  # member name -> the most bytes it may declare (None: any)


class CorruptFileError(ValueError):
    """A file that is not what it claims to be; the message names the file and says why."""


def read_numpy(
    path: str | os.PathLike, members: Limits | None = None
) -> np.ndarray | dict[str, np.ndarray]:
    """Reads a ``.npy`` file (an array) or an ``.npz`` file (a dict of arrays) into memory,
    refusing pickled objects, with errors that say what is wrong with the file.

    Before anything is allocated, each array's declared shape is checked against the bytes the
    file holds (for ``.npz``, the uncompressed size its zip directory records, itself bounded by
    what deflate can expand): a 500-byte file that declares 10**13 elements is refused, not
    answered with a MemoryError. ``members`` names the arrays of an ``.npz`` to read, each with
    the most bytes it may declare (None: no limit beyond the file's): the others are never
    decompressed, and one that declares more than its limit is refused before it is.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "expected a file, found a folder", str(path))
    try:
        _check_declared_sizes(path, members)
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded as archive:
            wanted = (
                archive.files if members is None else [n for n in archive.files if n in members]
            )
            return {name: archive[name] for name in wanted}
    except CorruptFileError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ValueError(
                f"{path} contains an object array (a pickle); minigd never loads "
                "pickles from files. Re-save it with numeric arrays only."
            ) from exc
        raise ValueError(f"{path} is not a readable NumPy file: {exc}") from exc
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError) as exc:
        raise ValueError(
            f"{path} is not a readable NumPy file (truncated or corrupt: {exc})."
        ) from exc


def _check_declared_sizes(path: Path, members: Limits | None = None) -> None:
    """Raises ValueError if an array in the file declares more data than the file can hold, or
    (for the ``members`` to be read) more than its limit."""
    with open(path, "rb") as f:
        magic = f.read(6)
        f.seek(0)
        if magic == b"\x93NUMPY":
            _check_member(f, path.stat().st_size, str(path))
            return
        if not zipfile.is_zipfile(f):
            if magic.startswith(b"PK"):
                raise CorruptFileError(
                    f"{path} is a truncated or corrupt .npz archive (its zip directory is "
                    "missing); write it again."
                )
            raise CorruptFileError(
                f"{path} is neither a .npy array nor an .npz archive (it starts with "
                f"{magic!r}); minigd reads NumPy files written by np.save and np.savez."
            )
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if members is not None and name not in members:
                continue  # never read: not decompressed, not judged
            limit = info.compress_size * (
                1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_MAX_RATIO
            )
            if info.file_size > limit + 1024:
                raise CorruptFileError(
                    f"{path}: member {info.filename} claims {info.file_size} bytes from "
                    f"{info.compress_size} stored; the archive is corrupt."
                )
            with archive.open(info) as member:
                where = f"{path}: member {info.filename}"
                _check_member(member, info.file_size, where, (members or {}).get(name))


def read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    """(shape, fortran_order, dtype) of the .npy stream at ``f``'s position, leaving ``f`` at the
    data; None for format 3.0 (UTF-8 field names, which only structured arrays need). Raises
    ValueError (or EOFError) for anything that is not a .npy header."""
    version = np.lib.format.read_magic(f)
    read = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }.get(version)
    if read is None:
        if version == (3, 0):
            return None
        raise ValueError(f"unknown .npy format version {version}")
    return read(f)


def _check_member(f, size: int, where: str, most: int | None = None) -> None:
    """Compares one .npy stream's declared shape and dtype with the ``size`` bytes it has, and
    with the ``most`` bytes it may hold."""
    try:
        header = read_npy_header(f)
        if header is None:
            return  # np.load reads and judges it
        shape, _, dtype = header
    except (ValueError, OSError, EOFError, zlib.error) as exc:
        raise CorruptFileError(f"{where} has an unreadable array header ({exc}).") from None
    if dtype.hasobject:
        return  # refused by np.load(allow_pickle=False), with its own sentence
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if most is not None and declared > most:
        raise CorruptFileError(
            f"{where} declares {declared} bytes (shape {shape}, dtype {dtype}); it should hold "
            f"at most {most}. The file is corrupt or was edited."
        )
    available = size - f.tell()
    if declared > available:
        raise CorruptFileError(
            f"{where} declares an array of shape {shape} and dtype {dtype} ({declared} bytes) "
            f"but holds {max(available, 0)} bytes: it is truncated or corrupt."
        )


def npz_headers(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of each array of an ``.npz``, from the headers alone: nothing is
    decompressed beyond each member's first bytes, and the sizes are checked as for reading."""
    path = Path(path)
    _check_declared_sizes(path)
    shapes = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    header = read_npy_header(member)
                if header is not None:
                    shapes[info.filename.removesuffix(".npy")] = (header[0], header[2])
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
        raise CorruptFileError(f"{path} is not a readable .npz archive ({exc}).") from None
    return shapes


def read_npz(path: str | os.PathLike, members: Limits | None = None) -> dict[str, np.ndarray]:
    """Reads the arrays of an ``.npz`` file into memory (those in ``members`` only, within
    their limits, when given: see ``read_numpy``), refusing pickled objects."""
    arrays = read_numpy(path, members)
    if not isinstance(arrays, dict):
        raise ValueError(f"{path} holds a single array (.npy); expected an .npz archive.")
    return arrays
