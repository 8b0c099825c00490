import tracemalloc

import numpy as np
import pytest

from minigd import MiniBatches
from minigd.nn import (
    BatchNorm,
    Dense,
    Sequential,
    linear_regression,
    load_model,
    logistic_regression,
    mlp,
    parse_model_spec,
    softmax_regression,
)
from minigd.optim import SGD, Adam


def test_one_flat_vector_with_torch_names():
    model = mlp(5, [4, 3], 2, batchnorm=True)
    names = [name for name, _ in model.named_parameters()]
    # Dense(no bias), BatchNorm, ReLU, Dense(no bias), BatchNorm, ReLU, Dense
    assert names == [
        "0.weight",
        "1.weight",
        "1.bias",
        "3.weight",
        "4.weight",
        "4.bias",
        "6.weight",
        "6.bias",
    ]
    for _, view in model.named_parameters():
        assert np.shares_memory(view, model.params)
    assert model.n_params == 5 * 4 + 4 + 4 + 4 * 3 + 3 + 3 + 3 * 2 + 2
    assert [n for n, _ in model.named_buffers()][:3] == [
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    ]
    # a Dense weight is stored transposed: (in, out) row-major, seen as (out, in)
    np.testing.assert_array_equal(model.params[:20].reshape(5, 4).T, model.layers[0].weight)
    assert model.layers[0].weight.shape == (4, 5)
    model.params[:] = 7.0
    assert np.all(model.layers[0].weight == 7.0)  # layers see the flat vector


def test_init_is_seeded_he_for_relu_glorot_otherwise():
    a, b = mlp(300, [200], 10, seed=1), mlp(300, [200], 10, seed=1)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, mlp(300, [200], 10, seed=2).params)
    assert a.layers[0].weight.std() == pytest.approx(np.sqrt(2 / 300), rel=0.05)
    limit = np.sqrt(6 / (200 + 10))
    assert np.abs(a.layers[2].weight).max() <= limit
    tanh = mlp(300, [200], 10, activation="tanh")
    assert tanh.layers[0].weight.std() == pytest.approx(np.sqrt(2 / 500), rel=0.05)


def test_factories_and_predictions():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3)).astype(np.float32)
    soft = softmax_regression(3, 4)
    proba = soft.predict_proba(X)
    assert proba.shape == (20, 4) and np.allclose(proba.sum(axis=1), 1)
    np.testing.assert_array_equal(soft.predict(X), proba.argmax(axis=1))
    logit = logistic_regression(3)
    assert logit.predict_proba(X).shape == (20, 2) and set(logit.predict(X)) <= {0, 1}
    lin = linear_regression(3)
    assert lin.predict(X).shape == (20,)
    with pytest.raises(TypeError, match="classifiers"):
        lin.predict_proba(X)


def test_note_layout_for_predict_and_score():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 50))  # features x samples
    y = rng.integers(0, 3, 50)
    model = softmax_regression(6, 3)
    np.testing.assert_array_equal(model.predict(X, sample_axis=1), model.predict(X.T))
    assert model.score(X, y, sample_axis=1) == model.score(X.T, y)


def test_r2_score_of_a_perfect_fit():
    X = np.random.default_rng(0).normal(size=(30, 2))
    model = linear_regression(2, dtype=np.float64)
    y = model.predict(X)
    assert model.score(X, y) == pytest.approx(1.0)


def test_save_and_load_roundtrip(tmp_path):
    model = mlp(6, [5], 3, batchnorm=True, dropout=0.2, seed=3)
    X = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    model.loss_and_grad(X, np.arange(16) % 3)  # moves running stats and the dropout counter
    path = model.save(tmp_path / "m.npz")
    back = load_model(path)
    np.testing.assert_array_equal(back.params, model.params)
    for (na, a), (nb, b) in zip(model.named_buffers(), back.named_buffers(), strict=True):
        assert na == nb
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.predict_proba(X), model.predict_proba(X))
    assert back.config() == model.config()


def test_a_copy_is_the_same_model_and_independent_of_it():
    """``copy`` builds the layers without drawing weights (``initialize=False``) and loads the
    state: the same parameters, buffers, classes and mode, in arrays of its own."""
    model = mlp(6, [5], 3, batchnorm=True, dropout=0.2, seed=3)
    X = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    model.loss_and_grad(X, np.arange(16) % 3)  # moves running stats and the dropout counter
    model.classes = np.array([10, 20, 30])
    twin = model.copy()
    np.testing.assert_array_equal(twin.params, model.params)
    for (na, a), (nb, b) in zip(model.named_buffers(), twin.named_buffers(), strict=True):
        assert na == nb and a is not b
        np.testing.assert_array_equal(a, b)
    assert twin.config() == model.config() and twin.training == model.training
    np.testing.assert_array_equal(twin.predict(X), model.predict(X))
    twin.loss_and_grad(X, np.arange(16) % 3)
    SGD(0.1).step(twin.params, twin.grads)
    assert not np.array_equal(twin.params, model.params)  # its own arrays
    bare = Sequential([Dense(6, 3)], initialize=False)
    assert not bare.params.any()  # nothing drawn: the weights are loaded next


def test_load_refuses_pickles_and_other_architectures(tmp_path):
    np.savez(tmp_path / "p.npz", architecture=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        load_model(tmp_path / "p.npz")
    small = mlp(4, [3], 2)
    with pytest.raises(ValueError, match=r"architectures differ|does not match"):
        small.load_state(mlp(4, [5], 2).state())


def test_labels_out_of_range_and_wrong_width():
    model = softmax_regression(3, 4)
    with pytest.raises(ValueError, match=r"0\.\.3 .* sample 2 has label 4"):
        model.prepare(np.zeros((5, 3)), np.array([0, 1, 4, 2, 3]))
    with pytest.raises(ValueError, match="of 3 features per sample"):
        model.prepare(np.zeros((5, 7)), None)
    with pytest.raises(ValueError, match="must be 0 or 1"):
        logistic_regression(3).prepare(np.zeros((2, 3)), np.array([0, 2]))


def test_batchnorm_refuses_a_batch_of_one():
    model = Sequential([Dense(3, 2), BatchNorm(2)], "mse")
    with pytest.raises(ValueError, match="last_batch='merge'"):
        model.loss_and_grad(np.zeros((1, 3), np.float32), np.zeros((1, 2), np.float32))
    model.eval().forward(np.zeros((1, 3), np.float32))  # evaluation is fine


def test_model_specs():
    assert parse_model_spec("softmax", 10, 3).n_params == 33
    bn = parse_model_spec("mlp:8,4+bn", 10, 3)
    assert bn.has_batchnorm and [la.out_features for la in bn.layers if hasattr(la, "out_features")]
    assert parse_model_spec("mlp:8+dropout0.25", 10, 3).layers[2].p == 0.25
    with pytest.raises(ValueError, match="unknown model spec"):
        parse_model_spec("cnn", 10, 3)


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("make_opt", [lambda: SGD(0.1, momentum=0.9), lambda: Adam()])
def test_train_step_allocates_nothing_after_warmup(batchnorm, make_opt):
    batch, steps = 256, 100
    rng = np.random.default_rng(0)
    X = rng.random((batch * (steps + 2), 784), dtype=np.float32)
    y = rng.integers(0, 10, len(X))
    model = mlp(784, [128], 10, batchnorm=batchnorm)
    opt = make_opt()
    batches = iter(MiniBatches(X, y, batch_size=batch).epoch(0))
    for _ in range(2):  # warm-up: buffers for this batch size, optimizer state
        xb, yb = next(batches)
        model.loss_and_grad(xb, yb)
        opt.step(model.params, model.grads)
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    for _ in range(steps):
        xb, yb = next(batches)
        model.loss_and_grad(xb, yb)
        opt.step(model.params, model.grads)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # One batch of X is 800 KB, one activation 128 KB, the parameters 400 KB: a per-step
    # allocation of any of them would show. Allowed: NumPy's ufunc buffer for broadcasting
    # (8192 elements, 32 KB in float32, the same at every batch size) and a few Python objects.
    assert peak - base < 64 * 1024, f"peak grew by {peak - base} bytes"
    assert current - base < 4 * 1024
