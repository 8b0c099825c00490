"""Weight initialization: He for ReLU-like layers, Glorot for the rest.

He et al. 2015 keep the variance of ReLU activations constant with std = sqrt(2 / fan_in); Glorot
and Bengio 2010 balance forward and backward variance for symmetric activations with
U(-a, a), a = sqrt(6 / (fan_in + fan_out)). Both draw from the generator they are given, never the
global RNG, so a model's initial weights are a function of its seed.
"""

from __future__ import annotations

import numpy as np

from minigd._validation import check_choice

SCHEMES = ("he", "glorot", "zeros")


def initialize(weight: np.ndarray, scheme: str, rng: np.random.Generator) -> None:
    """Fills a (fan_out, fan_in) weight in place."""
    check_choice("init", scheme, SCHEMES)
    fan_out, fan_in = weight.shape
    if scheme == "he":
        weight[...] = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=weight.shape)
    elif scheme == "glorot":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        weight[...] = rng.uniform(-limit, limit, size=weight.shape)
    else:
        weight.fill(0)
