"""The gradient noise scale, one home: the estimator, the offline probe, the per-step measurement.

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
