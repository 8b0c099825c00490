import math

import numpy as np
import pytest

from minigd import MiniBatches
from minigd.nn import mlp, softmax_regression
from minigd.optim import (
    SGD,
    Adam,
    AdamW,
    Constant,
    Cosine,
    Exponential,
    LinearWarmup,
    RMSprop,
    StepDecay,
    get_optimizer,
)


def one_step(opt, p, g):
    p, g = np.array(p, dtype=np.float64), np.array(g, dtype=np.float64)
    opt.step(p, g.copy())
    return p


# -- update equations worked out by hand ----------------------------------------------------
def test_sgd_by_hand():
    assert one_step(SGD(0.1), [1.0, -2.0], [0.5, 1.0]).tolist() == pytest.approx([0.95, -2.1])
    opt = SGD(0.1, momentum=0.9)
    p = np.array([1.0])
    opt.step(p, np.array([1.0]))  # b = 1, p = 0.9
    opt.step(p, np.array([1.0]))  # b = 0.9 + 1 = 1.9, p = 0.9 - 0.19
    assert p[0] == pytest.approx(0.71)


def test_adam_first_step_moves_each_parameter_by_lr():
    # t = 1: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + eps) ~ lr * sign(g)
    p = one_step(Adam(0.01), [1.0, 1.0], [3.0, -0.2])
    assert p.tolist() == pytest.approx([0.99, 1.01], abs=1e-8)


def test_eps_inside_sqrt_keras_convention():
    g, eps, lr = 1e-4, 1e-6, 0.1
    outside = one_step(Adam(lr, eps=eps), [0.0], [g])[0]
    inside = one_step(Adam(lr, eps=eps, eps_inside_sqrt=True), [0.0], [g])[0]
    assert outside == pytest.approx(-lr * g / (g + eps))
    assert inside == pytest.approx(-lr * g / math.sqrt(g * g + eps))
    # RMSprop (Keras): v = (1 - alpha) g^2, step = lr g / sqrt(v + eps)
    rms = one_step(RMSprop(lr, alpha=0.9, eps=eps, eps_inside_sqrt=True), [0.0], [g])[0]
    assert rms == pytest.approx(-lr * g / math.sqrt(0.1 * g * g + eps))


def test_adamw_decays_parameters_not_gradients():
    # zero gradient: Adam's L2 term becomes a gradient; AdamW only shrinks theta by lr * wd
    assert one_step(AdamW(0.1, weight_decay=0.5), [2.0], [0.0])[0] == pytest.approx(1.9)
    assert one_step(Adam(0.1, weight_decay=0.5), [2.0], [0.0])[0] == pytest.approx(1.9, abs=1e-6)


# -- schedules ------------------------------------------------------------------------------
def test_schedules():
    assert [StepDecay(1.0, 2, 0.5)(t) for t in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    assert Exponential(2.0, 0.5)(3) == 0.25
    assert [LinearWarmup(1.0, 4)(t) for t in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]
    cos = Cosine(1.0, 10, min_lr=0.1, warmup_steps=2)
    assert cos(0) == 0.5 and cos(2) == 1.0 and cos(10) == 0.1
    assert cos(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert Constant(0.3)(1000) == 0.3


def test_optimizer_follows_a_schedule():
    opt = SGD(StepDecay(1.0, 1, 0.1))
    p = np.zeros(1)
    lrs = []
    for _ in range(3):
        opt.step(p, np.ones(1))
        lrs.append(opt.lr)
    assert lrs == pytest.approx([1.0, 0.1, 0.01])
    assert p[0] == pytest.approx(-1.11)


# -- state ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: SGD(0.1, momentum=0.9),
        lambda: RMSprop(centered=True, momentum=0.5),
        lambda: Adam(amsgrad=True),
        lambda: AdamW(),
    ],
)
def test_state_roundtrip_continues_exactly(make):
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(6, 5))
    a, pa = make(), np.ones(5)
    for g in grads[:3]:
        a.step(pa, g.copy())
    b, pb = make(), pa.copy()
    b.load_state_dict(a.state_dict())
    for g in grads[3:]:
        a.step(pa, g.copy())
        b.step(pb, g.copy())
    np.testing.assert_array_equal(pa, pb)


def test_state_of_another_optimizer_is_refused():
    with pytest.raises(ValueError, match="for SGD, not Adam"):
        Adam().load_state_dict(SGD(0.1).state_dict())
    with pytest.raises(ValueError, match="same settings"):
        SGD(0.1, momentum=0.5).load_state_dict(SGD(0.1, momentum=0.9).state_dict())


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        SGD(0.0)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        Adam(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="one of 'sgd'"):
        get_optimizer("lbfgs")
    assert get_optimizer("nesterov").nesterov and get_optimizer("adam", 0.1).lr == 0.1


# -- every optimizer drives the loss down, convex and not -----------------------------------
OPTIMIZERS = {
    "sgd": lambda: SGD(0.5),
    "momentum": lambda: SGD(0.1, momentum=0.9),
    "nesterov": lambda: SGD(0.1, momentum=0.9, nesterov=True),
    "rmsprop": lambda: RMSprop(1e-2),
    "adam": lambda: Adam(1e-2),
    "adamw": lambda: AdamW(1e-2),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("arch", ["softmax", "mlp"])
def test_optimizer_drives_the_loss_down(name, arch, digits):
    model = softmax_regression(64, 10) if arch == "softmax" else mlp(64, [32], 10)
    train, _ = digits
    X, y = model.prepare(train.X, train.y)
    start = model.evaluate(X, y)["loss"]
    opt = OPTIMIZERS[name]()
    batches = MiniBatches(X, y, batch_size=64)
    for e in range(5):
        for xb, yb in batches.epoch(e):
            model.loss_and_grad(xb, yb)
            opt.step(model.params, model.grads)
    end = model.evaluate(X, y)
    assert end["loss"] < 0.5 * start
    assert end["accuracy"] > 0.85


# -- the compiled one-pass updates agree with the NumPy expressions --------------------------
FUSABLE = {
    "sgd": lambda **kw: SGD(0.1, **kw),
    "sgd_momentum_wd": lambda **kw: SGD(0.1, momentum=0.9, dampening=0.1, weight_decay=1e-2, **kw),
    "nesterov": lambda **kw: SGD(0.1, momentum=0.9, nesterov=True, **kw),
    "adam": lambda **kw: Adam(1e-2, weight_decay=1e-3, **kw),
    "adam_amsgrad_inside": lambda **kw: Adam(1e-2, amsgrad=True, eps_inside_sqrt=True, **kw),
    "adamw": lambda **kw: AdamW(1e-2, amsgrad=True, **kw),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(FUSABLE))
def test_compiled_update_matches_numpy(name, dtype):
    from minigd import _kernels as kernels

    if not kernels.available():
        pytest.skip("numba is not installed (the 'fast' extra)")
    rng = np.random.default_rng(0)
    fused, plain = FUSABLE[name](fused=True), FUSABLE[name](fused=False)
    assert fused._kernels is not None and plain._kernels is None
    pa = rng.normal(size=1000).astype(dtype)
    pb = pa.copy()
    for _ in range(50):
        g = rng.normal(size=1000).astype(dtype)
        fused.step(pa, g.copy())
        plain.step(pb, g.copy())
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(pa, pb, rtol=rtol, atol=rtol)
    for key in plain.state:
        np.testing.assert_allclose(fused.state[key], plain.state[key], rtol=rtol, atol=rtol)


def test_fused_true_without_numba_says_what_to_install(monkeypatch):
    from minigd import _kernels as kernels

    monkeypatch.setattr(kernels, "_TRIED", True)
    monkeypatch.setattr(kernels, "_KERNELS", None)
    with pytest.raises(ImportError, match=r"minigd\[fast\]"):
        Adam(fused=True)
    assert Adam()._kernels is None  # fused=None falls back to NumPy
