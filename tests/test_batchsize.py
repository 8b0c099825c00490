import sys
import tracemalloc

import numpy as np
import pytest

from minigd import MiniBatches, datasets, fit
from minigd._kernels import warm_up
from minigd.batchsize import (
    advise,
    available_memory,
    estimate_memory,
    find_batch_size,
    knee_of,
    noise_scale,
    parse_bytes,
    register_device_memory,
    scale_lr,
)
from minigd.batchsize.finder import FinderRow
from minigd.cli import main
from minigd.nn import linear_regression, mlp, parse_model_spec
from minigd.optim import SGD, Adam
from minigd.training import NoiseScaleTracker


# -- memory model ---------------------------------------------------------------------------
def estimate_and_peak(make_model, make_opt, X, y, b):
    """(the memory model's estimate, the traced peak) of the first train step at batch size b,
    on a model and optimizer built while tracing (their parameters and state count)."""
    epoch = MiniBatches(X, y, batch_size=b).epoch(0)  # draws the epoch's order
    warm_up(np.float32)  # compiled kernels (the fast extra) build once, untraced
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    model = make_model()
    opt = make_opt()
    tracemalloc.reset_peak()  # initialization temporaries are not part of a step
    xb, yb = next(epoch)
    model.loss_and_grad(xb, yb)
    opt.step(model.params, model.grads)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return estimate_memory(model, b, optimizer=opt, n_samples=len(X)), peak


@pytest.mark.parametrize("spec", ["softmax", "mlp:128", "mlp:512,256+bn"])
@pytest.mark.parametrize("make_opt", [lambda: SGD(0.1, momentum=0.9), lambda: Adam()])
def test_memory_estimate_is_within_25_percent_of_the_measured_peak(spec, make_opt):
    rng = np.random.default_rng(0)
    X = rng.random((8192, 784), dtype=np.float32)
    y = rng.integers(0, 10, len(X))
    for b in (32, 64, 128, 256, 512, 1024, 2048, 4096):
        estimate, peak = estimate_and_peak(
            lambda: parse_model_spec(spec, 784, 10), make_opt, X, y, b
        )
        assert 0.75 <= estimate.total / peak <= 1.25, (spec, b, estimate.total, peak)
        assert estimate.total == sum(v for k, v in estimate.breakdown().items() if k != "total")


def test_finder_keeps_the_optimizers_schedule():
    rng = np.random.default_rng(0)
    X, y = rng.random((256, 8), dtype=np.float32), rng.integers(0, 3, 256)
    asked = []

    def schedule(t):
        asked.append(t)
        return 0.01 / (1 + t)

    opt = SGD(schedule, momentum=0.9)
    opt.steps = 5  # a used optimizer: the finder must not step it, nor drop its schedule
    before = len(asked)
    find_batch_size(
        mlp(8, [4], 3), X, y, candidates=[16, 32], optimizer=opt, steps=3, warmup=1, progress=False
    )
    # each candidate: a fresh optimizer (t=0 at construction), then 1 traced step, 1 warm-up
    # step and three timed rounds of 3 steps
    assert asked[before:] == [0, *range(11)] * 2
    fresh = opt.fresh()
    assert fresh.schedule is schedule and fresh.momentum == 0.9 and fresh.steps == 0
    assert opt.steps == 5


def test_memory_grows_linearly_with_the_batch():
    model = parse_model_spec("mlp:128", 784, 10)
    a, b = estimate_memory(model, 100), estimate_memory(model, 200)
    assert b.per_batch == 2 * a.per_batch and a.fixed == b.fixed
    full = estimate_memory(model, 200, n_samples=200)  # a view of X, not a gathered copy
    assert full.input_batch == 0 and full.total < b.total


def test_available_memory_with_and_without_psutil(monkeypatch):
    with_psutil = available_memory()
    monkeypatch.setitem(sys.modules, "psutil", None)  # import fails: /proc/meminfo is read
    without = available_memory()
    assert with_psutil > 0 and without > 0
    assert abs(with_psutil - without) < 0.2 * with_psutil
    register_device_memory("fake-gpu", lambda: 123)
    assert available_memory("fake-gpu") == 123
    with pytest.raises(ValueError, match="no memory provider"):
        available_memory("tpu")


def test_parse_bytes():
    assert parse_bytes("2GB") == 2 * 10**9
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("1.5G") == int(1.5 * 2**30)
    with pytest.raises(ValueError, match="2GB"):
        parse_bytes("lots")


# -- learning-rate scaling ------------------------------------------------------------------
def test_lr_scaling_rules():
    linear = scale_lr(0.1, 256, 1024, optimizer=SGD(0.1))
    assert linear.lr == pytest.approx(0.4) and linear.rule == "linear"
    assert linear.warmup_epochs == 5 and "Goyal" in linear.explanation
    sqrt = scale_lr(1e-3, 64, 256, optimizer=Adam())
    assert sqrt.lr == pytest.approx(2e-3) and sqrt.rule == "sqrt"
    assert scale_lr(0.1, 64, 128, optimizer="rmsprop").rule == "sqrt"
    assert scale_lr(0.1, 64, 32).warmup_epochs == 0
    noise = scale_lr(0.1, 64, 64, rule="noise", noise_scale=64.0)
    assert noise.lr == pytest.approx(0.1)  # through the reference
    big = scale_lr(0.1, 64, 10**6, rule="noise", noise_scale=64.0).lr
    small = scale_lr(0.1, 64, 1, rule="noise", noise_scale=64.0).lr
    assert big == pytest.approx(0.2, rel=1e-3) and small == pytest.approx(0.2 / 65)
    with pytest.raises(ValueError, match="noise_scale"):
        scale_lr(0.1, 64, 128, rule="noise")


# -- finder ---------------------------------------------------------------------------------
def test_knee_is_the_smallest_batch_within_ten_percent_of_the_best():
    rows = [FinderRow(b, s, 0, 0, 0) for b, s in [(32, 50), (64, 80), (128, 92), (256, 100)]]
    assert knee_of(rows) == 128
    assert knee_of(rows, within=0.25) == 64


def test_finder_measures_and_leaves_the_model_alone(mnist5k):
    train, _ = mnist5k
    model = mlp(784, [64], 10)
    before = model.params.copy()
    result = find_batch_size(
        model, train.X, train.y, candidates=[32, 128, 512], steps=5, progress=False
    )
    np.testing.assert_array_equal(model.params, before)
    assert [r.batch_size for r in result.rows] == [32, 128, 512]
    assert all(r.samples_per_second > 0 and r.peak_bytes > 0 for r in result.rows)
    assert result.knee in (32, 128, 512)
    for r in result.rows:  # measured peak vs the model's estimate
        assert 0.75 <= r.estimated_bytes / r.peak_bytes <= 1.25
    assert "knee" in result.table()


def test_finder_stops_before_the_budget(mnist5k):
    train, _ = mnist5k
    model = mlp(784, [64], 10)
    budget = estimate_memory(model, 128, optimizer=SGD(0.01)).total
    result = find_batch_size(
        model,
        train.X,
        train.y,
        candidates=[32, 64, 128, 256, 512],
        memory_budget_bytes=budget,
        steps=3,
        progress=False,
    )
    assert [r.batch_size for r in result.rows] == [32, 64, 128]
    assert "batch size 256 would need" in result.stopped and "over the budget" in result.stopped


# -- gradient noise scale -------------------------------------------------------------------
def least_squares(n=10, m=100_000, sigma=1.0, c=0.5, seed=0):
    """Linear regression at parameters w* + d, b* + c with |d| = 1, x ~ N(0, I), label noise
    sigma. Per-sample gradient g = 2 r (x, 1), r = x.d + c - eps, so
    |G|^2 = 4 (|d|^2 + c^2) and tr(Sigma) = 4 ((n + 2)|d|^2 + n c^2 + (n + 1) sigma^2)."""
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=n), 0.3
    X = rng.normal(size=(m, n))
    y = X @ w + b + sigma * rng.normal(size=m)
    model = linear_regression(n, dtype=np.float64)
    d = rng.normal(size=n)
    d /= np.linalg.norm(d)
    model.layers[0].weight[0] = w + d
    model.layers[0].bias[0] = b + c
    g2 = 4 * (1 + c * c)
    trace = 4 * ((n + 2) + n * c * c + (n + 1) * sigma**2)
    return model, X, y, g2, trace


def test_noise_scale_matches_the_closed_form():
    model, X, y, g2, trace = least_squares()
    est = noise_scale(model, X, y, b_small=8, b_big=256, n_batches=2000, seed=0)
    assert est.b_simple == pytest.approx(trace / g2, rel=0.10)
    assert est.grad_norm_sq == pytest.approx(g2, rel=0.10)
    assert est.trace_sigma == pytest.approx(trace, rel=0.10)
    assert est.interval[0] < trace / g2 < est.interval[1]


def test_more_label_noise_gives_a_larger_noise_scale():
    quiet = noise_scale(*least_squares(sigma=0.5)[:3], b_small=8, b_big=256, n_batches=500)
    loud = noise_scale(*least_squares(sigma=2.0)[:3], b_small=8, b_big=256, n_batches=500)
    assert loud.b_simple > 2 * quiet.b_simple
    assert loud.interval[0] > quiet.interval[1]


def test_noise_scale_does_not_depend_on_the_two_batch_sizes():
    model, X, y, g2, trace = least_squares()
    estimates = [
        noise_scale(model, X, y, b_small=s, b_big=b, n_batches=2000, seed=2).b_simple
        for s, b in [(4, 64), (8, 256), (16, 128)]
    ]
    for value in estimates:
        assert value == pytest.approx(trace / g2, rel=0.10)


def test_noise_scale_tracker_records_into_history(mnist5k):
    train, _ = mnist5k
    tracker = NoiseScaleTracker(b_small=16, b_big=256, n_batches=10)
    history = fit(
        mlp(784, [32], 10),
        train.X,
        train.y,
        batch_size=64,
        epochs=2,
        lr=0.1,
        verbose=0,
        callbacks=[tracker],
    )
    values = history.epoch_column("b_simple")
    assert len(values) == 2 and np.all(values > 0) and len(tracker.measurements) == 2
    for column in ("grad_norm_sq", "trace_sigma"):  # the one noise vocabulary
        assert np.all(history.epoch_column(column) > 0)


def test_noise_scale_tracker_probes_a_file_streamed_from_disk(mnist5k, tmp_path):
    """The tracker draws its batches through the MiniBatches' row store: on a streamed file it
    reads the drawn rows from disk (it used to read ``batches.X``, None when streaming) and
    measures what the same rows in memory give."""
    from minigd.data import open_source

    train, _ = mnist5k
    np.save(tmp_path / "X.npy", train.X)
    np.save(tmp_path / "y.npy", train.y)
    results = {}
    for where, data in [
        ("memory", (train.X, train.y)),
        ("disk", (open_source(tmp_path / "X.npy", y=tmp_path / "y.npy"),)),
    ]:
        tracker = NoiseScaleTracker(b_small=16, b_big=256, n_batches=10)
        model = mlp(784, [16], 10, seed=1)
        options = {"batch_size": 64, "epochs": 1, "lr": 0.1, "verbose": 0, "shuffle": "none"}
        fit(model, *data, callbacks=[tracker], **options)
        results[where] = tracker.measurements[0][1].b_simple
    assert results["disk"] > 0
    assert results["disk"] == pytest.approx(results["memory"], rel=1e-4)


def test_noise_scale_argument_errors(mnist5k):
    train, _ = mnist5k
    with pytest.raises(ValueError, match="b_small < b_big"):
        noise_scale(mlp(784, [8], 10), train.X, train.y, b_small=64, b_big=32)


# -- advisor --------------------------------------------------------------------------------
def test_advisor_says_full_batch_on_digits_citing_rule_1():
    pytest.importorskip("sklearn")
    train, _ = datasets.load("digits")
    advice = advise(mlp(64, [128], 10), train.X, train.y, measure=False)
    assert advice.batch_size == "full"
    assert advice.reasons[0].rule == 1 and "batch gradient descent" in advice.reasons[0].text
    assert advice.lr == pytest.approx(0.01 * 1437 / 32)  # rule 6, linear for SGD


def test_advisor_picks_a_power_of_two_on_mnist_5k(mnist5k):
    train, _ = mnist5k
    advice = advise(mlp(784, [128], 10), train.X, train.y, optimizer="adam")
    assert advice.batch_size in (32, 64, 128, 256, 512, 1024)
    assert [r.rule for r in advice.reasons] == [2, 3, 4, 6]
    assert advice.finder is not None and advice.noise is not None
    assert "square-root" in advice.reasons[-1].text
    assert advice.lr == pytest.approx(1e-3 * np.sqrt(advice.batch_samples / 32))
    assert "<- advice" in advice.table()


def test_advisor_memory_budget_overrides_full_batch():
    pytest.importorskip("sklearn")
    train, _ = datasets.load("digits")
    model = mlp(64, [128], 10)
    budget = estimate_memory(model, 300, optimizer=SGD(0.01)).total
    advice = advise(model, train.X, train.y, memory_budget_bytes=budget, measure=False)
    assert advice.batch_size == 64
    assert "over the budget" in advice.reasons[0].text
    assert [c.fits for c in advice.candidates] == [True, True, True, True, False, False, False]


def test_advisor_noise_rule_caps_the_batch(mnist5k):
    train, _ = mnist5k
    advice = advise(mlp(784, [16], 10), train.X, train.y, measure=False, noise=20.0)
    assert advice.batch_size == 32  # 64 (rule 3 unmeasured) is over 2 x 20
    assert any(r.rule == 4 and "lowered to 32" in r.text for r in advice.reasons)
    advice = advise(mlp(784, [16], 10), train.X, train.y, measure=False, noise=100.0)
    assert advice.batch_size == 64
    assert any(r.rule == 4 and "64 is below it" in r.text for r in advice.reasons)  # 64 < 100


def test_advisor_batchnorm_rule_picks_merge():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2500 + 3, 20)).astype(np.float32)
    y = rng.integers(0, 3, len(X))
    advice = advise(mlp(20, [16], 3, batchnorm=True), X, y, measure=False, reference=(32, 0.1))
    assert advice.batch_size == 64 and 2503 % 64 == 7
    assert advice.last_batch == "merge"
    assert any(r.rule == 5 and "last_batch='merge'" in r.text for r in advice.reasons)


def test_cli_tools(mnist5k, capsys):
    pytest.importorskip("sklearn")
    assert main(["advise", "--data", "digits", "--model", "mlp:128", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "batch size: full" in out and "rule 1 (small training set)" in out
    assert (
        main(
            [
                "find-batch-size",
                "--data",
                "mnist-5k",
                "--model",
                "mlp:32",
                "--candidates",
                "32,256",
                "--quiet",
            ]
        )
        == 0
    )
    assert "knee:" in capsys.readouterr().out
    assert (
        main(
            [
                "noise-scale",
                "--data",
                "mnist-5k",
                "--model",
                "mlp:32",
                "--n-batches",
                "5",
                "--b-big",
                "256",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "B_simple" in out and "tr(Sigma)" in out and "|G|^2" in out


def test_rule_4_says_below_when_the_batch_is_below_the_noise_scale(digits):
    train, _ = digits
    X = np.concatenate([train.X] * 3)  # m > 2000: the mini-batch rules apply
    y = np.concatenate([train.y] * 3)
    below = advise(mlp(64, [16], 10), X, y, noise=4096.0, measure=False)
    text = " ".join(r.text for r in below.reasons if r.rule == 4)
    assert f"{below.batch_size} is below it" in text and "not far above" not in text
    above = advise(mlp(64, [16], 10), X, y, noise=below.batch_size * 0.75, measure=False)
    text = " ".join(r.text for r in above.reasons if r.rule == 4)
    assert f"{above.batch_size} is not far above it" in text


# -- what earlier runs measured -----------------------------------------------------------------
def write_json(path, data):
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path.parent


def test_evidence_from_a_run_is_its_noise_scale_early_and_late(tmp_path):
    from minigd.batchsize import read_evidence

    column = [None, float("nan")] + [10.0] * 10 + list(np.linspace(10, 100, 80)) + [100.0] * 10
    run = write_json(tmp_path / "run" / "history.json", {"steps": {"b_simple": column}})
    found = read_evidence(run)
    assert found.noise_start == 10.0 and found.noise_end == 100.0  # medians of a tenth each
    bare = write_json(tmp_path / "bare" / "history.json", {"steps": {"loss": [1.0, 0.9]}})
    with pytest.raises(ValueError, match=r"did not measure its noise scale.*--noise-every"):
        read_evidence(bare)
    with pytest.raises(FileNotFoundError, match=r"neither history\.json"):
        read_evidence(tmp_path)


def test_a_sweeps_critical_batch_bounds_the_advice(tmp_path, mnist5k):
    from minigd.batchsize import read_evidence

    targets = [{"metric": "val_accuracy", "value": v} for v in (0.85, 0.9)]
    fits = [
        {"target": t, "critical": {"b_crit": b}} for t, b in zip(targets, (18.0, 40.0), strict=True)
    ]
    sweep = write_json(tmp_path / "sweep" / "sweep.json", {"fits": fits})
    evidence = read_evidence(sweep)
    assert evidence.critical == 40.0 and evidence.target == "val_accuracy 0.9"  # the last
    train, _ = mnist5k
    advice = advise(mlp(784, [16], 10), train.X, train.y, measure=False, evidence=evidence)
    assert advice.batch_size == 32  # 64 (rule 3 unmeasured) is above B_crit = 40
    reason = next(r.text for r in advice.reasons if r.rule == 4)
    assert "fitted a critical batch size B_crit = 40 to val_accuracy 0.9" in reason
    assert "64 is lowered to 32" in reason


def test_the_advice_says_when_a_growing_noise_scale_calls_for_an_adaptive_batch():
    """A machine whose steps take 1 ms + 10 us per sample: the goodput optimum sits near
    sqrt(a B_noise / c) = sqrt(100 B_noise), 32 at B_noise = 10 and ~316 at 1000."""
    from types import SimpleNamespace

    from minigd.batchsize.advisor import adaptive_note
    from minigd.batchsize.evidence import Evidence

    rows = [
        FinderRow(b, b / (1e-3 + 1e-5 * b), 1.0 + 0.01 * b, 0, 0) for b in (32, 64, 128, 256, 512)
    ]
    evidence = Evidence("runs/x", noise_start=10.0, noise_end=1000.0)
    ctx = SimpleNamespace(finder=SimpleNamespace(rows=rows), batch_size=64, evidence=evidence)
    note = adaptive_note(ctx)
    assert "grew from 10 to 1000" in note and "from 32 to 256" in note
    late = 256 / 3.56e-3 * (1000 + 32) / (1000 + 256)  # goodput at 256, late
    assert f"predicted {late:,.0f} b0-samples/s" in note and "at the fixed 64" in note
    ctx.evidence = Evidence("runs/x", noise_start=10.0, noise_end=15.0)
    assert adaptive_note(ctx) is None  # the best batch did not move: a fixed one will do
