"""Threads are chosen: training runs with the BLAS thread count asked for (by default measured,
``training.thread_choice``), and the finder notices, and says, when other processes keep the
cores busy."""

import subprocess
import sys
import time

import numpy as np
import pytest

from minigd import fit
from minigd._threads import blas_threads, usable_cores
from minigd.batchsize import advise, find_batch_size
from minigd.nn import mlp
from minigd.training import Callback

threadpoolctl = pytest.importorskip("threadpoolctl")

RNG = np.random.default_rng(0)
X = RNG.random((2048, 64), dtype=np.float32)
Y = RNG.integers(0, 10, len(X))


def blas_threads_now() -> int:
    return max(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")


class Spy(Callback):
    def __init__(self):
        self.seen = []

    def on_step_end(self, trainer, loss):
        self.seen.append(blas_threads_now())


@pytest.mark.parametrize("threads", [1, 2, None])
def test_training_runs_with_the_threads_asked_for(threads):
    before = blas_threads_now()
    spy = Spy()
    with threadpoolctl.threadpool_limits(limits=2 if threads == 1 else 1, user_api="blas"):
        history = fit(mlp(64, [32], 10), X, Y, batch_size=64, epochs=3, verbose=0,
                      callbacks=[spy], threads=threads)  # fmt: skip
    if threads is None:  # measured: one thread first, then what the decision chose
        decision = history.meta["thread_checks"][0]
        assert spy.seen[0] == 1 and decision["threads"] in (1, usable_cores())
        assert spy.seen[-1] == history.meta["threads"] == history.meta["thread_checks"][-1][
            "threads"]  # fmt: skip
    else:
        assert set(spy.seen) == {threads} and history.meta["threads"] == threads
    assert blas_threads_now() == before  # restored afterwards


def test_threads_must_be_a_positive_count():
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        fit(mlp(64, [8], 10), X, Y, batch_size=64, epochs=1, threads=0)


@pytest.fixture()
def competitor():
    """A second process keeping one core busy, as a second training would."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.3)
    yield busy
    busy.kill()
    busy.wait()


def test_the_finder_and_the_advisor_say_when_the_machine_is_busy(competitor):
    result = find_batch_size(mlp(64, [32], 10), X, Y, candidates=[32, 128], progress=False)
    assert result.busy is not None and result.busy >= 0.5
    assert result.machine_busy and "the machine looked busy" in result.table()
    assert "train with --threads 1" in result.table()
    with blas_threads(1):  # given --threads 1, it does not suggest it
        on_one = find_batch_size(mlp(64, [32], 10), X, Y, candidates=[32, 128], progress=False)
    assert on_one.threads == 1 and on_one.machine_busy
    assert "--threads 1" not in on_one.table() and "one BLAS thread already" in on_one.table()
    advice = advise(mlp(64, [32], 10), X, Y)
    assert any("looked busy" in w for w in advice.warnings)
    assert "measured on a busy machine" in str(advice)
