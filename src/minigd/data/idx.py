"""The IDX format of the MNIST files: a reader, and a writer for tests and exports.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the data in C order, big-endian. Files ending in ``.gz`` are
read and written through gzip.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in _TYPES.items()}


class IDXError(ValueError):
    """An IDX file that cannot be read: wrong magic number, truncated or oversized data."""


def _open(path: Path, mode: str):
    return gzip.open(path, mode) if path.suffix == ".gz" else open(path, mode)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (plain or ``.gz``) into an array in native byte order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such IDX file: {path}.")
    try:
        with _open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise IDXError(
            f"{path} could not be read as IDX ({exc}); delete it and fetch it again."
        ) from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise IDXError(
            f"{path} is not an IDX file: its magic number is {raw[:4].hex() or 'missing'}; "
            f"expected 0000 followed by a type code (08 for unsigned bytes) and the rank."
        )
    dtype, ndim = _TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXError(f"{path} is truncated inside its header; fetch it again.")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IDXError(
            f"{path} holds {len(raw) - header} data bytes but its header {tuple(shape)} of "
            f"{dtype.name} says {expected}; the file is truncated or corrupt, fetch it again."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes ``array`` as IDX (gzip-compressed when the name ends in ``.gz``)."""
    path = Path(path)
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        supported = ", ".join(sorted(dt.name for dt in _CODES))
        raise TypeError(f"IDX stores {supported}; received dtype {array.dtype}. Cast it first.")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with _open(path, "wb") as f:
        f.write(header)
        f.write(np.ascontiguousarray(array, dtype=_TYPES[code]).tobytes())
