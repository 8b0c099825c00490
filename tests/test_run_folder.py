"""A user's run is sacred: real ``minigd train`` processes, real signals, two writers at once, a
full disk. A failing command changes nothing; an interrupted one resumes exactly."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minigd.cli import main
from minigd.runs import RunFolder

ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
SMALL = ["--model", "softmax", "--batch-size", "8", "--epochs", "2", "--quiet"]
# slow enough to be interrupted mid-run: 125 steps an epoch
# one thread: a measured thread count changes products' rounding, and these runs compare bits
SLOW = ["--data", "mnist-5k", "--model", "mlp:64", "--batch-size", "32", "--optimizer", "adam",
        "--threads", "1"]  # fmt: skip


@pytest.fixture()
def data(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.random((40, 4), dtype=np.float32)
    y = (X[:, 0] > 0.5).astype(int)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    return tmp_path / "d.npz"


def snapshot(folder: Path, ignore: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every file under ``folder`` (but ``ignore``) with its size, mtime and content hash."""
    return {
        str(p.relative_to(folder)): (
            p.stat().st_size,
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in ignore
    }


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "minigd", *args], capture_output=True, text=True, env=ENV, cwd=cwd
    )


def start(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "minigd", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def wait_for(path: Path, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


def wait_for_checkpoint_after(folder: Path, step: int, timeout: float = 60.0) -> None:
    """Waits until a checkpoint of a step beyond ``step`` exists in ``folder``."""
    end = time.monotonic() + timeout
    while not any(int(p.stem.split("-")[1]) > step for p in folder.glob("checkpoint-*.npz")):
        assert time.monotonic() < end, f"no checkpoint after step {step} in {folder}"
        time.sleep(0.01)


def parameters(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "model.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files if k != "architecture"}


# -- a failing command changes nothing ------------------------------------------------------
def test_failing_commands_leave_an_existing_run_as_it_was(tmp_path, data, capsys):
    run = tmp_path / "keep"
    assert main(["train", "--data", str(data), *SMALL, "--out", str(run)]) == 0
    before = snapshot(run)
    attempts = [
        ["train", "--data", str(data), *SMALL, "--lr", "-1", "--out", str(run)],
        ["train", "--data", str(data), *SMALL, "--lr", "-1", "--out", str(run), "--overwrite"],
        ["train", "--data", str(data), *SMALL, "--model", "mlp:8+bn+bn", "--out", str(run)],
        ["train", "--resume", str(run), "--epochs", "1"],  # fewer epochs than done
        ["train", "--resume", str(run), "--overwrite"],
        ["train", "--data", str(data), *SMALL, "--out", str(run)],  # exists, no --overwrite
    ]
    for argv in attempts:
        assert main(argv) == 2, argv
    try:
        main(["train", "--resume", str(run), "--epochs", "0"])
    except SystemExit as exc:
        assert exc.code == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "would train none" in err
    assert snapshot(run) == before


def test_overwrite_replaces_a_run_and_files_get_the_usual_permissions(tmp_path, data):
    run = tmp_path / "r"
    assert main(["train", "--data", str(data), *SMALL, "--out", str(run)]) == 0
    assert (
        main(
            ["train", "--data", str(data), *SMALL, "--lr", "0.5", "--out", str(run), "--overwrite"]
        )
        == 0
    )
    assert json.loads((run / "config.json").read_text())["lr"] == 0.5
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.npz", "config.json", "history.csv"):
        assert (run / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert not list(run.rglob(".*.tmp"))


# -- resume trains on the same data or refuses ----------------------------------------------
def test_resume_from_another_folder_reads_the_same_file_and_refuses_a_changed_one(tmp_path, data):
    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    first.mkdir()
    elsewhere.mkdir()
    shutil.copy(data, first / "data.npz")
    np.savez(elsewhere / "data.npz", X=np.zeros((40, 4)), y=np.zeros(40, int))  # a decoy
    done = cli("train", "--data", "data.npz", *SMALL, "--out", "run", cwd=first)
    assert done.returncode == 0, done.stderr
    config = json.loads((first / "run" / "config.json").read_text())
    assert config["data"] == str((first / "data.npz").resolve())
    assert config["data_fingerprints"]["X"]["size"] == (first / "data.npz").stat().st_size
    resumed = cli("train", "--resume", "../first/run", "--epochs", "3", "--quiet", cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    history = json.loads((first / "run" / "history.json").read_text())
    assert len(history["epochs"]) == 3
    X = np.load(first / "data.npz")["X"]
    np.savez(first / "data.npz", X=X[::-1], y=np.load(first / "data.npz")["y"])  # same size
    before = snapshot(first / "run")
    refused = cli("train", "--resume", str(first / "run"), "--epochs", "4")
    assert refused.returncode == 2
    assert "same size but other content" in refused.stderr and "Traceback" not in refused.stderr
    assert snapshot(first / "run") == before


def test_an_edited_learning_rate_is_refused_not_silently_replaced(tmp_path, data, capsys):
    run = tmp_path / "r"
    assert main(["train", "--data", str(data), *SMALL, "--lr", "0.1", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | {"lr": 0.5}))
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "trained with lr 0.1, this one has lr 0.5" in err


# -- one writer at a time -------------------------------------------------------------------
def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    run = tmp_path / "r"
    first = start("train", *SLOW, "--epochs", "50", "--out", str(run), "--quiet")
    try:
        wait_for(run / "config.json")
        second = cli("train", *SLOW, "--epochs", "1", "--out", str(run), "--overwrite", "--quiet")
        assert second.returncode == 2
        assert f"another minigd process (pid {first.pid})" in second.stderr
        third = cli("train", "--resume", str(run), "--quiet")
        assert third.returncode == 2 and f"pid {first.pid}" in third.stderr
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    with RunFolder(run).locked():  # the lock died with its holder
        pass


# -- signals --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_checkpoints_keeps_the_model_and_resumes_exactly(tmp_path, sig, code):
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert cli("train", *SLOW, "--epochs", "4", "--out", str(reference), "--quiet").returncode == 0
    assert cli("train", *SLOW, "--epochs", "1", "--out", str(run), "--quiet").returncode == 0
    model_before = (run / "model.npz").read_bytes()
    child = start("train", "--resume", str(run), "--epochs", "4", "--checkpoint-every", "10")
    wait_for_checkpoint_after(run / "checkpoints", 125)  # inside epoch 2
    child.send_signal(sig)
    _, err = child.communicate(timeout=60)
    assert child.returncode == code, err
    assert f"Resume with: minigd train --resume {run}" in err and "Traceback" not in err
    assert (run / "model.npz").read_bytes() == model_before  # not replaced by a partial model
    resumed = cli("train", "--resume", str(run), "--epochs", "4", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    for name, value in parameters(reference).items():
        np.testing.assert_array_equal(parameters(run)[name], value)


@pytest.mark.slow
def test_a_kill_inside_the_first_epoch_resumes_from_a_step_checkpoint(tmp_path):
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert cli("train", *SLOW, "--epochs", "1", "--out", str(reference), "--quiet").returncode == 0
    child = start("train", *SLOW, "--epochs", "1", "--checkpoint-every", "20", "--out", str(run))
    wait_for_checkpoint_after(run / "checkpoints", 40)
    child.kill()
    child.wait()
    (run / ".model.npz.x1.tmp").write_bytes(b"half a write")  # what a kill mid-write leaves
    (run / "checkpoints" / ".checkpoint-000000080.npz.x2.tmp").write_bytes(b"half")
    resumed = cli("train", "--resume", str(run), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert not list(run.rglob(".*.tmp"))
    for name, value in parameters(reference).items():
        np.testing.assert_array_equal(parameters(run)[name], value)


def test_ctrl_c_before_training_exits_130_quietly(tmp_path):
    child = start("train", *SLOW, "--epochs", "1", "--out", str(tmp_path / "r"))
    time.sleep(0.3)  # still importing and loading
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130 and "Traceback" not in err


# -- a full disk ----------------------------------------------------------------------------
def test_a_full_disk_fails_with_a_sentence_and_keeps_the_last_good_files(tiny_disk, data):
    run = tiny_disk / "run"
    assert cli("train", "--data", str(data), *SMALL, "--out", str(run)).returncode == 0
    before = snapshot(run, ignore=(".lock",))  # the lock records who held it last
    filler = tiny_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last block
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    failed = cli("train", "--resume", str(run), "--epochs", "40", "--quiet")
    assert failed.returncode == 2, failed.stderr
    assert "the disk is full" in failed.stderr and "Traceback" not in failed.stderr
    assert snapshot(run, ignore=(".lock",)) == before  # nothing torn or half-written left
    filler.unlink()
    resumed = cli("train", "--resume", str(run), "--epochs", "40", "--quiet")
    assert resumed.returncode == 0, resumed.stderr


# -- compare and sweep keep what they finished ----------------------------------------------
def test_compare_saves_each_run_as_it_ends(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    module = sys.modules["minigd.experiments.compare"]
    real = module._run_one
    calls = []

    def crash_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the machine went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "_run_one", crash_on_the_second)
    out = tmp_path / "rep"
    code = main(["compare", "--data", "digits", "--model", "softmax", "--epochs", "1",
                 "--batch-sizes", "64,full", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 1  # an unexpected error, reported in one line
    saved = json.loads((out / "results.json").read_text())
    assert [r["batch_samples"] for r in saved["runs"]] == [64]
    assert len(list((out / "histories").glob("*.json"))) == 1
