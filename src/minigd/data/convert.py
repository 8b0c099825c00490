"""``minigd convert IN OUT``: any supported file -> a folder of ``.npy`` shards, chunk by chunk.

Sharded ``.npy`` is the fastest layout minigd reads: rows are contiguous on disk, read with one
positioned read per block, and shards can be spread over disks or ranks. The conversion:

1. reads the input a chunk at a time (``.npy``/HDF5/Parquet by ranges, CSV by pyarrow's streaming
   reader or the csv module, an ``.npz`` member as a stream), so memory is one chunk plus one
   shard (``shard_bytes``, 128 MiB by default), whatever the input's size;
2. writes ``x-00000.npy``, ``y-00000.npy``, ... and last ``minigd-shards.json`` (row counts, the
   classes found, why) into a temporary folder beside OUT, renamed to OUT only when complete: a
   killed or failed conversion leaves no OUT (and an old OUT, with ``overwrite``, untouched).

Targets are stored as given (original labels); the manifest records the classes, so opening the
folder needs no scan.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from minigd._io import atomic_write_text, fsync_dir
from minigd.data.files import column_index
from minigd.data.npz import CorruptFileError, atomic_save_npy, read_npy_header
from minigd.data.opening import MANIFEST, SHARDS_FORMAT, LabelSet
from minigd.data.opening import open_source as open_data

SHARD_BYTES = 128 << 20
CHUNK_ROWS = 1 << 16


def convert(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    y: str | os.PathLike | None = None,
    target: int | str | None = None,
    task: str = "auto",
    shard_bytes: int = SHARD_BYTES,
    dtype: str | None = None,
    overwrite: bool = False,
    progress=None,
) -> Path:
    """Writes the shard folder ``out`` from ``src`` (see the module docstring); returns it.

    Args:
        src: a ``.npy`` (with ``y``), ``.npz``, ``.csv``, ``.parquet`` or ``.h5``/``.hdf5`` file.
        y, target, task: where the targets are and how to read them, as ``minigd.data.open_source``.
        shard_bytes: feature bytes per shard.
        dtype: store features as this dtype (e.g. "float32" halves a float64 CSV); default kept
            (CSV numbers become float32).
        overwrite: replace an existing ``out`` (only once the new one is complete).
        progress: a stream for a progress line (stderr on a terminal if None), or False.
    """
    src, out = Path(src), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another OUT or pass --overwrite.")
    if out.exists() and not (out / MANIFEST).exists():
        raise FileExistsError(f"{out} exists and is not a shard folder; it is left alone.")
    chunks, total, names = _chunks(src, y, target)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    _remove_stale(out)
    tmp.mkdir()
    try:
        manifest = _write_shards(chunks, tmp, shard_bytes, dtype, total, _bar(progress, src, total))
        manifest.update(_targets_summary(manifest.pop("labels"), task))
        manifest["feature_names"] = names
        manifest["source"] = src.name
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1, default=str))
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _remove_stale(out: Path) -> None:
    """Removes the partial folders of conversions to ``out`` whose process is gone."""
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(partial, ignore_errors=True)


def _swap_in(tmp: Path, out: Path) -> None:
    """Renames the finished folder to ``out``; an old ``out`` is removed only after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
    os.rename(tmp, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_shards(chunks, folder: Path, shard_bytes: int, dtype, total, bar) -> dict:
    """Cuts the chunks into shards of ``shard_bytes`` of features (the last one smaller)."""
    shards, labels, table = [], LabelSet(), _LabelTable()
    pending: list[tuple[np.ndarray, np.ndarray | None]] = []
    held = rows = 0
    shard_rows = None

    def flush(n: int) -> None:
        """Writes the first n pending rows as the next shard."""
        nonlocal pending, held
        x = np.concatenate([p[0] for p in pending])
        y = None if pending[0][1] is None else np.concatenate([p[1] for p in pending])
        i = len(shards)
        entry = {"x": f"x-{i:05d}.npy", "y": None if y is None else f"y-{i:05d}.npy", "rows": n}
        atomic_save_npy(folder / entry["x"], x[:n])
        if y is not None:
            atomic_save_npy(folder / entry["y"], y[:n])
        shards.append(entry)
        pending = [(x[n:], None if y is None else y[n:])] if len(x) > n else []
        held -= n

    for x, yv in chunks:
        x = _features(x, dtype)
        if yv is not None and yv.dtype.kind in "OUS":  # text: stored as codes into a table
            labels.add(yv.astype(str))
            yv = table.codes(yv)
        elif yv is not None:
            labels.add(yv)
        if shard_rows is None:
            shard_rows = max(1, shard_bytes // max(1, x[:1].nbytes))
        pending.append((x, yv))
        held, rows = held + len(x), rows + len(x)
        while held >= shard_rows:
            flush(shard_rows)
        bar(rows)
    if held:
        flush(held)
    bar(rows, done=True)
    if not shards:
        raise ValueError("the input holds no rows; there is nothing to convert.")
    width = np.load(folder / shards[0]["x"], mmap_mode="r").shape[1:]
    return {
        "format": SHARDS_FORMAT,
        "rows": rows,
        "row_shape": list(width),
        "shards": shards,
        "labels": labels if shards[0]["y"] else None,
        "label_table": table.names or None,
    }


class _LabelTable:
    """Text labels as int32 codes in order of first appearance: shards of one dtype, whatever
    the longest label of each chunk (the manifest keeps the names)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.names: list[str] = []

    def codes(self, y: np.ndarray) -> np.ndarray:
        out = np.empty(len(y), np.int32)
        for i, label in enumerate(y.astype(str).tolist()):
            code = self.index.get(label)
            if code is None:
                code = self.index[label] = len(self.names)
                self.names.append(label)
            out[i] = code
        return out


def _features(x: np.ndarray, dtype) -> np.ndarray:
    if x.dtype.kind not in "iufb":
        raise TypeError(f"features must be numbers; found {x.dtype}. Encode text columns first.")
    return np.ascontiguousarray(x, dtype=np.dtype(dtype) if dtype else x.dtype)


def _targets_summary(labels: LabelSet | None, task: str) -> dict:
    if labels is None:
        return {"classes": None, "task_reason": ""}
    classes, why = labels.summary(task)
    return {"classes": classes, "task_reason": why}


# -- reading the input a chunk at a time ------------------------------------------------------
def _chunks(src: Path, y, target) -> tuple[Iterator, int | None, list[str] | None]:
    """(an iterator of (X chunk, y chunk or None), total rows if known, feature names)."""
    if not src.exists():
        raise FileNotFoundError(f"no such file: {src}")
    suffix = src.suffix.lower()
    if suffix == ".csv":
        return _csv_chunks(src, target)
    if suffix == ".npz":
        return _npz_chunks(src), None, None
    data = open_data(src, y=y, target=target, task="regression")
    total = data.X.n_rows

    def chunks():
        for lo in range(0, total, CHUNK_ROWS):
            hi = min(total, lo + CHUNK_ROWS)
            yield data.X.read(lo, hi), None if data.y is None else data.y.read(lo, hi)

    names = None if data.feature_names is None else list(data.feature_names)
    return chunks(), total, names


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


def _csv_chunks(src: Path, target) -> tuple[Iterator, None, list[str]]:
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


def _bar(progress, src: Path, total: int | None):
    """A progress callback: rows done (of total) on a terminal line, or nothing."""
    stream = sys.stderr if progress is None else progress
    if stream is False or (progress is None and not stream.isatty()):
        return lambda rows, done=False: None
    last = [0.0]

    def show(rows: int, done: bool = False) -> None:
        now = time.monotonic()
        if not done and now - last[0] < 0.5:
            return
        last[0] = now
        of = f"/{total:,}" if total else ""
        pct = f" ({100 * rows / total:.0f}%)" if total else ""
        print(
            f"\rconvert {src.name}: {rows:,}{of} rows{pct}",
            end="\n" if done else "",
            file=stream,
            flush=True,
        )

    return show
