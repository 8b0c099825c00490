"""The critical batch size: the fit, the learning-rate grid that extends itself, steps to target
resolved between evaluations, and a sweep on the problem whose noise scale is known exactly."""

import json
import math

import numpy as np
import pytest

from minigd.batchsize.closed_form import IsotropicLeastSquares
from minigd.batchsize.critical import fit_critical_batch, regime, where_slope
from minigd.experiments.lr_grid import extensions, grid_ratio, is_interior
from minigd.experiments.metrics import Target, TargetTracker
from minigd.experiments.sweep import sweep
from minigd.nn.models import linear_regression

SIZES = [16, 32, 64, 128, 256, 512, 1024, 2048]


# -- the fit ----------------------------------------------------------------------------------
def test_the_fit_recovers_an_exact_curve_and_reads_its_regimes():
    steps = {b: [50.0 * (1 + 300 / b)] for b in SIZES}
    fit = fit_critical_batch(steps, bootstrap=200)
    assert fit.b_crit == pytest.approx(300, rel=2e-3)
    assert fit.s_min == pytest.approx(50, rel=2e-3)
    assert fit.e_min == pytest.approx(15000, rel=4e-3)
    assert fit.residual_rms < 1e-3 and fit.bounded
    assert fit.perfect_scaling_up_to == pytest.approx(300 / 9, rel=2e-3)
    assert fit.plateau_from == pytest.approx(2700, rel=2e-3)
    assert fit.regimes[16] == "perfect scaling" and fit.regimes[2048] == "diminishing returns"
    assert regime(3000, 300) == "plateau"
    assert where_slope(-0.5, 300) == pytest.approx(300)  # half way: slope -1/2 at B = B_crit
    np.testing.assert_allclose(
        fit.local_slopes[0], math.log(steps[32][0] / steps[16][0]) / math.log(2)
    )


def test_the_bootstrap_interval_covers_the_truth_for_noisy_seeds():
    rng = np.random.default_rng(4)
    covered = 0
    for trial in range(20):
        steps = {b: [40 * (1 + 200 / b) * math.exp(rng.normal(0, 0.1)) for _ in range(3)]
                 for b in SIZES}  # fmt: skip
        lo, hi = fit_critical_batch(steps, bootstrap=300, seed=trial).b_crit_interval
        assert lo < hi
        covered += lo <= 200 <= hi
    assert covered >= 16  # a 95% interval; 20 trials


def test_a_curve_that_never_bends_is_reported_as_a_bound_and_too_few_points_refused():
    fit = fit_critical_batch({b: [1e5 / b] for b in SIZES}, bootstrap=0)  # perfect scaling
    assert not fit.bounded and fit.b_crit > 30 * 2048 * 0.9
    with pytest.raises(ValueError, match="3 or more batch sizes"):
        fit_critical_batch({16: [10.0], 32: [5.0], 64: [None]})


# -- the learning-rate grid -------------------------------------------------------------------
def test_the_grid_extends_past_an_edge_best_and_stops_when_interior():
    assert grid_ratio([0.01, 0.1, 1.0]) == pytest.approx(10)
    at_top = {0.1: 50.0, 0.3: 30.0, 1.0: 20.0}
    assert extensions([at_top], 3.0, {}, 3) == [("up", 3.0)]
    assert extensions([at_top], 3.0, {"up": 3}, 3) == []  # the limit
    at_bottom = {0.1: 20.0, 0.3: None}  # 0.3 diverged: tried and worse
    assert extensions([at_bottom], 3.0, {}, 3) == [("down", pytest.approx(0.0333333))]
    interior = {0.1: 40.0, 0.3: 20.0, 1.0: None}
    assert is_interior(interior) and extensions([interior], 3.0, {}, 3) == []
    nothing = {0.1: None, 0.3: None}
    assert [s for s, _ in extensions([nothing], 3.0, {}, 3)] == ["down", "up"]
    assert [s for s, _ in extensions([nothing], 3.0, {}, 3, top_diverged=True)] == ["down"]
    # two targets: either one at an edge extends the grid
    assert extensions([interior, at_top], 3.0, {}, 3) == [("up", 3.0)]


# -- steps to target between evaluations ------------------------------------------------------
class LinearMetric:
    """A stand-in trainer whose validation accuracy is step / 1000, exactly linear."""

    def __init__(self):
        self.step, self.samples_seen, self.batches_per_epoch = 0, 0, 100
        self.model = self
        self.stopped = None

    def evaluate_prepared(self, X, y):
        return {"accuracy": self.step / 1000, "loss": 1.0}

    def elapsed(self):
        return self.step * 0.01

    def exclude(self, seconds):
        pass

    def stop(self, reason, outcome="stopped"):
        self.stopped = reason


def test_steps_to_target_are_interpolated_between_evaluations_to_the_exact_crossing():
    trainer = LinearMetric()
    targets = [Target("val_accuracy", v) for v in (0.0437, 0.1537, 0.4321)]
    tracker = TargetTracker(targets, (None, None), stop=True)
    while trainer.stopped is None:
        trainer.step += 1
        trainer.samples_seen += 32
        tracker.on_step_end(trainer, 0.0)
    for target, reached in zip(targets, tracker.reached_all, strict=True):
        exact = target.value * 1000
        # evaluations are every step up to 50, then ~2% apart: interpolation is exact here
        assert reached.steps == pytest.approx(math.ceil(exact) if exact < 50 else exact, abs=1e-9)
        assert reached.samples == pytest.approx(32 * reached.steps)
    # every step to 50, then ~2% apart: 50 + log(433/50)/log(1.02) ~ 159, not all 433 steps
    assert tracker.evaluations < 160
    assert 432 < trainer.step < 432 * 1.03  # stopped at the first evaluation past the last


# -- checked where the answer is known ---------------------------------------------------------
@pytest.mark.slow
def test_a_sweep_on_the_closed_form_problem_finds_the_critical_batch_the_model_predicts():
    """The model: SGD's expected loss on the isotropic problem at the best of the same learning
    rates (``IsotropicLeastSquares.predicted_steps``) puts B_crit at 1.66-1.78x B_noise at the
    target: a constant rate must also bring the noise floor under the target, so its best B
    lies above the noise scale there. The sweep's fitted B_crit must agree with the model's
    within 1.5x (seeds and the step resolution of a few-step run at large B), hence with
    B_noise(target) within [1.66 / 1.5, 1.78 x 1.5] = [1.1, 2.7]."""
    problem = IsotropicLeastSquares(d=64, sigma=1.0)
    train, test = problem.split(32768, 4096)
    start = problem.loss(linear_regression(64, seed=0))
    losses = (1.5, 1.25)
    result = sweep("linear", (train, test), batch_sizes=[2**k for k in range(3, 13)],
                   learning_rates=[0.0625, 0.125, 0.25, 0.5], seeds=[0, 1, 2],
                   target=[Target("val_loss", v) for v in losses], max_epochs=5,
                   standardize_targets=False)  # the closed form is of the raw problem  # fmt: skip
    rates = sorted({lr for tried in result.lr_grid.values() for lr in tried})
    assert min(result.lr_grid[8]) < 0.0625  # B=8 reached nothing on the grid given
    for loss, reading in zip(losses, result.fits, strict=True):
        b_noise = problem.b_noise_at_loss(loss)
        model = problem.predicted_steps(result.lr_grid, rates, loss, start, len(train.X))
        predicted = fit_critical_batch({b: [s] for b, s in model.items()}, bootstrap=0).b_crit
        assert 1.6 < predicted / b_noise < 1.85
        measured = reading.critical.b_crit
        assert 1 / 1.5 < measured / predicted < 1.5, (loss, measured, predicted)
        assert 1.1 < measured / b_noise < 2.7
        # B_simple where the reference run passed the target: at or beyond it, so not below
        assert reading.noise.b_simple > 0.8 * b_noise
    assert all(r.interior for r in result.rows if r.best_lr is not None)


def test_the_sweep_report_says_what_the_fit_found(tmp_path):
    pytest.importorskip("matplotlib")
    from minigd.experiments.sweep_report import write_sweep_report

    problem = IsotropicLeastSquares(d=16, sigma=1.0)
    result = sweep("linear", problem.split(8192, 2048), batch_sizes=[8, 32, 128, 512, 2048],
                   learning_rates=[0.125, 0.25, 0.5], seeds=[0, 1],
                   target=Target("val_loss", 1.5), max_epochs=3,
                   standardize_targets=False)  # fmt: skip
    paths = write_sweep_report(result, tmp_path)
    saved = json.loads(paths["results"].read_text())
    crit = saved["fits"][0]["critical"]
    assert crit["b_crit"] == pytest.approx(result.fits[0].critical.b_crit)
    page = paths["html"].read_text()
    assert f"B_crit = {result.fits[0].critical.b_crit:.3g}" in page
    assert "B_crit / B_simple" in page and page.count("<img") == 2
    assert (tmp_path / "plots" / "steps_vs_samples.svg").exists()


def test_one_seed_at_three_batch_sizes_claims_no_interval():
    from minigd.batchsize.critical import fit_critical_batch

    one_seed = fit_critical_batch({32: [100], 64: [60], 128: [45]})
    assert "no interval: one seed" in str(one_seed) and "95% CI" not in str(one_seed)
    seeds = fit_critical_batch({32: [100, 110], 64: [60, 66], 128: [45, 40]})
    assert "95% CI" in str(seeds)


def test_a_sweep_says_what_it_will_run_and_reports_every_target(tmp_path, capsys):
    from minigd.cli import main

    argv = ["sweep", "--data", "digits", "--model", "softmax", "--batch-sizes", "32,64,128",
            "--lrs", "0.1,0.3", "--seeds", "0", "--target", "val_accuracy:0.8,0.9",
            "--max-epochs", "3", "--max-extensions", "0", "--out", str(tmp_path / "s")]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    err, out = captured.err.splitlines(), captured.out
    assert err[0].startswith("sweep: 3 batch sizes x 2 learning rates x 1 seeds = 6 runs")
    assert err[1].startswith("sweep: the first pair took") and "other 5 pairs: about" in err[1]
    pair_lines = [line for line in err if line.startswith("sweep: B=")]
    assert len(pair_lines) == 6
    assert all("val_accuracy >= 0.8" in line and "val_accuracy >= 0.9" in line
               for line in pair_lines if "diverged" not in line)  # fmt: skip
    header = out.splitlines()[0]
    assert header.endswith("where the best lr sits") and "  best lr  " not in header[-30:]
