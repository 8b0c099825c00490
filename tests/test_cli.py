import subprocess
import sys

import numpy as np
import pytest

from minigd import __version__
from minigd.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_python_dash_m(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "minigd", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"minigd {__version__}"


def test_datasets_lists_all_three(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "mnist-5k", "mnist"):
        assert f"\n{name} " in out


def test_info_on_a_dataset(capsys):
    pytest.importorskip("sklearn")
    assert main(["info", "digits"]) == 0
    out = capsys.readouterr().out
    assert "X (1437, 64) float32" in out and "10 classes" in out
    assert "batch gradient descent" in out


def test_info_on_a_file_in_the_notes_layout(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", X=np.zeros((784, 300)), y=np.zeros(300, dtype=int))
    assert main(["info", str(tmp_path / "d.npz")]) == 0
    assert "--sample-axis 1" in capsys.readouterr().out


def test_errors_are_one_line_not_a_traceback(tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("1,2\n3\n")
    assert main(["info", str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err
    assert "line 2 has 1 fields" in err and "Traceback" not in err


def test_train_resume_and_evaluate(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        "digits",
        "--model",
        "mlp:32",
        "--optimizer",
        "adam",
        "--lr",
        "1e-2",
        "--batch-size",
        "64",
        "--epochs",
        "2",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    for name in ("model.npz", "history.json", "history.csv", "epochs.csv", "config.json"):
        assert (out / name).exists()
    text = capsys.readouterr().out
    assert "val_accuracy" in text and "samples_per_second" in text
    assert main(["train", "--resume", str(out), "--epochs", "3", "--quiet"]) == 0
    from minigd.training import History

    history = History.from_json(out / "history.json")
    assert [e["epoch"] for e in history.epochs] == [0, 1, 2]
    capsys.readouterr()
    assert main(["evaluate", "--model-file", str(out / "model.npz"), "--data", "digits"]) == 0
    text = capsys.readouterr().out
    assert "360 samples" in text
    accuracy = float(text.split("accuracy")[1].split()[0])
    assert accuracy == pytest.approx(history.epochs[-1]["val_accuracy"], abs=1e-4)


def test_train_on_a_file_in_the_notes_layout(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 400))  # 5 features x 400 samples
    y = (X[0] + X[1] > 0).astype(int)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    args = [
        "train",
        "--data",
        str(tmp_path / "d.npz"),
        "--sample-axis",
        "1",
        "--model",
        "logistic",
        "--batch-size",
        "full",
        "--lr",
        "0.5",
        "--epochs",
        "50",
        "--validation-split",
        "0.25",
        "--out",
        str(tmp_path / "r"),
        "--quiet",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert float(text.split("val_accuracy")[1].split()[0]) > 0.9


def test_train_divergence_is_a_message_not_a_traceback(tmp_path, capsys):
    pytest.importorskip("sklearn")
    args = [
        "train",
        "--data",
        "digits",
        "--model",
        "mlp:32",
        "--lr",
        "100",
        "--epochs",
        "2",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(args) == 3  # EXIT_DIVERGED: a diverged run does not look successful
    err = capsys.readouterr().err
    assert "diverged" in err and "Traceback" not in err
    assert main([*args, "--overwrite", "--quiet"]) == 3
    assert "diverged at step" in capsys.readouterr().err  # said even with --quiet


def test_help_states_each_default_once_and_only_the_exit_codes_that_apply(capsys):
    for command in ("train", "convert"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
    train_help, convert_help = capsys.readouterr().out.split("usage: minigd convert")
    flat = " ".join(train_help.split())
    assert "(default: 60s)" in flat and "(None, 60.0)" not in flat
    assert '"adaptive"' in flat  # --batch-size names every kind of value it takes
    assert "3 training diverged" in flat
    convert = " ".join(convert_help.split())
    assert convert.count("128MB") == 1 and "diverged" not in convert


def test_find_batch_size_prints_its_table_once(capsys):
    assert main(["find-batch-size", "--data", "digits", "--model", "softmax", "--candidates",
                 "16,64"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).splitlines()
    rows_of_64 = [line for line in lines if "samples/s" in line or line.split()[:1] == ["64"]]
    rows_of_64 = [line for line in rows_of_64 if " 64" in line]
    assert len(rows_of_64) == 1, rows_of_64
    assert sum("note: the machine looked busy" in line for line in lines) <= 1
