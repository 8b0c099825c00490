"""From a user's arguments to a Trainer: ``make_trainer`` checks the data once (arrays) or opens
its stream (a source on disk, ``training.inputs``), picks how each step's gradient is computed
(``training.gradient``), builds the optimizer and the default callbacks; ``fit`` is
``make_trainer(...).run()``."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from minigd._threads import usable_cores
from minigd._validation import check_int
from minigd.batching import MiniBatches
from minigd.noise import StepNoise
from minigd.optim import LinearWarmup, Optimizer, get_optimizer
from minigd.training.adaptive import START, AdaptiveBatchSize
from minigd.training.callbacks import Callback, DivergenceGuard, ProgressBar
from minigd.training.goodput import GoodputBatchSize
from minigd.training.gradient import GradientPath, ModelGradient
from minigd.training.history import History
from minigd.training.inputs import training_batches
from minigd.training.thread_choice import ThreadChoice
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
    warmup_epochs: int = 0,
    standardize_targets: bool = False,
) -> Trainer:
    """Checks the data once and builds the Trainer that ``fit`` runs: ``fit(...)`` is
    ``make_trainer(...).run()``. Raise ``trainer.epochs`` and call ``run()`` again to go on.
    The arguments are ``fit``'s, documented there.
    """
    adaptive, batch_size = _adaptive(batch_size, callbacks)
    batching = _batching(batch_size, shuffle, seed, last_batch, shuffle_buffer)
    held_out = (validation, validation_split)
    batches, validation = training_batches(
        model, X, y, held_out, sample_axis, batching, loss, standardize_targets
    )
    optimizer = get_optimizer(optimizer, lr)
    gradient = _gradient_path(
        model, batches, comm, sync_batchnorm, noise_every, adaptive, optimizer
    )
    if gradient.ranks > 1:
        batches = _share(batches, gradient, model)
    measure_threads = threads is None and gradient.ranks == 1 and usable_cores() > 1
    extra = _with_defaults(callbacks, adaptive, verbose, gradient.rank, measure_threads)
    trainer = Trainer(
        model,
        batches,
        optimizer,
        epochs=epochs,
        validation=validation,
        callbacks=extra,
        threads=threads,
        gradient=gradient,
    )
    _warm_up(trainer, warmup_epochs)
    if resume is not None:
        trainer.restore(resume)
    return trainer


def _share(batches: MiniBatches, gradient: GradientPath, model) -> MiniBatches:
    """This rank's share of each global batch. From disk under a block shuffle each rank reads
    its own blocks; BatchNorm needs rows on every rank in every batch, so with it the shares
    are even and every rank reads every buffer."""
    return batches.shard(gradient.rank, gradient.ranks, by_blocks=not model.has_batchnorm)


def _adaptive(batch_size, callbacks: Sequence[Callback]) -> tuple[AdaptiveBatchSize | None, Any]:
    """(the AdaptiveBatchSize that picks the sizes, or None; the batch size to build with).
    ``batch_size="adaptive"`` adds a GoodputBatchSize unless one is given; the batches are then
    built whole ("full", valid for any m) and it regroups them at its start."""
    given = next((c for c in callbacks if isinstance(c, AdaptiveBatchSize)), None)
    if not (isinstance(batch_size, str) and batch_size.lower() == "adaptive"):
        return given, batch_size
    return (given or GoodputBatchSize(START)), "full"


def _batching(batch_size, shuffle, seed: int, last_batch: str, buffer_bytes) -> dict[str, Any]:
    """MiniBatches' options."""
    return {
        "batch_size": batch_size,
        "shuffle": shuffle,
        "seed": seed,
        "last_batch": last_batch,
        "buffer_bytes": buffer_bytes,
    }


def _gradient_path(
    model, batches, comm, sync_batchnorm, noise_every, adaptive, optimizer
) -> GradientPath:
    """How each step's gradient is computed (``training.gradient``): over the ranks of
    ``comm``; measuring the noise scale when asked for (two halves of the batch) or when an
    adaptive batch size follows it (as that policy says); else by the model's own pass."""
    m, seed = batches.n_samples, batches.seed
    if comm is not None and comm.Get_size() > 1:
        from minigd.distributed import DataParallel  # mpi4py is an extra

        return DataParallel(comm, sync_batchnorm, population=m)
    if noise_every is not None:
        return StepNoise(noise_every, seed=seed, population=m)
    if adaptive is not None:
        return adaptive.noise_path(model, optimizer, m, seed)
    return ModelGradient()


def _with_defaults(
    callbacks, adaptive, verbose: int, rank: int, measure_threads: bool
) -> list[Callback]:
    """The caller's callbacks (and an adaptive batch size's), with a DivergenceGuard first and
    a ProgressBar last by default (on rank 0 only, in a data-parallel run), and a ThreadChoice
    before all of them when the threads are measured and the caller passed none (so its
    checkpoint key does not depend on the other callbacks; two would undo each other's tries)."""
    extra = list(callbacks)
    if adaptive is not None and adaptive not in extra:
        extra.append(adaptive)
    if not any(isinstance(c, DivergenceGuard) for c in extra):
        extra.insert(0, DivergenceGuard())
    if verbose and rank == 0 and not any(isinstance(c, ProgressBar) for c in extra):
        extra.append(ProgressBar())
    if measure_threads and not any(isinstance(c, ThreadChoice) for c in extra):
        extra.insert(0, ThreadChoice())  # the faster of 1 thread and the cores, measured
    return extra


def _warm_up(trainer: Trainer, epochs: int) -> None:
    """Goyal et al. 2017: ramp up to a large, linearly scaled rate over the first epochs."""
    epochs = check_int("warmup_epochs", epochs, minimum=0)
    if epochs:
        steps = epochs * trainer.batches_per_epoch
        opt = trainer.optimizer
        opt.set_schedule(LinearWarmup(opt.base_lr(), warmup_steps=steps))


def fit(model, X: Any, y: Any = None, **options: Any) -> History:
    """Trains ``model`` on (X, y) by mini-batch gradient descent and returns its History.

    ``fit(model, X, y, **options)`` is ``make_trainer(model, X, y, **options).run()``, and takes
    make_trainer's keyword arguments (its signature is shown as fit's).

    Args:
        model: a ``minigd.nn.Sequential`` (its loss is used unless ``loss`` is given).
        X, y: (m, n) samples as rows, or (n, m) with ``sample_axis=1`` (the note's layout), and
            the targets; or ``minigd.data.open_source(path)``, streamed from disk.
        batch_size, epochs: samples per step ("full": batch GD, 1: SGD, "adaptive": grown with
            the noise scale), and passes over the data (a resumed run trains up to this count).
        optimizer, lr: an optimizer's name (``optim.OPTIMIZERS``) or an Optimizer, and the
            learning rate of one given by name (default: torch's).
        loss: a loss name replacing the model's.
        validation, validation_split: (X_val, y_val) evaluated after each epoch, in the layout of
            X; or the last fraction of X held out for it (before shuffling, as Keras).
        shuffle, seed, last_batch, shuffle_buffer: MiniBatches' (buffer_bytes for the last).
        callbacks, verbose: extra callbacks (a DivergenceGuard is added unless one is given);
            1 adds a progress bar (a line per epoch off a terminal) and says why it stopped.
        resume, threads: a checkpoint (file, or folder of them) to continue from; BLAS threads
            while training (default: the faster of 1 and the cores this process may use,
            measured as it trains, ``training.thread_choice``).
        comm, sync_batchnorm: train data-parallel on an mpi4py communicator (``distributed``).
        noise_every: measure B_simple every this many steps (``noise.StepNoise``).
        warmup_epochs: ramp the learning rate up linearly over these first epochs.
        standardize_targets: a regressor learns (y - mean) / std of the training targets and
            predicts in y's units (``nn.target_scaling``); off by default, as torch and Keras
            train on the targets given. minigd's CLI and estimators turn it on.
    """
    return make_trainer(model, X, y, **options).run()


fit.__signature__ = inspect.signature(make_trainer).replace(return_annotation=History)
