"""Exact checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint is one ``.npz`` file (no pickles) holding:

- ``model/<name>``: parameters and buffers (BatchNorm statistics, dropout draw counters);
- ``optim/<name>``: the optimizer's state arrays;
- ``history/<column>``: the per-step history as numeric arrays: every step, or where the run
  keeps its older steps in ``steps/`` beside the checkpoints (``History.keep_on_disk``, which
  the Checkpoint callback turns on), the steps after those the files hold (their count is
  ``stored_steps`` in the metadata; the files are fsync'ed before the checkpoint is written);
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
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from minigd._json import to_plain
from minigd.data.npz import atomic_savez, read_npz
from minigd.nn.architecture import saved_sizes
from minigd.training.history import History

# 2: optimizer state follows the flat vector with Dense weights stored transposed
# 3: the optimizer's lr is base(t) * lr_scale; the state holds lr_scale, not the lr to use
FORMAT = "minigd-checkpoint-3"
META_FIELDS = ("model", "optimizer", "position", "batching", "history")
STEPS_FOLDER = "steps"  # beside the checkpoints: the history steps they do not carry
META_LIMIT = 256 << 20  # the JSON metadata (per-epoch history, callbacks' state), at the most
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
    columns, rest = history.state(stored_at=Path(path).parent / STEPS_FOLDER)
    for name, value in columns.items():
        arrays[f"history/{name}"] = value
    meta = {
        "format": FORMAT,
        "model": model.config(),
        "optimizer": opt,
        "position": position,
        "batching": batching,
        "history": rest,
        "callbacks": callbacks or {},
    }
    arrays["meta"] = np.array(json.dumps(meta, default=to_plain))
    return atomic_savez(path, arrays)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a checkpoint (a file, or the newest readable one in a folder) into plain parts.

    In a folder, a newest checkpoint that cannot be read (a disk error, a hand edit) does not
    stop a resume: the one before it is used, with a warning naming both.
    """
    path = Path(path)
    if path.is_file():
        return _read_checkpoint(path)
    candidates = list_checkpoints(path, nested=True)[::-1] if path.is_dir() else []
    if not candidates:
        latest_checkpoint(path)  # raises the sentence for a missing path or an empty folder
    failures = []
    for candidate in candidates:
        try:
            parts = _read_checkpoint(candidate)
        except (ValueError, OSError, MemoryError) as exc:  # any unreadable one: the older next
            failures.append(f"{candidate.name}: {exc}")
            continue
        if failures:
            warnings.warn(
                f"skipped unreadable checkpoints ({'; '.join(failures)}); resuming from "
                f"{candidate.name}, step {parts['position'].get('step')}.",
                stacklevel=2,
            )
        return parts
    raise ValueError(f"no readable checkpoint in {path}: {'; '.join(failures)}")


def _read_checkpoint(path: Path) -> dict[str, Any]:
    meta = _read_meta(path)
    arrays = read_npz(path, _member_limits(path, meta))
    parts: dict[str, dict[str, np.ndarray]] = {"model": {}, "optim": {}, "history": {}}
    for key, value in arrays.items():
        group, _, name = key.partition("/")
        parts[group][name] = value
    try:
        history = History.from_state(
            parts["history"], meta["history"], stored_at=path.parent / STEPS_FOLDER
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path} has a malformed history ({exc}).") from None
    return {
        "path": path,
        "model_config": meta["model"],
        "model_state": parts["model"],
        "optimizer": dict(meta["optimizer"], arrays=parts["optim"]),
        "position": meta["position"],
        "batching": meta["batching"],
        "history": history,
        "callbacks": meta.get("callbacks") if isinstance(meta.get("callbacks"), dict) else {},
    }


def _read_meta(path: Path) -> dict[str, Any]:
    """The checkpoint's JSON metadata, checked for its format and fields before any array is
    read (the metadata alone bounds what the arrays may hold)."""
    meta_text = read_npz(path, {"meta": META_LIMIT}).get("meta")
    if meta_text is None:
        raise ValueError(f"{path} is not a minigd checkpoint (no 'meta' entry).")
    try:
        meta = json.loads(str(meta_text))
    except ValueError as exc:
        raise ValueError(f"{path} has unreadable metadata (not JSON: {exc}).") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(
            f"{path} has checkpoint format {found!r}; expected {FORMAT!r}. "
            "It was written by another version of minigd; resume it with that version, or "
            "start a new run."
        )
    missing = [k for k in META_FIELDS if not isinstance(meta.get(k), dict)]
    if missing:
        raise ValueError(
            f"{path} lacks the checkpoint fields {missing} (or they are not objects); it cannot "
            "be resumed."
        )
    return meta


def _member_limits(path: Path, meta: dict[str, Any]) -> dict[str, int]:
    """The most bytes each array of the checkpoint may declare, from what its metadata says it
    holds: a model's parameters and buffers as its architecture sizes them, optimizer arrays no
    larger than the parameter vector, history columns one float64 per step. An entry outside
    these groups is refused by name; an oversized one before it is decompressed."""
    sizes, n_params = saved_sizes(meta["model"], path)
    step = meta["position"].get("step")
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"{path} has a malformed position (step {step!r}).")
    limits = {}
    with zipfile.ZipFile(path) as archive:
        names = [info.filename.removesuffix(".npy") for info in archive.infolist()]
    for key in names:
        group, _, name = key.partition("/")
        if group == "model":
            limits[key] = sizes.get(name, 0)
        elif group == "optim":
            limits[key] = 8 * n_params
        elif group == "history":
            limits[key] = 8 * (step + 1)
        elif key != "meta":
            raise ValueError(f"{path} has an unexpected entry {key!r}.")
    return limits


def list_checkpoints(folder: str | os.PathLike, *, nested: bool = False) -> list[Path]:
    """The checkpoints in ``folder``, oldest step first; with ``nested`` also those in its
    sub-folders one level down (so a run folder with a ``checkpoints/`` inside works too)."""
    folder = Path(folder)
    patterns = ("checkpoint-*.npz", "*/checkpoint-*.npz") if nested else ("checkpoint-*.npz",)
    found = [p for pattern in patterns for p in folder.glob(pattern) if NAME.search(p.name)]
    return sorted(found, key=lambda p: int(NAME.search(p.name).group(1)))


def latest_checkpoint(path: str | os.PathLike) -> Path:
    """The file itself, or the checkpoint with the highest step number in a folder."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}.")
    found = list_checkpoints(path, nested=True)
    if not found:
        raise FileNotFoundError(
            f"no checkpoint-*.npz in {path}; train with a Checkpoint "
            "callback (minigd train writes one each epoch) to resume."
        )
    return found[-1]


def restore_part(part: Any, state: Any, key: str, path: object) -> None:
    """Gives a callback (or the gradient path) its saved state; a state it cannot take (the
    file was edited, or a callback changed its format) is a sentence naming both."""
    try:
        part.load_state(state)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise refused_state(key, path, exc) from None


def check_same_model(ckpt: dict[str, Any], config: dict[str, Any]) -> None:
    """Refuses a checkpoint of another architecture or target scaling than the model ``config``
    describes; another dtype continues, cast, with a warning."""
    saved = ckpt["model_config"]
    if saved["layers"] != config["layers"] or saved["loss"] != config["loss"]:
        raise ValueError(
            f"the checkpoint {ckpt['path']} was written for another "
            "architecture; resume with the model it was trained with."
        )
    if saved.get("target_scaling") != config.get("target_scaling"):
        raise ValueError(
            f"the checkpoint {ckpt['path']} was trained on targets scaled by "
            f"{saved.get('target_scaling')} and this run scales them by "
            f"{config.get('target_scaling')}; an exact resume needs the same data and "
            "the same standardize_targets."
        )
    if saved["dtype"] != config["dtype"]:
        warnings.warn(
            f"the checkpoint {ckpt['path'].name} holds {saved['dtype']} parameters; "
            f"this {config['dtype']} model continues from them cast to {config['dtype']}.",
            stacklevel=4,
        )


def check_same_batching(ckpt: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuses a checkpoint whose batching (``Trainer.batching``) differs from ``now``: another
    order would draw other batches than the interrupted run."""
    saved = dict(ckpt["batching"])
    if isinstance(saved.get("shuffle"), bool):  # written before shuffle policies had names
        saved["shuffle"] = "rows" if saved["shuffle"] else "none"
    differs = {k: (saved.get(k), now[k]) for k in now if saved.get(k) != now[k]}
    if differs:
        detail = ", ".join(f"{k} {a!r} then, {b!r} now" for k, (a, b) in differs.items())
        raise ValueError(
            f"the checkpoint {ckpt['path']} was written with other batching "
            f"({detail}); an exact resume needs the same data and settings."
        )


def refused_state(key: str, path: object, exc: Exception) -> ValueError:
    """The sentence for a saved state that its owner cannot take."""
    return ValueError(
        f"the checkpoint {path} holds a state for {key} that it cannot take "
        f"({type(exc).__name__}: {exc}); the file was edited or written with other callbacks. "
        "Resume from an older checkpoint, or start a new run."
    )
