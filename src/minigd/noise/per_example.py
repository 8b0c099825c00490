"""The gradient noise scale from each sample's own gradient norm, at almost no cost.

The two-batch-size estimator (``noise.estimator``) needs the mean squared norm of gradients at two
batch sizes. The smallest is one sample: ``|g_i|^2`` for each row of the batch, against the
batch's own ``|g|^2``. A Dense layer's per-sample gradient is the outer product of its output
gradient and its input, so ``|g_i|^2 = |dy_i|^2 (|x_i|^2 + 1)`` (with a bias) comes from two row
norms of arrays backward already has (Goodfellow 2015, "Efficient per-example gradient
computations"): about 1% of a step, against a second forward and backward pass for two halves.

It applies where every layer with parameters is a Dense (the MLPs and linear models minigd
builds); BatchNorm couples the samples of a batch, and Adam's noise is that of its pre-conditioned
gradient, which does not factor: those are measured by two halves (``noise.StepNoise``).
"""

from __future__ import annotations

from minigd.noise.estimator import norm_sq
from minigd.noise.halves import StepNoise


class ExampleNoise(StepNoise):
    """B_simple from per-sample gradient norms every ``every`` steps (a Trainer gradient path);
    the step's gradient is the model's own pass, unchanged."""

    @staticmethod
    def supports(model) -> bool:
        """Every layer with parameters computes its per-sample norms, and none couples samples."""
        return not model.has_batchnorm and all(
            hasattr(layer, "track_example_norms") or not layer.param_shapes()
            for layer in model.layers
        )

    def loss_and_grad(self, model, xb, yb, n: int, step: int, stop: bool = False) -> float:
        if not self.due(step) or n < 2:
            self.noise.skip()
            return model.loss_and_grad(xb, yb)
        layers = [la for la in model.layers if hasattr(la, "track_example_norms")]
        for layer in layers:
            layer.track_example_norms = True
        try:
            loss = model.loss_and_grad(xb, yb)
        finally:
            for layer in layers:
                layer.track_example_norms = False
        per_sample = sum(layer.example_sq_norms for layer in layers)
        self.noise.update(float(per_sample.mean()), norm_sq(model.grads), 1, n, self.population)
        return loss

    def __repr__(self) -> str:
        return f"ExampleNoise(every={self.every}, beta={self.noise.beta})"
