"""Training data that streams from disk: the MiniBatches and validation batches of a source.

``make_trainer`` hands a ``SourceData`` (from ``minigd.data.open``) or a ``Source`` here instead of
checking arrays once: the shape and dtype are checked now, from the headers, and the values batch
by batch as they are read (``minigd.streaming``), so training starts without a first pass over
the data. A validation set (given, or the last fraction of the rows) streams the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minigd._validation import check_float, message
from minigd.batching import MiniBatches
from minigd.data.arrays import held_out_count
from minigd.data.opening import SourceData, source_data
from minigd.data.sources import ArraySource, Source
from minigd.streaming import BatchReader, label_encoder

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
        return model.loss.prepare_targets(targets, model.n_outputs, model.dtype)

    return BatchReader(data.X, data.y, model.dtype, label_encoder(classes, prepare), x_name)


def streamed(model, X, y, validation, validation_split, batching: dict[str, Any]):
    """(MiniBatches of the training rows, validation MiniBatches or None) for a source."""
    data = as_source_data(X, y)
    split = check_float("validation_split", validation_split, minimum=0.0, maximum=1.0)
    if validation is not None and split:
        raise ValueError("pass validation=(X_val, y_val) or validation_split, not both.")
    if split:
        data, held = data.split(held_out_count(len(data), split))
        validation = held
    if model.task == "classification" and model.classes is None:
        model.classes = data.classes  # predict answers in the data's labels
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
