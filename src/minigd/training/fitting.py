"""From a user's arguments to a Trainer: ``make_trainer`` checks the data once (arrays) or opens
its stream (a source on disk), builds the batches, the optimizer and the default callbacks;
``fit`` is ``make_trainer(...).run()``."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from minigd._validation import check_float, message
from minigd.batching import MiniBatches
from minigd.data.arrays import held_out_count
from minigd.nn.losses import get_loss
from minigd.optim import Optimizer, get_optimizer
from minigd.training.adaptive import START, AdaptiveBatchSize
from minigd.training.callbacks import Callback, DivergenceGuard, ProgressBar
from minigd.training.history import History
from minigd.training.step_noise import StepNoise
from minigd.training.streamed import is_source, streamed
from minigd.training.trainer import Trainer


def make_trainer(
    model,
    X: Any,
    y: Any = None,
    *,
    batch_size: int | str,
    epochs: int,
    optimizer: str | Optimizer = "sgd",
    lr: float | None = None,
    loss: str | None = None,
    validation: tuple[Any, Any] | None = None,
    validation_split: float = 0.0,
    sample_axis: int = 0,
    shuffle: bool | str = True,
    seed: int = 0,
    last_batch: str = "keep",
    callbacks: Sequence[Callback] = (),
    verbose: int = 1,
    resume: Any = None,
    threads: int | None = None,
    shuffle_buffer: int | None = None,
    comm=None,
    sync_batchnorm: bool = True,
    noise_every: int | None = None,
) -> Trainer:
    """Checks and converts the data once and builds the Trainer that ``fit`` runs: ``fit(...)`` is
    ``make_trainer(...).run()``. Raise ``trainer.epochs`` and call ``run()`` again to go on.

    Args:
        model: a ``minigd.nn.Sequential`` (its loss is used unless ``loss`` is given).
        X, y: (m, n) samples as rows, or (n, m) with ``sample_axis=1`` (the note's layout), and
            the targets; or ``minigd.data.open(path)``, streamed from disk (``training.streamed``).
        batch_size, epochs: samples per step ("full": batch GD, 1: SGD, "adaptive": grown with
            the noise scale), and passes over the data (a resumed run trains up to this count).
        optimizer: "sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw" or an Optimizer.
        lr, loss: the learning rate of an optimizer given by name (default: torch's), a loss name
            replacing the model's.
        validation, validation_split: (X_val, y_val) evaluated after each epoch, in the layout of
            X; or the last fraction of X held out for it (before shuffling, as Keras).
        shuffle, seed, last_batch, shuffle_buffer: MiniBatches' (buffer_bytes for the last).
        callbacks, verbose: extra callbacks (a DivergenceGuard is added unless one is given);
            1 adds a progress bar (a line per epoch off a terminal) and says why it stopped.
        resume, threads: a checkpoint (file, or folder of them) to continue from; BLAS threads
            while training (default: the cores this process may use).
        comm, sync_batchnorm: train data-parallel on an mpi4py communicator (``Trainer``).
        noise_every: measure B_simple every this many steps (``training.step_noise``).
    """
    batch_size, callbacks = _adaptive(batch_size, callbacks)
    batching = {"batch_size": batch_size, "shuffle": shuffle, "seed": seed}
    batching |= {"last_batch": last_batch, "buffer_bytes": shuffle_buffer}
    held = (validation, validation_split)
    batches, validation = _batches(model, X, y, held, sample_axis, batching, loss)
    opt, extra = get_optimizer(optimizer, lr), _with_defaults(callbacks, verbose, comm)
    noise = None if noise_every is None else StepNoise(noise_every, seed=seed)
    run = {"epochs": epochs, "validation": validation, "callbacks": extra, "threads": threads}
    run |= {"comm": comm, "sync_batchnorm": sync_batchnorm, "noise": noise}
    trainer = Trainer(model, batches, opt, **run)
    if resume is not None:
        trainer.restore(resume)
    return trainer


def _adaptive(batch_size, callbacks: Sequence[Callback]):
    """``batch_size="adaptive"``: an AdaptiveBatchSize callback (unless one is given) picks the
    sizes; the batches are built whole ("full", valid for any m) and it regroups them."""
    if not (isinstance(batch_size, str) and batch_size.lower() == "adaptive"):
        return batch_size, callbacks
    if not any(isinstance(c, AdaptiveBatchSize) for c in callbacks):
        callbacks = [*callbacks, AdaptiveBatchSize(START)]
    return "full", callbacks


def _batches(model, X, y, held_out, sample_axis, batching, loss=None):
    """(the MiniBatches of the training data, its validation data): arrays checked once, or a
    source on disk, checked batch by batch as it streams. ``loss`` replaces the model's."""
    if not callable(getattr(model, "prepare", None)):
        raise TypeError(
            message("model", "a minigd.nn.Sequential", model, "Build one with minigd.nn.mlp(...).")
        )
    if loss is not None:
        model.loss = get_loss(loss)
    validation, validation_split = held_out
    if is_source(X):
        batches, validation = streamed(model, X, y, validation, validation_split, batching)
    else:
        rows, targets, validation = _hold_out(
            model, X, y, validation, validation_split, sample_axis
        )
        batches = MiniBatches.from_prepared(rows, targets, **batching)
    _check_batchnorm(model, batches)
    return batches, validation


def _check_batchnorm(model, batches: MiniBatches) -> None:
    """A BatchNorm model cannot train on a batch of one sample: refuse before training."""
    if model.has_batchnorm and min(batches.batch_sizes) < 2:
        raise ValueError(
            f"BatchNorm cannot train on a batch of 1 sample, and batch_size="
            f"{batches.batch_size} with last_batch={batches.last_batch!r} on "
            f"{batches.n_samples} samples yields one. Use last_batch='merge' (fold it into the "
            f"batch before) or 'drop'."
        )


def _hold_out(model, X, y, validation, validation_split, sample_axis):
    """Checks the data once: (train rows, train targets, prepared validation pair or None)."""
    rows, targets = model.prepare(X, y, sample_axis=sample_axis)
    if targets is None:
        raise ValueError("fit needs targets y; minigd trains supervised models.")
    split = check_float("validation_split", validation_split, minimum=0.0, maximum=1.0)
    if validation is not None and split:
        raise ValueError("pass validation=(X_val, y_val) or validation_split, not both.")
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise ValueError(message("validation", "a pair (X_val, y_val)", validation))
        names = ("validation X", "validation y")
        return rows, targets, model.prepare(*validation, sample_axis=sample_axis, names=names)
    if not split:
        return rows, targets, None
    n_val = held_out_count(len(rows), validation_split)
    return rows[:-n_val], targets[:-n_val], (rows[-n_val:], targets[-n_val:])


def _with_defaults(callbacks: Sequence[Callback], verbose: int, comm=None) -> list[Callback]:
    """The caller's callbacks, with a DivergenceGuard first and a ProgressBar last by default
    (on rank 0 only, in a data-parallel run)."""
    verbose = verbose if comm is None or comm.Get_rank() == 0 else 0
    extra = list(callbacks)
    if not any(isinstance(c, DivergenceGuard) for c in extra):
        extra.insert(0, DivergenceGuard())
    if verbose and not any(isinstance(c, ProgressBar) for c in extra):
        extra.append(ProgressBar())
    return extra


def fit(model, X: Any, y: Any = None, **options: Any) -> History:
    """Trains ``model`` on (X, y) by mini-batch gradient descent and returns its History.

    ``fit(model, X, y, **options)`` is ``make_trainer(model, X, y, **options).run()``; the
    options (``batch_size``, ``epochs``, ``optimizer``, ``lr``, ``validation``, ``resume``, ...)
    are make_trainer's, documented there.
    """
    return make_trainer(model, X, y, **options).run()


fit.__signature__ = inspect.signature(make_trainer).replace(return_annotation=History)
