"""Regression targets in standard units: the model learns (y - mean) / scale, answers in y's units.

Raw targets in the hundreds make the first losses tens of thousands and the learning rate that
suits one dataset wrong for the next (scikit-learn users reach for ``TransformedTargetRegressor``
for the same reason). The mean and scale are fitted on the training targets only, once, and then
belong to the model: they are saved in its architecture (``Sequential.config``), so a saved model,
a checkpoint and a copy all predict in the user's units, and a resume uses the same numbers.
Losses are reported in standard units (an MSE of 1.0 is the variance of the targets); R^2 is the
same in either unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

CHUNK_ROWS = 1 << 16  # targets read per pass when they stream from disk


@dataclass(frozen=True)
class TargetScaling:
    """Per-output mean and scale (the population standard deviation; 1 for a constant output)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, targets: np.ndarray) -> TargetScaling:
        """From the (m, k) training targets, in float64 whatever their dtype."""
        rows = np.asarray(targets, dtype=np.float64)
        if not len(rows):
            raise ValueError("there are no training targets to standardize.")
        rows = rows.reshape(len(rows), -1)
        return cls._from_moments(len(rows), rows.mean(axis=0), rows.var(axis=0))

    @classmethod
    def fit_source(cls, source, n_outputs: int) -> TargetScaling:
        """From targets that stream (a ``Source``), a chunk at a time: memory does not grow
        with the rows. Chunks are merged by Chan et al.'s pairwise update, which stays exact
        where the naive sum of squares loses the variance to cancellation."""
        if int(np.prod(source.row_shape, dtype=np.int64)) != n_outputs:
            raise ValueError(
                f"the regression targets of {source.name} have rows of shape "
                f"{source.row_shape}; the model has {n_outputs} outputs. Match the model's "
                "number of outputs."
            )
        count, mean, m2 = 0, np.zeros(n_outputs), np.zeros(n_outputs)
        for lo in range(0, len(source), CHUNK_ROWS):
            chunk = source.read(lo, min(len(source), lo + CHUNK_ROWS))
            chunk = np.asarray(chunk, dtype=np.float64).reshape(len(chunk), n_outputs)
            n, chunk_mean = len(chunk), chunk.mean(axis=0)
            delta = chunk_mean - mean
            total = count + n
            mean = mean + delta * (n / total)
            m2 = m2 + ((chunk - chunk_mean) ** 2).sum(axis=0) + delta**2 * (count * n / total)
            count = total
        return cls._from_moments(count, mean, m2 / max(count, 1))

    @classmethod
    def _from_moments(cls, count: int, mean: np.ndarray, variance: np.ndarray) -> TargetScaling:
        if count == 0:
            raise ValueError("there are no training targets to standardize.")
        if not (np.isfinite(mean).all() and np.isfinite(variance).all()):
            raise ValueError(
                "the training targets hold NaN or inf (or overflow float64 when squared), so "
                "they cannot be standardized; fix or drop those rows."
            )
        std = np.sqrt(variance)
        return cls(mean, np.where(std > 0, std, 1.0))

    def encode(self, targets: np.ndarray) -> np.ndarray:
        """User units -> standard units, in the targets' dtype."""
        out = (targets - self.mean) / self.scale
        return np.ascontiguousarray(out, dtype=targets.dtype)

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """Standard units (the network's outputs) -> the user's units."""
        return np.asarray(outputs * self.scale + self.mean, dtype=outputs.dtype)

    def rmse(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        """The root mean squared error in the user's units, from both in standard units."""
        error = (np.asarray(outputs, np.float64) - targets) * self.scale
        return float(np.sqrt(np.mean(error**2)))

    def config(self) -> dict[str, list[float]]:
        """JSON-friendly; Python's float repr round-trips exactly, so a reload is bitwise."""
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_config(cls, config: Any, n_outputs: int, source: Any) -> TargetScaling:
        """Rebuilds ``config()``'s data; a malformed one gets a sentence naming ``source``."""
        try:
            mean = np.asarray(config["mean"], dtype=np.float64)
            scale = np.asarray(config["scale"], dtype=np.float64)
        except (TypeError, KeyError, ValueError):
            mean = scale = np.empty(0)
        if not (
            mean.shape == scale.shape == (n_outputs,)
            and np.isfinite(mean).all()
            and np.isfinite(scale).all()
            and (scale > 0).all()
        ):
            raise ValueError(
                f"{source}: the architecture's 'target_scaling' must hold a finite 'mean' and a "
                f"positive 'scale' for each of the {n_outputs} outputs; found {config!r}."
            )
        return cls(mean, scale)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TargetScaling)
            and np.array_equal(self.mean, other.mean)
            and np.array_equal(self.scale, other.scale)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TargetScaling(mean={self.mean.tolist()}, scale={self.scale.tolist()})"
