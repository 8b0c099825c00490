"""From a user's data to the batches a model trains on: the data path's entry into training.

Arrays are checked and converted once (``Sequential.prepare``), here, before the first step. A
``SourceData`` (from ``minigd.data.open_source``) or a ``Source`` is instead checked from its
headers now and its values batch by batch as they are read (``batching.reader``), so training
starts without a first pass over the data. A validation set (given, or the last fraction of the
rows) is held out the same way as the training data is held.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minigd._validation import check_float, message
from minigd.batching import BatchReader, MiniBatches, label_encoder
from minigd.data.arrays import held_out_count
from minigd.data.opening import SourceData, source_data
from minigd.data.sources import ArraySource, Source
from minigd.nn.losses import get_loss
from minigd.nn.target_scaling import TargetScaling

EVAL_ROWS = 4096  # rows per streamed validation batch


def is_source(X: Any) -> bool:
    return isinstance(X, (SourceData, Source))


def as_source_data(X: Any, y: Any, name: str = "X") -> SourceData:
    if isinstance(X, SourceData):
        if y is not None:
            raise ValueError(f"{name} already carries its targets; leave y out.")
        return X
    if not isinstance(X, Source):  # arrays beside a streamed training set (validation)
        X = ArraySource(np.ascontiguousarray(X), name)
    if y is not None and not isinstance(y, Source):
        y = ArraySource(np.asarray(y), f"{name} targets")
    return source_data(X, y, "auto", X.name)


def reader_for(model, data: SourceData, x_name: str = "X") -> BatchReader:
    """The reader that casts, checks and encodes ``data``'s batches for ``model``."""
    if data.X.row_shape != (model.n_inputs,):
        raise ValueError(
            message(
                x_name,
                f"rows of {model.n_inputs} features",
                f"rows of shape {data.X.row_shape} in {data.X.name}",
                "Build the model for the data's width (minigd.nn.model_for_data does).",
            )
        )
    if data.y is None:
        raise ValueError(f"{data.X.name} has no targets; minigd trains supervised models.")
    classes = model.classes if model.classes is not None else data.classes
    if model.task == "classification" and classes is None:
        raise ValueError(
            f"the targets of {data.name} are regression values, and the model classifies "
            f"(loss {model.loss.name!r}). Use a model with the 'mse' loss."
        )
    if model.task != "classification":
        classes = None

    def prepare(targets: np.ndarray) -> np.ndarray:
        prepared = model.loss.prepare_targets(targets, model.n_outputs, model.dtype)
        return model.encode_targets(prepared)

    return BatchReader(data.X, data.y, model.dtype, label_encoder(classes, prepare), x_name)


def _streamed(model, X, y, held_out, standardize: bool, batching: dict[str, Any]):
    """(MiniBatches of the training rows, validation MiniBatches or None) for a source."""
    validation, validation_split = held_out
    data = as_source_data(X, y)
    split = check_float("validation_split", validation_split, minimum=0.0, maximum=1.0)
    if validation is not None and split:
        raise ValueError("pass validation=(X_val, y_val) or validation_split, not both.")
    if split:
        data, held = data.split(held_out_count(len(data), split))
        validation = held
    if model.task == "classification" and model.classes is None:
        model.classes = data.classes  # predict answers in the data's labels
    if _scales_now(model, standardize) and data.y is not None:
        model.target_scaling = TargetScaling.fit_source(data.y, model.n_outputs)
    batches = MiniBatches.from_prepared(None, None, stream=reader_for(model, data), **batching)
    if validation is None:
        return batches, None
    if isinstance(validation, (tuple, list)) and len(validation) == 2:
        validation = as_source_data(*validation, name="validation X")
    held = as_source_data(validation, None, "validation X")
    reader = reader_for(model, held, "validation X")
    val = MiniBatches.from_prepared(
        None, None, stream=reader, batch_size=min(EVAL_ROWS, len(held)), shuffle="none"
    )
    return batches, val


def training_batches(
    model, X, y, held_out, sample_axis, batching, loss=None, standardize_targets=False
):
    """(the MiniBatches of the training data, its validation data): arrays checked once, or a
    source on disk, checked batch by batch as it streams. ``loss`` replaces the model's;
    ``standardize_targets`` fits a regressor's target scaling on the training rows unless the
    model has one (a resumed or continued run keeps its own)."""
    if not callable(getattr(model, "prepare", None)):
        raise TypeError(
            message("model", "a minigd.nn.Sequential", model, "Build one with minigd.nn.mlp(...).")
        )
    if loss is not None:
        model.loss = get_loss(loss)
    if is_source(X):
        batches, validation = _streamed(model, X, y, held_out, standardize_targets, batching)
    else:
        rows, targets, validation = _hold_out(model, X, y, *held_out, sample_axis)
        if _scales_now(model, standardize_targets):
            targets, validation = _standardize(model, targets, validation)
        batches = MiniBatches.from_prepared(rows, targets, **batching)
    _check_batchnorm(model, batches)
    return batches, validation


def standardize(model, X, y, sample_axis: int = 0) -> None:
    """Gives a regressor the target scaling of (X, y) unless it has one (``fit``'s
    ``standardize_targets`` for callers that prepare their data themselves)."""
    if _scales_now(model, True):
        model.target_scaling = TargetScaling.fit(model.prepare(X, y, sample_axis=sample_axis)[1])


def _scales_now(model, standardize: bool) -> bool:
    """Whether the target scaling is to be fitted now: asked for, a regressor, none yet."""
    if standardize not in (True, False):
        raise ValueError(message("standardize_targets", "True or False", standardize))
    return standardize and model.task == "regression" and model.target_scaling is None


def _standardize(model, targets: np.ndarray, validation):
    """Fits the scaling on the training targets (only: the held-out rows stay unseen) and
    re-expresses both sets in standard units; both were prepared before it existed."""
    model.target_scaling = TargetScaling.fit(targets)
    if validation is not None:
        validation = (validation[0], model.encode_targets(validation[1]))
    return model.encode_targets(targets), validation


def _check_batchnorm(model, batches: MiniBatches) -> None:
    """A BatchNorm model cannot train on a batch of one sample: refuse before training."""
    if model.has_batchnorm and batches.smallest_batch < 2:
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
