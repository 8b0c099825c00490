"""Adding a layer or a loss touches one file: both are defined here only, and predictions,
metrics, gradients, training, the memory model, save and load work with them unchanged."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigd import fit
from minigd.nn import (
    Dense,
    Layer,
    Loss,
    ReLU,
    Sequential,
    check_model_gradients,
    load_model,
    mlp,
)
from minigd.optim import SGD
from test_batchsize import estimate_and_peak


class Square(Layer):
    """y = x^2; dy/dx = 2x. Keeps its input for the backward pass."""

    activation = "square"  # so mlp(activation="square") builds with it

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


class HeSquare(Square):
    """Square, with the Dense layer before it initialised as before a ReLU."""

    init_scheme = "he"


LOAD_AND_PREDICT = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import test_extending  # defines Square and OneHotSquaredError, which registers them
from minigd.nn import load_model
np.save(sys.argv[3], load_model(sys.argv[2]).decision_function(np.load(sys.argv[4])))
"""


def test_the_new_layer_and_loss_save_and_load_in_another_process(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(20, 64)).astype(np.float32)
    net = model()
    fit(net, X, rng.integers(0, 10, len(X)), batch_size=8, epochs=2, optimizer=SGD(0.05), verbose=0)
    np.save(tmp_path / "X.npy", X)
    path = net.save(tmp_path / "square.npz")
    args = [
        str(Path(__file__).parent),
        str(path),
        str(tmp_path / "out.npy"),
        str(tmp_path / "X.npy"),
    ]
    subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, *args], check=True, timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), net.decision_function(X))
    assert [type(layer) for layer in load_model(path).layers] == [type(la) for la in net.layers]


def test_a_saved_layer_that_is_not_imported_gets_a_sentence(tmp_path):
    path = model().save(tmp_path / "square.npz")
    code = f"from minigd.nn import load_model; load_model({str(path)!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "'Square' is not a registered layer" in done.stderr
    assert "import the module that defines it" in done.stderr


def test_a_second_class_may_not_take_a_registered_name():
    with pytest.raises(TypeError, match=r"'Dense' is taken by minigd\.nn\.layers\.Dense"):

        class Dense(Layer):
            pass

    with pytest.raises(TypeError, match=r"'mse' is taken by minigd\.nn\.losses\.MeanSquaredError"):

        class MyMSE(Loss):
            name = "mse"


def test_an_activation_is_known_to_mlp_and_chooses_the_initialisation():
    net = mlp(6, [8], 3, activation="square")
    assert isinstance(net.layers[1], Square)
    # std of He normal sqrt(2 / fan_in) = 0.045, of Glorot uniform sqrt(2 / (fan_in + fan_out))
    # = 0.037 for 1000 -> 500: the class fact picks the one before it
    stds = {
        kind.__name__: Sequential([Dense(1000, 500), kind(), Dense(500, 2)], "mse")
        .layers[0]
        .weight.std()
        for kind in (Square, HeSquare)
    }
    assert stds["Square"] == pytest.approx(np.sqrt(2 / 1500), rel=0.02)
    assert stds["HeSquare"] == pytest.approx(np.sqrt(2 / 1000), rel=0.02)
