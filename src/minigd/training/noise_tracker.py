"""A callback that probes the gradient noise scale at the end of every few epochs.

The probe (``noise.noise_scale_of``) draws fresh batches of two sizes from the training data,
whatever holds it: arrays in memory, or a file streamed from disk (read through the batches'
row store, never whole). Its numbers go into the epoch's History record under the noise
vocabulary (``noise.COLUMNS``): a probe there replaces the running per-step value of that epoch.
"""

from __future__ import annotations

from minigd._validation import check_int
from minigd.noise import NoiseScale, noise_scale_of
from minigd.rules import NOISE_PROBE_BATCHES
from minigd.training.callbacks import Callback


class NoiseScaleTracker(Callback):
    """Measures the noise scale on the training data at the end of every ``every`` epochs and
    records it in the epoch's history entry (``b_simple``, ``grad_norm_sq``, ``trace_sigma``)."""

    def __init__(
        self,
        every: int = 1,
        *,
        b_small: int = NOISE_PROBE_BATCHES[0],
        b_big: int = 512,
        n_batches: int = 20,
        seed: int = 0,
    ) -> None:
        self.every = check_int("every", every, minimum=1)
        self.sizes = {"b_small": b_small, "b_big": b_big, "n_batches": n_batches}
        self.seed = seed
        self.measurements: list[tuple[int, NoiseScale]] = []

    def on_epoch_end(self, trainer, epoch, logs):
        if (epoch + 1) % self.every:
            return
        batches = trainer.batches
        b_big = min(self.sizes["b_big"], batches.n_samples)
        sizes = dict(self.sizes, b_big=b_big, b_small=min(self.sizes["b_small"], b_big // 2))
        result = noise_scale_of(trainer.model, batches, seed=self.seed + epoch, **sizes)
        self.measurements.append((epoch, result))
        logs.update(result.columns())
