"""Regression targets in standard units: fitted on the training rows only, the same streamed or in
memory, kept with the model wherever it goes, predictions back in the user's units, and a run
that learns its targets in the units it started with."""

import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigd
from minigd.cli import main
from minigd.data import open_source
from minigd.nn import Sequential, linear_regression, load_model, mlp
from minigd.nn import target_scaling as scaling_module
from minigd.nn.target_scaling import TargetScaling
from minigd.training import Callback

RNG = np.random.default_rng(7)


def house_prices(m=2000, d=6, seed=0):
    """Targets in the hundreds, as a price or a count would be: y = 350 + 40 x.w + noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, d)).astype(np.float32)
    y = 350 + 40 * X @ rng.normal(size=d) + rng.normal(0, 5, m)
    return X, y


@given(
    st.integers(1, 300),
    st.integers(1, 3),
    st.integers(1, 7),
    st.floats(-1e4, 1e4),
    st.floats(1e-3, 1e3),
)
@settings(max_examples=60, deadline=None)
def test_streamed_moments_equal_the_whole_arrays(m, k, chunk, offset, spread):
    """Chan's chunk merge gives numpy's mean and population std whatever the chunking."""
    y = offset + spread * np.random.default_rng(m).normal(size=(m, k))
    source = minigd.data.sources.ArraySource(y)
    previous, scaling_module.CHUNK_ROWS = scaling_module.CHUNK_ROWS, chunk
    try:
        streamed = TargetScaling.fit_source(source, k)
    finally:
        scaling_module.CHUNK_ROWS = previous
    whole = TargetScaling.fit(y)
    np.testing.assert_allclose(whole.mean, y.mean(axis=0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(streamed.mean, whole.mean, rtol=1e-10, atol=1e-9 * spread)
    np.testing.assert_allclose(streamed.scale, whole.scale, rtol=1e-7, atol=1e-9 * spread)


def test_a_constant_output_keeps_scale_one_and_bad_targets_are_named():
    scaling = TargetScaling.fit(np.array([[5.0, 1.0], [5.0, 3.0]]))
    assert scaling.mean.tolist() == [5.0, 2.0] and scaling.scale.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="NaN or inf"):
        TargetScaling.fit(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="no training targets"):
        TargetScaling.fit(np.empty((0, 1)))


def test_fit_learns_standard_units_and_predicts_in_the_users():
    X, y = house_prices()
    raw, scaled = linear_regression(6), linear_regression(6)
    h_raw = minigd.fit(raw, X, y, batch_size=64, epochs=1, lr=0.01, verbose=0)
    h_std = minigd.fit(scaled, X, y, batch_size=64, epochs=1, lr=0.01, verbose=0,
                       standardize_targets=True)  # fmt: skip
    assert raw.target_scaling is None
    assert h_raw.steps["loss"][0] > 1e4  # the first loss is the targets' second moment
    assert h_std.steps["loss"][0] < 10  # in standard units: about 1 + the initial outputs
    np.testing.assert_allclose(scaled.target_scaling.mean, [y.mean()])
    np.testing.assert_allclose(scaled.target_scaling.scale, [y.std()])
    minigd.fit(scaled, X, y, batch_size=64, epochs=5, lr=0.05, verbose=0)  # keeps its scaling
    predicted = scaled.predict(X)
    assert np.sqrt(np.mean((predicted - y) ** 2)) < 10  # the noise is 5, in the user's units
    metrics = scaled.evaluate(X, y)
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((predicted - y) ** 2)), rel=1e-4)
    assert metrics["loss"] == pytest.approx((metrics["rmse"] / y.std()) ** 2, rel=1e-3)


def test_the_scaling_comes_from_the_training_rows_only():
    X, y = house_prices(1000)
    y[800:] += 1000  # a held-out part unlike the rest
    model = linear_regression(6)
    history = minigd.fit(model, X, y, batch_size=50, epochs=2, lr=0.05, verbose=0,
                         validation_split=0.2, standardize_targets=True)  # fmt: skip
    assert model.target_scaling.mean[0] == pytest.approx(y[:800].mean())
    # the validation loss is in the same standard units: the shift is ~1000 / std away
    shift = 1000 / y[:800].std()
    assert history.epochs[-1]["val_loss"] == pytest.approx(shift**2, rel=0.2)


def test_streamed_training_scales_as_in_memory(tmp_path):
    X, y = house_prices(3000)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    streamed, in_memory = linear_regression(6), linear_regression(6)
    options = {"batch_size": 100, "epochs": 1, "lr": 0.05, "verbose": 0, "shuffle": "none",
               "standardize_targets": True}  # fmt: skip
    minigd.fit(streamed, open_source(tmp_path / "X.npy", y=tmp_path / "y.npy"), **options)
    minigd.fit(in_memory, X, y, **options)
    np.testing.assert_allclose(streamed.target_scaling.mean, in_memory.target_scaling.mean)
    np.testing.assert_allclose(streamed.target_scaling.scale, in_memory.target_scaling.scale)
    np.testing.assert_allclose(streamed.predict(X), in_memory.predict(X), rtol=1e-4, atol=1e-3)


def test_the_scaling_travels_with_the_model(tmp_path):
    X, y = house_prices(500, d=3)
    y = np.stack([y, -0.01 * y], axis=1)  # two outputs on different scales
    model = mlp(3, [8], 2, loss="mse")
    minigd.fit(model, X, y, batch_size=32, epochs=2, verbose=0, standardize_targets=True)
    expected = model.predict(X)
    model.save(tmp_path / "m.npz")
    for twin in (load_model(tmp_path / "m.npz"), model.copy(), pickle.loads(pickle.dumps(model))):
        assert twin.target_scaling == model.target_scaling
        np.testing.assert_array_equal(twin.predict(X), expected)


def test_a_malformed_or_misplaced_scaling_is_refused():
    model = linear_regression(2)
    config = model.config() | {"target_scaling": {"mean": [1.0], "scale": [0.0]}}
    with pytest.raises(ValueError, match="positive 'scale' for each of the 1 outputs"):
        Sequential.from_config(config)
    config["target_scaling"] = {"mean": [1.0, 2.0], "scale": [1.0, 1.0]}
    with pytest.raises(ValueError, match="for each of the 1 outputs"):
        Sequential.from_config(config)
    classifier = mlp(2, [], 3).config() | {"target_scaling": {"mean": [0.0], "scale": [1.0]}}
    with pytest.raises(ValueError, match="classifies"):
        Sequential.from_config(classifier)


class StopAt(Callback):
    def __init__(self, step):
        self.at = step

    def on_step_end(self, trainer, loss):
        if trainer.step == self.at:
            trainer.stop_training = True


def test_resume_is_bitwise_and_refuses_other_units(tmp_path):
    X, y = house_prices(640)
    options = {"batch_size": 32, "lr": 0.05, "verbose": 0, "standardize_targets": True}
    reference = linear_regression(6)
    minigd.fit(reference, X, y, epochs=3, **options)
    checkpoint = minigd.training.Checkpoint(tmp_path, every_steps=10)
    minigd.fit(linear_regression(6), X, y, epochs=3, callbacks=[checkpoint, StopAt(25)], **options)
    resumed = linear_regression(6)
    minigd.fit(resumed, X, y, epochs=3, resume=tmp_path, **options)
    np.testing.assert_array_equal(resumed.params, reference.params)
    assert resumed.target_scaling == reference.target_scaling
    with pytest.raises(ValueError, match="the same standardize_targets"):
        minigd.fit(linear_regression(6), X, y, epochs=3, resume=tmp_path,
                   **(options | {"standardize_targets": False}))  # fmt: skip


def write_csv(path, X, y):
    header = ",".join([f"x{i}" for i in range(X.shape[1])] + ["price"])
    rows = [",".join(f"{v:.6f}" for v in (*r, t)) for r, t in zip(X, y, strict=True)]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")


def test_cli_standardizes_by_default_and_predicts_in_the_users_units(tmp_path, capsys):
    X, y = house_prices(1500)
    write_csv(tmp_path / "houses.csv", X, y)
    common = ["train", "--data", str(tmp_path / "houses.csv"), "--model", "linear", "--epochs",
              "3", "--lr", "0.05", "--validation-split", "0.2", "--quiet"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"targets standardized (mean {y[:1200].mean():.4g}, std {y[:1200].std():.4g})" in out
    assert "val_rmse" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["standardize_targets"] is True
    epochs = (tmp_path / "run" / "epochs.csv").read_text().splitlines()
    assert float(epochs[1].split(",")[1]) < 1.0  # epoch 1's loss, in standard units
    argv = ["predict", str(tmp_path / "run" / "model.npz"), str(tmp_path / "houses.csv"),
            "--out", str(tmp_path / "p.npy")]  # fmt: skip
    assert main(argv) == 0
    assert np.sqrt(np.mean((np.load(tmp_path / "p.npy").ravel() - y) ** 2)) < 10
    assert main(["evaluate", str(tmp_path / "run")]) == 0
    assert "the loss is in standard units" in capsys.readouterr().out
    assert main([*common, "--out", str(tmp_path / "raw"), "--no-standardize-targets"]) == 0
    raw_epochs = (tmp_path / "raw" / "epochs.csv").read_text().splitlines()
    assert float(raw_epochs[1].split(",")[1]) > 100  # in the targets' squared units


def test_a_run_from_before_the_setting_resumes_with_raw_targets(tmp_path, capsys):
    X, y = house_prices(600)
    write_csv(tmp_path / "houses.csv", X, y)
    argv = ["train", "--data", str(tmp_path / "houses.csv"), "--model", "linear", "--epochs",
            "1", "--lr", "0.001", "--quiet", "--no-standardize-targets",
            "--out", str(tmp_path / "old")]  # fmt: skip
    assert main(argv) == 0
    path = tmp_path / "old" / "config.json"
    config = json.loads(path.read_text())
    del config["standardize_targets"]  # as a run of an earlier version wrote it
    path.write_text(json.dumps(config))
    assert main(["train", "--resume", str(tmp_path / "old"), "--epochs", "2", "--quiet"]) == 0
    assert load_model(tmp_path / "old" / "model.npz").target_scaling is None
    assert main(["train", "--resume", str(tmp_path / "old"), "--epochs", "3",
                 "--standardize-targets"]) == 2  # fmt: skip
    assert "--standardize-targets (the run has False)" in capsys.readouterr().err


def test_the_regressor_standardizes_like_a_transformed_target_regressor():
    pytest.importorskip("sklearn")
    from minigd.sklearn import MiniBatchRegressor

    X, y = house_prices(800)
    fitted = MiniBatchRegressor((16,), random_state=0).fit(X, y)  # the advisor: full batch
    assert fitted.model_.target_scaling.mean[0] == pytest.approx(y.mean())
    assert fitted.score(X, y) > 0.95  # measured 0.974
    assert abs(fitted.predict(X).mean() - y.mean()) < 5  # in the user's units
    raw = MiniBatchRegressor((16,), random_state=0, standardize_targets=False).fit(X, y)
    assert raw.model_.target_scaling is None
    assert raw.score(X, y) < 0.5  # the same 200 steps on raw targets: measured -17.8
