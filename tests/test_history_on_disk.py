"""History's older steps in files (``keep_on_disk``, turned on by the Checkpoint callback): the
same History as one held in memory, a bounded number of steps in memory and in each
checkpoint, and exact resumes after SIGKILL, from an older checkpoint and into another folder."""

import json
import math
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigd import datasets
from minigd.nn import mlp
from minigd.runs import RunFolder
from minigd.training import Callback, Checkpoint, History, fit, load_checkpoint
from minigd.training.checkpoint import STEPS_FOLDER
from minigd.training.history import STORED
from minigd.training.step_columns import SUFFIX

WINDOW, CHUNK = 5, 3


def record(history: History, steps: int, noise_from: int) -> None:
    """Steps with every kind of column: ints, floats, NaN, and one that appears mid-run."""
    for t in range(steps):
        extra = {"b_simple": t * 0.5} if t >= noise_from else {}
        loss = math.nan if t % 11 == 7 else 1.0 / (t + 1)
        history.record_step(t // 4, loss, 32 + t % 3, 32 * (t + 1), t * 0.01, 0.1, **extra)


@settings(max_examples=40, deadline=None)
@given(
    steps=st.integers(0, 60),
    noise_from=st.integers(0, 70),
    window=st.integers(1, 9),
    chunk=st.integers(1, 9),
)
def test_a_history_kept_on_disk_reads_as_the_one_kept_in_memory(steps, noise_from, window, chunk):
    memory = History()
    record(memory, steps, noise_from)
    with tempfile.TemporaryDirectory() as folder:
        disk = History(window=window, chunk=chunk)
        disk.keep_on_disk(folder)
        record(disk, steps, noise_from)
        assert all(len(c.tail) < window + chunk for c in disk.steps.values())
        assert disk.stored_steps + len(disk.steps["loss"].tail) == steps
        assert disk.steps == memory.steps and list(disk.steps) == list(memory.steps)
        for name, column in memory.steps.items():
            on_disk = disk.steps[name]
            np.testing.assert_array_equal(np.asarray(on_disk), np.asarray(column))
            for part in (slice(-3, None), slice(1, 7, 2), slice(None, None, -1)):
                assert isinstance(on_disk[part], list)
                np.testing.assert_array_equal(on_disk[part], column[part])  # NaN equal to NaN
            if steps:
                assert on_disk[0] == column[0] or math.isnan(column[0])
                assert type(on_disk[0]) is type(column[0])  # ints stay ints
        np.testing.assert_array_equal(disk.smoothed(), memory.smoothed())
        assert (Path(folder) / f"loss{SUFFIX}").stat().st_size == 8 * disk.stored_steps
        disk.to_json(Path(folder) / "disk.json")
        memory.to_json(Path(folder) / "memory.json")
        written = (Path(folder) / "disk.json").read_text()
        assert written == (Path(folder) / "memory.json").read_text()
        assert History.from_json(Path(folder) / "disk.json").steps == memory.steps
        disk.to_csv(Path(folder) / "disk.csv")
        memory.to_csv(Path(folder) / "memory.csv")
        assert (Path(folder) / "disk.csv").read_bytes() == (
            Path(folder) / "memory.csv"
        ).read_bytes()


def test_the_json_is_the_one_json_dumps_writes(tmp_path):
    history = History()
    record(history, 9, 4)
    history.meta["note"] = "x"
    history.to_json(tmp_path / "h.json")
    assert json.loads((tmp_path / "h.json").read_text()) == json.loads(
        json.dumps(history.to_dict())
    )


# -- training with checkpoints ----------------------------------------------------------------
class SmallWindow(Callback):
    """Keeps WINDOW to WINDOW + CHUNK steps in memory, and checks that it does at every step."""

    def __init__(self) -> None:
        self.most = 0

    def on_train_begin(self, trainer):
        trainer.history.window, trainer.history.chunk = WINDOW, CHUNK

    def on_step_end(self, trainer, loss):
        held = max(len(c.tail) for c in trainer.history.steps.values())
        self.most = max(self.most, held)
        assert held < WINDOW + CHUNK


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, loss):
        if trainer.step == self.step:
            trainer.stop_training = True


def run(folder=None, resume=None, epochs=3, extra=(), every_steps=7):
    train, _ = datasets.load("digits")
    model = mlp(64, [16], 10, seed=5)
    callbacks = [] if folder is None else [Checkpoint(folder, every_steps=every_steps)]
    history = fit(model, train.X[:400], train.y[:400], batch_size=32, epochs=epochs,
                  optimizer="adam", seed=3, verbose=0, callbacks=[*callbacks, *extra],
                  resume=resume, noise_every=3)  # fmt: skip
    return model, history


def same_run(history: History, model, reference) -> None:
    ref_model, ref_history = reference
    np.testing.assert_array_equal(model.params, ref_model.params)
    assert list(history.steps) == list(ref_history.steps)
    for name, column in ref_history.steps.items():
        if name != "seconds":  # the clock's
            assert history.steps[name] == column, name
    assert [e["loss"] for e in history.epochs] == [e["loss"] for e in ref_history.epochs]


@pytest.fixture(scope="module")
def reference():
    return run()  # no checkpoint: every step in memory


def test_a_checkpoint_carries_the_steps_after_the_stored_ones(tmp_path, reference):
    small = SmallWindow()
    model, history = run(tmp_path, extra=[small])
    assert small.most == WINDOW + CHUNK - 1 and history.stored_steps > 0
    same_run(history, model, reference)
    newest = load_checkpoint(tmp_path)["path"]
    with np.load(newest, allow_pickle=False) as saved:
        meta = json.loads(str(saved["meta"]))
        assert meta["history"][STORED] > 30
        assert len(saved["history/loss"]) < WINDOW + CHUNK
    loaded = load_checkpoint(newest)["history"]
    assert loaded.steps == history.steps  # the stored steps read back from steps/


def test_a_resume_from_an_older_checkpoint_cuts_the_files_back(tmp_path, reference):
    run(tmp_path, extra=[SmallWindow(), StopAt(30)])
    checkpoints = sorted(tmp_path.glob("checkpoint-*.npz"))
    checkpoints[-1].unlink()  # the newest is lost: the files hold steps past the older one
    model, history = run(tmp_path, resume=tmp_path, extra=[SmallWindow()])
    same_run(history, model, reference)


def test_a_run_resumed_into_another_folder_copies_the_stored_steps(tmp_path, reference):
    first, second = tmp_path / "first", tmp_path / "second"
    run(first, extra=[SmallWindow(), StopAt(30)])
    model, history = run(second, resume=first, extra=[SmallWindow()])
    same_run(history, model, reference)
    assert (second / STEPS_FOLDER / f"loss{SUFFIX}").exists()


def test_a_short_steps_file_sends_the_resume_to_the_older_checkpoint(tmp_path):
    run(tmp_path, extra=[SmallWindow(), StopAt(30)], every_steps=10)
    older, newer = sorted(tmp_path.glob("checkpoint-*.npz"))
    stored = [json.loads(str(np.load(p)["meta"]))["history"][STORED] for p in (older, newer)]
    assert stored[0] < stored[1]
    loss_file = tmp_path / STEPS_FOLDER / f"loss{SUFFIX}"
    with open(loss_file, "r+b") as f:
        f.truncate(8 * stored[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        saved = load_checkpoint(tmp_path)
    assert saved["path"] == older
    assert f"should hold {stored[1]} steps" in str(caught[0].message)
    with open(loss_file, "r+b") as f:
        f.truncate(8)
    with pytest.raises(
        ValueError, match=rf"loss column should hold {stored[0]} steps in .* holds 1"
    ):
        load_checkpoint(tmp_path)


CHILD = """
import sys
sys.path.insert(0, {tests!r})
from test_history_on_disk import SmallWindow, run
from minigd.training import Callback

class Announce(Callback):
    def on_step_end(self, trainer, loss):
        print(trainer.step, flush=True)

run({folder!r}, extra=[SmallWindow(), Announce()])
"""


@pytest.mark.parametrize("step", [9, 23, 31])
def test_sigkill_then_resume_gives_the_uninterrupted_history(tmp_path, reference, step):
    script = CHILD.format(tests=str(Path(__file__).parent), folder=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    for line in child.stdout:
        if line.strip() == str(step):
            child.kill()
            break
    child.wait()
    assert child.returncode < 0, "the run ended before the kill"
    model, history = run(tmp_path, resume=tmp_path, extra=[SmallWindow()])
    same_run(history, model, reference)


# -- the command line ---------------------------------------------------------------------------
def test_a_long_command_line_run_writes_every_step_it_kept_on_disk(tmp_path):
    """52 epochs of digits' 1437 training rows at B=8: 9360 steps, past the default window and
    chunk, so the older steps went to checkpoints/steps/ as the run went."""
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "minigd", "train", "--data", "digits", "--model", "mlp:8",
         "--batch-size", "8", "--epochs", "52", "--quiet", "--threads", "1",
         "--out", str(run_dir)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    history = History.from_json(run_dir / "history.json")
    per_epoch = history.epochs[0]["steps"]
    assert history.n_steps == 52 * per_epoch > 8192
    stored = (run_dir / "checkpoints" / STEPS_FOLDER / f"loss{SUFFIX}").stat().st_size // 8
    assert stored >= 4096
    on_disk = np.fromfile(run_dir / "checkpoints" / STEPS_FOLDER / f"loss{SUFFIX}", "<f8")
    np.testing.assert_array_equal(on_disk, history.steps["loss"][:stored])
    rows = (run_dir / "history.csv").read_text().splitlines()
    assert len(rows) == history.n_steps + 1


def test_a_fresh_run_removes_the_old_runs_steps_and_refuses_a_planted_link(tmp_path):
    folder = RunFolder(tmp_path / "run", overwrite=True)
    steps = folder.checkpoints / STEPS_FOLDER
    steps.mkdir(parents=True)
    (steps / f"loss{SUFFIX}").write_bytes(b"\0" * 80)
    folder.start_fresh()
    assert not any(steps.iterdir())
    shutil.rmtree(steps)
    steps.symlink_to(tmp_path)
    with pytest.raises(ValueError, match="symbolic link"):
        folder.refuse_links()
