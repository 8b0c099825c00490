"""The command line as a newcomer meets it: compare and sweep on their own file, progress that
says what is running, help that explains every option, a pipe closed early, a warm-up."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from minigd.cli import build_parser, main
from minigd.experiments.sweep import DEFAULT_LEARNING_RATES, sweep


@pytest.fixture()
def notes_layout_file(tmp_path):
    """A user's file in the note's layout: X = (features, samples), y = (1, m)."""
    rng = np.random.default_rng(1)
    X = rng.random((600, 8))
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    np.savez(tmp_path / "user.npz", X=X.T, y=y[None, :])
    return tmp_path / "user.npz"


def test_compare_and_sweep_run_on_a_users_file(notes_layout_file, tmp_path, capsys):
    data = ["--data", str(notes_layout_file), "--sample-axis", "1", "--model", "softmax"]
    out = tmp_path / "cmp"
    argv = ["compare", *data, "--epochs", "2", "--batch-sizes", "full,32", "--out", str(out)]
    assert main([*argv, "--validation-split", "0.25"]) == 0
    captured = capsys.readouterr()
    assert "measuring throughput and the noise scale for the advisor" in captured.out
    assert "mini-batch (B=32): epoch 2/2:" in captured.out  # each line names its run
    saved = json.loads((out / "results.json").read_text())
    assert saved["n_train"] == 450  # 600 less the last quarter
    argv = ["sweep", *data, "--batch-sizes", "16,64", "--lrs", "0.3", "--max-epochs", "3",
            "--target", "val_accuracy:0.7", "--seeds", "0", "--max-extensions", "0",
            "--out", str(tmp_path / "sw")]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("sweep: B=") == 2 and "sweep: B=16 lr=0.3:" in err  # a line per run


def test_a_seconds_budget_shows_no_fake_total_and_names_the_run(capsys):
    pytest.importorskip("sklearn")
    argv = ["compare", "--data", "digits", "--model", "softmax", "--seconds", "0.2",
            "--batch-sizes", "64", "--out", "/tmp/minigd-budget-test"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "epoch 1/1000000" not in captured.out and "mini-batch (B=64): epoch 1:" in captured.out
    assert captured.err.count("minigd: mini-batch (B=64): budget spent") == 1


def test_a_diverged_run_inside_compare_is_named_with_its_reason(capsys):
    pytest.importorskip("sklearn")
    argv = ["compare", "--data", "digits", "--model", "mlp:32", "--epochs", "2", "--lr", "200",
            "--batch-sizes", "64", "--quiet", "--out", "/tmp/minigd-diverge-test"]  # fmt: skip
    assert main(argv) == 0
    assert "minigd: mini-batch (B=64): training diverged at step" in capsys.readouterr().err


def test_sweep_names_a_diverged_run_even_when_quiet(capsys):
    pytest.importorskip("sklearn")
    argv = [
        "sweep",
        "--data",
        "digits",
        "--model",
        "mlp:16",
        "--batch-sizes",
        "32",
        "--lrs",
        "500",
        "--max-epochs",
        "1",
        "--quiet",
        "--out",
        "/tmp/minigd-sweep-diverge",
    ]
    assert main(argv) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "sweep: B=32 lr=500: training diverged at step" in err


def test_sweep_has_one_default_grid():
    parser = build_parser()
    args = parser.parse_args(["sweep"])
    assert tuple(args.lrs) == DEFAULT_LEARNING_RATES
    assert sweep.__kwdefaults__["learning_rates"] == DEFAULT_LEARNING_RATES


def test_every_option_is_explained_with_its_default():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        assert command.description, name
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings}"
        assert "(default: " in command.format_help() or name in ("datasets", "info"), name


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: minigd" in capsys.readouterr().err


def test_a_pipe_closed_early_ends_quietly():
    pytest.importorskip("sklearn")
    info = subprocess.Popen(
        [sys.executable, "-m", "minigd", "info", "digits"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    info.stdout.readline()
    info.stdout.close()  # `minigd info digits | head -1`
    err = info.stderr.read().decode()
    info.wait()
    assert "Broken pipe" not in err and "Traceback" not in err
    assert info.returncode == 0


def test_warmup_epochs_ramp_the_learning_rate(tmp_path, capsys):
    pytest.importorskip("sklearn")
    argv = ["train", "--data", "digits", "--model", "softmax", "--lr", "0.5", "--epochs", "3",
            "--warmup-epochs", "2", "--out", str(tmp_path / "r"), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    lr = json.loads((tmp_path / "r" / "history.json").read_text())["steps"]["lr"]
    steps = 2 * 23  # two epochs of ceil(1437 / 64) steps
    assert lr[0] == pytest.approx(0.5 / steps) and lr[steps - 1] == pytest.approx(0.5)
    assert lr[-1] == 0.5 and all(a <= b for a, b in itertools.pairwise(lr))
