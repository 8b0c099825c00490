"""Finite-difference gradient checks: the proof that a hand-written backward pass is right.

Central differences, (f(x + h) - f(x - h)) / 2h, have O(h^2) error; in float64 with h ~ 1e-6 they
agree with a correct analytic gradient to about 1e-8 relative.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """df/dx by central differences, perturbing ``x`` in place (and restoring it)."""
    grad = np.zeros(x.shape, dtype=np.float64)
    flat, out = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + h
        up = f()
        flat[i] = saved - h
        down = f()
        flat[i] = saved
        out[i] = (up - down) / (2 * h)
    return grad


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / max(||a||, ||b||): one number for the whole gradient, blind to the round-off
    of components that are near zero (where an elementwise ratio would be all noise)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    scale = max(np.linalg.norm(a), np.linalg.norm(b), 1e-300)
    return float(np.linalg.norm(a - b) / scale)


def check_model_gradients(model, X: np.ndarray, y: np.ndarray, h: float = 1e-6) -> float:
    """Relative error between ``model.grads`` and finite differences of the training loss.

    The model should be float64. Dropout must be off (its mask changes on each forward pass), and
    BatchNorm running statistics move with each evaluation, which does not affect the loss.
    """
    model.loss_and_grad(X, y)
    analytic = model.grads.copy()

    def loss() -> float:
        return model.loss.value(model.forward(X, True), y)

    numeric = numerical_gradient(loss, model.params, h)
    return relative_error(analytic, numeric)
