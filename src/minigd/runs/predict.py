"""Predictions of a saved model for a data file: what ``minigd predict`` does, callable too.

The data is opened as a source (``data.formats.open_source``) and predicted a chunk of rows at a
time, so a file larger than memory costs a chunk. A table may hold the training file's label
column (it is left out, as in training) or the features alone (new data, as Kaggle's test.csv):
the model's input width tells which. The predictions are written atomically as ``.npy``, ``.csv``
or ``.parquet``: class labels (or values), or with ``proba`` one probability column per class.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from minigd._extras import require
from minigd._io import atomic_write, atomic_write_text
from minigd.data.formats import open_source, table_columns
from minigd.data.opening import SourceData
from minigd.nn.model import EVAL_CHUNK, Sequential

OUTPUTS = (".npy", ".csv", ".parquet")


def predict_file(
    model: Sequential,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    proba: bool = False,
    label: int | str | None = None,
) -> tuple[Path, int]:
    """Writes ``model``'s predictions for every row of ``data`` to ``out``; returns (out, rows).

    Args:
        label: a table's label column to leave out (default: found as in training when the
            table is one column wider than the model's input, none when it is as wide).
    """
    out = Path(out)
    if out.suffix.lower() not in OUTPUTS:
        raise ValueError(f"--out must end in {', '.join(OUTPUTS)}; received {out.name!r}.")
    if proba and model.task != "classification":
        raise ValueError("--proba applies to a classifier; this model predicts values.")
    source = _features(model, data, label)
    predicted = np.concatenate(list(_chunks(model, source, proba)) or [np.empty((0,))])
    _write(out, predicted, _column_names(model, proba, predicted))
    return out, len(predicted)


def _features(model: Sequential, data, label) -> SourceData:
    """The data's feature rows, its label column left out when it has one (decided from a
    table's header, so the data is read once)."""
    columns = table_columns(data)
    if columns is not None and label is None and len(columns) == model.n_inputs:
        label = False  # as wide as the model's input: features only, no label column
    opened = open_source(data, target=label)
    width = opened.X.row_shape[-1] if opened.X.row_shape else 1
    if width != model.n_inputs:
        raise ValueError(
            f"{data} has {width} features per row; the model takes {model.n_inputs}. Give the "
            "data the model was trained on the same columns (--label names a table's label)."
        )
    return opened


def _chunks(model: Sequential, source: SourceData, proba: bool):
    for lo in range(0, source.X.n_rows, EVAL_CHUNK):
        X = source.X.read(lo, min(source.X.n_rows, lo + EVAL_CHUNK))
        yield model.predict_proba(X) if proba else model.predict(X)


def _column_names(model: Sequential, proba: bool, predicted: np.ndarray) -> list[str]:
    if not proba:
        if predicted.ndim == 1:
            return ["prediction"]
        return [f"output_{j}" for j in range(predicted.shape[1])]
    classes = model.classes if model.classes is not None else range(predicted.shape[1])
    return [f"p({c})" for c in classes]


def _write(out: Path, predicted: np.ndarray, names: list[str]) -> None:
    suffix = out.suffix.lower()
    if suffix == ".npy":
        atomic_write(out, lambda f: np.save(f, predicted, allow_pickle=False))
    elif suffix == ".csv":
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(names)
        writer.writerows(predicted.reshape(len(predicted), -1).tolist())
        atomic_write_text(out, text.getvalue())
    else:
        pa = require("pyarrow", "data", "writing Parquet")
        import pyarrow.parquet as pq

        columns = predicted.reshape(len(predicted), -1)
        table = pa.table({name: columns[:, j] for j, name in enumerate(names)})
        atomic_write(out, lambda f: pq.write_table(table, f))
