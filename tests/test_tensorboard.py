"""The TensorBoard callback, checked by reading its event files back record by record."""

import json
import struct

import numpy as np
import pytest

from minigd.nn import mlp
from minigd.training import fit

pytest.importorskip("tensorboardX")
from tensorboardX.proto import event_pb2

from minigd.training.tensorboard import TensorBoard


def read_events(logdir) -> list:
    """Every Event of every event file under ``logdir``, in order (TFRecord framing: length, its
    CRC, the Event protobuf, its CRC)."""
    events = []
    for path in sorted(logdir.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            events.append(event_pb2.Event.FromString(data[at + 12 : at + 12 + length]))
            at += 12 + length + 4
    return events


def read_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} as TensorBoard shows them: a session that starts again at step
    s (``purge_step``) drops what was logged before it at steps >= s."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for event in read_events(logdir):
        if event.session_log.status == event_pb2.SessionLog.START:
            for tag, points in scalars.items():
                scalars[tag] = [(s, v) for s, v in points if s < event.step]
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_the_event_files_hold_every_step_and_epoch(tmp_path, digits):
    train, test = digits
    history = fit(mlp(64, [16], 10, seed=1), train.X, train.y, batch_size="adaptive", epochs=3,
                  lr=0.05, validation=(test.X, test.y), verbose=0,
                  callbacks=[TensorBoard(tmp_path / "run")])  # fmt: skip
    scalars = read_scalars(tmp_path / "run")
    steps = np.arange(1, history.n_steps + 1)
    for column in ("loss", "lr", "batch_size"):
        tag = f"step/{column}"
        logged = scalars[tag]
        assert [s for s, _ in logged] == steps.tolist()
        np.testing.assert_allclose([v for _, v in logged], history.steps[column], rtol=1e-6)
    b_simple = np.array(history.steps["b_simple"])
    finite = np.isfinite(b_simple)
    assert [s for s, _ in scalars["step/b_simple"]] == steps[finite].tolist()
    assert len(set(history.steps["batch_size"])) > 1  # the batch grew, and TensorBoard saw it
    texts = [
        (event.step, value.tensor.string_val[0].decode())
        for event in read_events(tmp_path / "run")
        for value in event.summary.value
        if value.tag.startswith("batch_schedule")
    ]
    schedule = history.meta["batch_schedule"]
    assert [step for step, _ in texts] == [c["step"] for c in schedule]
    for (_, text), change in zip(texts, schedule, strict=True):
        assert text.startswith(f"{change['from']} -> {change['batch_size']}")
        assert change["reason"] in text
    for name in ("loss", "val_loss", "val_accuracy", "samples_per_second"):
        logged = scalars[f"epoch/{name}"]
        assert [s for s, _ in logged] == [e["steps"] for e in history.epochs]
        np.testing.assert_allclose([v for _, v in logged], history.epoch_column(name), rtol=1e-6)


def test_a_resumed_run_purges_what_the_interrupted_one_logged_past_its_checkpoint(tmp_path, digits):
    from minigd.training import Callback, Checkpoint

    train, _ = digits

    class StopAt(Callback):
        def on_step_end(self, trainer, loss):
            if trainer.step == 30:
                trainer.stop("test")

    def run(extra=(), resume=None):
        callbacks = [TensorBoard(tmp_path / "tb"), Checkpoint(tmp_path / "ck", every_steps=20)]
        return fit(mlp(64, [16], 10, seed=1), train.X, train.y, batch_size=64, epochs=2,
                   verbose=0, callbacks=[*callbacks, *extra], resume=resume)  # fmt: skip

    run([StopAt()])
    run(resume=tmp_path / "ck")
    events = read_events(tmp_path / "tb")
    starts = [e.step for e in events if e.session_log.status == event_pb2.SessionLog.START]
    assert starts == [24]  # the first step after the checkpoint it resumed from (epoch 1 end)
    losses = [e.step for e in events for v in e.summary.value if v.tag == "step/loss"]
    assert losses == [*range(1, 31), *range(24, 47)]  # steps 24-30 logged twice on disk...
    shown = [s for s, _ in read_scalars(tmp_path / "tb")["step/loss"]]
    assert shown == list(range(1, 47))  # ...and once in TensorBoard


def test_minigd_train_logs_to_the_run_folder_and_a_resume_continues_there(tmp_path, capsys):
    from minigd.cli import main

    out = tmp_path / "run"
    args = ["train", "--data", "digits", "--model", "mlp:32", "--lr", "0.1", "--batch-size",
            "64", "--noise-every", "2", "--tensorboard", "--out", str(out), "--quiet"]  # fmt: skip
    assert main([*args, "--epochs", "2"]) == 0
    assert main(["train", "--resume", str(out), "--epochs", "3", "--quiet"]) == 0
    history = json.loads((out / "history.json").read_text())
    scalars = read_scalars(out / "tensorboard")
    assert [s for s, _ in scalars["step/loss"]] == list(range(1, 3 * 23 + 1))
    np.testing.assert_allclose([v for _, v in scalars["step/loss"]], history["steps"]["loss"],
                               rtol=1e-6)  # fmt: skip
    measured = [s for s, _ in scalars["step/b_simple"]]
    assert measured and all(np.isfinite(history["steps"]["b_simple"][s - 1]) for s in measured)
    assert np.isnan(history["steps"]["grad_norm_sq"][1])  # every second step is measured
    assert np.isfinite(history["steps"]["trace_sigma"][2])
    assert len(scalars["epoch/val_accuracy"]) == 3


def test_tensorboard_without_its_package_is_refused_before_anything_is_written(
    tmp_path, capsys, monkeypatch
):
    import minigd.runs.config as runs
    from minigd.cli import main

    def missing(module, extra, what):
        raise ImportError(f"{what} needs {module}: pip install 'minigd[{extra}]'")

    monkeypatch.setattr(runs, "require", missing)
    out = tmp_path / "run"
    code = main(["train", "--data", "digits", "--model", "softmax", "--tensorboard", "--out",
                 str(out), "--quiet"])  # fmt: skip
    assert code == 2 and not out.exists()
    assert "pip install 'minigd[tensorboard]'" in capsys.readouterr().err
