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
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minigd.data.files import Dataset
from minigd.data.formats import label_column
from minigd.data.opening import SourceData
from minigd.distributed.comm import check_same
from minigd.runs.config import RunConfig
from minigd.runs.folder import RunFolder, begin, check_folder
from minigd.training.callbacks import Checkpoint
from minigd.training.checkpoint import list_checkpoints
from minigd.training.fitting import make_trainer
from minigd.training.history import History
from minigd.training.tensorboard import TensorBoard

DEFAULT_CHECKPOINT_SECONDS = 60.0  # at most about a minute of work lost to a kill


@dataclass
class RunOutcome:
    """How a run ended: the model, its History, the final metrics (None when interrupted: the
    folder keeps its last complete model), the outcome and why it stopped early, if it did.
    A signal on this process is not an outcome: it reaches the caller as KeyboardInterrupt (or
    ends the process, for SIGTERM) once the checkpoint is written."""

    model: Any
    history: History
    metrics: dict[str, float] | None
    outcome: str
    stop_reason: str | None
    checkpoint: Path | None = None


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
    folder = RunFolder(out, resume=resume, overwrite=overwrite)
    config, train, test = _checked(folder, config)
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
    if trainer.gradient.ranks > 1:  # one run, one folder: rank 0 alone writes it
        check_same(comm, {"out": str(folder.path.resolve())})
    restored = _restore(folder, trainer, config) if resume else None
    if announce is not None and trainer.rank == 0:
        parallel = trainer.gradient if trainer.gradient.ranks > 1 else None
        scaling = trainer.model.target_scaling
        announce(describe(config, train, folder.path, trainer.threads, parallel, scaling))
    history = _train(folder, trainer, config, train, restored)
    if trainer.interrupted:  # on another rank (a signal here raises): resume from the checkpoint
        return RunOutcome(
            trainer.model,
            history,
            None,
            trainer.outcome,
            trainer.stop_reason,
            checkpoint=checkpoint.last_path,
        )
    metrics = final_metrics(trainer.model, history, train, config.sample_axis)
    return RunOutcome(trainer.model, history, metrics, trainer.outcome, trainer.stop_reason)


def _checked(folder: RunFolder, config: RunConfig):
    """(the run's settings as config.json records them, train, test): every check that needs
    no lock, done before the folder changes."""
    check_folder(folder)
    config.check()
    if not folder.resume:
        config = config.absolute()
    config = config.resolved()
    train, test = config.load()
    if train.classes is not None and np.asarray(train.classes).dtype.hasobject:
        raise TypeError(  # the model would train to the end and then fail to save
            f"the class labels of {config.data} are Python objects, which a model file cannot "
            "hold; give them as text or numbers."
        )
    if folder.resume:
        folder.check_data(config)
    return config, train, test


def _train(folder: RunFolder, trainer, config: RunConfig, train: Dataset, restored) -> History:
    """Trains under the folder's lock (rank 0 holds it and writes; other ranks only train) and
    writes the results of a run that was not interrupted."""
    root = trainer.rank == 0
    with folder.locked() if root else contextlib.nullcontext():
        if root:
            begin(folder, config, train, restored)
        history = trainer.run()
        if trainer.interrupted:
            return history
        trainer.model.classes = train.classes  # predict and evaluate speak the data's labels
        if root:
            folder.write_results(trainer.model, history)
    return history


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
        standardize_targets=config.standardize_targets,
    )


def describe(
    config: RunConfig, train: Dataset, out: Path, trainer_threads: int, parallel=None, scaling=None
) -> str:
    """One line: what is trained on what, the task and why (and a regressor's target scaling),
    and where it goes."""
    task = f"{train.n_classes} classes" if train.classes is not None else "regression"
    why = f" ({train.task_reason})" if train.task_reason else ""
    if scaling is not None:
        why += f", targets standardized ({_scaling_text(scaling)})"
    m = np.shape(train.X)[config.sample_axis]  # samples are columns with --sample-axis 1
    label = label_column(config.data, config.target)  # a table's: which column, and why
    task = f"{label}; {task}" if label else task
    how = ""
    if config.stream == "always":
        how = f", streamed from disk ({config.shuffle} shuffle)"
    if parallel is not None:
        pids = ", ".join(f"{rank}:{pid}" for rank, pid in enumerate(parallel.pids))
        split = _split(config, m, parallel.size)
        how += f", data-parallel on {parallel.size} MPI ranks ({split}; rank:pid {pids})"
    return (
        f"training {config.model} on {config.data} ({m} samples; {task}{why}): "
        f"batch size {config.batch_size}, {config.optimizer}, {config.epochs} epochs, "
        f"{trainer_threads} BLAS threads{how} -> {out}"
    )


def _split(config: RunConfig, m: int, ranks: int) -> str:
    """How a global batch is shared among the ranks."""
    if config.batch_size == "adaptive":
        return "each global batch, of the size rank 0 chooses, split evenly"
    b = m if config.batch_size == "full" else int(config.batch_size)
    return f"each global batch of {b} split into shares of {b // ranks}-{-(-b // ranks)}"


def _scaling_text(scaling) -> str:
    """'mean 312.4, std 85.1' (one output) or 'means 1, 2; stds 3, 4' (several)."""
    if len(scaling.mean) == 1:
        return f"mean {scaling.mean[0]:.4g}, std {scaling.scale[0]:.4g}"
    means = ", ".join(f"{v:.4g}" for v in scaling.mean[:4])
    stds = ", ".join(f"{v:.4g}" for v in scaling.scale[:4])
    more = ", ..." if len(scaling.mean) > 4 else ""
    return f"means {means}{more}; stds {stds}{more}"


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
