"""Finite-difference checks of every layer and loss, in float64, on hypothesis-chosen shapes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigd.nn import (
    BatchNorm,
    Dense,
    Dropout,
    LeakyReLU,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
    check_model_gradients,
    numerical_gradient,
    relative_error,
)

TOLERANCE = 1e-6
shapes = st.tuples(st.integers(2, 9), st.integers(1, 6), st.integers(1, 7), st.integers(2, 5))


def data_for(loss, n, features, k, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features))
    if loss == "softmax_cross_entropy":
        return X, rng.integers(0, k, n)
    if loss == "bce":
        return X, rng.integers(0, 2, (n, k)).astype(np.float64)
    return X, rng.normal(size=(n, k))


def middle_layer(kind, width):
    return {
        "relu": ReLU,
        "leaky_relu": lambda: LeakyReLU(0.1),
        "tanh": Tanh,
        "sigmoid": Sigmoid,
        "batchnorm": lambda: BatchNorm(width),
    }[kind]()


@settings(max_examples=25, deadline=None)
@given(
    shapes,
    st.sampled_from(["relu", "leaky_relu", "tanh", "sigmoid", "batchnorm"]),
    st.sampled_from(["mse", "bce", "softmax_cross_entropy"]),
    st.integers(0, 1000),
)
def test_layer_and_loss_gradients_match_finite_differences(shape, kind, loss, seed):
    n, features, width, k = shape
    model = Sequential(
        [Dense(features, width), middle_layer(kind, width), Dense(width, k)],
        loss,
        seed=seed,
        dtype=np.float64,
    )
    X, y = data_for(loss, n, features, k, seed)
    assert check_model_gradients(model, X, y) < TOLERANCE


@settings(max_examples=15, deadline=None)
@given(shapes, st.integers(0, 1000))
def test_deep_stack_with_batchnorm_in_training_mode(shape, seed):
    n, features, width, k = shape
    model = Sequential(
        [
            Dense(features, width),
            BatchNorm(width),
            Tanh(),
            Dense(width, width),
            BatchNorm(width),
            ReLU(),
            Dense(width, k),
        ],
        "softmax_cross_entropy",
        seed=seed,
        dtype=np.float64,
    )
    X, y = data_for("softmax_cross_entropy", n, features, k, seed)
    # Two BatchNorms over batches of 2-9 samples curve the loss sharply: the central difference's
    # error grows as h^2 (seed 201, n=2: 2.8e-4 at h=1e-5, 2.8e-6 at 1e-6, 2.8e-8 at 1e-7). Over
    # 300 random cases the worst was 2.3e-5 at h=1e-6 and 2.3e-7 at h=1e-7: the step, not the
    # gradient, decided the failures, so this test takes the smaller step.
    assert check_model_gradients(model, X, y, h=1e-7) < TOLERANCE


def test_dropout_gradient_with_a_fixed_mask():
    model = Sequential(
        [Dense(5, 8), ReLU(), Dropout(0.3, seed=4), Dense(8, 3)],
        "softmax_cross_entropy",
        dtype=np.float64,
    )
    X, y = data_for("softmax_cross_entropy", 6, 5, 3, 0)
    dropout = model.layers[2]
    model.loss_and_grad(X, y)  # draw k = 0
    dropout.calls[...] = 0
    model.loss_and_grad(X, y)
    analytic = model.grads.copy()

    def loss():
        dropout.calls[...] = 0  # every evaluation uses the same mask
        return model.loss.value(model.forward(X, True), y)

    assert relative_error(analytic, numerical_gradient(loss, model.params)) < TOLERANCE


@pytest.mark.parametrize("loss", ["mse", "bce", "softmax_cross_entropy"])
def test_input_gradient_of_each_loss(loss):
    model = Sequential([Dense(4, 3)], loss, dtype=np.float64)
    X, y = data_for(loss, 7, 4, 3, 1)
    z = model.forward(X, True).copy()
    _, dz = model.loss(z, y)
    dz = dz.copy()
    numeric = numerical_gradient(lambda: model.loss.value(z, y), z)
    assert relative_error(dz, numeric) < TOLERANCE


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    model = Sequential([Dense(2, 3)], "softmax_cross_entropy", dtype=np.float64)
    z = np.array([[1000.0, 0.0, -1000.0], [-5e4, 5e4, 0.0]])
    loss, dz = model.loss(z, np.array([0, 2]))
    assert np.isfinite(loss) and np.all(np.isfinite(dz))
    # sample 0 is right with certainty (loss 0); sample 1 is wrong by 5e4
    assert loss == pytest.approx(5e4 / 2)


def test_bce_is_stable_for_huge_logits():
    model = Sequential([Dense(2, 1)], "bce", dtype=np.float64)
    loss, dz = model.loss(np.array([[800.0], [-800.0]]), np.array([[0.0], [0.0]]))
    assert loss == pytest.approx(400.0) and np.all(np.isfinite(dz))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_softmax_cross_entropy_matches_numpy(dtype):
    from minigd.nn import SoftmaxCrossEntropy

    compiled, plain = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    if compiled._kernels is None:
        pytest.skip("numba is not installed (the 'fast' extra)")
    plain._kernels = None
    rng = np.random.default_rng(3)
    for n, k in [(1, 2), (7, 10), (300, 10), (64, 40)]:
        z = (rng.normal(size=(n, k)) * 30).astype(dtype)
        y = rng.integers(0, k, n)
        loss_a, grad_a = compiled(z, y)
        loss_b, grad_b = plain(z, y)
        tol = 1e-12 if dtype == np.float64 else 1e-5
        assert loss_a == pytest.approx(loss_b, rel=tol, abs=tol)
        np.testing.assert_allclose(grad_a, grad_b, rtol=tol * 10, atol=tol)
    for loss in (compiled, plain):  # a bad label is an error on both paths, never a stray write
        with pytest.raises(IndexError):
            loss(np.zeros((2, 3), dtype), np.array([0, 3]))
