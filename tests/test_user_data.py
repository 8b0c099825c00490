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


@pytest.mark.parametrize("reader", ["pyarrow", "csv module"])
def test_text_labels_from_either_csv_reader_train_save_load_and_evaluate(
    tmp_path, reader, monkeypatch, capsys
):
    """A text label column trained to the end and then failed to save (pyarrow hands text as
    Python objects); every reader now gives the labels as text, and the run is usable."""
    import sys

    from minigd.cli import main
    from minigd.nn import load_model

    pytest.importorskip("pyarrow")
    if reader == "csv module":
        monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow fails: the fallback
    rng = np.random.default_rng(0)
    names = np.array(["cat", "dog", "owl"])
    y = rng.integers(0, 3, 240)
    X = rng.normal(size=(240, 2)) + 2.0 * y[:, None]
    lines = ["a,b,animal", *(f"{p:.4f},{q:.4f},{names[k]}" for (p, q), k in zip(X, y, strict=True))]
    (tmp_path / "pets.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "pets.csv"), "--model", "softmax", "--epochs", "3",
            "--lr", "0.5", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    model = load_model(out / "model.npz")
    assert model.classes.dtype.kind == "U" and model.classes.tolist() == ["cat", "dog", "owl"]
    assert set(model.predict(X[:20])) <= {"cat", "dog", "owl"}
    assert main(["evaluate", "--model-file", str(out / "model.npz"), "--data",
                 str(tmp_path / "pets.csv")]) == 0  # fmt: skip
    accuracy = float(capsys.readouterr().out.split("accuracy")[1].split()[0])
    assert accuracy > 0.8


def test_the_first_line_counts_samples_in_the_notes_layout(tmp_path, capsys):
    from minigd.cli import main

    rng = np.random.default_rng(1)
    np.save(tmp_path / "X.npy", rng.normal(size=(6, 400)))  # the note's X = (features, m)
    np.save(tmp_path / "y.npy", rng.integers(0, 2, 400))
    argv = ["train", "--data", str(tmp_path / "X.npy"), "--y", str(tmp_path / "y.npy"),
            "--sample-axis", "1", "--model", "softmax", "--epochs", "1", "--out",
            str(tmp_path / "run"), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert "(400 samples;" in capsys.readouterr().out


def kaggle_csv(path, first="label"):
    """A Kaggle-style train.csv: the label first, then pixel columns of many distinct values."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 300)
    pixels = rng.integers(0, 17, size=(300, 4)) + 3 * y[:, None]  # whole numbers: label-like
    lines = [f"{first},p0,p1,p2,p3", *(f"{k}," + ",".join(map(str, row))
                                        for row, k in zip(pixels, y, strict=True))]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return y


def test_a_label_column_that_is_not_last_is_found_by_its_name_everywhere(tmp_path, capsys):
    from minigd.cli import main
    from minigd.data import load_arrays, open_source
    from minigd.data.convert import convert
    from minigd.nn import load_model

    y = kaggle_csv(tmp_path / "train.csv")
    assert main(["info", str(tmp_path / "train.csv")]) == 0
    out = capsys.readouterr().out
    assert "3 classes" in out and "label column 'label' (its name says it is the label)" in out
    np.testing.assert_array_equal(load_arrays(tmp_path / "train.csv").y, y)
    convert(tmp_path / "train.csv", tmp_path / "shards", progress=False)
    assert open_source(tmp_path / "shards").classes.tolist() == [0, 1, 2]
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "train.csv"), "--model", "softmax",
                 "--epochs", "1", "--out", str(run), "--quiet"]) == 0  # fmt: skip
    assert "label column 'label'" in capsys.readouterr().out  # the first line names it
    assert load_model(run / "model.npz").n_outputs == 3  # not 17 classes from the last pixel
    # --label names another column, by name or index; the old --target still works
    for option in (["--label", "p3"], ["--label", "4"], ["--target", "p3"]):
        assert main(["info", str(tmp_path / "train.csv"), *option]) == 0
        assert "label column 'p3' (chosen with --label)" in capsys.readouterr().out


def test_a_table_without_a_label_named_column_uses_the_last_and_says_so(tmp_path, capsys):
    from minigd.cli import main

    kaggle_csv(tmp_path / "t.csv", first="id")
    assert main(["info", str(tmp_path / "t.csv")]) == 0
    assert "label column 'p3' (the last column: no column is named" in capsys.readouterr().out


def test_predict_writes_labels_and_probabilities_for_a_table_with_or_without_its_label(
    tmp_path, capsys
):
    import subprocess
    import sys

    from minigd.cli import main
    from minigd.nn import load_model

    kaggle_csv(tmp_path / "train.csv")
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "train.csv"), "--model", "softmax",
                 "--epochs", "2", "--out", str(run), "--quiet"]) == 0  # fmt: skip
    lines = (tmp_path / "train.csv").read_text().splitlines()
    features_only = ["p0,p1,p2,p3", *(line.split(",", 1)[1] for line in lines[1:])]
    (tmp_path / "test.csv").write_text("\n".join(features_only) + "\n")  # Kaggle's test.csv
    model = load_model(run / "model.npz")
    X = np.loadtxt(tmp_path / "test.csv", delimiter=",", skiprows=1)
    for data in ("train.csv", "test.csv"):
        done = subprocess.run(
            [sys.executable, "-m", "minigd", "predict", str(run), str(tmp_path / data),
             "--out", str(tmp_path / f"{data}.preds.csv")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        written = (tmp_path / f"{data}.preds.csv").read_text().split()
        assert written[0] == "prediction"
        assert [int(v) for v in written[1:]] == model.predict(X).tolist()
    assert main(["predict", str(run), str(tmp_path / "test.csv"), "--proba", "--out",
                 str(tmp_path / "p.npy")]) == 0  # fmt: skip
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), model.predict_proba(X), rtol=1e-6)
    assert main(["predict", str(run), str(tmp_path / "test.csv"), "--out", "p.txt"]) == 2
    assert "--out must end in .npy, .csv, .parquet" in capsys.readouterr().err


def test_evaluate_a_run_uses_what_it_held_out_and_never_a_default_dataset(tmp_path, capsys):
    from minigd.cli import main

    kaggle_csv(tmp_path / "train.csv")
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "train.csv"), "--model", "softmax",
                 "--epochs", "2", "--validation-split", "0.25", "--out", str(run),
                 "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    assert "(75 samples)" in capsys.readouterr().out  # the quarter the run held out
    assert main(["evaluate", "--model-file", str(run / "model.npz")]) == 2
    assert "give --data" in capsys.readouterr().err  # not mnist-5k, which it never saw


def test_evaluate_a_run_trained_in_the_notes_layout_on_what_it_held_out(tmp_path, capsys):
    from minigd.cli import main

    rng = np.random.default_rng(2)
    np.save(tmp_path / "X.npy", rng.normal(size=(6, 400)))  # the note's X = (features, m)
    np.save(tmp_path / "y.npy", rng.integers(0, 2, 400))
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "X.npy"), "--y", str(tmp_path / "y.npy"),
                 "--sample-axis", "1", "--validation-split", "0.25", "--model", "softmax",
                 "--epochs", "1", "--out", str(run), "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0, capsys.readouterr().err
    assert "(100 samples)" in capsys.readouterr().out  # the held-out quarter, as samples
