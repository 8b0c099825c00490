"""Losses: each returns the mean loss over a batch and the gradient with respect to its input.

All three reduce by the mean, as torch's defaults do (``reduction="mean"``), so the gradient carries
the 1/N factor and the optimizer sees the gradient of the *average* loss whatever the batch size.

- ``MeanSquaredError``: mean over all n*k entries of (z - y)^2 (torch.nn.MSELoss).
- ``BinaryCrossEntropy``: on logits, mean of max(z, 0) - z y + log(1 + exp(-|z|))
  (torch.nn.BCEWithLogitsLoss); stable for any z.
- ``SoftmaxCrossEntropy``: softmax fused with the negative log-likelihood
  (torch.nn.CrossEntropyLoss); the row maximum is subtracted before exp, so large logits cannot
  overflow, and the gradient is (softmax(z) - onehot(y)) / n.
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

import numpy as np

from minigd import _kernels
from minigd._validation import message
from minigd.nn import registry
from minigd.nn.buffers import Buffers
from minigd.nn.layers import stable_sigmoid

LOSSES: dict[str, type[Loss]] = {}  # name -> class, filled as losses are defined
HIGHER_IS_BETTER = frozenset({"accuracy", "r2"})  # every other metric is a loss: lower wins
INTP = np.dtype(np.intp).itemsize


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` ("val_accuracy", "loss", "train_r2", ...) is better."""
    return metric.removeprefix("val_").removeprefix("train_") in HIGHER_IS_BETTER


class Loss:
    """Base: ``__call__(z, y) -> (loss, dz)``; ``value(z, y)`` skips the gradient.

    A loss also owns what its outputs mean: ``predict`` and ``predict_proba`` turn outputs into
    labels or values and probabilities, ``metrics`` scores them, and ``batch_bytes`` says what its
    buffers take at a batch size. A subclass with a ``name`` of its own registers under it when
    it is defined, so a model trained on it saves and loads once its module is imported.
    """

    name: ClassVar[str]
    task: ClassVar[str]  # "classification" or "regression"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            registry.register(LOSSES, cls.name, cls, "loss")

    def __init__(self) -> None:
        self._buffers = Buffers()

    def _buffer(self, tag: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return self._buffers.get(tag, shape, dtype)

    def prepare_targets(self, y: np.ndarray, n_outputs: int, dtype: Any) -> np.ndarray:
        """Checks y against the model's output width and converts it once, before training."""
        raise NotImplementedError

    def __call__(self, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def value(self, z: np.ndarray, y: np.ndarray) -> float:
        return self(z, y)[0]

    def predict(self, z: np.ndarray) -> np.ndarray:
        """Predictions from outputs z (m, k): values, (m,) when k is 1."""
        return z[:, 0] if z.shape[1] == 1 else z

    def predict_proba(self, z: np.ndarray) -> np.ndarray:
        raise TypeError(
            f"predict_proba applies to classifiers; this model regresses (loss {self.name!r})."
        )

    def metrics(self, z: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """Scores beyond the loss for outputs z of prepared targets: R^2 by default."""
        return {"r2": r2_score(targets, z)}

    def batch_bytes(self, n: int, k: int, itemsize: int) -> tuple[int, int]:
        """(bytes of the loss's buffers, bytes of a batch of targets) at batch size n, k outputs."""
        return n * k * itemsize, n * k * itemsize

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MeanSquaredError(Loss):
    name = "mse"
    task = "regression"

    def prepare_targets(self, y, n_outputs, dtype):
        y = np.asarray(y)
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        if y.shape[1] != n_outputs:
            raise ValueError(
                message(
                    "regression targets",
                    f"of shape (m, {n_outputs})",
                    y,
                    "Match the model's number of outputs.",
                )
            )
        return np.ascontiguousarray(y, dtype=dtype)

    def __call__(self, z, y):
        diff = self._buffer("diff", z.shape, z.dtype)
        np.subtract(z, y, out=diff)
        flat = diff.reshape(-1)
        loss = float(np.dot(flat, flat)) / diff.size
        diff *= 2.0 / diff.size
        return loss, diff


class BinaryCrossEntropy(Loss):
    name = "bce"
    task = "classification"

    def prepare_targets(self, y, n_outputs, dtype):
        y = np.asarray(y)
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        if y.shape[1] != n_outputs:
            raise ValueError(message("binary targets", f"of shape (m, {n_outputs})", y))
        bad = (y != 0) & (y != 1)
        if bad.any():
            index = int(np.argmax(bad.any(axis=1)))
            raise ValueError(
                f"binary targets must be 0 or 1; sample {index} has "
                f"{y[index].tolist()}. Map your two classes to 0 and 1 "
                "(load_arrays does this)."
            )
        return np.ascontiguousarray(y, dtype=dtype)

    def __call__(self, z, y):
        # loss = mean(max(z, 0) - z*y + log1p(exp(-|z|))); dz = (sigmoid(z) - y) / N
        terms = self._buffer("terms", z.shape, z.dtype)
        np.abs(z, out=terms)
        np.negative(terms, out=terms)
        np.exp(terms, out=terms)
        np.log1p(terms, out=terms)
        total = float(terms.sum()) + float(np.maximum(z, 0).sum()) - float(np.vdot(z, y))
        grad = self._buffer("grad", z.shape, z.dtype)
        stable_sigmoid(z, out=grad)
        grad -= y
        grad *= 1.0 / z.size
        return total / z.size, grad

    def predict(self, z):
        pred = (z > 0).astype(np.intp)
        return pred[:, 0] if pred.shape[1] == 1 else pred

    def predict_proba(self, z):
        """P(y=1) per output; (m, 2) for one output, as scikit-learn gives binary classifiers."""
        p = stable_sigmoid(z, out=np.empty_like(z))
        return np.hstack([1 - p, p]) if p.shape[1] == 1 else p

    def metrics(self, z, targets):
        return {"accuracy": float(np.mean((z > 0) == (targets > 0.5)))}

    def batch_bytes(self, n, k, itemsize):
        return 3 * n * k * itemsize, n * k * itemsize  # terms, gradient, sigmoid temporaries


class SoftmaxCrossEntropy(Loss):
    name = "softmax_cross_entropy"
    task = "classification"

    def prepare_targets(self, y, n_outputs, dtype):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(
                message(
                    "class labels",
                    "of shape (m,)",
                    y,
                    "Pass class indices 0..K-1, not one-hot rows.",
                )
            )
        if y.dtype.kind == "f":
            if not np.all(y == np.round(y)):
                raise ValueError(
                    "class labels must be whole numbers 0..K-1; received fractional "
                    "values. For regression use a model with the 'mse' loss."
                )
        elif y.dtype.kind not in "iub":
            raise TypeError(message("class labels", "integers 0..K-1", y))
        labels = y.astype(np.intp)
        bad = (labels < 0) | (labels >= n_outputs)
        if bad.any():
            index = int(np.argmax(bad))
            raise ValueError(
                f"class labels must lie in 0..{n_outputs - 1} for a model with {n_outputs} "
                f"outputs; sample {index} has label {y[index]}. Build the model with as many "
                f"outputs as classes, or map labels to 0..K-1 (load_arrays does this)."
            )
        return labels

    def __init__(self) -> None:
        super().__init__()
        self._kernels = _kernels.get()  # one compiled pass per row, when Numba is installed

    def __call__(self, z, y):
        n, k = z.shape
        if self._kernels is not None and z.flags.c_contiguous:
            p = self._buffer("p", z.shape, z.dtype)
            return float(self._kernels.softmax_cross_entropy(z, y, p)), p
        rowmax = self._buffer("rowmax", (n,), z.dtype)
        norm = self._buffer("norm", (n,), z.dtype)
        p = self._buffer("p", z.shape, z.dtype)
        flat_index = self._buffer("index", (n,), np.intp)
        picked = self._buffer("picked", (n,), z.dtype)
        row_max(z, out=rowmax)
        np.subtract(z, rowmax[:, None], out=p)  # shifted logits, each row's maximum is 0
        np.add(self._row_starts(n, k), y, out=flat_index)
        flat = p.reshape(-1)
        np.take(flat, flat_index, out=picked)  # shifted logit of the true class
        np.exp(p, out=p)
        # row sums as a matrix-vector product: NumPy reduces short rows one by one, BLAS does not
        np.matmul(p, self._ones(k, z.dtype), out=norm)
        # loss = mean(log(sum exp) - z_true), everything shifted by the row maximum
        log_norm = self._buffer("log_norm", (n,), z.dtype)
        np.log(norm, out=log_norm)
        loss = (float(np.add.reduce(log_norm)) - float(np.add.reduce(picked))) / n
        # dz = (softmax - onehot) / n, dividing by n * sum(exp) in one pass
        norm *= n
        p /= norm[:, None]
        np.take(flat, flat_index, out=picked)
        picked -= 1.0 / n
        np.put(flat, flat_index, picked)
        return loss, p

    def _ones(self, k: int, dtype) -> np.ndarray:
        return self._buffers.ones(k, dtype)

    def _row_starts(self, n: int, k: int) -> np.ndarray:
        """The flat index of each row's first logit: 0, k, 2k, ..."""
        return self._buffers.get(("row_starts", k), (n,), np.intp, partial(_offsets, k))

    def predict(self, z):
        return z.argmax(axis=1)

    def predict_proba(self, z):
        p = z - z.max(axis=1, keepdims=True)
        np.exp(p, out=p)
        p /= p.sum(axis=1, keepdims=True)
        return p

    def metrics(self, z, targets):
        return {"accuracy": float(np.mean(z.argmax(axis=1) == targets))}

    def batch_bytes(self, n, k, itemsize):
        # probabilities, four per-sample vectors and the flat indices; targets are intp labels
        return n * k * itemsize + 4 * n * itemsize + n * INTP, n * INTP


def _offsets(k: int, out: np.ndarray) -> None:
    np.multiply(np.arange(len(out), dtype=np.intp), k, out=out)


def row_max(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The maximum of each row of z (n, k), into out (n,).

    For a few columns and many rows, k - 1 elementwise maxima over columns are ~3x faster than
    ``np.max(axis=1)``, which reduces each short row separately (B=1024, k=10: 18 us vs 50 us).
    """
    n, k = z.shape
    if k > 32 or n < 256 or k < 2:
        return np.max(z, axis=1, out=out)
    np.maximum(z[:, 0], z[:, 1], out=out)
    for j in range(2, k):
        np.maximum(out, z[:, j], out=out)
    return out


def get_loss(loss: str | Loss) -> Loss:
    """A Loss from its name ("mse", "bce", "softmax_cross_entropy") or as given."""
    if isinstance(loss, Loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(message("loss", f"one of {', '.join(map(repr, LOSSES))}", loss))
    return LOSSES[loss]()


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination, averaged uniformly over outputs (scikit-learn's default)."""
    y = y.reshape(len(y), -1).astype(np.float64)
    pred = pred.reshape(len(pred), -1).astype(np.float64)
    ss_res = ((y - pred) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    return float(r2.mean())
