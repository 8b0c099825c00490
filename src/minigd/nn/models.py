"""Model factories: the classic models of the mini-batch gradient descent literature.

Each returns a ``Sequential`` with its loss: linear regression (MSE), logistic regression (binary
cross-entropy on a logit), softmax regression (softmax cross-entropy), and the multilayer
perceptron.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from minigd._validation import check_choice, check_float, check_int
from minigd.data.arrays import n_features
from minigd.nn.layers import ACTIVATIONS, BatchNorm, Dense, Dropout
from minigd.nn.model import Sequential


def linear_regression(
    n: int, *, outputs: int = 1, seed: int = 0, dtype: Any = np.float32
) -> Sequential:
    """y = x W^T + b, trained on mean squared error."""
    return Sequential([Dense(n, outputs)], "mse", seed=seed, dtype=dtype)


def logistic_regression(n: int, *, seed: int = 0, dtype: Any = np.float32) -> Sequential:
    """P(y=1 | x) = sigmoid(x w + b), trained on binary cross-entropy."""
    return Sequential([Dense(n, 1)], "bce", seed=seed, dtype=dtype)


def softmax_regression(n: int, k: int, *, seed: int = 0, dtype: Any = np.float32) -> Sequential:
    """P(y=j | x) = softmax(x W^T + b)_j over k classes, trained on cross-entropy."""
    return Sequential([Dense(n, k)], "softmax_cross_entropy", seed=seed, dtype=dtype)


def mlp(
    n: int,
    hidden: Sequence[int],
    k: int,
    *,
    activation: str = "relu",
    batchnorm: bool = False,
    dropout: float = 0.0,
    loss: str | None = None,
    seed: int = 0,
    dtype: Any = np.float32,
) -> Sequential:
    """A multilayer perceptron: n inputs, one hidden layer per width in ``hidden``, k outputs.

    Each hidden block is Dense (without bias when BatchNorm follows), then BatchNorm if
    ``batchnorm``, then the activation, then Dropout if ``dropout > 0``: the order torch users
    write, so the layer indices (and parameter names) match an equivalent ``torch.nn.Sequential``.

    Args:
        loss: default softmax cross-entropy for k >= 2 outputs and mean squared error for k == 1;
            pass "bce" for a binary classifier with one output.
    """
    check_int("n", n, minimum=1)
    check_int("k", k, minimum=1)
    check_choice("activation", activation, ACTIVATIONS)
    check_float("dropout", dropout, minimum=0.0, maximum=1.0)
    widths = [check_int("hidden width", h, minimum=1) for h in hidden]
    layers = []
    fan_in = n
    for width in widths:
        # Before BatchNorm a bias is redundant (BN subtracts the batch mean), and its gradient is
        # pure round-off, which Adam's normalization would turn into random steps: leave it out.
        layers.append(Dense(fan_in, width, bias=not batchnorm))
        if batchnorm:
            layers.append(BatchNorm(width))
        layers.append(ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(Dropout(dropout, seed=seed))
        fan_in = width
    layers.append(Dense(fan_in, k))
    loss = loss or ("softmax_cross_entropy" if k >= 2 else "mse")
    return Sequential(layers, loss, seed=seed, dtype=dtype)


def parse_model_spec(
    spec: str, n: int, k: int | None, *, seed: int = 0, dtype: Any = np.float32
) -> Sequential:
    """Builds a model from the CLI's spec: "softmax", "logistic", "linear", "mlp:128",
    "mlp:256,128+bn" (BatchNorm), "mlp:128+dropout0.2".

    Args:
        n: input features; k: classes (None for regression).
    """
    name, colon, rest = str(spec).partition(":")
    name = name.strip().lower()
    if name in ("linear", "logistic", "softmax") and (colon or rest):
        raise ValueError(
            f"the {name!r} model takes no options; received {spec!r}. Write {name!r}, or "
            "mlp:WIDTHS for hidden layers."
        )
    if name == "linear":
        return linear_regression(n, outputs=1, seed=seed, dtype=dtype)
    if name == "logistic":
        return logistic_regression(n, seed=seed, dtype=dtype)
    if name == "softmax":
        if not k:
            raise ValueError("the 'softmax' model needs class labels; use 'linear' to regress.")
        return softmax_regression(n, k, seed=seed, dtype=dtype)
    if name != "mlp":
        raise ValueError(
            f"unknown model spec {spec!r}; use softmax, logistic, linear, mlp:128 "
            "or mlp:256,128+bn."
        )
    widths, batchnorm, dropout = _mlp_options(spec, rest)
    return mlp(n, widths, k or 1, batchnorm=batchnorm, dropout=dropout, seed=seed, dtype=dtype)


def _mlp_options(spec: str, rest: str) -> tuple[list[int], bool, float]:
    """(hidden widths, batchnorm, dropout p) of "mlp:256,128+bn+dropout0.2"."""
    widths_text, *options = rest.split("+")
    try:
        widths = [int(w) for w in widths_text.split(",") if w.strip()]
    except ValueError:
        raise ValueError(
            f"mlp widths must be integers, as in mlp:256,128; received {spec!r}."
        ) from None
    if not widths:
        raise ValueError(f"mlp needs hidden widths, as in mlp:128; received {spec!r}.")
    batchnorm, dropout, seen = False, 0.0, set()
    for option in (o.strip().lower() for o in options):
        kind = "bn" if option == "bn" else "dropout" if option.startswith("dropout") else option
        if kind in seen:
            raise ValueError(f"mlp option +{kind} is given twice in {spec!r}; give it once.")
        seen.add(kind)
        if kind == "bn":
            batchnorm = True
        elif kind == "dropout":
            dropout = _dropout(option[len("dropout") :], spec)
        else:
            raise ValueError(f"unknown mlp option {option!r} in {spec!r}; use +bn or +dropout0.2.")
    return widths, batchnorm, dropout


def _dropout(text: str, spec: str) -> float:
    try:
        p = float(text) if text else 0.5
    except ValueError:
        p = -1.0
    if not 0.0 <= p < 1.0:
        raise ValueError(
            f"+dropout takes a probability in [0, 1), as in +dropout0.2; received {spec!r}."
        )
    return p


def model_for_data(
    spec: str,
    X: Any,
    n_classes: int | None,
    *,
    sample_axis: int = 0,
    seed: int = 0,
    dtype: Any = np.float32,
) -> Sequential:
    """The model ``spec`` names, as wide as X's samples and with an output per class (one output
    for regression, ``n_classes`` None)."""
    n = n_features(X, sample_axis)
    return parse_model_spec(spec, n, n_classes, seed=seed, dtype=dtype)
