"""``minigd convert IN OUT``: any supported file -> a folder of ``.npy`` shards, chunk by chunk.

Sharded ``.npy`` is the fastest layout minigd reads: rows are contiguous on disk, read with one
positioned read per block, and shards can be spread over disks or ranks. The conversion:

1. reads the input a chunk at a time (``formats.read_chunks``), so memory is one chunk plus one
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
from pathlib import Path

import numpy as np

from minigd._io import atomic_write_text, fsync_dir
from minigd.data.arrays import one_hot_labels
from minigd.data.fingerprint import fingerprint
from minigd.data.formats import read_chunks
from minigd.data.npz import atomic_save_npy
from minigd.data.opening import MANIFEST, SHARDS_FORMAT, LabelSet

SHARD_BYTES = 128 << 20


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
        src: a data file of any format (``data.formats``), or a shard folder to cut again.
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
    chunks, total, names = read_chunks(src, y, target)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    _remove_stale(out)
    tmp.mkdir()
    try:
        bar = _bar(progress, src, total)
        manifest = _write_shards(chunks, tmp, shard_bytes, dtype, _OneHotRows(task), bar)
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


def _write_shards(chunks, folder: Path, shard_bytes: int, dtype, targets, bar) -> dict:
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
        entry["sha256"] = {  # checked when the folder is opened: a shard edited since is refused
            role: fingerprint(folder / entry[role])["sha256"] for role in ("x", "y") if entry[role]
        }
        shards.append(entry)
        pending = [(x[n:], None if y is None else y[n:])] if len(x) > n else []
        held -= n

    for x, yv in chunks:
        x, yv = _features(x, dtype), targets(yv, rows)
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


class _OneHotRows:
    """One-hot target rows stored as their class index, as loading the file whole reads them
    (``arrays.one_hot_labels``): decided on the first chunk, required of every later one."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.one_hot: bool | None = None

    def __call__(self, y: np.ndarray | None, first_row: int) -> np.ndarray | None:
        if y is None or self.task == "regression":
            return y
        labels = one_hot_labels(y)
        if self.one_hot is None:
            self.one_hot = labels is not None
        if self.one_hot and labels is None:
            raise ValueError(
                f"the targets are one-hot rows, but a row from {first_row} on is not (each "
                "row must hold one 1 and zeros). Fix the file, or pass --task regression."
            )
        return labels if self.one_hot else y


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
