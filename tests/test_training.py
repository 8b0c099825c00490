import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minigd import MiniBatches, datasets, fit
from minigd.nn import mlp, softmax_regression
from minigd.optim import SGD, StepDecay
from minigd.training import (
    Callback,
    Checkpoint,
    CSVLogger,
    DivergenceGuard,
    EarlyStopping,
    History,
    LearningRateSchedule,
    ProgressBar,
    ReduceLROnPlateau,
    load_checkpoint,
    make_trainer,
)


# -- fit and History ------------------------------------------------------------------------
def test_one_step_per_batch_and_the_loss_trends_down(digits):
    train, test = digits
    model = mlp(64, [32], 10)
    history = fit(
        model,
        train.X,
        train.y,
        batch_size=64,
        epochs=4,
        lr=0.1,
        verbose=0,
        validation=(test.X, test.y),
    )
    per_epoch = len(MiniBatches(train.X, batch_size=64))
    assert history.n_steps == 4 * per_epoch == history.meta["steps"]
    assert history.column("batch_size").tolist()[:per_epoch] == [64] * 22 + [29]
    assert history.column("samples_seen")[-1] == 4 * len(train.X)
    losses = history.epoch_column("loss")
    assert np.all(np.diff(losses) < 0)
    assert history.epochs[-1]["val_accuracy"] > 0.85
    # the epoch's train loss is the sample-weighted mean of its step losses
    steps = history.column("loss")[:per_epoch]
    sizes = history.column("batch_size")[:per_epoch]
    assert losses[0] == pytest.approx(np.sum(steps * sizes) / sizes.sum())


def test_notes_layout_trains_to_the_same_parameters(digits):
    train, _ = digits
    a, b = mlp(64, [16], 10), mlp(64, [16], 10)
    fit(a, train.X, train.y, batch_size=32, epochs=1, verbose=0)
    fit(b, train.X.T.copy(), train.y, batch_size=32, epochs=1, verbose=0, sample_axis=1)
    np.testing.assert_array_equal(a.params, b.params)


def test_validation_split_takes_the_last_samples(digits):
    train, _ = digits
    model = softmax_regression(64, 10)
    history = fit(
        model, train.X, train.y, batch_size=100, epochs=1, validation_split=0.2, verbose=0
    )
    assert history.meta["n_samples"] == len(train.X) - round(0.2 * len(train.X))
    held_out = model.evaluate(train.X[-287:], train.y[-287:])
    assert history.epochs[0]["val_loss"] == pytest.approx(held_out["loss"])


def test_history_smoothing_json_and_csv(tmp_path):
    h = History()
    for t, loss in enumerate([4.0, 2.0, 3.0, 1.0]):
        h.record_step(0, loss, 8, 8 * (t + 1), 0.1 * t, 0.01)
    h.record_epoch(epoch=0, loss=2.5, seconds=0.4)
    smooth = h.smoothed()
    assert smooth[0] == 4.0  # bias correction: no pull toward zero at the start
    b = h.ema_beta
    ema = 0.0
    for loss in [4.0, 2.0, 3.0, 1.0]:
        ema = b * ema + (1 - b) * loss
    assert h.smoothed_loss == pytest.approx(ema / (1 - b**4)) == pytest.approx(smooth[-1])
    back = History.from_json(h.to_json(tmp_path / "h.json"))
    assert back.steps == h.steps and back.epochs == h.epochs
    rows = list(csv.reader(h.to_csv(tmp_path / "h.csv").read_text().splitlines()))
    assert rows[0][:3] == ["step", "epoch", "loss"] and len(rows) == 5
    rows = list(csv.reader(h.to_csv(tmp_path / "e.csv", "epochs").read_text().splitlines()))
    assert rows == [["epoch", "loss", "seconds"], ["0", "2.5", "0.4"]]


# -- callbacks ------------------------------------------------------------------------------
def test_divergence_is_stopped_with_advice_and_finite_parameters(digits, capsys):
    train, _ = digits
    model = mlp(64, [32], 10)
    start = model.params.copy()
    history = fit(model, train.X, train.y, batch_size=32, epochs=3, lr=100.0, verbose=1)
    reason = history.meta["stop_reason"]
    assert "diverged" in reason and "smaller learning rate (lr=10" in reason
    assert "batch_size=64" in reason
    assert np.all(np.isfinite(model.params))
    np.testing.assert_array_equal(model.params, start)  # restored to step 0, the last good one
    assert "diverged" in capsys.readouterr().err


def test_nan_loss_is_caught_at_once():
    X = np.ones((40, 2), np.float32)
    y = np.zeros(40, np.float32)
    model = softmax_regression(2, 2)
    model.params[:] = np.float32(3e38)  # logits overflow to inf: the loss is nan
    history = fit(model, X, y.astype(int), batch_size=8, epochs=1, verbose=0)
    assert "the loss became nan" in history.meta["stop_reason"]
    assert history.n_steps == 1


def test_early_stopping_restores_the_best_epoch(digits):
    train, test = digits

    class Spoil(Callback):  # makes every epoch after the second worse than the best
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 1:
                self.best = trainer.model.params.copy()
            if epoch >= 1:
                trainer.optimizer.lr = 5.0

    model = softmax_regression(64, 10)
    spoil = Spoil()
    stop = EarlyStopping("val_loss", patience=1)
    history = fit(
        model,
        train.X,
        train.y,
        batch_size=64,
        epochs=30,
        lr=0.5,
        verbose=0,
        validation=(test.X, test.y),
        callbacks=[spoil, stop],
    )
    assert "early stopping" in history.meta["stop_reason"]
    assert len(history.epochs) < 30
    best = int(np.argmin(history.epoch_column("val_loss")))
    assert stop.best_epoch == best
    assert model.evaluate(test.X, test.y)["loss"] == pytest.approx(
        history.epochs[best]["val_loss"], rel=1e-6
    )


def test_learning_rate_callbacks(digits):
    train, _ = digits
    model = softmax_regression(64, 10)
    history = fit(
        model,
        train.X,
        train.y,
        batch_size=200,
        epochs=2,
        verbose=0,
        callbacks=[LearningRateSchedule(StepDecay(0.1, 4, 0.5))],
    )
    assert history.column("lr")[:9].tolist() == pytest.approx([0.1] * 4 + [0.05] * 4 + [0.025])
    opt = SGD(1.0)

    class Flat(Callback):  # a metric that never improves
        def on_epoch_end(self, trainer, epoch, logs):
            logs["val_loss"] = 1.0

    fit(
        softmax_regression(64, 10),
        train.X,
        train.y,
        batch_size=500,
        epochs=5,
        optimizer=opt,
        verbose=0,
        callbacks=[Flat(), ReduceLROnPlateau(patience=1, factor=0.5)],
    )
    assert opt.lr == 0.25  # no gain after epochs 2 and 4 (patience 1): halved twice


def plateau_callbacks():
    """A step schedule under a plateau rule that cuts at the end of every epoch after the first:
    the train loss falls, so in "max" mode it never improves on epoch 0's."""
    return [
        LearningRateSchedule(StepDecay(2e-3, 30, 0.5)),
        ReduceLROnPlateau("loss", factor=0.5, patience=0, mode="max"),
    ]


def test_schedule_and_plateau_compose_the_cut_persists_and_stacks(digits):
    _, history = run(extra=plateau_callbacks())  # 4 epochs of 44 steps
    t = np.arange(history.n_steps)
    epoch = t // 44
    cuts = np.maximum(0, epoch - 1)  # one cut after each of epochs 1, 2 (0-based), ...
    expected = [
        StepDecay(2e-3, 30, 0.5)(int(s)) * 0.5 ** int(c) for s, c in zip(t, cuts, strict=True)
    ]
    np.testing.assert_allclose(history.column("lr"), expected, rtol=1e-12)
    assert cuts[-1] == 2  # two cuts before the last epoch: they stacked, the schedule went on


def test_assigning_lr_replaces_base_and_scale():
    opt = SGD(StepDecay(1.0, 2, 0.5))
    opt.scale_lr(0.1)
    assert opt.lr == pytest.approx(0.1) and opt.lr_scale == pytest.approx(0.1)
    opt.lr = 0.05  # as assigning a torch param group's lr: what you set is what steps use
    assert opt.lr == 0.05 and opt.lr_scale == 1.0 and opt.schedule is None
    opt.scale_lr(0.5, min_lr=0.04)
    assert opt.lr == pytest.approx(0.04)  # never below min_lr


def test_csv_logger_and_plain_progress_lines(digits, tmp_path, capsys):
    train, _ = digits
    fit(
        softmax_regression(64, 10),
        train.X,
        train.y,
        batch_size=128,
        epochs=3,
        verbose=1,
        callbacks=[CSVLogger(tmp_path / "log.csv")],
    )
    rows = list(csv.DictReader((tmp_path / "log.csv").read_text().splitlines()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    out = capsys.readouterr()
    lines = [ln for ln in out.out.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 3 and "samples/s" in lines[0]  # not a terminal: one line per epoch
    assert "\r" not in out.err


def test_progress_bar_is_a_default_only_when_verbose(digits, capsys):
    train, _ = digits
    fit(softmax_regression(64, 10), train.X, train.y, batch_size=128, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""
    assert isinstance(ProgressBar(), ProgressBar)


def test_batchnorm_with_a_last_batch_of_one_is_refused_before_training(digits):
    train, _ = digits
    with pytest.raises(ValueError, match="last_batch='merge'"):
        fit(
            mlp(64, [8], 10, batchnorm=True),
            train.X[:65],
            train.y[:65],
            batch_size=32,
            epochs=1,
            verbose=0,
        )


# -- checkpoints and resume -----------------------------------------------------------------
def setup_run(folder=None, every_steps=7):
    train, _ = datasets.load("digits")
    model = mlp(64, [32], 10, batchnorm=True, dropout=0.1, seed=5)
    callbacks = [] if folder is None else [Checkpoint(folder, every_steps=every_steps, keep_last=2)]
    return model, train, callbacks


def run(folder=None, resume=None, epochs=4, extra=()):
    model, train, callbacks = setup_run(folder)
    history = fit(
        model,
        train.X,
        train.y,
        batch_size=32,
        epochs=epochs,
        optimizer="adam",
        last_batch="merge",
        seed=3,
        verbose=0,
        callbacks=[*callbacks, *extra],
        resume=resume,
    )
    return model, history


def test_resume_in_process_is_bitwise_exact(tmp_path, digits):
    reference, ref_history = run()

    class StopAt(Callback):
        def on_step_end(self, trainer, loss):
            if trainer.step == 60:
                trainer.stop_training = True

    run(tmp_path, extra=[StopAt()])
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["position"]["step"] == 56 and ckpt["position"]["next_batch"] == 12
    model, history = run(tmp_path, resume=tmp_path)
    np.testing.assert_array_equal(model.params, reference.params)
    for (_, a), (_, b) in zip(model.named_buffers(), reference.named_buffers(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert history.steps["loss"] == ref_history.steps["loss"]
    assert [e["loss"] for e in history.epochs] == [e["loss"] for e in ref_history.epochs]


CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from {module} import *
from minigd.training import Callback

class Announce(Callback):
    def on_step_end(self, trainer, loss):
        print(trainer.step, flush=True)
        time.sleep(0.003)

{runner}({folder!r}, extra=[{extra}Announce()])
print("finished", flush=True)
"""


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume_is_bitwise_exact(tmp_path, digits):
    reference, _ = run()
    total = 4 * 44
    rng = np.random.default_rng(2024)
    kill_steps = [5, 44, *sorted(rng.choice(np.arange(8, total - 2), size=3, replace=False))]
    for trial, step in enumerate(kill_steps):
        folder = tmp_path / f"trial{trial}"
        kill_at(folder, step)
        # a kill during a write may leave a hidden temporary file, never a torn checkpoint
        for path in folder.glob("checkpoint-*.npz"):
            load_checkpoint(path)
        resume = folder if folder.exists() and any(folder.glob("checkpoint-*.npz")) else None
        if step >= 7:
            assert resume is not None
        model, _ = run(folder, resume=resume)
        np.testing.assert_array_equal(
            model.params, reference.params, err_msg=f"killed at step {step}"
        )


def kill_at(
    folder, step: int, extra: str = "", module: str = "test_training", runner: str = "run"
) -> None:
    """Starts ``runner(folder)`` of a test module in a child process (with the callbacks the
    Python expression ``extra`` lists, comma-terminated) and SIGKILLs it once it reports
    ``step``."""
    tests = os.path.dirname(__file__)
    script = CHILD.format(tests=tests, folder=str(folder), extra=extra, module=module,
                          runner=runner)  # fmt: skip
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in child.stdout:
        if line.strip() == str(step):
            child.send_signal(signal.SIGKILL)
            break
    child.wait()
    assert child.returncode == -signal.SIGKILL, f"the run ended before step {step}"


@pytest.mark.slow
@pytest.mark.parametrize("step", [100, 150])  # after the first cut (step 88), and the second
def test_sigkill_with_a_schedule_and_plateau_cuts_then_resume_is_bitwise_exact(tmp_path, step):
    reference, ref_history = run(extra=plateau_callbacks())
    kill_at(tmp_path, step, extra="*plateau_callbacks(), ")
    saved = load_checkpoint(tmp_path)
    assert saved["optimizer"]["lr_scale"] < 1.0  # the checkpoint holds a cut
    model, history = run(tmp_path, resume=tmp_path, extra=plateau_callbacks())
    np.testing.assert_array_equal(model.params, reference.params)
    assert history.steps["lr"] == ref_history.steps["lr"]
    assert history.steps["loss"] == ref_history.steps["loss"]


def test_old_checkpoint_format_is_refused_with_a_reason(tmp_path, digits):
    run(tmp_path, epochs=1)
    path = load_checkpoint(tmp_path)["path"]
    arrays = dict(np.load(path, allow_pickle=False))
    meta = json.loads(str(arrays["meta"]))
    meta["format"] = "minigd-checkpoint-2"
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="another version of minigd"):
        run(tmp_path, resume=path)
    meta["format"] = "minigd-checkpoint-3"
    meta["position"] = {"epoch": 1}
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="malformed position"):
        run(tmp_path, resume=path)


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(tmp_path, digits):
    reference, _ = run()
    run(tmp_path, epochs=1)  # checkpoints every 7 steps; the two newest are kept
    older, newest = sorted(tmp_path.glob("checkpoint-*.npz"))
    newest.write_bytes(newest.read_bytes()[:1000])  # torn by a disk fault, say
    with pytest.warns(UserWarning, match=f"skipped unreadable.*resuming from {older.name}"):
        model, _ = run(tmp_path, resume=tmp_path)
    np.testing.assert_array_equal(model.params, reference.params)
    for path in tmp_path.glob("checkpoint-*.npz"):  # the resumed run wrote its own since
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="no readable checkpoint"):
        run(tmp_path, resume=tmp_path)


def add_zero_bomb(path, member, mib):
    """Appends an .npy member of ``mib`` MiB of zeros, deflated to a few hundred KB (the
    archive's directory declares its true size, so only a limit from the checkpoint's own
    metadata can tell it is too large)."""
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (mib << 17,)}
    )
    zeros = bytes(1 << 20)
    with (
        zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive,
        archive.open(f"{member}.npy", "w", force_zip64=True) as f,
    ):
        f.write(header.getvalue())
        for _ in range(mib):
            f.write(zeros)


def test_a_checkpoint_declaring_more_than_its_run_holds_is_refused_unread(tmp_path, digits):
    """A history column of 512 MiB in a 14-step run's checkpoint: refused before it is
    decompressed (peak memory measured in a fresh process), and the resume falls back."""
    run(tmp_path, epochs=1)
    older, newest = sorted(tmp_path.glob("checkpoint-*.npz"))
    add_zero_bomb(newest, "history/extra", 512)
    assert newest.stat().st_size < 8 << 20
    probe = (
        "import re, warnings\n"
        "from minigd.training import load_checkpoint\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    saved = load_checkpoint({str(tmp_path)!r})\n"
        "status = open('/proc/self/status').read()\n"  # VmHWM: this process's own peak
        "print(saved['path'].name, int(re.search(r'VmHWM:\\s+(\\d+)', status)[1]) >> 10)\n"
        "print(caught[0].message)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    name, peak_mib = done.stdout.splitlines()[0].split()
    assert name == older.name
    assert int(peak_mib) < 200  # the column alone would take 512 MiB
    assert "history/extra.npy declares 536870912 bytes" in done.stdout
    assert "at most 360" in done.stdout  # 8 bytes for each of the 44 steps and the next


def test_data_is_checked_once_however_often_validation_runs(digits, monkeypatch):
    from minigd.data import arrays
    from minigd.experiments import Target, TargetTracker

    train, test = digits
    scanned = []
    monkeypatch.setattr(arrays, "check_finite", lambda rows, name="X", **_: scanned.append(name))
    model = softmax_regression(64, 10)
    validation = model.prepare(test.X, test.y)
    tracker = TargetTracker(Target("val_accuracy", 0.99), validation)
    fit(
        model,
        train.X,
        train.y,
        batch_size=90,
        epochs=1,
        validation=(test.X, test.y),
        callbacks=[tracker],
        verbose=0,
    )
    assert tracker.evaluations >= 10  # the target was checked at many steps ...
    assert scanned == ["X", "X", "validation X"]  # ... each array once: tracker's, X, X_val


def test_checkpoint_refusals(tmp_path, digits):
    run(tmp_path, epochs=1)
    path = load_checkpoint(tmp_path)["path"]
    arrays = dict(np.load(path, allow_pickle=False))
    arrays["model/0.weight"] = np.array([object()], dtype=object)
    (tmp_path / "evil").mkdir()
    np.savez(tmp_path / "evil" / "checkpoint-000000999.npz", **arrays)
    with pytest.raises(ValueError, match="pickle"):
        load_checkpoint(tmp_path / "evil")
    train, _ = digits

    def resume_with(model, batch_size):
        return fit(
            model,
            train.X,
            train.y,
            batch_size=batch_size,
            epochs=2,
            last_batch="merge",
            seed=3,
            optimizer="adam",
            verbose=0,
            resume=path,
        )

    with pytest.raises(ValueError, match="another architecture"):
        resume_with(mlp(64, [16], 10, batchnorm=True, dropout=0.1), 32)
    with pytest.raises(ValueError, match=r"batch_size 32 then, 64 now"):
        resume_with(setup_run()[0], 64)


def test_keep_last_and_metadata(tmp_path, digits):
    run(tmp_path, epochs=2)
    names = sorted(p.name for p in tmp_path.glob("checkpoint-*.npz"))
    assert names == ["checkpoint-000000084.npz", "checkpoint-000000088.npz"]
    meta = json.loads(str(np.load(tmp_path / names[-1])["meta"]))
    assert meta["position"] == meta["position"] | {"epoch": 2, "next_batch": 0, "step": 88}
    assert meta["batching"]["seed"] == 3


def test_ctrl_c_ends_after_the_step_writes_a_checkpoint_then_raises(tmp_path, digits):
    class PressCtrlC(Callback):
        def on_step_end(self, trainer, loss):
            if trainer.step == 10:
                os.kill(os.getpid(), signal.SIGINT)

        def on_train_end(self, trainer):
            self.history = trainer.history

    pressed = PressCtrlC()
    # Python's own SIGINT handler, as in a terminal (a background job starts with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):  # as torch and Keras leave it: the caller decides
            run(tmp_path, extra=[pressed])
    finally:
        signal.signal(signal.SIGINT, previous)
    history = pressed.history
    assert history.n_steps == 10 and "interrupted" in history.meta["stop_reason"]
    assert load_checkpoint(tmp_path)["position"]["step"] == 10
    reference, _ = run()
    resumed, _ = run(tmp_path, resume=tmp_path)
    np.testing.assert_array_equal(resumed.params, reference.params)
    assert math.isfinite(history.smoothed_loss)


def test_divergence_guard_is_not_added_twice(digits):
    train, _ = digits
    guard = DivergenceGuard(factor=2.0)
    history = fit(
        softmax_regression(64, 10),
        train.X,
        train.y,
        batch_size=64,
        epochs=1,
        verbose=0,
        lr=50.0,
        callbacks=[guard],
    )
    assert "2x its start" in history.meta["stop_reason"]


def test_history_as_dataframes_and_a_plot_for_notebooks(digits):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    train, test = digits
    history = fit(mlp(64, [16], 10), train.X, train.y, batch_size=64, epochs=2, lr=0.1,
                  validation=(test.X, test.y), verbose=0)  # fmt: skip
    steps, epochs = history.to_pandas(), history.to_pandas("epochs")
    assert isinstance(steps, pd.DataFrame) and len(steps) == history.n_steps
    assert steps.index[0] == 1 and steps.index.name == "step"
    np.testing.assert_allclose(steps["smoothed_loss"], history.smoothed())
    assert list(epochs["val_accuracy"]) == [e["val_accuracy"] for e in history.epochs]
    figure = history.plot()
    labels = [line.get_label() for a in figure.axes for line in a.get_lines()]
    assert {"loss per step", "smoothed", "val_accuracy", "val_loss"} <= set(labels)


class _SlowEpochEnd(Callback):
    """A stand-in for a checkpoint write: training time spent at each epoch's end."""

    def on_epoch_end(self, trainer, epoch, logs):
        time.sleep(0.1)


def test_epoch_seconds_and_the_summary_share_one_definition(digits, monkeypatch):
    """Validation is in neither; what runs at an epoch's end is in the next epoch's seconds, and
    the epochs add up to the run's seconds less the last epoch's end."""
    train, test = digits
    model = mlp(64, [32], 10)
    slow_validation = model.evaluate_prepared

    def evaluate_slowly(rows, targets):
        time.sleep(0.5)
        return slow_validation(rows, targets)

    monkeypatch.setattr(model, "evaluate_prepared", evaluate_slowly)
    start = time.perf_counter()
    history = fit(model, train.X, train.y, batch_size=64, epochs=3, verbose=0,
                  validation=(test.X, test.y), callbacks=[_SlowEpochEnd()])  # fmt: skip
    wall = time.perf_counter() - start
    seconds = [e["seconds"] for e in history.epochs]
    total = history.meta["seconds"]
    assert all(s >= 0.1 for s in seconds[1:])  # the previous epoch's end is in them
    assert total - sum(seconds) >= 0.1  # the last epoch's end is in the run's alone
    assert total - sum(seconds) < 0.1 + 1.5  # and no validation: it took 1.5 s
    assert total < wall - 1.5 + 0.05
    for e in history.epochs:
        assert e["samples_per_second"] == pytest.approx(len(train.X) / e["seconds"])


def test_a_second_run_counts_on_from_the_first(digits):
    train, _ = digits
    trainer = make_trainer(mlp(64, [], 10), train.X, train.y, batch_size=64, epochs=1, verbose=0)
    first = trainer.run().meta["seconds"]
    time.sleep(0.3)  # between runs: not training
    trainer.epochs = 2
    history = trainer.run()
    second = history.meta["seconds"]
    assert second - first >= history.epochs[1]["seconds"] > 0
    assert second < first + history.epochs[1]["seconds"] + 0.3
