"""Safe ``.npz`` files: written atomically, read without pickles.

Writing goes through ``minigd._io.atomic_write``, so a process killed at any instant leaves either
the old file or the new one, never a torn one. Reading refuses object arrays
(``allow_pickle=False``) and says so in words.
"""

from __future__ import annotations

import os
import zipfile
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


def read_numpy(path: str | os.PathLike) -> np.ndarray | dict[str, np.ndarray]:
    """Reads a ``.npy`` file (an array) or an ``.npz`` file (a dict of arrays) into memory,
    refusing pickled objects, with errors that say what is wrong with the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ValueError(
                f"{path} contains an object array (a pickle); minigd never loads "
                "pickles from files. Re-save it with numeric arrays only."
            ) from exc
        raise ValueError(f"{path} is not a readable NumPy file: {exc}") from exc
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(
            f"{path} is not a readable NumPy file (truncated or corrupt: {exc})."
        ) from exc


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads every array of an ``.npz`` file into memory, refusing pickled objects."""
    arrays = read_numpy(path)
    if not isinstance(arrays, dict):
        raise ValueError(f"{path} holds a single array (.npy); expected an .npz archive.")
    return arrays
