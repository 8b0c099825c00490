"""Exact checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint is one ``.npz`` file (no pickles) holding:

- ``model/<name>``: parameters and buffers (BatchNorm statistics, dropout draw counters);
- ``optim/<name>``: the optimizer's state arrays;
- ``history/<column>``: the per-step history as numeric arrays;
- ``meta``: JSON text with the model's architecture, the optimizer's step count, lr and settings,
  the batching settings, the position (epoch, next batch, steps, samples seen), the per-epoch
  history and the callbacks' state.

Because each epoch's order is a pure function of (seed, epoch), the position is all it takes to
draw exactly the batches an uninterrupted run would have drawn. Files are written atomically
(temporary file, fsync, rename), so a process killed at any instant leaves the previous checkpoint
or the new one, never a torn file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from minigd._json import to_plain
from minigd.data.npz import atomic_savez, read_npz
from minigd.training.history import STEP_FIELDS, History

# 2: optimizer state follows the flat vector with Dense weights stored transposed
FORMAT = "minigd-checkpoint-2"
NAME = re.compile(r"checkpoint-(\d+)\.npz$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:09d}.npz"


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model,
    optimizer,
    history: History,
    position: dict[str, Any],
    batching: dict[str, Any],
    callbacks: dict[str, Any] | None = None,
) -> Path:
    """Writes one checkpoint file atomically and returns its path."""
    arrays: dict[str, np.ndarray] = {}
    for name, value in model.state().items():
        arrays[f"model/{name}"] = value
    opt = optimizer.state_dict()
    for name, value in opt.pop("arrays").items():
        arrays[f"optim/{name}"] = value
    for name in STEP_FIELDS:
        arrays[f"history/{name}"] = np.asarray(history.steps[name], dtype=np.float64)
    meta = {
        "format": FORMAT,
        "model": model.config(),
        "optimizer": opt,
        "position": position,
        "batching": batching,
        "history": {
            "epochs": history.epochs,
            "meta": history.meta,
            "ema_beta": history.ema_beta,
            "ema": history._ema,
        },
        "callbacks": callbacks or {},
    }
    arrays["meta"] = np.array(json.dumps(meta, default=to_plain))
    return atomic_savez(path, arrays)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a checkpoint (a file, or the newest in a folder) into plain parts."""
    path = latest_checkpoint(path)
    arrays = read_npz(path)
    if "meta" not in arrays:
        raise ValueError(f"{path} is not a minigd checkpoint (no 'meta' entry).")
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{path} has checkpoint format {meta.get('format')!r}; expected {FORMAT!r}. "
            "It was written by another version of minigd; resume it with that version, or "
            "start a new run."
        )
    parts: dict[str, dict[str, np.ndarray]] = {"model": {}, "optim": {}, "history": {}}
    for key, value in arrays.items():
        group, _, name = key.partition("/")
        if group not in parts:
            raise ValueError(f"{path} has an unexpected entry {key!r}.")
        parts[group][name] = value
    steps = {}
    for name in STEP_FIELDS:
        column = parts["history"].get(name, np.zeros(0))
        steps[name] = (
            [int(v) for v in column]
            if name in ("epoch", "batch_size", "samples_seen")
            else column.tolist()
        )
    hist = meta["history"]
    history = History.from_dict(
        {
            "steps": steps,
            "epochs": hist["epochs"],
            "meta": hist["meta"],
            "ema_beta": hist["ema_beta"],
            "ema": hist["ema"],
        }
    )
    optimizer = dict(meta["optimizer"], arrays=parts["optim"])
    return {
        "path": path,
        "model_config": meta["model"],
        "model_state": parts["model"],
        "optimizer": optimizer,
        "position": meta["position"],
        "batching": meta["batching"],
        "history": history,
        "callbacks": meta.get("callbacks", {}),
    }


def latest_checkpoint(path: str | os.PathLike) -> Path:
    """The file itself, or the checkpoint with the highest step number in a folder (searched
    recursively one level, so a run folder with a ``checkpoints/`` inside works too)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}.")
    found = [
        p
        for p in (*path.glob("checkpoint-*.npz"), *path.glob("*/checkpoint-*.npz"))
        if NAME.search(p.name)
    ]
    if not found:
        raise FileNotFoundError(
            f"no checkpoint-*.npz in {path}; train with a Checkpoint "
            "callback (minigd train writes one each epoch) to resume."
        )
    return max(found, key=lambda p: int(NAME.search(p.name).group(1)))
