r"""The gradient noise scale, one home: the estimator, the offline probe, the per-step measurement.

The simple noise scale (McCandlish et al. 2018) compares the variance of one sample's gradient
with the squared length of the true gradient G; it is estimated from the squared norms of
gradients over batches of two sizes (appendix A.1):

.. math::

    B_\text{simple} = \frac{\operatorname{tr}\Sigma}{|G|^2}, \qquad
    |G|^2 \approx \frac{b_\text{big} |G_\text{big}|^2 - b_\text{small} |G_\text{small}|^2}
    {b_\text{big} - b_\text{small}}, \qquad
    \operatorname{tr}\Sigma \approx \frac{|G_\text{small}|^2 - |G_\text{big}|^2}
    {1/b_\text{small} - 1/b_\text{big}}.

The modules::

    estimator.py   the two-batch-size estimator (McCandlish et al. 2018, appendix A.1), its
                   running average, and the column names every record uses (``COLUMNS``)
    probe.py       ``noise_scale``: fresh batches of two sizes at fixed parameters
    halves.py      ``StepNoise``: two random halves of each training step's batch
    per_example.py ``ExampleNoise``: each sample's gradient norm, from a Dense model's backward

Data-parallel training measures the same quantity from its ranks' gradients
(``distributed.data_parallel``), with this package's estimator and columns.
"""

from minigd.noise.estimator import (
    B_SIMPLE,
    COLUMNS,
    GRAD_NORM_SQ,
    TRACE_SIGMA,
    RunningNoiseScale,
    estimate_components,
    norm_sq,
)
from minigd.noise.halves import StepNoise
from minigd.noise.per_example import ExampleNoise
from minigd.noise.probe import NoiseScale, noise_scale, noise_scale_of, probe_noise_scale

__all__ = [
    "B_SIMPLE",
    "COLUMNS",
    "GRAD_NORM_SQ",
    "TRACE_SIGMA",
    "ExampleNoise",
    "NoiseScale",
    "RunningNoiseScale",
    "StepNoise",
    "estimate_components",
    "noise_scale",
    "noise_scale_of",
    "norm_sq",
    "probe_noise_scale",
]
