"""Goodput: its identities, its choice on a known model, the noise it reads (per-sample norms,
pre-conditioned halves), the learning rate that follows the batch (AdaScale), the guard against a
move that makes the loss rise, and exact resume with a schedule that depended on timings."""

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigd import _kernels, datasets
from minigd.batchsize.closed_form import IsotropicLeastSquares
from minigd.batchsize.goodput import (
    StepTimes,
    adascale_gain,
    candidates,
    choose,
    efficiency,
    gain,
)
from minigd.nn import BatchNorm, Dense, Dropout, ReLU, Sequential, Tanh, mlp
from minigd.nn.models import linear_regression
from minigd.noise import StepNoise, estimate_components, norm_sq
from minigd.noise.halves import FLOOR, DividedNorms, floored
from minigd.noise.per_example import ExampleNoise
from minigd.optim import SGD, Adam, RMSprop, StepDecay
from minigd.training import Callback, Checkpoint, fit, load_checkpoint, make_trainer
from minigd.training.goodput import MAX_GROWTH, SETTLE, GoodputBatchSize
from test_adaptive import ClosedForm
from test_training import kill_at

positive = st.floats(1e-3, 1e4)


# -- the identities ----------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(b=st.integers(1, 1 << 14), b0=st.integers(1, 1 << 10), g2=positive, trace=positive)
def test_gain_and_efficiency_agree_with_adascale_and_with_each_other(b, b0, g2, trace):
    b_noise = trace / g2  # per-sample tr(Sigma) over |G|^2
    s = b / b0
    assert efficiency(b0, b0, b_noise) == pytest.approx(1.0)
    assert gain(b, b0, b_noise) / s == pytest.approx(efficiency(b, b0, b_noise), rel=1e-9)
    # AdaScale's own terms: the covariance of a gradient on b0 samples is tr(Sigma) / b0
    assert adascale_gain(b, b0, g2, trace / b0) == pytest.approx(gain(b, b0, b_noise), rel=1e-9)
    assert min(1.0, s) - 1e-9 <= gain(b, b0, b_noise) <= max(1.0, s) + 1e-9
    if b > b0:  # a larger batch is worth less per sample, more per step
        assert efficiency(b, b0, b_noise) < 1 < gain(b, b0, b_noise)


def test_goodput_picks_the_known_optimum_of_a_synthetic_machine_and_noise():
    """Step seconds a + c b and efficiency (B_noise + b0)/(B_noise + b): the maximum of
    b / (a + c b) x efficiency is at sqrt(a B_noise / c), whatever b0."""
    a, c = 2e-3, 5e-6
    times = StepTimes()
    for b in (32, 64, 256, 1024):
        for _ in range(5):
            times.observe(b, a + c * b)
    assert times.fit() == pytest.approx((a, c), rel=1e-9)
    sizes = list(range(16, 4097))
    for b_noise in (50.0, 400.0, 3000.0):
        expected = math.sqrt(a * b_noise / c)
        for b0 in (16, 32):
            assert choose(sizes, times, b_noise, b0).batch_size == pytest.approx(expected, abs=1)
    # the geometric candidates land within one step of their spacing (4 per doubling: 19%)
    grid = candidates(32, 4096)
    assert grid[0] == 32 and grid[-1] == 4096 and len(grid) == len(set(grid))
    picked = choose(grid, times, 400.0, 32).batch_size
    assert abs(math.log(picked / math.sqrt(a * 400 / c))) < math.log(1.19)


def test_seed_timings_take_the_loops_own_cost_per_step():
    """Sizes timed only before training count with the overhead measured where both exist."""
    times = StepTimes()
    a, c, loop = 1e-3, 4e-6, 3e-4
    for b in (32, 256):
        times.seed(b, a + c * b)
    times.observe(32, a + loop + c * 32)
    assert times.fit() == pytest.approx((a + loop, c), rel=1e-9)
    restored = StepTimes()
    restored.load_state(times.state())
    assert restored.fit() == times.fit()


def test_a_spike_in_the_step_times_does_not_move_the_model():
    """A shared machine's steps come with spikes (3-6x, one in a few hundred): each size counts
    as the median of its recent steps, so one spike right before a decision changes nothing
    (a running mean took half of it, and made a larger batch look twice as good)."""
    a, c = 2e-4, 3e-6
    times = StepTimes()
    for b in (32, 128):
        for _ in range(40):
            times.observe(b, a + c * b)
    times.observe(32, 6 * (a + c * 32))
    assert times.fit() == pytest.approx((a, c), rel=1e-9)
    assert len(times.recent[32]) == times.window and times.counts[32] == 41
    # a machine that gets busier is followed: once most of the window is slower, so is the model
    for _ in range(20):
        times.observe(32, 2 * (a + c * 32))
    assert times.typical()[32] == pytest.approx(2 * (a + c * 32))
    # a checkpoint written before the window (running means) still loads
    old = {"decay": 0.9, "means": {"32": 1e-3, "128": 2e-3}, "counts": {"32": 5, "128": 2},
           "seeds": {}}  # fmt: skip
    restored = StepTimes()
    restored.load_state(old)
    assert restored.typical() == {32: 1e-3, 128: 2e-3}


def test_the_seed_pass_times_bare_steps_on_a_copy_of_the_model(digits):
    """The seed pass times b0 and MAX_GROWTH b0 (the largest first move) on a copy: the model's
    parameters and buffers (BatchNorm's statistics, Dropout's count) and the run's optimizer are
    as before."""
    train, _ = digits
    model = Sequential([Dense(64, 32), BatchNorm(32), ReLU(), Dropout(0.2), Dense(32, 10)],
                       "softmax_cross_entropy", seed=3)  # fmt: skip
    policy = GoodputBatchSize(start=16, max_batch_size=256)
    trainer = make_trainer(model, train.X, train.y, batch_size="adaptive", epochs=1, lr=0.1,
                           last_batch="merge", callbacks=[policy], verbose=0)  # fmt: skip
    trainer.optimizer.step(model.params, np.ones_like(model.params))  # some optimizer state
    before, optimizer_before = model.state(), trainer.optimizer.state_dict()
    policy._seed(trainer)
    after = model.state()
    assert set(after) == set(before)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    assert trainer.optimizer.state_dict()["steps"] == optimizer_before["steps"]
    assert sorted(policy.times.seeds) == [16, 16 * MAX_GROWTH]
    assert all(t > 0 for t in policy.times.seeds.values())
    held = GoodputBatchSize(start=16, max_batch_size=16)  # one candidate: nothing to time
    trainer = make_trainer(model, train.X, train.y, batch_size="adaptive", epochs=1, lr=0.1,
                           last_batch="merge", callbacks=[held], verbose=0)  # fmt: skip
    held.on_train_begin(trainer)
    assert held.times.empty


class MoveAt(Callback):
    """Moves the policy's batch to ``size`` after step ``step``."""

    def __init__(self, policy, step, size):
        self.policy, self.step, self.size = policy, step, size

    def on_step_end(self, trainer, loss):
        if trainer.step == self.step:
            self.policy._move(trainer, self.size, "a test's move")


def test_the_first_steps_at_each_size_are_not_timed(digits):
    """A size's first ``SETTLE`` steps run slow (cold caches and buffers; least squares at
    b0 = 32 fell from 169 to 40 us over its first ten): they stay out of the step-time
    model, at the start and after a move; every later full batch of the size is timed."""
    train, _ = digits
    policy = GoodputBatchSize(start=16, max_batch_size=64, decide_every=10**6)  # no decision
    history = fit(mlp(64, [32], 10, seed=0), train.X, train.y, batch_size="adaptive",
                  epochs=1, lr=0.1, verbose=0, threads=1,
                  callbacks=[policy, MoveAt(policy, 30, 32)])  # fmt: skip
    sizes = history.steps["batch_size"]
    after = [b for b in sizes[30:] if b == 32]  # an epoch's short last batch is never timed
    assert sizes[:30] == [16] * 30 and len(after) > SETTLE
    assert policy.times.counts == {16: 30 - SETTLE, 32: len(after) - SETTLE}


class Machine:
    """A trainer as the policy's decisions see it, on a machine whose step times jitter."""

    def __init__(self, b_noise):
        self.batch_size, self.step, self.epoch, self.next_batch = 32, 0, 0, 0
        self.batches_per_epoch = 0  # no epochs: every step is at batch_size
        self.optimizer = SGD(0.1)
        self.gradient = SimpleNamespace(noise=SimpleNamespace(value=b_noise), rank=0, ranks=1)
        self.history = SimpleNamespace(steps={"loss": [1.0]})

    def regroup(self, b):
        self.batch_size = b


@pytest.mark.parametrize("margin, most_moves", [(1.05, 2), (1.0, None)])
def test_a_move_needs_the_promised_margin_so_the_batch_does_not_flap(margin, most_moves):
    """Step times a + c b with 10% jitter, an optimum of 100 (B_noise = 10): with the 5%
    margin the batch settles; without it, it follows the jitter back and forth."""
    a, c = 1e-3, 1e-6
    machine, rng = Machine(b_noise=10.0), np.random.default_rng(1)
    policy = GoodputBatchSize(start=32, max_batch_size=1024, switch_gain=margin)
    policy.start_size = 32
    for b in (32, 256):
        policy.times.seed(b, a + c * b)
    for _ in range(300):
        policy.times.observe(machine.batch_size, (a + c * machine.batch_size) * rng.normal(1, 0.1))
        policy._decide(machine)
    moves = len(policy.schedule)
    assert 75 <= machine.batch_size <= 130
    if most_moves is None:
        assert moves > 5  # it follows the jitter (a median of recent steps damps it)
    else:
        assert moves <= most_moves


# -- the noise it reads -------------------------------------------------------------------------
def per_sample_components(model, rows, targets, divisor=None):
    """(mean |g_i / divisor|^2, |g / divisor|^2) from one backward pass per sample."""
    d = 1.0 if divisor is None else divisor
    squares = []
    for i in range(len(rows)):
        model.loss_and_grad(rows[i : i + 1], targets[i : i + 1])
        squares.append(norm_sq(model.grads / d))
    model.loss_and_grad(rows, targets)
    return float(np.mean(squares)), norm_sq(model.grads / d)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("adam", [False, True], ids=["raw", "adam-divided"])
def test_per_sample_norms_from_backward_equal_one_pass_per_sample(digits, bias, adam):
    """Raw, and for Adam each coordinate divided by its (floored) sqrt(v) + eps, which ranges
    over orders of magnitude after a few steps: the factored norms are the direct ones."""
    train, _ = digits
    layers = [Dense(64, 16, bias=bias), Tanh(), Dense(16, 12, bias=bias), ReLU(), Dense(12, 10)]
    model = Sequential(layers, "softmax_cross_entropy", seed=1, dtype=np.float64)
    rows, targets = model.prepare(train.X[:48], train.y[:48])
    precondition = None
    if adam:
        optimizer = Adam(1e-3)
        for lo in (100, 200, 300):  # a second moment that differs per coordinate
            model.loss_and_grad(*model.prepare(train.X[lo : lo + 16], train.y[lo : lo + 16]))
            optimizer.step(model.params, model.grads)
        precondition = optimizer.preconditioner
        assert np.ptp(np.log10(floored(precondition()))) > 0.5
    divisor = None if precondition is None else floored(precondition())
    small, big = per_sample_components(model, rows, targets, divisor)
    noise = ExampleNoise(population=1000, precondition=precondition)
    loss = noise.loss_and_grad(model, rows, targets, 48, step=0)
    g2, trace = estimate_components(small, big, 1, 48, 1000)
    assert noise.noise.last_g2 == pytest.approx(g2, rel=1e-10)
    assert noise.noise.last_trace == pytest.approx(trace, rel=1e-10)
    assert loss == pytest.approx(model.loss_and_grad(rows, targets), rel=1e-12)
    assert not any(getattr(la, "track_example_norms", False) for la in model.layers)
    assert all(getattr(la, "example_inverse_sq", None) is None for la in model.layers)


def test_per_sample_norms_apply_only_where_no_layer_couples_samples():
    assert ExampleNoise.supports(mlp(8, [4], 2))
    assert not ExampleNoise.supports(mlp(8, [4], 2, batchnorm=True))


def test_adam_noise_is_that_of_the_pre_conditioned_gradient(digits):
    """The halves' norms of g / (sqrt(v_hat) + eps), against the same computed by hand."""
    train, _ = digits
    model = mlp(64, [16], 10, seed=2, dtype=np.float64)
    rows, targets = model.prepare(train.X[:64], train.y[:64])
    optimizer = Adam(1e-3)
    assert optimizer.preconditioner() is None  # nothing known before the first step
    rng = np.random.default_rng(0)
    v = np.zeros_like(model.params)
    for _ in range(3):
        grads = rng.standard_normal(model.params.shape)
        v = 0.999 * v + 0.001 * grads**2
        optimizer.step(model.params.copy(), grads.copy())
    d = np.sqrt(v / (1 - 0.999**3)) + 1e-8
    np.testing.assert_allclose(optimizer.preconditioner(), d, rtol=1e-12)
    d = np.maximum(d, FLOOR * d.mean())  # the measurement's floor
    noise = StepNoise(seed=4, precondition=optimizer.preconditioner)
    noise.loss_and_grad(model, rows, targets, 64, step=0)
    first, second = noise._split(64, 0)
    model.loss_and_grad(rows[first], targets[first])
    g_1 = model.grads / d
    model.loss_and_grad(rows[second], targets[second])
    g_2 = model.grads / d
    whole = (g_1 + g_2) / 2
    expected = estimate_components((g_1 @ g_1 + g_2 @ g_2) / 2, whole @ whole, 32, 64)
    assert (noise.noise.last_g2, noise.noise.last_trace) == pytest.approx(expected, rel=1e-9)
    rmsprop = RMSprop(1e-3, alpha=0.9)
    rmsprop.step(model.params.copy(), np.full_like(model.params, 2.0))
    np.testing.assert_allclose(rmsprop.preconditioner(), np.sqrt(0.1 * 4.0) + 1e-8)


@pytest.mark.parametrize("make", [lambda: Adam(1e-3), lambda: Adam(1e-3, amsgrad=True),
                                  lambda: RMSprop(1e-3, centered=True)])  # fmt: skip
def test_a_divisor_written_into_a_given_array_is_the_same_and_leaves_the_state(make):
    """The noise paths have the divisor written into an array they keep (a new one each
    measurement cost more than the measurement): same values, the optimizer's state as it was."""
    optimizer, rng = make(), np.random.default_rng(0)
    params = rng.standard_normal(500).astype(np.float32)
    for _ in range(3):
        optimizer.step(params, rng.standard_normal(500).astype(np.float32))
    state = {k: v.copy() for k, v in optimizer.state.items()}
    fresh, out = optimizer.preconditioner(), np.empty_like(params)
    assert optimizer.preconditioner(out=out) is out
    np.testing.assert_array_equal(out, fresh)
    for name, value in state.items():
        np.testing.assert_array_equal(optimizer.state[name], value, err_msg=name)


@pytest.mark.skipif(not _kernels.available(), reason="compiled kernels need the fast extra")
@pytest.mark.parametrize("amsgrad", [False, True])
def test_the_compiled_divisor_and_weights_equal_the_numpy_expressions(amsgrad, monkeypatch):
    """Adam's divisor in one compiled pass, and 1 / max(d, FLOOR mean(d))^2 in two, give what
    the NumPy expressions give, up to float32 round-off, with coordinates at the floor."""
    rng = np.random.default_rng(0)
    params = rng.standard_normal(5000).astype(np.float32)
    compiled, plain = Adam(1e-3, amsgrad=amsgrad), Adam(1e-3, amsgrad=amsgrad, fused=False)
    for _ in range(3):
        g = rng.standard_normal(5000).astype(np.float32)
        g[:100] = 0.0  # never seen: the divisor is eps there, and the floor decides
        for optimizer in (compiled, plain):
            optimizer.step(params.copy(), g.copy())
    np.testing.assert_allclose(compiled.preconditioner(), plain.preconditioner(), rtol=1e-6)
    weights = DividedNorms(compiled.preconditioner).inverse_square(params)
    monkeypatch.setattr(_kernels, "get", lambda: None)  # the NumPy floor, on the same divisor
    expected = DividedNorms(compiled.preconditioner).inverse_square(params)
    np.testing.assert_allclose(weights, expected, rtol=1e-5)
    floor = FLOOR * compiled.preconditioner().mean(dtype=np.float64)
    assert weights[:100] == pytest.approx(1 / floor**2, rel=1e-5)
    wide = compiled.preconditioner(out=np.empty(5000))  # another dtype: cast, same values
    np.testing.assert_allclose(wide, plain.preconditioner(), rtol=1e-6)
    with pytest.raises(ValueError):  # too short: refused, not written past its end
        compiled.preconditioner(out=np.empty(4000, dtype=np.float32))


def test_a_coordinate_adam_has_not_seen_does_not_take_the_pre_conditioned_noise(
    digits, monkeypatch
):
    """Weights on an input that was blank in every batch so far have Adam's divisor at eps: a
    batch where it is lit puts nearly all the pre-conditioned variance there (on mnist-5k, 1% of
    the coordinates held 99-100% of it). Each divisor counts as at least FLOOR times their mean,
    which the path applies to what the optimizer gives."""
    train, _ = digits
    rows, targets = train.X[:64].astype(np.float32), train.y[:64]
    rows[:, 0] = 0.0  # digits' first pixel is blank anyway: make sure
    model = mlp(64, [16], 10, seed=2)
    optimizer = Adam(1e-3)
    for lo in range(0, 64, 16):  # Adam sees the input blank
        model.loss_and_grad(rows[lo : lo + 16], targets[lo : lo + 16])
        optimizer.step(model.params, model.grads)
    rows[::8, 0] = 16.0  # now lit in 1 row of 8
    d = optimizer.preconditioner()
    assert d.min() == pytest.approx(1e-8)

    def trace(divisor):
        noise = StepNoise(seed=4, precondition=lambda out=None: divisor)
        noise.loss_and_grad(model.copy(), rows, targets, 64, step=0)
        return noise.noise.last_trace

    floored = trace(d)
    monkeypatch.setattr("minigd.noise.halves.FLOOR", 0.0)  # the path divides as it is told
    assert floored == pytest.approx(trace(np.maximum(d, FLOOR * d.mean())), rel=1e-6)
    assert trace(d) > 1e6 * floored  # divided by eps, the lit input's weights are all of it


@pytest.mark.parametrize("kind", [ExampleNoise, StepNoise])
def test_the_noise_is_measured_at_every_step_until_warm_then_every_kth(digits, kind):
    """A policy waits for ``warm`` measurements before it acts: at every 8th step the first 5
    took 40 steps, a third of a short run; taken at steps 0-4, the rest keep the cadence."""
    train, _ = digits
    model = mlp(64, [16], 10, seed=1)
    rows, targets = model.prepare(train.X[:64], train.y[:64])
    noise = kind(8, warm=5, population=1000)
    measured = []
    for step in range(30):
        noise.loss_and_grad(model, rows, targets, 64, step=step)
        if math.isfinite(noise.columns()["trace_sigma"]):
            measured.append(step)
    assert measured == [0, 1, 2, 3, 4, 8, 16, 24]
    policy = GoodputBatchSize(warmup=3)
    assert policy.noise_path(model, SGD(0.1), 1000, seed=0).warm == 3


@pytest.mark.parametrize(
    "optimizer, model, kind",
    [
        ("sgd", lambda: mlp(64, [16], 10), ExampleNoise),
        ("adam", lambda: mlp(64, [16], 10), ExampleNoise),
        ("adam", lambda: mlp(64, [16], 10, batchnorm=True), StepNoise),
        ("sgd", lambda: mlp(64, [16], 10, batchnorm=True), StepNoise),
    ],
)
def test_the_adaptive_batch_measures_its_noise_the_cheapest_valid_way(digits, optimizer, model,
                                                                      kind):  # fmt: skip
    train, _ = digits
    trainer = make_trainer(model(), train.X, train.y, batch_size="adaptive", epochs=1,
                           optimizer=optimizer, last_batch="merge", verbose=0)  # fmt: skip
    assert type(trainer.gradient) is kind
    preconditioned = getattr(trainer.gradient, "precondition", None) is not None
    assert preconditioned == (optimizer == "adam")
    assert any(isinstance(c, GoodputBatchSize) for c in trainer.callbacks)


# -- the batch it chooses, and the learning rate with it ----------------------------------------
A, C = 1e-3, 2e-6  # a machine: steps of 1 ms plus 2 us per sample


def closed_form_run(epochs=12):
    problem = IsotropicLeastSquares(d=64, sigma=1.0)
    X, y = problem.data(32768, dtype=np.float32)
    model = linear_regression(64, seed=0)
    closed = ClosedForm(problem, model)
    policy = GoodputBatchSize(start=32, max_batch_size=4096, step_time=lambda b: A + C * b)
    history = fit(model, X, y, batch_size="adaptive", epochs=epochs, lr=0.0003, verbose=0,
                  callbacks=[closed, policy])  # fmt: skip
    return history, np.array([t / g for g, t in closed.components]), policy


def test_the_chosen_batch_follows_the_closed_form_noise_scale():
    """Each move goes to the goodput optimum sqrt(A B_noise / C) of the true noise scale
    (within the 19% candidate spacing and the estimator's error), or as far as one move may."""
    history, truth, _ = closed_form_run()
    schedule = history.meta["batch_schedule"]
    assert len(schedule) >= 2
    for change in schedule:
        b_noise = truth[change["step"]]
        assert change["b_simple"] == pytest.approx(b_noise, rel=0.3), change
        optimum = min(math.sqrt(A * b_noise / C), MAX_GROWTH * change["from"])
        assert optimum / 1.4 < change["batch_size"] < optimum * 1.4, (change, b_noise)
    sizes = [c["batch_size"] for c in schedule]
    assert sizes == sorted(sizes)  # B_noise grows as the loss falls, and the batch with it


class AfterPolicy(Callback):
    """What the policy left for the next step: its gain, the schedule's clock and the noise
    scale it was computed from (the next step's size is in the history)."""

    def __init__(self, policy):
        self.policy, self.seen = policy, []

    def on_step_end(self, trainer, loss):
        noise = trainer.gradient.noise.value
        self.seen.append((self.policy.gain, trainer.optimizer.progress, noise))


def adascale_run(digits, make, lr_rule):
    """A run whose batch moves (and whose epochs end in short batches) under an lr schedule:
    its history, what the policy left after each step, and the optimizer."""
    train, _ = digits
    base = 0.05 if make is SGD else 1e-3
    optimizer = make(StepDecay(base, step_size=40, gamma=0.5))
    policy = GoodputBatchSize(start=8, decide_every=10, step_time=lambda b: 1e-3 + 1e-5 * b,
                              lr_rule=lr_rule)  # fmt: skip
    seen = AfterPolicy(policy)
    history = fit(mlp(64, [32], 10, seed=5), train.X, train.y, batch_size="adaptive", epochs=3,
                  optimizer=optimizer, verbose=0, callbacks=[policy, seen])  # fmt: skip
    assert len(set(history.steps["batch_size"])) > 2  # it moved, and epochs ended short
    assert optimizer.schedule(optimizer.progress) < base  # the clock passed the schedule's step
    return history, seen.seen, optimizer


def check_lrs_and_clock(history, seen, optimizer, expected_gain, root):
    """Each step's gain is ``expected_gain(t, next size, noise)``, the schedule's clock the sum
    of the gains the steps before took, and each lr the schedule's at that clock times the
    gain (its square root for Adam)."""
    sizes, lrs, progress = history.steps["batch_size"], history.steps["lr"], 0.0
    for t, (r, clock, noise) in enumerate(seen[:-1]):
        b = sizes[t + 1]  # the gain is the next step's, for its own rows
        assert r == pytest.approx(expected_gain(t, b, noise), rel=1e-12), t
        progress += seen[t - 1][0] if t else 1.0  # step t trained with the gain before it
        assert clock == pytest.approx(progress, rel=1e-12)
        factor = math.sqrt(r) if root else r
        assert lrs[t + 1] == pytest.approx(optimizer.schedule(clock) * factor, rel=1e-9), t


@pytest.mark.parametrize("make, root", [(SGD, False), (Adam, True)])
def test_adascale_sets_each_steps_lr_to_its_gain_and_the_schedule_reads_their_sum(
    digits, make, root
):
    """As published: each step's gain is AdaScale's formula at its size and the noise now."""
    history, seen, optimizer = adascale_run(digits, make, "adascale")

    def formula(t, b, noise):
        return 1.0 if b == 8 or not np.isfinite(noise) else gain(b, 8, noise)

    check_lrs_and_clock(history, seen, optimizer, formula, root)


@pytest.mark.parametrize("make, root", [(SGD, False), (Adam, True)])
def test_the_held_gain_moves_with_the_batch_only(digits, make, root):
    """The default: a move multiplies the gain by AdaScale's at the new size over the old, at
    the noise scale of the move (recorded with it); between moves the gain stays whatever the
    noise does; a short last batch takes the held gain times its own ratio at the noise now."""
    history, seen, optimizer = adascale_run(digits, make, "adascale-held")
    moves = history.meta["batch_schedule"]
    held = {0: (8, 1.0)}  # steps taken -> (batch, gain) from then on
    batch, g = 8, 1.0
    for move in moves:
        g *= gain(move["batch_size"], 8, move["b_simple"]) / gain(batch, 8, move["b_simple"])
        batch = move["batch_size"]
        held[move["step"]] = (batch, g)

    def expected(t, b, noise):
        batch, g = held[max(step for step in held if step <= t + 1)]
        return g if b == batch else g * gain(b, 8, noise) / gain(batch, 8, noise)

    check_lrs_and_clock(history, seen, optimizer, expected, root)
    assert len(moves) >= 2
    first, sizes = moves[0]["step"], history.steps["batch_size"]
    before = seen[: first - 1]  # what the steps before the first move left for the next
    at_b0 = {r for (r, _, _), b in zip(before, sizes[1:first], strict=True) if b == 8}
    assert len({n for _, _, n in before if np.isfinite(n)}) > 1 and at_b0 == {1.0}


def test_a_checkpoint_from_before_the_held_gain_resumes_re_reading_it(digits):
    """AdaScale re-read at every measurement was the only rule: a checkpoint without a held
    gain goes on with it, as it was trained; one with it keeps the held batch and gain."""
    train, _ = digits

    def policy_of_a_new_trainer():
        policy = GoodputBatchSize(start=8, step_time=lambda b: 1e-3 + 1e-5 * b)
        make_trainer(mlp(64, [32], 10, seed=5), train.X, train.y, batch_size="adaptive",
                     epochs=1, lr=0.05, verbose=0, callbacks=[policy])  # fmt: skip
        return policy

    state = policy_of_a_new_trainer().state() | {"held": [16, 1.5]}
    restored = policy_of_a_new_trainer()
    restored.load_state(state)
    assert (restored.lr_rule, restored.held) == ("adascale-held", (16, 1.5))
    older = policy_of_a_new_trainer()
    older.load_state({k: v for k, v in state.items() if k != "held"})
    assert older.lr_rule == "adascale"


# -- a move the problem does not take ---------------------------------------------------------
def test_a_move_up_that_makes_the_loss_rise_is_undone_and_capped():
    """Least squares near its floor: the noise scale passes the whole set, goodput asks for the
    largest batch and AdaScale for an lr the problem cannot take; the loss rises, the move is
    undone, and no larger batch is tried again."""
    problem = IsotropicLeastSquares(d=16, sigma=1.0)
    X, y = problem.data(16384, dtype=np.float32)
    policy = GoodputBatchSize(start=32, step_time=lambda b: 1e-3 + 1e-7 * b)
    history = fit(linear_regression(16, seed=0), X, y, batch_size="adaptive", epochs=6,
                  lr=0.6, verbose=0, callbacks=[policy])  # fmt: skip
    undone = [c for c in history.meta["batch_schedule"] if "loss rose" in c["reason"]]
    assert undone and policy.ceiling == undone[0]["batch_size"] < undone[0]["from"]
    later = [c for c in history.meta["batch_schedule"] if c["step"] > undone[0]["step"]]
    assert all(c["batch_size"] <= policy.ceiling for c in later)
    assert history.meta["outcome"] == "completed" and np.isfinite(history.steps["loss"][-1])


def test_one_window_of_higher_loss_after_a_move_is_not_enough_to_undo_it():
    """A mean of 20 step losses is noisy (on mnist-5k one window rose 27% above the lowest and
    the next fell back): a move is undone only when two decisions in a row see the rise."""
    policy = GoodputBatchSize(start=32)
    losses = [1.0] * 20
    trainer = SimpleNamespace(history=SimpleNamespace(steps={"loss": losses}), batch_size=64)
    policy._watch = {"from": 32, "best": 1.0}
    losses += [1.3] * 20  # one window above the limit
    assert policy._undo_if_rising(trainer) is False and policy._watch is not None
    losses += [1.0] * 20  # and back: the count starts again
    assert policy._undo_if_rising(trainer) is False and policy._watch["strikes"] == 0
    losses += [1.3] * 20
    assert policy._undo_if_rising(trainer) is False
    moves = []
    policy._move = lambda trainer, size, reason: moves.append((size, reason))
    losses += [1.3] * 20  # the second in a row: undone
    assert policy._undo_if_rising(trainer) is True
    assert moves[0][0] == 32 and "loss rose from 1 to 1.3" in moves[0][1]


# -- exact resume ------------------------------------------------------------------------------
# The runs train on one BLAS thread: a measured thread count is a timing, which changes a
# product's rounding (1 and 2 OpenBLAS threads give different bits at 64x784x16), so two
# uninterrupted runs could differ; the thread choice's own resume is test_thread_choice's.
def goodput_run(folder=None, resume=None, extra=(), optimizer="sgd", lr=0.05):
    train, _ = datasets.load("digits")
    model = mlp(64, [32], 10, seed=5)
    policy = GoodputBatchSize(start=8, decide_every=10, step_time=lambda b: 1e-3 + 1e-5 * b)
    callbacks = [policy, *extra]
    if folder is not None:
        callbacks.append(Checkpoint(folder, every_steps=3, keep_last=2))
    history = fit(model, train.X, train.y, batch_size="adaptive", epochs=4, lr=lr, seed=3,
                  optimizer=optimizer, verbose=0, callbacks=callbacks, resume=resume,
                  threads=1)  # fmt: skip
    return model, history


def adam_goodput_run(folder=None, resume=None, extra=()):
    """The same run with Adam: its noise from per-sample norms of the divided gradient."""
    return goodput_run(folder, resume, extra, optimizer="adam", lr=3e-3)


def mnist_on_disk(data: Path) -> tuple[Path, Path]:
    """mnist-5k as X.npy and y.npy: 12 blocks of ~1 MiB under the block shuffle."""
    if not (data / "y.npy").exists():
        data.mkdir(parents=True, exist_ok=True)
        train, _ = datasets.load("mnist-5k")
        np.save(data / "X.npy", train.X)
        np.save(data / "y.npy", train.y)
    return data / "X.npy", data / "y.npy"


def streamed_goodput_run(folder=None, resume=None, extra=(), data=None):
    """An adaptive run from a file on disk, block-shuffled through buffers of 4 blocks."""
    from minigd.data import open_source

    X, y = mnist_on_disk(Path(data or Path(folder).parent / "data"))
    model = mlp(784, [16], 10, seed=5)
    policy = GoodputBatchSize(start=8, decide_every=10, step_time=lambda b: 1e-3 + 1e-5 * b)
    callbacks = [policy, *extra]
    if folder is not None:
        callbacks.append(Checkpoint(folder, every_steps=3, keep_last=2))
    history = fit(model, open_source(X, y=y), batch_size="adaptive", epochs=2, lr=0.05, seed=3,
                  verbose=0, shuffle="blocks", shuffle_buffer=4 << 20, callbacks=callbacks,
                  resume=resume, threads=1)  # fmt: skip
    return model, history


@pytest.mark.slow
def test_a_killed_goodput_run_streamed_from_disk_resumes_bitwise_equal(tmp_path):
    """The batch moves mid-epoch on a block-shuffled file (the reader restarts at the move);
    SIGKILL after a move and resume: the same model, batches and schedule."""
    reference, ref_history = streamed_goodput_run(data=tmp_path / "data")
    schedule = ref_history.meta["batch_schedule"]
    assert len(schedule) >= 2 and any(c["at_batch"] > 0 for c in schedule)
    folder = tmp_path / "run"
    step = schedule[0]["step"] + 4
    kill_at(folder, step, module="test_goodput", runner="streamed_goodput_run")
    model, history = streamed_goodput_run(folder, resume=folder)
    np.testing.assert_array_equal(model.params, reference.params)
    assert history.steps["batch_size"] == ref_history.steps["batch_size"]
    assert history.meta["batch_schedule"] == schedule


@pytest.mark.slow
def test_a_killed_adam_goodput_run_resumes_bitwise_equal(tmp_path):
    """Adam's noise is measured on its divided gradient (its divisor and the floor compiled
    where the fast extra is installed): killed after a move, the resumed run is the same."""
    reference, ref_history = adam_goodput_run()
    schedule = ref_history.meta["batch_schedule"]
    assert schedule and ref_history.meta["optimizer"].startswith("Adam")
    kill_at(tmp_path, schedule[0]["step"] + 4, module="test_goodput", runner="adam_goodput_run")
    model, history = adam_goodput_run(tmp_path, resume=tmp_path)
    np.testing.assert_array_equal(model.params, reference.params)
    np.testing.assert_array_equal(history.steps["b_simple"], ref_history.steps["b_simple"])
    assert history.meta["batch_schedule"] == schedule


@pytest.mark.slow
def test_a_killed_goodput_run_resumes_bitwise_equal(tmp_path):
    reference, ref_history = goodput_run()
    schedule = ref_history.meta["batch_schedule"]
    assert len(schedule) >= 2 and any(c["at_batch"] > 0 for c in schedule)
    for trial, step in enumerate([schedule[0]["step"] + 4, ref_history.n_steps - 5]):
        folder = tmp_path / f"trial{trial}"
        kill_at(folder, step, module="test_goodput", runner="goodput_run")
        assert load_checkpoint(folder)["callbacks"]
        model, history = goodput_run(folder, resume=folder)
        np.testing.assert_array_equal(model.params, reference.params, err_msg=f"step {step}")
        assert history.steps["batch_size"] == ref_history.steps["batch_size"]
        assert history.steps["lr"] == ref_history.steps["lr"]
        assert history.meta["batch_schedule"] == schedule
