"""The second fault campaign, with real processes: a script's Ctrl-C and SIGTERM reach it, two
writers racing for a new run folder, links planted in a run folder, a closed output pipe."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def as_in_a_terminal() -> None:
    """A child started from a background job inherits SIGINT ignored, and Python then installs
    no KeyboardInterrupt for it; a script run in a terminal has the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


LOOP_OVER_FITS = textwrap.dedent("""
    import sys
    import numpy as np
    from minigd import fit
    from minigd.nn import mlp
    from minigd.training.callbacks import Checkpoint
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 64)).astype(np.float32)
    y = rng.integers(0, 10, len(X))
    for i, lr in enumerate([0.1, 0.03, 0.01, 0.003]):
        print("start", i, flush=True)
        fit(mlp(64, [256], 10), X, y, batch_size=16, epochs=50, lr=lr, verbose=0,
            callbacks=[Checkpoint(sys.argv[1], every_steps=None, every_seconds=None)])
        print("done", i, flush=True)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_a_script_that_loops_over_fits(tmp_path, sig):
    child = subprocess.Popen(
        [sys.executable, "-c", LOOP_OVER_FITS, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=as_in_a_terminal,
    )
    assert child.stdout.readline().split() == ["start", "0"]
    time.sleep(1.5)  # importing is done; the first fit is training
    child.send_signal(sig)
    out, err = child.communicate(timeout=60)
    # Python's own ending for each signal: KeyboardInterrupt's traceback, or death by SIGTERM
    assert child.returncode in (-sig, 128 + sig), (child.returncode, err)
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in err
    assert "start 1" not in out  # the loop did not go on to the next fit
    assert list(tmp_path.glob("checkpoint-*.npz"))  # the graceful stop wrote its checkpoint first


def test_fit_after_a_handled_ctrl_c_trains_normally(tmp_path):
    script = textwrap.dedent("""
        import os, signal
        import numpy as np
        from minigd import fit
        from minigd.nn import softmax_regression
        from minigd.training.callbacks import Callback
        X = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)
        y = (X[:, 0] > 0).astype(int)
        class Press(Callback):
            def on_step_end(self, trainer, loss):
                if trainer.step == 3:
                    os.kill(os.getpid(), signal.SIGINT)
        try:
            fit(softmax_regression(4, 2), X, y, batch_size=16, epochs=2, verbose=0,
                callbacks=[Press()])
        except KeyboardInterrupt:
            print("caught", flush=True)
        history = fit(softmax_regression(4, 2), X, y, batch_size=16, epochs=2, verbose=0)
        print(history.meta["outcome"], history.n_steps, flush=True)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
        preexec_fn=as_in_a_terminal,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["caught", "completed", "32"]


def minigd(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "minigd", *args], capture_output=True, text=True, timeout=300,
        env=ENV, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faults")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    X = (rng.normal(size=(600, 10)) + y[:, None]).astype(np.float32)
    np.savez(folder / "small.npz", X=X, y=y)
    return folder / "small.npz"


# -- two writers, links ---------------------------------------------------------------------
def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--model", "softmax", "--epochs", "1", "--out",
            str(out), "--quiet", "--threads", "1", *extra]  # fmt: skip


def full_pipe() -> tuple[int, int]:
    """(read end, write end) of a pipe whose buffer is full: a process writing to it waits
    until the read end is drained."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(w, b"." * 4096)
    os.set_blocking(w, True)
    return r, w


def test_two_commands_racing_for_one_new_folder_never_both_start_a_run(tmp_path, small):
    """The slow command checks the folder while it is empty and then waits, just before taking
    the lock (its announcement goes to a full pipe), while the quick one trains and leaves: the
    claim must be checked again under the lock, or the slow one replaces the finished run."""
    out = tmp_path / "run"
    r, w = full_pipe()
    slow = subprocess.Popen(
        [sys.executable, "-m", "minigd", *train_args(small, out, "--seed", "1")],
        stdout=w,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    os.close(w)
    try:
        time.sleep(2.0)  # the slow one has checked the empty folder and blocks announcing
        quick = minigd(*train_args(small, out, "--seed", "2"))
        assert quick.returncode == 0, quick.stderr
        finished = (out / "model.npz").read_bytes()
    finally:
        with os.fdopen(r, "rb") as drained:
            drained.read()  # the slow one goes on to the lock
    assert slow.wait(timeout=120) == 2
    assert "already holds a run" in slow.stderr.read()
    assert '"seed": 2' in (out / "config.json").read_text()
    assert (out / "model.npz").read_bytes() == finished


@pytest.mark.parametrize("name", [".lock", "checkpoints", "model.npz"])
def test_a_link_planted_in_a_run_folder_is_refused_not_written_through(tmp_path, small, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "precious.txt"
    victim.write_text("keep me")
    out = tmp_path / "run"
    out.mkdir()
    (out / name).symlink_to(outside if name == "checkpoints" else victim)
    done = minigd(*train_args(small, out))
    assert done.returncode == 2, done.stderr
    assert "is a symbolic link" in done.stderr and "Traceback" not in done.stderr
    assert victim.read_text() == "keep me" and sorted(outside.iterdir()) == [victim]


# -- a closed output pipe ---------------------------------------------------------------------
def test_a_closed_output_pipe_does_not_end_the_run(tmp_path, small):
    """`minigd train ... | head -2`: the reader leaves after two lines; the run goes on, writes
    its model and exits 0."""
    out = tmp_path / "run"
    args = [*train_args(small, out)[:-3], "--epochs", "40", "--batch-size", "600"]
    child = subprocess.Popen(
        [sys.executable, "-m", "minigd", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    first_two = [child.stdout.readline(), child.stdout.readline()]
    child.stdout.close()  # what head does after its two lines
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 0, err
    assert first_two[0].startswith(b"training softmax") and b"epoch 1/40" in first_two[1]
    assert (out / "model.npz").exists() and "Traceback" not in err
    assert len((out / "epochs.csv").read_text().splitlines()) == 41  # a header, 40 epochs


# -- a resume keeps its settings --------------------------------------------------------------
@pytest.mark.parametrize(
    "option",
    [["--lr", "0.5"], ["--batch-size", "32"], ["--model", "mlp:8"], ["--optimizer", "adam"],
     ["--data", "digits"], ["--seed", "3"], ["--out", "elsewhere"], ["--tensorboard"],
     ["--stream", "always"], ["--batch-s", "16"]],  # the last: an abbreviation
)  # fmt: skip
def test_resume_refuses_an_option_that_would_change_the_run(tmp_path, small, option, capsys):
    from minigd.cli import main

    run = tmp_path / "run"
    assert main(train_args(small, run)) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(["train", "--resume", str(run), "--epochs", "2", *option]) == 2
    err = capsys.readouterr().err
    named = {"--batch-s": "--batch-size"}.get(option[0], option[0])
    assert f"{named} " in err and "a resumed run goes on with the settings in" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    # what may change on a resume is honoured, and the run's own settings may be repeated
    again = [*train_args(small, run)[:-3], "--batch-size", "64", "--resume", str(run)]
    assert main([*again, "--epochs", "2", "--threads", "1", "--quiet"]) == 0
    assert len((run / "epochs.csv").read_text().splitlines()) == 3


# -- memory on hostile files ------------------------------------------------------------------
PEAK_RSS = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from minigd.cli import main
    from minigd.data import load_arrays
    from minigd.nn import load_model
    read = {"data": load_arrays, "model": load_model, "info": lambda p: main(["info", p])}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    read[sys.argv[2]](sys.argv[1])
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
""")


@pytest.mark.parametrize("kind", ["data", "model"])
def test_an_unused_member_of_an_npz_is_never_decompressed(tmp_path, kind):
    """256 MiB of zeros compress to ~250 KB: a member nobody reads must cost nothing."""
    from minigd.nn import mlp

    path = tmp_path / f"{kind}.npz"
    if kind == "data":
        arrays = {"X": np.zeros((100, 4), np.float32), "y": np.arange(100) % 2}
    else:
        mlp(4, [8], 2).save(path)
        arrays = dict(np.load(path, allow_pickle=False))
    np.savez_compressed(path, **arrays, unused=np.zeros(1 << 25))  # 256 MiB of float64
    assert path.stat().st_size < 2 << 20
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(path), kind],
        capture_output=True, text=True, timeout=120, env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    grown_mb = int(done.stdout)
    assert grown_mb < 64, f"reading {path.name} grew the peak RSS by {grown_mb} MB"


def test_info_on_an_npz_reads_its_headers_not_its_features(tmp_path):
    """512 MiB of zeros in a file of ~0.5 MB: info says its shape without decompressing it."""
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, X=np.zeros((1 << 16, 1 << 10)), y=np.arange(1 << 16) % 2)
    assert path.stat().st_size < 4 << 20
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(path), "info"],
        capture_output=True, text=True, timeout=120, env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "X (65536, 1024) float64 (from its header" in done.stdout
    grown_mb = int(done.stdout.split()[-1])
    assert grown_mb < 64, f"info grew the peak RSS by {grown_mb} MB"


def test_saving_onto_a_folder_or_under_a_file_says_which(tmp_path):
    from minigd.nn import mlp

    (tmp_path / "dir.npz").mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(IsADirectoryError, match=r"dir\.npz is a folder; give a file name"):
        mlp(4, [5], 3).save(tmp_path / "dir.npz")
    with pytest.raises(NotADirectoryError, match=r"a-file is a file, so .* cannot be written"):
        mlp(4, [5], 3).save(tmp_path / "a-file" / "model.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "dir.npz"]
    assert not list((tmp_path / "dir.npz").iterdir())


def test_an_interrupt_before_the_first_model_does_not_claim_one(tmp_path, capsys):
    from minigd.cli.commands import EXIT_INTERRUPTED
    from minigd.cli.job import Job
    from minigd.cli.run_commands import _interrupted

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # the run began; nothing trained yet
    assert _interrupted(KeyboardInterrupt(), out, Job()) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "no checkpoint yet, no model is written" in err and "last complete model" not in err
    (out / "model.npz").write_bytes(b"")
    _interrupted(KeyboardInterrupt(), out, Job())
    assert "kept the last complete model" in capsys.readouterr().err
