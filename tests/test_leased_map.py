"""Streamed features gathered from a memory map held under a read lease (``data.leased_map``).

The map must train exactly what positioned reads train, and a file changed under it must end
the run with the reads' own error, never a SIGBUS: real writer processes open and truncate the
file while a real training process holds it mapped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from minigd import data as mdata
from minigd.data import leased_map, sources
from minigd.data.leased_map import LEASE_SIGNAL
from minigd.data.sources import NpySource
from minigd.nn import mlp
from minigd.training import make_trainer

ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "X.npy", rng.standard_normal((40_000, 20)).astype(np.float32))  # 3 blocks
    np.save(tmp_path / "y.npy", rng.integers(0, 3, 40_000))
    return tmp_path / "X.npy", tmp_path / "y.npy"


@pytest.fixture()
def maps_made(monkeypatch):
    """Every map the sources open (None where none could be had)."""
    made = []

    def spy(*args):
        made.append(leased_map.open_leased(*args))
        return made[-1]

    monkeypatch.setattr(sources, "open_leased", spy)
    return made


def train(x, y, epochs=3):
    d = mdata.open_source(x, y=y)
    model = mlp(20, [16], 3, seed=0, dtype=np.float32)
    trainer = make_trainer(model, d, batch_size=128, epochs=epochs, verbose=0, threads=1, seed=1,
                           shuffle="blocks", shuffle_buffer=2 << 20)  # fmt: skip
    history = trainer.run()
    return model.params.copy(), history


def test_a_mapped_run_trains_what_a_read_run_trains(files, maps_made, monkeypatch):
    mapped, history = train(*files)
    assert maps_made and isinstance(maps_made[0], leased_map.LeasedMap)
    assert maps_made[0].broken  # released at the run's end
    assert history.meta["bytes_read"] == 3 * 40_000 * 80  # the features of three epochs
    assert history.meta["features_mapped"] is True
    monkeypatch.setattr(NpySource, "leased_map", lambda self: None)
    read, _ = train(*files)
    np.testing.assert_array_equal(mapped, read)


def test_no_map_where_no_lease_can_be_had(files, maps_made):
    """A file open for writing (here, by this process) cannot be leased: it is read, the same."""
    with open(files[0], "r+b"):
        held, history = train(*files, epochs=1)
    assert maps_made == [None] and history.meta["features_mapped"] is False
    plain, _ = train(*files, epochs=1)
    assert isinstance(maps_made[1], leased_map.LeasedMap)
    np.testing.assert_array_equal(held, plain)


def test_no_map_outside_the_main_thread_or_over_another_handler(files, maps_made, monkeypatch):
    result = []
    thread = threading.Thread(target=lambda: result.append(train(*files, epochs=1)))
    thread.start()
    thread.join()
    assert result and maps_made == [None]
    mine = lambda signum, frame: None  # noqa: E731
    previous = signal.signal(LEASE_SIGNAL, mine)
    try:
        train(*files, epochs=1)
        assert maps_made == [None, None] and signal.getsignal(LEASE_SIGNAL) is mine
    finally:
        signal.signal(LEASE_SIGNAL, previous)


WRITTEN_UNDER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from minigd import data
    from minigd.data import leased_map, sources
    from minigd.nn import mlp
    from minigd.training import Callback, make_trainer
    maps = []
    def spy(*args):
        maps.append(leased_map.open_leased(*args))
        return maps[-1]
    sources.open_leased = spy
    class Tell(Callback):  # says when training runs on the map, then takes its time
        def on_step_end(self, trainer, loss):
            if trainer.step == 3:
                print("mapped" if maps[-1] is not None else "not mapped", flush=True)
            time.sleep(0.002)
    d = data.open_source(sys.argv[1], y=sys.argv[2])
    trainer = make_trainer(mlp(784, [8], 10, seed=0, dtype=np.float32), d, batch_size=64,
                           epochs=1000, verbose=0, threads=1, callbacks=[Tell()])
    try:
        trainer.run()
    except Exception as exc:
        print(type(exc).__name__, exc, flush=True)
        sys.exit(3)
""")

WRITERS = {
    "open and truncate": "open(sys.argv[1], 'r+b').truncate(int(sys.argv[2]))",
    "truncate(2)": "os.truncate(sys.argv[1], int(sys.argv[2]))",
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_file_cut_short_under_the_map_ends_the_run_with_an_error_not_sigbus(tmp_path, writer):
    x, y = tmp_path / "X.npy", tmp_path / "y.npy"
    rng = np.random.default_rng(0)
    np.save(x, rng.random((20_000, 784), dtype=np.float32))  # 63 MB
    np.save(y, rng.integers(0, 10, 20_000))
    run = subprocess.Popen([sys.executable, "-c", WRITTEN_UNDER, str(x), str(y)], env=ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert run.stdout.readline().strip() == "mapped"
        code = f"import os, sys\n{WRITERS[writer]}\nprint('written')"
        cut = subprocess.run([sys.executable, "-c", code, str(x), str(x.stat().st_size // 2)],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert cut.returncode == 0 and "written" in cut.stdout, cut.stderr
        out, err = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 3, (run.returncode, err)  # not -SIGBUS: the run said why
    assert "CorruptFileError" in out and str(x) in out and "ended early" in out, out


def test_a_writer_is_held_only_until_the_run_lets_go(tmp_path):
    """The lease holds a writer while an access is in progress and no longer: the handler runs
    between two steps, and the writer's open returns long before the kernel's 45 s limit."""
    x = tmp_path / "X.npy"
    np.save(x, np.ones((1000, 10), np.float32))
    source = NpySource(x)
    leased = source.leased_map()
    assert leased is not None
    code = "import sys, time; t = time.time(); open(sys.argv[1], 'r+b'); print(time.time() - t)"
    writer = subprocess.Popen([sys.executable, "-c", code, str(x)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    with leased.access() as rows:
        assert rows is not None and rows.sum() == 10_000
        deadline = time.monotonic() + 30
        while not leased._pending and time.monotonic() < deadline:  # the signal arrives
            time.sleep(0.01)
        assert leased._pending and not leased.broken  # held while this access lasts
        assert writer.poll() is None
    assert leased.broken  # released on the way out of the access
    held = float(writer.communicate(timeout=40)[0])
    assert held < 40  # released by the run, not by the kernel's time limit
    with leased.access() as rows:
        assert rows is None  # from now on: read the file
    leased.close()
    source.close()


def test_a_break_during_another_threads_access_is_carried_out_by_that_thread(tmp_path):
    """The reader thread checks a block in the map while the main thread's handler runs: the
    handler must not wait (it would hold up the loop), and the reader releases the lease as
    its access ends; the writer goes on then, not before."""
    x = tmp_path / "X.npy"
    np.save(x, np.ones((1000, 10), np.float32))
    source = NpySource(x)
    leased = source.leased_map()
    assert leased is not None
    inside, leave = threading.Event(), threading.Event()

    def reader():
        with leased.access() as rows:
            assert rows is not None
            inside.set()
            leave.wait(30)

    thread = threading.Thread(target=reader)
    thread.start()
    assert inside.wait(30)
    code = "import sys; open(sys.argv[1], 'r+b'); print('opened')"
    writer = subprocess.Popen([sys.executable, "-c", code, str(x)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    deadline = time.monotonic() + 30
    while not leased._pending and time.monotonic() < deadline:  # the handler ran, returned
        time.sleep(0.01)
    assert leased._pending and not leased.broken and writer.poll() is None
    leave.set()
    thread.join(30)
    assert leased.broken  # released by the reader thread on its way out
    assert writer.communicate(timeout=40)[0].strip() == "opened"
    leased.close()
    source.close()
