"""Checks and layout conversion for the arrays that enter minigd.

The note writes X as (features, samples); most libraries write (samples, features). Both are
accepted (``sample_axis`` says which) and converted *once*, here, to samples-as-rows,
C-contiguous, so that a mini-batch is a gather of whole rows. Nothing downstream ever
transposes per step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minigd._validation import check_choice, message

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_rows(X: Any, *, sample_axis: int = 0, dtype: Any = None, name: str = "X") -> np.ndarray:
    """Returns X with samples along axis 0, C-contiguous, floating point and finite.

    Copies only when it must: an X that already has samples as rows, is C-contiguous and has the
    wanted dtype is returned as is (the caller then shares memory with the user's array).

    Args:
        X: array-like of shape (m, ...) for ``sample_axis=0`` or (n, m) for ``sample_axis=1``.
        sample_axis: the axis that indexes samples, 0 or 1.
        dtype: the floating dtype wanted; None keeps float32/float64 and turns anything else
            numeric (ints, bools, float16) into float32.
        name: the argument's name for error messages.

    Returns:
        An array of shape (m, ...) whose rows are samples.
    """
    check_choice(
        "sample_axis",
        sample_axis,
        (0, 1),
        "Use 0 for (samples, features), 1 for (features, samples) as in X = (784, 60000).",
    )
    arr = _numeric(X, name, NOT_NUMERIC_FIX["X"])
    if arr.ndim == 0:
        raise ValueError(
            message(name, "an array with a sample axis", arr, "Pass at least a 1-D array.")
        )
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1) if sample_axis == 0 else arr.reshape(1, -1)
    if arr.shape[sample_axis] == 0 or arr.size == 0:
        raise ValueError(
            message(
                name,
                "non-empty",
                arr,
                f"{name} has no samples (or no features); check how it was loaded.",
            )
        )
    target = np.dtype(dtype) if dtype is not None else None
    if target is None:
        target = arr.dtype if arr.dtype in FLOAT_DTYPES else np.dtype(np.float32)
    if target not in FLOAT_DTYPES:
        raise ValueError(message("dtype", "float32 or float64", str(target)))
    if sample_axis != 0:
        arr = np.moveaxis(arr, sample_axis, 0)
    with np.errstate(over="ignore"):
        rows = np.ascontiguousarray(arr, dtype=target)
    check_finite(rows, name, original=arr)
    return rows


NOT_NUMERIC_FIX = {
    "X": "Convert text or object columns to numbers first (load_arrays maps class labels for you).",
    "y": "Map class names to integers first (load_arrays does this).",
}


def _numeric(X: Any, name: str, fix: str) -> np.ndarray:
    """X as an array of real numbers or booleans, or a TypeError that says how to get one."""
    if X is None:
        raise TypeError(message(name, "a numeric array", None, fix))
    try:
        arr = X if isinstance(X, np.ndarray) else np.asarray(X)
    except ValueError:  # ragged nested lists
        raise ValueError(
            message(
                name,
                "a rectangular array",
                X,
                "Every sample must have the same number of values; pad or drop the short ones.",
            )
        ) from None
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise TypeError(message(name, "a numeric array", arr, fix))
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(message(name, "a real-valued array", arr, "Drop the imaginary part."))
    return arr


def check_finite(rows: np.ndarray, name: str = "X", original: np.ndarray | None = None) -> None:
    """Raises ValueError naming the first sample that holds a NaN or an infinity; when
    ``original`` (the values before a cast to ``rows``' dtype) was finite there, the sentence
    says the value overflowed the dtype instead."""
    if rows.dtype.kind != "f":
        return
    flat = rows.reshape(rows.shape[0], -1)
    # np.isfinite over the whole array once is cheap next to training on it; checking
    # chunk by chunk bounds the temporary boolean array for very large inputs.
    chunk = max(1, (1 << 22) // max(1, flat.shape[1]))
    for start in range(0, flat.shape[0], chunk):
        bad = ~np.isfinite(flat[start : start + chunk]).all(axis=1)
        if bad.any():
            index = start + int(np.argmax(bad))
            overflow = _overflowed(original, index, rows.dtype)
            if overflow is not None:
                raise ValueError(
                    f"{name}: sample {index} holds {overflow:g}, beyond {rows.dtype}'s range "
                    f"(+-{np.finfo(rows.dtype).max:.3g}); train with --dtype float64 (dtype="
                    "np.float64), or scale the features."
                )
            raise ValueError(
                f"{name} must hold only finite numbers; sample {index} (counting from 0 along the "
                f"sample axis) has NaN or inf. Impute or drop such samples before training."
            )


def targets_as_rows(
    y: Any,
    m: int,
    *,
    sample_axis: int = 0,
    name: str = "y",
    x_name: str = "X",
    features: int | None = None,
) -> np.ndarray:
    """Returns y with samples along axis 0: shape (m,) or (m, k).

    With ``sample_axis=1`` a 2-D y is read as (k, m), as in the note's Y = (1, m).
    Integer labels keep their dtype; floats are checked to be finite.
    """
    arr = _numeric(y, name, NOT_NUMERIC_FIX["y"])
    if arr.ndim == 0 or arr.ndim > 2:
        raise ValueError(
            message(
                f"{name}", "of shape (m,) or (m, k)", arr, "Flatten class labels to one dimension."
            )
        )
    if arr.ndim == 2 and sample_axis == 1:
        arr = arr.T
    if arr.shape[0] != m:
        hint = ""
        if arr.ndim == 2 and arr.shape[1] == m:
            hint = " It looks transposed: pass sample_axis=1, or y.T."
        elif sample_axis == 0 and features == arr.shape[0]:
            hint = (
                f" {x_name} looks transposed: it has {features} columns, one per target, as in "
                f"the note's X = (features, samples). Pass sample_axis=1 (--sample-axis 1)."
            )
        raise ValueError(
            f"{x_name} and {name} must have the same number of samples; {x_name} has {m} and "
            f"{name} has "
            f"{arr.shape[0]} (shape {np.shape(y)})."
            + (hint or " Check that they come from the same split.")
        )
    arr = np.ascontiguousarray(arr)
    if arr.dtype.kind == "f":
        check_finite(arr.reshape(m, -1), name)
    return arr


def n_features(X: Any, sample_axis: int = 0) -> int:
    """Features per sample of X (an array, or a source's ``shape``): the product of every axis
    but the sample axis."""
    shape = X.shape if hasattr(X, "shape") else np.shape(X)
    return int(np.prod([d for axis, d in enumerate(shape) if axis != sample_axis]))


def describe_layout(X: Any, y: Any = None) -> tuple[int, str]:
    """(m, a sentence) on which axis of a 2-D X holds the samples: y's length decides when it
    matches exactly one axis, else a wide X (fewer rows than columns) is flagged as likely the
    note's (features, samples) layout."""
    rows, cols = np.shape(X)
    if y is not None and len(y) == cols != rows:
        return cols, (
            f"layout: y has {cols} entries, as many as X has columns: samples are columns "
            f"(the note's X = (features, samples)); pass --sample-axis 1."
        )
    if rows < cols:
        return rows, (
            f"layout hint: {rows} rows and {cols} columns; if columns are samples (the note's "
            f"X = (features, samples)), pass --sample-axis 1."
        )
    return rows, f"layout: {rows} samples as rows, {cols} features (sample_axis=0)."


def held_out_count(m: int, fraction: float) -> int:
    """Samples a ``validation_split`` of ``fraction`` holds out of m (taken from the end, as
    Keras does), or a ValueError when that would leave either side empty."""
    n = round(fraction * m)
    if not 0 < n < m:
        raise ValueError(
            message(
                "validation_split", f"a fraction leaving samples on both sides of {m}", fraction
            )
        )
    return n


def one_hot_labels(y: np.ndarray) -> np.ndarray | None:
    """The class index of each one-hot row of y (m, k), or None if y is not one-hot rows.

    Row by row, so it reads a file's targets a chunk at a time as it reads them whole: the one
    reading of one-hot targets for loading, streaming and ``convert``."""
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[1] < 2 or y.dtype.kind not in "biuf":
        return None
    if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
        return None
    return y.argmax(axis=1)


def _overflowed(original: np.ndarray | None, index: int, dtype: np.dtype) -> float | None:
    """The finite value of sample ``index`` that a cast to ``dtype`` turned into inf, if any."""
    if original is None or original.dtype.kind not in "iuf":
        return None
    row = np.asarray(original.reshape(original.shape[0], -1)[index], dtype=np.float64)
    big = np.isfinite(row) & (np.abs(row) > np.finfo(dtype).max)
    return float(row[np.argmax(big)]) if big.any() else None
