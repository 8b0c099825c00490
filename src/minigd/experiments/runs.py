"""A training run as a folder: what ``minigd train`` does, callable from Python too.

A run folder holds ``config.json`` (everything needed to repeat or resume the run, with the
fingerprint of each data file), ``model.npz``, ``history.json``, ``history.csv`` (one row per
step), ``epochs.csv`` and ``checkpoints/``. What keeps it safe:

1. Every setting and the data are checked before anything in the folder changes: a command
   that fails its checks leaves an existing run exactly as it was.
2. One writer at a time: an exclusive lock (``fcntl.flock`` on ``.lock``, released by the OS when
   the process dies); a second writer is refused with the holder's pid.
3. An existing run is continued only with ``resume`` and replaced only with ``overwrite``.
4. A resume trains on the same data or refuses: data paths are stored absolute, with their
   fingerprints, and the learning rate must match the checkpoint's.
5. Every file is written atomically; an interrupted run keeps its last complete model and writes
   a checkpoint to resume from instead.

Folder and file names made from specs go through ``slug``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from minigd._extras import require
from minigd._io import atomic_write_text
from minigd._validation import check_choice, check_float, check_int, message
from minigd.batching import LAST_BATCH_POLICIES, SHUFFLES
from minigd.batchsize.memory import available_memory
from minigd.data import datasets
from minigd.data.files import Dataset
from minigd.data.fingerprint import changed, fingerprint
from minigd.data.loading import load
from minigd.data.opening import SourceData, is_streamable
from minigd.data.opening import open_source as open_data
from minigd.nn.models import model_for_data, parse_model_spec
from minigd.optim import get_optimizer
from minigd.training.callbacks import Checkpoint
from minigd.training.checkpoint import list_checkpoints
from minigd.training.fitting import make_trainer
from minigd.training.history import History
from minigd.training.tensorboard import TensorBoard

RUN_FILES = ("model.npz", "history.json", "history.csv", "epochs.csv", "config.json")
DEFAULT_CHECKPOINT_SECONDS = 60.0  # at most about a minute of work lost to a kill
STREAM_CHOICES = ("auto", "always", "never")


STREAM_SHARE = 0.25  # auto-stream a file larger than this share of the available memory


def should_stream(path: str | os.PathLike) -> bool:
    """Whether a run streams ``path`` by default: a shard folder always; a .npy, Parquet or HDF5
    file when it would take more than a quarter of the available memory (the model, its batches
    and the OS's page cache need the rest)."""
    p = Path(path)
    if not p.exists() or not is_streamable(p):
        return False
    return p.is_dir() or p.stat().st_size > STREAM_SHARE * available_memory()


def slug(text: str) -> str:
    """A file or folder name from specs and labels: "mlp:256,128+bn" -> "mlp256-128+bn",
    "mini-batch (B=64)" -> "mini-batch-B64"."""
    text = re.sub(r"[,\s]+", "-", text.strip())
    return re.sub(r"[^A-Za-z0-9_.+-]", "", text).strip("-.") or "run"


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (it exists, it is locked, it is not a run)."""


@dataclass
class RunConfig:
    """The settings of one run; saved as config.json."""

    data: str = "mnist-5k"
    model: str = "mlp:128"
    optimizer: str = "sgd"
    lr: float | None = None
    batch_size: int | str = 64
    epochs: int = 10
    seed: int = 0
    sample_axis: int = 0
    last_batch: str = "keep"
    validation_split: float = 0.0
    target: str | int | None = None
    y_path: str | None = None
    dtype: str = "float32"
    task: str = "auto"
    warmup_epochs: int = 0
    stream: str = "auto"  # read the data from disk as training goes: "always", "never", "auto"
    shuffle: str = "auto"  # "rows", "blocks", "none"; auto: rows in memory, blocks streaming
    batchnorm_stats: str = "global"  # data-parallel: over the global batch, or "per-rank"
    noise_every: int | None = None  # measure B_simple every this many steps (one process)
    tensorboard: bool = False  # event files in the run folder's tensorboard/

    def default_name(self) -> str:
        return slug(f"{Path(self.data).stem}-{self.model}-{self.optimizer}-b{self.batch_size}")

    def check(self) -> None:
        """Checks every setting that needs no data, with the usual sentences."""
        check_int("epochs", self.epochs, minimum=1, fix="Train at least one epoch.")
        check_int("seed", self.seed, minimum=0)
        check_choice("sample_axis", self.sample_axis, (0, 1))
        check_choice("last_batch", self.last_batch, LAST_BATCH_POLICIES)
        check_choice("dtype", self.dtype, ("float32", "float64"))
        check_choice("task", self.task, ("auto", "classification", "regression"))
        check_int("warmup_epochs", self.warmup_epochs, minimum=0)
        check_choice("stream", self.stream, STREAM_CHOICES)
        check_choice("shuffle", self.shuffle, ("auto", *SHUFFLES))
        check_choice("batchnorm_stats", self.batchnorm_stats, ("global", "per-rank"))
        if self.noise_every is not None:
            check_int("noise_every", self.noise_every, minimum=1)
        if self.tensorboard:  # before anything is written, not at the first step
            require("tensorboardX", "tensorboard", "--tensorboard")
        if self.stream == "always" and not self.is_named_dataset and not is_streamable(self.data):
            raise ValueError(
                f"{self.data} cannot be read a chunk at a time (.npz and CSV are read whole); "
                f"convert it first: minigd convert {self.data} {Path(self.data).stem}-shards"
            )
        if self.stream == "always" and self.is_named_dataset:
            raise ValueError(f"the dataset {self.data!r} is held in memory; leave --stream out.")
        get_optimizer(self.optimizer, self.lr)  # the name and the learning rate
        split = check_float("validation_split", self.validation_split, minimum=0.0, maximum=1.0)
        if split and self.is_named_dataset:
            raise ValueError(
                f"--validation-split applies to a data file; the dataset {self.data!r} brings "
                "its own test split. Leave the option out."
            )
        if self.y_path and Path(self.data).suffix.lower() != ".npy":
            raise ValueError(
                f"--y gives the targets of a .npy X; {self.data!r} holds its own targets. "
                "Leave --y out."
            )
        parse_model_spec(self.model, 1, 2)  # the spec's syntax

    @property
    def is_named_dataset(self) -> bool:
        return self.data in datasets.REGISTRY

    def absolute(self) -> RunConfig:
        """The same settings with data files named by absolute paths, so that a resume from
        another directory reads the same files."""
        data = self.data if self.is_named_dataset else str(Path(self.data).resolve())
        y_path = None if self.y_path is None else str(Path(self.y_path).resolve())
        return RunConfig(**(asdict(self) | {"data": data, "y_path": y_path}))

    def resolved(self) -> RunConfig:
        """The same settings with ``stream`` and ``shuffle`` decided, as config.json records them
        (the decision depends on this machine's free memory; a resume must not redo it)."""
        stream = self.stream
        if stream == "auto":
            stream = "always" if should_stream(self.data) else "never"
        shuffle = self.shuffle
        if shuffle == "auto":
            shuffle = "blocks" if stream == "always" else "rows"
        return RunConfig(**(asdict(self) | {"stream": stream, "shuffle": shuffle}))

    def load(self) -> tuple[Any, Any]:
        """(train, test) of the run: Datasets in memory, or a SourceData (and None) streamed."""
        if self.stream == "always":
            data = open_data(self.data, y=self.y_path, target=self.target, task=self.task)
            return data, None
        return load(self.data, target=self.target, y_path=self.y_path, task=self.task)

    def data_files(self) -> dict[str, str]:
        """The files this run reads, by role."""
        if self.is_named_dataset:
            return {}
        return {"X": self.data} | ({"y": self.y_path} if self.y_path else {})

    def build_model(self, train: Dataset):
        """The model this run trains, fitted to the data's width and classes."""
        return model_for_data(
            self.model,
            train.X,
            train.n_classes,
            sample_axis=self.sample_axis,
            seed=self.seed,
            dtype=np.dtype(self.dtype),
        )


@dataclass
class RunOutcome:
    """How a run ended: the model, its History, the final metrics (None when interrupted: the
    folder keeps its last complete model), the outcome and why it stopped early, if it did."""

    model: Any
    history: History
    metrics: dict[str, float] | None
    outcome: str
    stop_reason: str | None
    signal: int | None = None
    checkpoint: Path | None = None


class RunFolder:
    """The files of one run, and the lock that keeps a second writer out."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not str(path).strip():
            raise ValueError(message("the run folder (--out)", "a non-empty path", str(path)))
        self.checkpoints = self.path / "checkpoints"
        self._lock_fd: int | None = None

    def has_run(self) -> bool:
        return (self.path / "config.json").exists()

    @contextlib.contextmanager
    def locked(self):
        """Holds the folder's exclusive lock; refuses at once if another process holds it."""
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise RunFolderError(
                    f"another minigd process (pid {holder}) is writing to {self.path}; wait for "
                    "it to finish, or choose another --out."
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield self
        finally:
            os.close(fd)  # closing releases the lock

    def clean_partial_writes(self) -> None:
        """Removes the temporary files of writes a killed process never finished (those in
        ``checkpoints/`` are the Checkpoint callback's to clean, when training begins)."""
        for partial in self.path.glob(".*.tmp"):
            partial.unlink(missing_ok=True)

    def start_fresh(self) -> None:
        """Removes an old run's files, so nothing of it can be resumed or mistaken for this one."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for stale in list_checkpoints(self.checkpoints):
            stale.unlink()

    def write_config(self, config: RunConfig, train: Dataset) -> None:
        classes = None if train.classes is None else train.classes.tolist()
        prints = {role: fingerprint(path) for role, path in config.data_files().items()}
        saved = asdict(config) | {"classes": classes, "data_fingerprints": prints}
        atomic_write_text(self.path / "config.json", json.dumps(saved, indent=2, default=str))

    def check_data(self, config: RunConfig) -> None:
        """Refuses a resume whose data files differ from those the run started with."""
        saved = _read_json(self.path / "config.json").get("data_fingerprints", {})
        for role, path in config.data_files().items():
            if role in saved and (why := changed(saved[role], path)):
                raise RunFolderError(
                    f"cannot resume {self.path}: {why}. An exact resume needs the same data; "
                    "restore the file, or start a new run with another --out."
                )

    def write_results(self, model, history: History) -> None:
        model.save(self.path / "model.npz")
        history.to_json(self.path / "history.json")
        history.to_csv(self.path / "history.csv", "steps")
        history.to_csv(self.path / "epochs.csv", "epochs")


def train_run(
    config: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    verbose: int = 1,
    checkpoint_every_steps: int | None = None,
    checkpoint_every_seconds: float | None = DEFAULT_CHECKPOINT_SECONDS,
    announce=None,
    threads: int | None = None,
    comm=None,
) -> RunOutcome:
    """Trains as ``config`` says in the run folder ``out`` (see the module docstring).
    ``announce`` receives one line saying what will be trained, once every check has passed.
    With ``comm`` (an MPI communicator of several ranks) every rank trains its share of each
    batch and rank 0 alone writes the folder."""
    folder = RunFolder(out)
    _check_folder(folder, resume, overwrite)
    config.check()
    if not resume:
        config = config.absolute()
    config = config.resolved()
    train, test = config.load()
    if resume:
        folder.check_data(config)
    checkpoint = Checkpoint(
        folder.checkpoints,
        every_steps=checkpoint_every_steps,
        every_seconds=checkpoint_every_seconds,
        keep_last=2,
    )
    callbacks = [checkpoint]
    if config.tensorboard:  # a resumed run goes on in the same logdir (purging past its step)
        callbacks.append(TensorBoard(folder.path / "tensorboard"))
    trainer = _trainer(config, train, test, callbacks, verbose, threads, comm)
    restored = _restore(folder, trainer, config) if resume else None
    root = trainer.rank == 0
    if announce is not None and root:
        parallel = trainer.gradient if trainer.gradient.ranks > 1 else None
        announce(describe(config, train, folder.path, trainer.threads, parallel))
    with folder.locked() if root else contextlib.nullcontext():
        if root:
            _begin(folder, config, train, restored)
        history = trainer.run()
        if trainer.interrupted:  # the folder keeps its last complete model; resume from here
            return RunOutcome(
                trainer.model,
                history,
                None,
                trainer.outcome,
                trainer.stop_reason,
                trainer.signal,
                checkpoint.last_path,
            )
        trainer.model.classes = train.classes  # predict and evaluate speak the data's labels
        if root:
            folder.write_results(trainer.model, history)
    metrics = final_metrics(trainer.model, history, train, config.sample_axis)
    return RunOutcome(trainer.model, history, metrics, trainer.outcome, trainer.stop_reason)


def _trainer(config: RunConfig, train: Dataset, test, callbacks, verbose: int, threads, comm):
    """The Trainer of a run (every argument checked)."""
    streaming = isinstance(train, SourceData)
    return make_trainer(
        config.build_model(train),
        train if streaming else train.X,
        None if streaming else train.y,
        batch_size=config.batch_size,
        epochs=config.epochs,
        optimizer=config.optimizer,
        lr=config.lr,
        validation=None if test is None else (test.X, test.y),
        validation_split=config.validation_split if test is None else 0.0,
        sample_axis=config.sample_axis,
        seed=config.seed,
        last_batch=config.last_batch,
        shuffle=config.shuffle,
        callbacks=callbacks,
        verbose=verbose,
        threads=threads,
        comm=comm,
        sync_batchnorm=config.batchnorm_stats == "global",
        noise_every=config.noise_every,
        warmup_epochs=config.warmup_epochs,
    )


def describe(
    config: RunConfig, train: Dataset, out: Path, trainer_threads: int, parallel=None
) -> str:
    """One line: what is trained on what, the task and why, and where it goes."""
    task = f"{train.n_classes} classes" if train.classes is not None else "regression"
    why = f" ({train.task_reason})" if train.task_reason else ""
    how = ""
    if config.stream == "always":
        how = f", streamed from disk ({config.shuffle} shuffle)"
    if parallel is not None:
        b = len(train.X) if config.batch_size == "full" else int(config.batch_size)
        pids = ", ".join(f"{rank}:{pid}" for rank, pid in enumerate(parallel.pids))
        how += (
            f", data-parallel on {parallel.size} MPI ranks (each global batch of {b} split "
            f"into shares of {b // parallel.size}-{-(-b // parallel.size)}; rank:pid {pids})"
        )
    return (
        f"training {config.model} on {config.data} ({len(train.X)} samples; {task}{why}): "
        f"batch size {config.batch_size}, {config.optimizer}, {config.epochs} epochs, "
        f"{trainer_threads} BLAS threads{how} -> {out}"
    )


def _check_folder(folder: RunFolder, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise ValueError("--resume continues a run and --overwrite replaces one: pick one.")
    if resume and not folder.has_run():
        raise FileNotFoundError(
            f"{folder.path / 'config.json'} not found: --resume takes a run folder written by "
            "minigd train --out."
        )
    if not resume and not overwrite and folder.has_run():
        raise RunFolderError(
            f"{folder.path} already holds a run. Continue it with --resume {folder.path}, "
            "replace it with --overwrite, or choose another --out."
        )


def _restore(folder: RunFolder, trainer, config: RunConfig) -> Path | None:
    """Restores a resumed run before anything is written (reading only); returns the checkpoint
    it continues from, or None when the run was killed before its first one."""
    found = list_checkpoints(folder.checkpoints)
    if not found:  # nothing was trained that a restart cannot redo
        warnings.warn(
            f"{folder.path} has no checkpoint yet; the run starts from its first step.",
            stacklevel=3,
        )
        return None
    trainer.restore(folder.checkpoints)
    done = trainer.position.epoch
    if done > config.epochs:
        raise ValueError(
            f"the run in {folder.path} has trained {done} epochs already; --epochs "
            f"{config.epochs} would train none. Pass --epochs {done + 1} or more."
        )
    if done == config.epochs:  # stopped after its last step, perhaps before its results
        warnings.warn(
            f"the run in {folder.path} has trained all {done} epochs; its results are written "
            f"from the last checkpoint. Pass --epochs {done + 1} or more to go on.",
            stacklevel=3,
        )
    return found[-1]


def _begin(folder: RunFolder, config: RunConfig, train: Dataset, restored: Path | None) -> None:
    """Under the lock, with every check passed: only now does the folder change."""
    newest = list_checkpoints(folder.checkpoints)
    if restored is not None and newest[-1:] != [restored]:
        raise RunFolderError(
            f"{folder.path} changed while this run started (its newest checkpoint is now "
            f"{newest[-1].name if newest else 'gone'}); start the command again."
        )
    if restored is None:
        folder.start_fresh()
    folder.clean_partial_writes()
    folder.write_config(config, train)


def final_metrics(model, history: History, train: Dataset, sample_axis: int) -> dict[str, float]:
    """The train metrics of the finished model, the last validation metrics, and the speed.
    A streamed training set is not read again: its train loss is the last epoch's running mean
    (as Keras reports it), not a second pass over data larger than memory."""
    if isinstance(train, SourceData):
        last = history.epochs[-1]["loss"] if history.epochs else float("nan")
        metrics = {"train_loss_running": last}
    else:
        evaluated = model.evaluate(train.X, train.labels, sample_axis=sample_axis)
        metrics = {f"train_{k}": v for k, v in evaluated.items()}
    if history.epochs:
        metrics.update({k: v for k, v in history.epochs[-1].items() if k.startswith("val_")})
    if "b_simple" in history.meta:  # data-parallel: the noise scale, measured as it trained
        metrics["b_simple"] = history.meta["b_simple"]
    metrics["seconds"] = history.meta.get("seconds", float("nan"))
    metrics["samples_per_second"] = history.meta.get("samples_seen", 0) / max(
        metrics["seconds"], 1e-9
    )
    return metrics


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); it cannot be resumed.") from None


def read_config(folder: str | Path) -> RunConfig:
    """The RunConfig of a run folder, with a sentence naming the file and field when it is off."""
    path = Path(folder) / "config.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: --resume takes a run folder written by minigd train --out."
        )
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object of run settings.")
    raw.pop("classes", None)
    raw.pop("data_fingerprints", None)
    known = {f.name: f for f in fields(RunConfig)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{path} has unknown settings {unknown}; it cannot be resumed.")
    config = RunConfig(**raw)
    try:
        config.check()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    return config
