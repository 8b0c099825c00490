"""The README's examples run as written: its Python block, its command-line examples and its
larger-than-memory block, each extracted from README.md and run in a fresh folder (with small
stand-ins for the user's own files they name: X.npz in the note's layout, big.csv)."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigd import datasets

README = Path(__file__).resolve().parents[1] / "README.md"


def block(language: str, containing: str) -> str:
    """The README's one fenced block of ``language`` that contains ``containing``."""
    found = [
        text
        for text in re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)
        if containing in text
    ]
    assert len(found) == 1, f"README has {len(found)} {language} blocks with {containing!r}"
    return found[0]


@pytest.fixture()
def users_files(tmp_path):
    """The files the README's examples name as the user's: X.npz (features x samples) and
    big.csv (a header, then features and a label per row)."""
    pytest.importorskip("sklearn")
    train, _ = datasets.load("digits")
    np.savez(tmp_path / "X.npz", X=train.X.T, y=train.y)
    rows = np.column_stack([train.X, train.y])
    header = ",".join([f"pixel{i}" for i in range(train.X.shape[1])] + ["label"])
    np.savetxt(tmp_path / "big.csv", rows, delimiter=",", header=header, comments="", fmt="%g")
    return tmp_path


def run_bash(script: str, folder: Path) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent  # the environment's minigd, as an activated venv has
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", f'export PATH="{bin_dir}:$PATH"\n{script}'],
        cwd=folder, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_the_python_example_runs(tmp_path):
    pytest.importorskip("mlxtend")
    pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    code = "import matplotlib\nmatplotlib.use('Agg')\n" + block("python", "import minigd\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = re.search(r"^(0\.\d+) (0\.\d+)$", done.stdout, re.M)  # the first print()
    accuracy, score = map(float, printed.groups())
    assert accuracy > 0.85 and score > 0.85
    assert "batch size" in done.stdout  # the advisor's recommendation, printed


def test_the_command_line_examples_run(users_files):
    pytest.importorskip("mlxtend")
    done = run_bash(block("bash", "minigd train --resume runs/adam64"), users_files)
    assert done.returncode == 0, done.stderr[-2000:]
    for run in ("adam64", "one"):
        assert (users_files / "runs" / run / "model.npz").exists()
    assert (users_files / "reports" / "time-budget" / "report.html").exists()


def test_the_larger_than_memory_example_runs(users_files):
    done = run_bash(block("bash", "minigd convert big.csv"), users_files)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (users_files / "big-shards" / "minigd-shards.json").exists()
    assert (users_files / "runs" / "big" / "model.npz").exists()
