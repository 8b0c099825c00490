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
