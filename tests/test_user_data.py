"""A user's own data on the command line: labels keep their meaning from train to evaluate, one
rule reads targets everywhere, the note's layouts of y are accepted, and a forgotten
--sample-axis gets named."""

import numpy as np
import pytest

from minigd.cli import main
from minigd.data import load_arrays
from minigd.data.files import decide_task
from minigd.nn import load_model

RNG = np.random.default_rng(0)


def blobs(labels, n=300, d=5):
    """Separable clusters, one per label, with the labels as given."""
    y = RNG.choice(labels, n)
    centers = {c: RNG.normal(0, 3, d) for c in labels}
    X = np.stack([centers[c] for c in y]) + RNG.normal(0, 0.5, (n, d))
    return X.astype(np.float32), y


def train(tmp_path, name, X, y, *extra):
    np.savez(tmp_path / f"{name}.npz", X=X, y=y)
    argv = ["train", "--data", str(tmp_path / f"{name}.npz"), "--model", "softmax",
            "--batch-size", "32", "--epochs", "20", "--lr", "0.3", "--quiet",
            "--out", str(tmp_path / name), *extra]  # fmt: skip
    return main(argv)


def test_evaluate_maps_labels_through_the_models_classes(tmp_path, capsys):
    X, y = blobs([10, 50, 100])
    assert train(tmp_path, "run", X, y) == 0
    model = load_model(tmp_path / "run" / "model.npz")
    assert model.classes.tolist() == [10, 50, 100]
    assert set(model.predict(X).tolist()) <= {10, 50, 100}  # original labels, not indices
    keep = y != 10  # a test file in which one class is missing
    np.savez(tmp_path / "test.npz", X=X[keep], y=y[keep])
    capsys.readouterr()
    argv = ["evaluate", "--model-file", str(tmp_path / "run" / "model.npz"), "--split", "train"]
    assert main([*argv, "--data", str(tmp_path / "test.npz")]) == 0
    shown = float(capsys.readouterr().out.split("accuracy")[1].split()[0])
    assert shown == pytest.approx(model.score(X[keep], y[keep]), abs=1e-4)
    assert shown > 0.9
    np.savez(tmp_path / "digits.npz", X=X, y=RNG.integers(0, 10, len(X)))
    assert main([*argv, "--data", str(tmp_path / "digits.npz")]) == 2
    assert "is not one of the model's 3 classes (10, 50, 100)" in capsys.readouterr().err


def test_float_class_labels_train_a_classifier_by_the_same_rule_as_python(tmp_path, capsys):
    X, y = blobs([0, 1, 2, 3])
    y = y.astype(np.float64)  # 0.0 .. 3.0
    assert decide_task(y)[0] == "classification"
    assert decide_task(y + 0.5)[0] == "regression"
    assert train(tmp_path, "floats", X, y) == 0
    out = capsys.readouterr().out
    assert "4 classes (the targets are whole-number floats with 4 distinct values" in out
    assert "train_accuracy" in out and "train_r2" not in out
    assert load_arrays(tmp_path / "floats.npz").classes.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert (
        train(tmp_path, "forced", X, y, "--task", "regression", "--model", "linear", "--lr", "0.01")
        == 0
    )
    assert "train_r2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "layout",
    ["(1, m) with --sample-axis 1", "(1, m)", "one-hot (m, k)", "one-hot (k, m)", "(m, 1)"],
)
def test_the_ways_people_store_labels_are_accepted(tmp_path, layout, capsys):
    X, y = blobs([0, 1, 2])
    extra = []
    if layout == "(1, m) with --sample-axis 1":
        X, labels, extra = X.T, y[None, :], ["--sample-axis", "1"]  # the note's X and Y
    elif layout == "(1, m)":
        labels = y[None, :]
    elif layout == "one-hot (m, k)":
        labels = np.eye(3)[y]
    elif layout == "one-hot (k, m)":
        labels = np.eye(3)[y].T
    else:
        labels = y[:, None]
    assert train(tmp_path, "r", X, labels, *extra) == 0, capsys.readouterr().err
    assert float(capsys.readouterr().out.split("train_accuracy")[1].split()[0]) > 0.9


def test_labels_of_no_known_layout_are_refused_with_what_to_pass():
    with pytest.raises(ValueError, match=r"one-hot \(m, k\) or \(k, m\)"):
        load_arrays_from(np.zeros((40, 4)), RNG.integers(0, 3, (40, 3)))


def load_arrays_from(X, y, tmp=None):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "d.npz"
    np.savez(path, X=X, y=y)
    return load_arrays(path, task="classification")


def test_a_forgotten_sample_axis_is_named_and_leaves_no_folder(tmp_path, capsys):
    X, y = blobs([0, 1, 2])
    assert train(tmp_path, "r", X.T, y) == 2  # (features, samples) without --sample-axis 1
    err = capsys.readouterr().err
    assert "looks transposed" in err and "--sample-axis 1" in err
    assert not (tmp_path / "r").exists()


def test_a_target_column_given_by_number_on_the_command_line_is_its_index(tmp_path):
    from minigd.data import load_arrays

    (tmp_path / "t.csv").write_text("label,a,b\n0,1.5,2\n1,0.5,1\n0,2.5,3\n")
    data = load_arrays(tmp_path / "t.csv", target="0")  # what --target 0 passes
    assert data.feature_names == ("a", "b") and data.y.tolist() == [0, 1, 0]
    (tmp_path / "n.csv").write_text("0,1\n5,1\n6,0\n")  # a header named "0" is a name first
    assert load_arrays(tmp_path / "n.csv", target="0").feature_names == ("1",)
