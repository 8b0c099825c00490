"""BLAS threads chosen by measurement: the decisions on a simulated machine, the count a resumed
run starts at, and the switch under real competing processes."""

import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from minigd._threads import others_runnable, usable_cores
from minigd.nn import mlp
from minigd.training import (
    Callback,
    Checkpoint,
    fit,
    load_checkpoint,
    make_trainer,
    thread_choice,
)
from minigd.training.thread_choice import ThreadChoice


class Machine:
    """A trainer as ThreadChoice sees it: a step takes ``cost[threads]`` seconds."""

    def __init__(self, cost, cores=2):
        self.cost, self.threads, self.clock = dict(cost), cores, 0.0
        self.step, self.batch_size, self.threads_settable = 0, 64, True
        self.history = SimpleNamespace(steps={"batch_size": []}, meta={})
        self.log = []

    def set_threads(self, n):
        self.threads = n

    def elapsed(self):
        return self.clock

    def train(self, choice, steps):
        for _ in range(steps):
            self.clock += self.cost[self.threads]
            self.step += 1
            self.history.steps["batch_size"].append(self.batch_size)
            choice.on_step_end(self, 0.0)
            self.log.append(self.threads)


@pytest.fixture()
def quiet(monkeypatch):
    """The simulated machine has no neighbours, whatever the real one is running."""
    monkeypatch.setattr(thread_choice, "others_runnable", lambda: 0)


def started(machine, **options):
    choice = ThreadChoice(**options)
    choice.setup(machine)
    choice.on_train_begin(machine)
    return choice


@pytest.mark.parametrize("cost, best", [({1: 1e-3, 2: 5e-4}, 2), ({1: 1e-3, 2: 3e-3}, 1)])
def test_the_faster_count_is_kept_and_the_decision_recorded(cost, best, quiet):
    machine = Machine(cost)
    choice = started(machine)
    assert machine.threads == 1  # it starts safe
    machine.train(choice, 100)
    assert machine.threads == best and len(choice.checks) == 1
    check = machine.history.meta["thread_checks"][0]
    assert check["threads"] == best and check["reason"] == "the run starts"
    assert check["ms_per_step"] == pytest.approx({"1": 1e3 * cost[1], "2": 1e3 * cost[2]})
    if best == 1:  # a hopeless try ends after two steps
        assert machine.log.count(2) == 2


def test_a_neighbour_arriving_sends_it_to_one_thread_and_leaving_back(quiet):
    machine = Machine({1: 1e-3, 2: 5e-4})
    choice = started(machine, recheck_seconds=1e9)
    machine.train(choice, 60)
    assert machine.threads == 2
    machine.cost = {1: 1.6e-3, 2: 20e-3}  # a busy neighbour: two threads thrash
    machine.train(choice, 60)
    assert machine.threads == 1 and "slowed" in choice.checks[-1]["reason"]
    machine.cost = {1: 1e-3, 2: 5e-4}  # it left
    machine.train(choice, 60)
    assert machine.threads == 2 and "sped up" in choice.checks[-1]["reason"]


class StreamedMachine(Machine):
    """A streamed run at 2 threads: a shuffle buffer of 640 rows lasts 10 steps of 64, and in
    2 of them the reader is loading the next and the step takes 5x longer; one thread leaves a
    core to the reader and costs the same in every step."""

    def __init__(self, reading_cost=2.0e-3, wait=0.0, reading=(0, 1)):
        super().__init__({1: 0.8e-3, 2: 0.4e-3})
        self.reading_cost, self.wait, self.waited = reading_cost, wait, 0.0
        self.reading = reading
        self.batches = SimpleNamespace(
            streaming=True,
            shuffle="blocks",
            blocks=SimpleNamespace(buffer_rows=640),
            io=lambda: {"io_wait_seconds": self.waited},
            features_mapped=False,
        )

    def train(self, choice, steps):
        for _ in range(steps):
            reading = self.step % 10 in self.reading
            self.cost[2] = self.reading_cost if reading else 0.4e-3
            if self.step % 10 == 1:  # the step that starts a buffer waits for it first
                self.clock += self.wait
                self.waited += self.wait
            super().train(choice, 1)


def test_a_streamed_runs_windows_span_a_shuffle_buffer(quiet):
    """Per buffer, two threads average 0.72 ms a step and one 0.8: two is faster. A try of 8
    steps that held both reading steps measured 0.8 ms and kept one thread."""
    machine = StreamedMachine()
    choice = started(machine, recheck_seconds=1e9)
    machine.train(choice, 100)
    assert machine.threads == 2 and len(choice.checks) == 1
    assert choice.checks[0]["ms_per_step"]["2"] == pytest.approx(0.72)
    assert machine.log[:10] == [1] * 10  # a step that pays for the start, then a buffer's 10
    assert set(machine.log[10:]) == {2}


def test_a_mapped_streamed_runs_windows_are_a_memory_runs(quiet):
    """Gathered from a mapped file, the reader copies nothing (no step pays for it): no
    buffer-long windows."""
    machine = StreamedMachine(reading_cost=0.0)
    machine.batches.features_mapped = True
    choice = started(machine, recheck_seconds=1e9)
    machine.train(choice, 100)
    assert machine.threads == 2 and len(choice.checks) == 1
    assert 2 in machine.log[:10]  # tried two threads before a buffer's 10 steps had passed


def test_a_step_that_waited_for_the_reader_is_not_timed(quiet):
    """A 20 ms wait for a buffer fell on a try's first step: 4x the other count's mean, so
    the try ended there and kept one thread, though two are 1.6x faster between waits."""
    machine = StreamedMachine(reading_cost=0.4e-3, wait=20e-3)
    choice = started(machine, recheck_seconds=1e9)
    machine.train(choice, 100)
    assert machine.threads == 2
    assert choice.checks[0]["ms_per_step"] == pytest.approx({"1": 0.8, "2": 0.4})


def test_one_slow_step_does_not_end_a_streamed_runs_try(quiet):
    """At 2 threads the step during which the reader starts a buffer loses a time slice; the
    try began on it (4.4x the 1-thread mean) and ended there, though over the buffer two
    threads average 0.71 ms a step against one's 0.8."""
    machine = StreamedMachine(reading_cost=3.5e-3, reading=(2,))
    choice = started(machine, recheck_seconds=1e9)
    machine.train(choice, 100)
    assert machine.threads == 2
    assert choice.checks[0]["ms_per_step"]["2"] == pytest.approx(0.71)


def test_with_another_process_ready_to_run_more_threads_are_not_tried(monkeypatch):
    """Two threads beside a busy neighbour fight it for a core; the try is left out, the
    decision recorded with why, and the run keeps one thread."""
    monkeypatch.setattr(thread_choice, "others_runnable", lambda: 1)
    machine = Machine({1: 1e-3, 2: 5e-4})  # what 2 threads would cost on a quiet machine
    choice = started(machine, recheck_seconds=1e9)
    machine.train(choice, 100)
    assert set(machine.log) == {1}
    (check,) = choice.checks
    assert check["threads"] == 1 and check["ms_per_step"] == pytest.approx({"1": 1.0})
    assert check["reason"] == (
        "the run starts; 2 threads not tried: 1 task(s) of other processes ready to run"
    )


def test_a_streamed_run_trains_on_one_thread_while_its_reader_loads(digits, monkeypatch):
    """Beside the reader's copy, one of two BLAS threads waits for a core and each product for
    it (a streamed MLP at B=1024: 8-9% faster an epoch held at one thread while it reads). The
    count is the step's own; the choice that ThreadChoice measures and records stays."""
    from minigd.batching import MiniBatches

    train, _ = digits
    reading = {"now": False}
    monkeypatch.setattr(MiniBatches, "reading", property(lambda self: reading["now"]))
    used = []

    class Watch(Callback):
        def on_step_end(self, trainer, loss):
            used.append((trainer._blas.threads, trainer.threads))
            reading["now"] = trainer.step in (2, 3, 4)  # the reader loads during steps 3-5

    trainer = make_trainer(mlp(64, [16], 10), train.X, train.y, batch_size=32, epochs=1,
                           verbose=0, threads=2, callbacks=[Watch()])  # fmt: skip
    trainer.threads_while_reading = 1
    trainer.run()
    assert [blas for blas, _ in used[:7]] == [2, 2, 1, 1, 1, 2, 2]
    assert {chosen for _, chosen in used} == {2}


def test_thread_choice_holds_one_thread_while_reading_only_when_streamed_by_buffers(quiet):
    streamed, in_memory = StreamedMachine(), Machine({1: 1e-3, 2: 5e-4})
    started(streamed)
    started(in_memory)
    assert streamed.threads_while_reading == 1
    assert in_memory.threads_while_reading is None


def test_a_resumed_run_starts_at_its_checkpoints_count(tmp_path, digits):
    train, _ = digits
    folder = tmp_path / "ck"

    def trainer(epochs, resume=None):
        return make_trainer(mlp(64, [16], 10), train.X, train.y, batch_size=32, epochs=epochs,
                            verbose=0, resume=resume,
                            callbacks=[Checkpoint(folder, every_steps=10)])  # fmt: skip

    trainer(2).run()
    saved = load_checkpoint(folder)["callbacks"]
    state = next(s for key, s in saved.items() if key.endswith("ThreadChoice"))
    assert state["checks"] and state["threads"] in (1, usable_cores())
    resumed = trainer(3, resume=folder)
    assert resumed.threads == state["threads"]
    calls, set_threads = [], resumed.set_threads
    resumed.set_threads = lambda n: (calls.append((resumed.step, n)), set_threads(n))
    resumed.run()
    assert all(step > 0 for step, _ in calls)  # not sent back to one thread at the start


def test_threads_given_are_kept_and_nothing_is_measured(digits):
    train, _ = digits
    trainer = make_trainer(mlp(64, [16], 10), train.X, train.y, batch_size=32, epochs=1,
                           verbose=0, threads=1)  # fmt: skip
    assert not any(isinstance(c, ThreadChoice) for c in trainer.callbacks)
    assert "thread_checks" not in trainer.run().meta


def test_a_thread_choice_passed_in_is_the_only_one(digits):
    """A second, default ThreadChoice undid the first one's tries: each set the count the
    other was timing, so both recorded steps of the wrong count."""
    train, _ = digits
    mine = ThreadChoice(window=4, trial=4)
    trainer = make_trainer(mlp(64, [16], 10), train.X, train.y, batch_size=32, epochs=1,
                           verbose=0, callbacks=[mine])  # fmt: skip
    assert [c for c in trainer.callbacks if isinstance(c, ThreadChoice)] == [mine]


BUSY = "while True:\n    pass\n"


def test_a_busy_neighbour_is_seen_ready_to_run():
    if others_runnable() is None:
        pytest.skip("/proc/stat is not readable here, or only some cores are usable")
    neighbour = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        time.sleep(0.5)
        seen = others_runnable()
    finally:
        neighbour.kill()
        neighbour.wait()
    assert seen is not None and seen >= 1


@pytest.mark.slow
@pytest.mark.skipif(usable_cores() < 2, reason="one core: one thread is all there is")
def test_under_real_competing_processes_it_trains_on_one_thread(mnist5k):
    """Every usable core has busy neighbours: OpenBLAS's threads wait on each other's time
    slices, and the measured choice is one thread. Two per core: with one, a full-suite run
    once saw no contention while the threads were tried (2 threads 0.36 ms a step)."""
    train, _ = mnist5k
    busy = 2 * usable_cores()
    neighbours = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
    try:
        time.sleep(1.0)
        history = fit(mlp(784, [128], 10), train.X, train.y, batch_size=64, epochs=2,
                      lr=0.1, verbose=0)  # fmt: skip
    finally:
        for p in neighbours:
            p.kill()
            p.wait()
    checks = history.meta["thread_checks"]
    assert checks and checks[-1]["threads"] == 1
    first = checks[0]
    if str(usable_cores()) in first["ms_per_step"]:  # the neighbours were missed: measured
        assert first["ms_per_step"][str(usable_cores())] > first["ms_per_step"]["1"]
    else:  # seen, so the cores were not tried
        assert "task(s) of other processes ready to run" in first["reason"]
    assert history.meta["threads"] == 1
    assert np.isfinite(history.steps["loss"][-1])


def test_a_resume_given_no_count_keeps_the_one_its_run_was_given(tmp_path, digits):
    train, _ = digits
    folder = tmp_path / "ck"
    options = {"batch_size": 32, "verbose": 0, "callbacks": [Checkpoint(folder, every_steps=10)]}
    fit(mlp(64, [16], 10), train.X, train.y, epochs=2, threads=1, **options)
    resumed = make_trainer(mlp(64, [16], 10), train.X, train.y, epochs=3, resume=folder,
                           **options)  # fmt: skip
    assert resumed.threads == 1
    choice = next(c for c in resumed.callbacks if isinstance(c, ThreadChoice))
    assert choice.counts == [1]  # held: nothing is measured
    assert not resumed.run().meta.get("thread_checks")
