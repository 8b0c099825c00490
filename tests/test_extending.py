"""Adding a layer or a loss touches one file: both are defined here only, and predictions,
metrics, gradients, training and the memory model work with them unchanged."""

import numpy as np
import pytest

from minigd import fit
from minigd.nn import Dense, Layer, Loss, ReLU, Sequential, check_model_gradients
from minigd.optim import SGD
from test_batchsize import estimate_and_peak


class Square(Layer):
    """y = x^2; dy/dx = 2x. Keeps its input for the backward pass."""

    def forward(self, x, training):
        self._x = x
        y = self._buffer("y", x.shape, x.dtype)
        np.multiply(x, x, out=y)
        return y

    def backward(self, dy, need_dx=True):
        deriv = self._buffer("deriv", dy.shape, dy.dtype)
        np.multiply(self._x, 2.0, out=deriv)
        np.multiply(dy, deriv, out=dy)
        return dy

    def batch_bytes(self, n, width, itemsize, first):
        return 2 * n * width * itemsize, 0  # the output and the derivative


class OneHotSquaredError(Loss):
    """Classification by least squares on one-hot targets: mean over n*k of (z - onehot)^2;
    the predicted class is the largest output."""

    name = "onehot_mse"
    task = "classification"

    def prepare_targets(self, y, n_outputs, dtype):
        return np.asarray(y, dtype=np.intp)

    def __call__(self, z, y):
        diff = self._buffer("diff", z.shape, z.dtype)
        np.copyto(diff, z)
        diff[np.arange(len(y)), y] -= 1.0
        loss = float(np.vdot(diff, diff)) / diff.size
        diff *= 2.0 / diff.size
        return loss, diff

    def predict(self, z):
        return z.argmax(axis=1)

    def metrics(self, z, targets):
        return {"accuracy": float(np.mean(z.argmax(axis=1) == targets))}

    def batch_bytes(self, n, k, itemsize):
        return n * k * itemsize, n * np.dtype(np.intp).itemsize


def model(n=64, k=10, dtype=np.float32):
    layers = [Dense(n, 32), Square(), Dense(32, 16), ReLU(), Dense(16, k)]
    return Sequential(layers, OneHotSquaredError(), seed=1, dtype=dtype)


def test_gradients_of_the_new_layer_and_loss_by_finite_differences():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 6))
    y = rng.integers(0, 3, 12)
    net = model(6, 3, np.float64)
    assert check_model_gradients(net, X, y) < 1e-6


def test_predictions_and_metrics_come_from_the_new_loss(digits):
    train, test = digits
    net = model()
    fit(
        net, train.X, train.y, batch_size=64, epochs=15, optimizer=SGD(0.1, momentum=0.9), verbose=0
    )
    outputs = net.decision_function(test.X)
    np.testing.assert_array_equal(net.predict(test.X), outputs.argmax(axis=1))
    accuracy = float(np.mean(outputs.argmax(axis=1) == test.y))
    assert net.score(test.X, test.y) == pytest.approx(accuracy)
    assert net.evaluate(test.X, test.y)["accuracy"] == pytest.approx(accuracy)
    assert accuracy > 0.8  # it learned: a tenth would be chance
    with pytest.raises(TypeError, match="predict_proba applies to classifiers"):
        net.predict_proba(test.X)  # the base Loss offers none, and says so


@pytest.mark.parametrize("b", [32, 256, 2048])
def test_memory_estimate_of_the_new_layer_and_loss(b):
    rng = np.random.default_rng(0)
    X = rng.random((4096, 64), dtype=np.float32)
    y = rng.integers(0, 10, len(X))
    estimate, peak = estimate_and_peak(model, lambda: SGD(0.1, momentum=0.9), X, y, b)
    assert 0.75 <= estimate.total / peak <= 1.25, (b, estimate.total, peak)
    # the layer's own report is what grows with the batch: twice its input per sample
    assert estimate_memory_parts(b)["Square"] == 2 * b * 32 * 4


def estimate_memory_parts(b):
    net = model()
    return {type(layer).__name__: layer.batch_bytes(b, 32, 4, False)[0] for layer in net.layers}
