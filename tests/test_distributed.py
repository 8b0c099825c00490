"""Data-parallel training on real MPI jobs (mpiexec -n 2 and -n 3 from pytest): the same model as
one process, resume with another number of ranks, a killed rank, ranks started differently."""

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigd import datasets
from minigd.distributed import node_sum

pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
if not Path(MPIEXEC).exists():
    pytest.skip("mpiexec is not installed (pip install 'minigd[mpi]')", allow_module_level=True)

ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def mpi(n: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MPIEXEC, "-n", str(n), *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def mpi_script(folder: Path, n: int, source: str, *args: str) -> str:
    """What rank 0 of ``source``, run as a script on n ranks, printed."""
    script = folder / "script.py"
    script.write_text(source)
    done = mpi(n, sys.executable, str(script), *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


EQUALITY = """
import json, sys
import numpy as np
from minigd.distributed import world
from minigd.nn import mlp
from minigd.training import fit

comm = world()
worst = {}
for name, m, b, optimizer, last, batchnorm in json.loads(sys.argv[1]):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((m, 7)), rng.integers(0, 3, m)
    runs = []
    for c in (comm, None):
        model = mlp(7, [16], 3, batchnorm=batchnorm, dtype=np.float64, seed=1)
        history = fit(model, X, y, batch_size=b, epochs=3, optimizer=optimizer, lr=0.05,
                      last_batch=last, verbose=0, comm=c, threads=1)
        runs.append(np.concatenate([v.ravel() for v in model.state().values()]))
        reduction = history.meta.get("reduction", reduction if c is None else None)
    worst[name] = float(np.abs(runs[0] - runs[1]).max() / np.abs(runs[1]).max())
if comm.Get_rank() == 0:
    print(json.dumps({**worst, "reduction": reduction}))
"""

CASES = [
    # name, m, global batch, optimizer, last_batch, batchnorm
    ("sgd", 203, 32, "sgd", "keep", False),
    ("momentum drop", 203, 32, "momentum", "drop", False),
    ("adam merge", 203, 50, "adam", "merge", False),
    ("sgd 1-row last batch", 201, 100, "sgd", "keep", False),  # 2 of 3 ranks get no row
    ("adam batchnorm", 203, 48, "adam", "merge", True),
]


@pytest.mark.parametrize("n", [2, 3])
def test_n_ranks_train_the_model_one_process_trains(tmp_path, n):
    worst = json.loads(mpi_script(tmp_path, n, EQUALITY, json.dumps(CASES)))
    print(f"{n} ranks, worst relative difference: {worst}")
    assert worst.pop("reduction") == "shared memory"  # the ranks share this machine
    assert all(diff < 1e-10 for diff in worst.values()), worst


def test_four_ranks_on_two_hosts_of_a_hostfile_train_the_model_one_process_trains(tmp_path):
    """The cluster path of docs/guides/clusters.md: a hostfile of two hosts (aliases of this
    machine, started by fork instead of ssh); MPICH places 2 ranks on each and treats them as
    two nodes (node-local groups of 2), so the Allreduce crosses nodes as on a cluster."""
    (tmp_path / "hosts").write_text("localhost:2\n127.0.0.1:2\n")
    script = tmp_path / "equal.py"
    script.write_text(EQUALITY + NODES)
    cases = [c for c in CASES if c[0] in ("sgd", "adam batchnorm")]
    done = mpi(4, "-f", str(tmp_path / "hosts"), "-launcher", "fork", sys.executable,
               str(script), json.dumps(cases))  # fmt: skip
    assert done.returncode == 0, done.stderr
    worst, nodes = (json.loads(line) for line in done.stdout.splitlines()[-2:])
    assert nodes == [2, 2, 2, 2]  # two ranks per node, two nodes
    # summed within each node through its shared memory, then across the nodes by MPI
    assert worst.pop("reduction") == "shared memory"
    assert all(diff < 1e-10 for diff in worst.values()), worst


NODES = """
from mpi4py import MPI
local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
sizes = comm.gather(local, root=0)
if comm.Get_rank() == 0:
    print(json.dumps(sizes))
"""


def train(n: int, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "minigd", "train", *args, "--quiet", "--threads", "1"]
    if n == 1:
        return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=120)
    return mpi(n, *command)


def parameters(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "model.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files if k not in ("architecture", "classes")}


COMMON = ["--data", "digits", "--model", "mlp:32", "--optimizer", "adam", "--batch-size", "64"]


def test_the_noise_scale_average_goes_on_across_a_resume(tmp_path):
    common = [*COMMON, "--dtype", "float64"]
    straight = train(2, *common, "--epochs", "4", "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    assert train(2, *common, "--epochs", "2", "--out", str(tmp_path / "run")).returncode == 0
    resumed = train(2, "--resume", str(tmp_path / "run"), "--epochs", "4")
    assert resumed.returncode == 0, resumed.stderr
    a, b = (json.loads((tmp_path / d / "history.json").read_text())["steps"]["b_simple"]
            for d in ("straight", "run"))  # fmt: skip
    assert len(a) == len(b) == 4 * 23
    np.testing.assert_allclose(b, a, rtol=1e-9)  # the checkpoint kept the running average


def test_a_run_resumes_on_another_number_of_ranks(tmp_path):
    common = [*COMMON, "--dtype", "float64"]
    assert train(1, *common, "--epochs", "4", "--out", str(tmp_path / "one")).returncode == 0
    first = train(2, *common, "--epochs", "2", "--out", str(tmp_path / "run"))
    assert first.returncode == 0, first.stderr
    # the first line says so, once: rank 0 speaks for the job
    assert first.stdout.count("data-parallel on 2 MPI ranks") == 1
    assert first.stdout.count("done:") == 1
    resumed = train(3, "--resume", str(tmp_path / "run"), "--epochs", "4")
    assert resumed.returncode == 0, resumed.stderr
    ours, reference = parameters(tmp_path / "run"), parameters(tmp_path / "one")
    for name, value in reference.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-10, atol=1e-12)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["meta"]["ranks"] == 3 and history["meta"]["per_rank_batch"] == 22


def test_a_run_resumed_on_any_number_of_ranks_finishes_and_writes_every_file(tmp_path):
    """2 ranks, then 1 process, then 3 ranks, then 2: the noise-scale columns that only ranks
    record stay as long as the others (NaN where not measured), and each leg writes its
    results."""
    run = tmp_path / "run"
    legs = [(2, ["--epochs", "1", "--out", str(run), *COMMON]), (1, ["--epochs", "2"]),
            (3, ["--epochs", "3"]), (2, ["--epochs", "4"])]  # fmt: skip
    for ranks, args in legs:
        done = train(ranks, *(args if "--out" in args else ["--resume", str(run), *args]))
        assert done.returncode == 0, (ranks, done.stderr)
        history = json.loads((run / "history.json").read_text())
        lengths = {name: len(column) for name, column in history["steps"].items()}
        assert set(lengths.values()) == {23 * len(history["epochs"])}, (ranks, lengths)
        assert len((run / "history.csv").read_text().splitlines()) == 1 + 23 * len(
            history["epochs"]
        )
    b_simple = np.array(history["steps"]["b_simple"], dtype=float)
    assert np.isnan(b_simple[23:46]).all() and np.isfinite(b_simple[46:]).any()


def test_a_killed_rank_ends_the_job_within_seconds_and_the_checkpoint_resumes(tmp_path):
    psutil = pytest.importorskip("psutil")
    run = tmp_path / "run"
    slow = [*COMMON, "--batch-size", "8", "--epochs", "30", "--checkpoint-every", "20"]
    job = subprocess.Popen(
        [
            MPIEXEC,
            "-n",
            "2",
            sys.executable,
            "-m",
            "minigd",
            "train",
            *slow,
            "--out",
            str(run),
            "--threads",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    end = time.monotonic() + 60
    while not list((run / "checkpoints").glob("checkpoint-*.npz")):
        assert time.monotonic() < end and job.poll() is None, "no checkpoint appeared"
        time.sleep(0.05)
    ranks = [
        p
        for p in psutil.Process(job.pid).children(recursive=True)
        if "minigd" in " ".join(p.cmdline())
    ]
    assert len(ranks) == 2
    killed_at = time.monotonic()
    ranks[1].send_signal(signal.SIGKILL)
    out, err = job.communicate(timeout=60)
    assert time.monotonic() - killed_at < 15
    assert job.returncode != 0
    # MPICH names the process that died and how; the first line maps that pid to its rank
    assert f"PID {ranks[1].pid}" in out + err and "Killed (signal 9)" in out + err
    rank_of = dict(
        item.split(":")[::-1] for item in out.split("rank:pid ")[1].split(")")[0].split(", ")
    )
    assert rank_of[str(ranks[1].pid)] in ("0", "1")
    assert not any(p.is_running() and p.status() != "zombie" for p in ranks)
    resumed = train(2, "--resume", str(run), "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr


REDUCTIONS = """
import json, hashlib
import numpy as np
from minigd.distributed import world
from minigd.distributed import node_sum
from minigd.nn import mlp
from minigd.training import make_trainer
comm = world()
rng = np.random.default_rng(0)
X, y = rng.standard_normal((203, 7)), rng.integers(0, 3, 203)
out = {}
for reduction, most in (("auto", 64), ("auto", node_sum.MOST_BYTES), ("mpi", node_sum.MOST_BYTES)):
    node_sum.MOST_BYTES = most  # 64 bytes: no window fits, "auto" falls back to MPI
    model = mlp(7, [16], 3, dtype=np.float64, seed=1)
    trainer = make_trainer(model, X, y, batch_size=32, epochs=3, optimizer="adam", lr=0.05,
                           verbose=0, comm=comm, threads=1)
    trainer.gradient.reduction = reduction
    history = trainer.run()
    params = np.ascontiguousarray(model.params)
    same = len(set(comm.allgather(hashlib.sha256(params.tobytes()).hexdigest()))) == 1
    out[f"{reduction} {most}"] = (params, history.meta["reduction"], same)
if comm.Get_rank() == 0:
    small, shm, mpi = out.values()
    print(json.dumps({
        "used": [shm[1], mpi[1], small[1]],
        "ranks_alike": [shm[2], mpi[2], small[2]],
        "bitwise": bool(np.array_equal(shm[0], mpi[0])),
        "worst": float(np.abs(shm[0] - mpi[0]).max() / np.abs(mpi[0]).max()),
        "fallback_bitwise": bool(np.array_equal(small[0], mpi[0])),
    }))
"""


@pytest.mark.parametrize("n", [2, 3])
def test_the_shared_memory_sum_trains_what_the_allreduce_trains(tmp_path, n):
    script = tmp_path / "reductions.py"
    script.write_text(REDUCTIONS)
    done = mpi(n, sys.executable, str(script), timeout=60)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["used"] == ["shared memory", "mpi", "mpi"]  # auto, mpi, auto without room
    assert all(got["ranks_alike"])
    assert got["fallback_bitwise"]
    if n == 2:  # a + b either way
        assert got["bitwise"], got
    assert got["worst"] < 1e-12, got


@given(length=st.integers(1, 5000), parts=st.integers(1, 64))
def test_the_ranks_slices_cover_the_vector_once_and_start_on_cache_lines(length, parts):
    bounds = node_sum.slices(length, parts)
    assert len(bounds) == parts
    assert bounds[0][0] == 0 and bounds[-1][1] == length
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))  # contiguous, no overlap
    assert all(lo % node_sum.LINE == 0 or lo == length for lo, _ in bounds)
    assert all(lo <= hi for lo, hi in bounds)


def test_no_window_is_asked_of_a_shared_memory_without_room(tiny_disk, monkeypatch):
    """A window that /dev/shm cannot hold would end a rank with SIGBUS at its first write:
    the plain Allreduce is kept instead (measured on a real, small, filled tmpfs)."""
    monkeypatch.setattr(node_sum, "SHM", str(tiny_disk))
    assert node_sum.shared_memory_fits(100_000)
    assert not node_sum.shared_memory_fits(300_000)  # room for it, not for it twice
    (tiny_disk / "filler").write_bytes(b"\0" * 400_000)
    assert not node_sum.shared_memory_fits(100_000)
    assert not node_sum.shared_memory_fits(node_sum.MOST_BYTES + 1)


CONTINUED = """
import numpy as np
from minigd.distributed import world
from minigd.nn import mlp
from minigd.training import make_trainer
comm = world()
rng = np.random.default_rng(0)
X, y = rng.standard_normal((120, 4)), rng.integers(0, 2, 120)
trainer = make_trainer(mlp(4, [8], 2), X, y, batch_size=20, epochs=1, verbose=0, comm=comm)
trainer.run()
trainer.epochs = 2  # more epochs in the same processes: each rank's clock says otherwise
trainer.run()
steps = comm.gather(trainer.position.step)
if comm.Get_rank() == 0:
    print(steps)
"""


def test_a_run_continued_in_the_same_processes_is_not_refused_for_its_clocks(tmp_path):
    script = tmp_path / "continued.py"
    script.write_text(CONTINUED)
    done = mpi(2, sys.executable, str(script), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[12, 12]"


MISMATCH = """
import numpy as np
from minigd.distributed import world
from minigd.nn import mlp
from minigd.training import fit
comm = world()
m = 100 if comm.Get_rank() == 0 else 99  # one rank read a shorter file
X, y = np.ones((m, 4)), np.arange(m) % 2
fit(mlp(4, [8], 2), X, y, batch_size=10, epochs=1, verbose=0, comm=comm)
"""


def test_ranks_started_with_different_data_are_refused_with_a_sentence(tmp_path):
    script = tmp_path / "mismatch.py"
    script.write_text(MISMATCH)
    start = time.monotonic()
    done = mpi(2, sys.executable, str(script), timeout=60)
    assert time.monotonic() - start < 30  # no deadlock
    assert done.returncode != 0
    # every rank raises the same sentence; whichever aborts first ends the job, so the message
    # may come from either rank
    assert re.search(
        r"rank [01] of 2 failed \(ValueError: the 2 ranks were not started alike: "
        r"n_samples 100 on rank 0, 99 on rank 1",
        done.stderr,
    ), done.stderr


def test_without_mpi_the_error_names_the_extra(monkeypatch):
    from minigd.distributed import world

    monkeypatch.setitem(sys.modules, "mpi4py", None)  # what an environment without it sees
    with pytest.raises(
        ImportError, match=r"distributed training needs mpi4py: pip install 'minigd\[mpi\]'"
    ):
        world()


def one_then_ranks(n: int, subcommand: str, grid: list[str], tmp_path: Path):
    """``minigd <subcommand>`` on one process (one BLAS thread) into one/, then on n ranks into
    ranks/; both must succeed."""
    command = [sys.executable, "-m", "minigd", subcommand, *grid]
    one = subprocess.run([*command, "--threads", "1", "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=ENV, timeout=180)  # fmt: skip
    assert one.returncode == 0, one.stderr
    ranks = mpi(n, *command, "--out", str(tmp_path / "ranks"), timeout=180)
    assert ranks.returncode == 0, ranks.stderr
    return ranks


def test_a_sweep_dealt_to_three_ranks_reports_what_one_process_reports(tmp_path):
    grid = ["--data", "digits", "--model", "mlp:32", "--batch-sizes", "16,64,256", "--lrs",
            "0.1,0.3", "--target", "val_accuracy:0.75,0.8", "--max-epochs", "6", "--seeds", "0,1",
            "--quiet"]  # fmt: skip
    three = one_then_ranks(3, "sweep", grid, tmp_path)
    assert three.stdout.count("wrote ") == 1  # rank 0 alone writes and reports
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "ranks"))
    assert a["lr_grid"] == b["lr_grid"]  # the same rounds of extensions
    assert any(len(rates) > 2 for rates in a["lr_grid"].values())  # 0.3 was an edge
    for fa, fb in zip(a["fits"], b["fits"], strict=True):
        assert fb["critical"]["b_crit"] == pytest.approx(fa["critical"]["b_crit"], rel=1e-9)

    def untimed(rows):
        return [{k: v for k, v in r.items() if "second" not in k} for r in rows]

    assert untimed(a["rows"]) == untimed(b["rows"]) and len(a["rows"]) == 3
    assert b["noise"]["b_simple"] == pytest.approx(a["noise"]["b_simple"], rel=1e-6)


GOODPUT = """
import sys
import numpy as np
from minigd import datasets
from minigd.distributed import world
from minigd.nn import mlp
from minigd.training import Callback, Checkpoint, GoodputBatchSize, fit

folder, stop_at, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume"
comm = world()


class StopAt(Callback):
    def on_step_end(self, trainer, loss):
        if trainer.step == stop_at:
            trainer.stop("stopped for the test", "interrupted")


train, _ = datasets.load("digits")
policy = GoodputBatchSize(start=16, step_time=lambda b: 1e-3 + 4e-6 * b)  # a machine model
callbacks = [policy, Checkpoint(folder, every_steps=7, keep_last=2), StopAt()]
history = fit(mlp(64, [32], 10, seed=5, dtype=np.float64), train.X, train.y,
              batch_size="adaptive", epochs=8, lr=0.05, verbose=0, comm=comm, threads=1,
              callbacks=callbacks, resume=folder if resume else None)
params = comm.gather(policy.trainer.model.params.copy(), root=0)
if comm.Get_rank() == 0:
    np.save(folder + "/params.npy", np.array(params))
    print([(c["step"], c["from"], c["batch_size"]) for c in history.meta["batch_schedule"]])
"""


def test_a_goodput_batch_on_two_ranks_is_chosen_by_rank_0_and_resumes_bitwise(tmp_path):
    """Rank 0 decides (timings differ between ranks) and broadcasts; the shares follow, the
    ranks stay identical, and a run stopped after a move resumes to the uninterrupted result."""
    script = tmp_path / "goodput.py"
    script.write_text(GOODPUT)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    done = mpi(2, sys.executable, str(script), str(whole), "-1", "fresh")
    assert done.returncode == 0, done.stderr
    moves = eval(done.stdout.strip().splitlines()[-1])
    assert len(moves) >= 2 and moves[0][2] > 16  # the batch grew, more than once
    reference = np.load(whole / "params.npy")
    np.testing.assert_array_equal(reference[0], reference[1])  # the ranks agree
    stop_at = moves[0][0] + 10  # after the first move, between two checkpoints
    assert mpi(2, sys.executable, str(script), str(cut), str(stop_at), "fresh").returncode == 0
    done = mpi(2, sys.executable, str(script), str(cut), "-1", "resume")
    assert done.returncode == 0, done.stderr
    assert eval(done.stdout.strip().splitlines()[-1]) == moves
    np.testing.assert_array_equal(np.load(cut / "params.npy"), reference)


def test_the_command_line_trains_an_adaptive_batch_on_two_ranks(tmp_path):
    done = mpi(2, sys.executable, "-m", "minigd", "train", "--data", "digits", "--model",
               "mlp:32", "--batch-size", "adaptive", "--epochs", "3", "--out",
               str(tmp_path / "run"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "each global batch, of the size rank 0 chooses, split evenly" in done.stdout
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["steps"]["batch_size"][0] == 32 and "batch_schedule" in history["meta"]


OWN_BLOCKS = """
import json, sys
import numpy as np
from minigd.data import open_source
from minigd.distributed import world
from minigd.nn import mlp
from minigd.training import Callback, Checkpoint, fit

folder, out = sys.argv[1], sys.argv[2]
epochs, stop_at, batchnorm = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "bn"
comm = world()


class StopAt(Callback):
    def on_step_end(self, trainer, loss):
        if trainer.step == stop_at:
            trainer.stop("stopped for the test", "interrupted")


resume = out if stop_at < 0 and (__import__("pathlib").Path(out) / "checkpoints").exists() else None
model = mlp(784, [16], 10, seed=1, dtype=np.float64, batchnorm=batchnorm)
history = fit(model, open_source(folder + "/X.npy", y=folder + "/y.npy"), batch_size=256,
              epochs=epochs, lr=0.05, verbose=0, comm=comm, threads=1, shuffle="blocks",
              last_batch="merge", shuffle_buffer=4 << 20, resume=resume,
              callbacks=[Checkpoint(out + "/checkpoints", every_steps=5), StopAt()])
if comm.Get_rank() == 0:
    np.save(out + "/params.npy", model.params)
    print(json.dumps(history.meta.get("bytes_read_per_rank") or [history.meta["bytes_read"]]))
"""


@pytest.fixture(scope="module")
def mnist_on_disk(tmp_path_factory):
    """mnist-5k as float64 .npy files: 25 MB, 24 blocks of ~1 MiB, buffers of 4 blocks."""
    folder = tmp_path_factory.mktemp("mnist")
    train, _ = datasets.load("mnist-5k")
    np.save(folder / "X.npy", train.X.astype(np.float64))
    np.save(folder / "y.npy", train.y)
    (folder / "own_blocks.py").write_text(OWN_BLOCKS)
    return folder


def per_rank(folder, out, n, epochs=2, stop_at=-1, model="plain"):
    script = str(folder / "own_blocks.py")
    args = [sys.executable, script, str(folder), str(out), str(epochs), str(stop_at), model]
    done = mpi(n, *args) if n > 1 else subprocess.run(args, capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), np.load(out / "params.npy")


def test_each_rank_reads_its_share_of_a_block_shuffled_file_and_trains_what_one_process_does(
    mnist_on_disk, tmp_path
):
    """Under the block shuffle each rank reads its own blocks of every buffer (turns rotating
    by buffer): ~1/N of the bytes, and the same global batches as one process."""
    (alone,), reference = per_rank(mnist_on_disk, tmp_path / "one", 1)
    assert alone == 2 * 4000 * 784 * 8  # two epochs of the rows, in float64
    for n in (2, 3):
        read, params = per_rank(mnist_on_disk, tmp_path / f"n{n}", n)
        assert sum(read) == alone  # nothing read twice
        assert max(read) <= alone / n + 4 * 1024 * 1024  # each about 1/N (to a block per buffer)
        np.testing.assert_allclose(params, reference, rtol=0, atol=1e-10 * np.abs(reference).max())


def test_a_run_on_three_ranks_resumes_on_two_with_the_same_sample_order(mnist_on_disk, tmp_path):
    _, reference = per_rank(mnist_on_disk, tmp_path / "one", 1, epochs=3)
    run = tmp_path / "run"
    per_rank(mnist_on_disk, run, 3, epochs=3, stop_at=23)  # mid-epoch 2, after a checkpoint
    _, params = per_rank(mnist_on_disk, run, 2, epochs=3)
    np.testing.assert_allclose(params, reference, rtol=0, atol=1e-10 * np.abs(reference).max())


def test_with_batchnorm_every_rank_reads_every_buffer(mnist_on_disk, tmp_path):
    """BatchNorm needs rows on every rank in every batch: even shares, whole buffers."""
    (alone,), _ = per_rank(mnist_on_disk, tmp_path / "one", 1, epochs=1, model="bn")
    read, _ = per_rank(mnist_on_disk, tmp_path / "two", 2, epochs=1, model="bn")
    assert read == [alone, alone]


def test_the_running_noise_scale_recovers_a_known_ratio():
    from minigd.noise import RunningNoiseScale

    g2, trace = 0.5, 40.0  # B_noise = 80
    noise = RunningNoiseScale()
    rng = np.random.default_rng(0)
    for _ in range(2000):  # E|G_B|^2 = |G|^2 + tr(Sigma)/B, observed with noise
        small = (g2 + trace / 16) * rng.gamma(1000, 1 / 1000)
        big = (g2 + trace / 64) * rng.gamma(1000, 1 / 1000)
        value = noise.update(small, big, 16, 64)
    assert value == pytest.approx(80, rel=0.1)  # seeds 0-19 gave 77.9-83.5
    exact = RunningNoiseScale()
    assert exact.update(g2 + trace / 16, g2 + trace / 64, 16, 64) == pytest.approx(80)


def test_a_data_parallel_run_reports_its_noise_scale_as_it_trains(tmp_path):
    done = train(2, *COMMON, "--epochs", "2", "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    assert "b_simple" in done.stdout
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    per_step = [v for v in history["steps"]["b_simple"] if v == v]
    assert len(per_step) > 30 and all(v > 0 for v in per_step[10:])
    assert history["epochs"][-1]["b_simple"] == per_step[-1]


def test_compare_dealt_to_two_ranks_reports_what_one_process_reports(tmp_path):
    grid = ["--data", "digits", "--model", "mlp:32", "--batch-sizes", "full,64,8", "--epochs",
            "2", "--quiet"]  # fmt: skip
    two = one_then_ranks(2, "compare", grid, tmp_path)
    assert two.stdout.count("report: ") == 1

    def untimed(folder):
        runs = json.loads((tmp_path / folder / "results.json").read_text())["runs"]
        timing = ("second", "samples_per_second", "memory")
        return [
            {k: v for k, v in run["metrics"].items() if not any(t in k for t in timing)}
            for run in runs
        ]

    one, two = untimed("one"), untimed("ranks")
    for a, b in zip(one, two, strict=True):  # float32 sums may differ in the last bits
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, float):
                assert b[key] == pytest.approx(value, rel=1e-6, nan_ok=True), key
            else:
                assert b[key] == value, key


PER_RANK = """
import json
import numpy as np
from minigd.distributed import world
from minigd.nn import mlp
from minigd.training import fit
comm = world()
rng = np.random.default_rng(0)
X, y = rng.standard_normal((200, 5)), rng.integers(0, 2, 200)
model = mlp(5, [8], 2, batchnorm=True, dtype=np.float64)
fit(model, X, y, batch_size=40, epochs=2, verbose=0, comm=comm, sync_batchnorm=False)
state = np.concatenate([v.ravel() for v in model.state().values()])
states = comm.gather(state, root=0)
if comm.Get_rank() == 0:
    print(json.dumps({"same": bool(all(np.array_equal(states[0], s) for s in states))}))
"""


def test_per_rank_batchnorm_keeps_the_ranks_identical(tmp_path):
    script = tmp_path / "per_rank.py"
    script.write_text(PER_RANK)
    done = mpi(3, sys.executable, str(script))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["same"]  # parameters and running statistics alike
    warned = train(
        2,
        "--data",
        "digits",
        "--model",
        "mlp:32+bn",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--batchnorm-stats",
        "per-rank",
        "--out",
        str(tmp_path / "r"),
    )
    assert warned.returncode == 0, warned.stderr
    assert warned.stderr.count("each rank normalizes its share of 8 rows") == 1  # rule 5


RAISES = """
import numpy as np
from minigd.distributed import world
from minigd.nn import mlp
from minigd.training import Callback, fit
comm = world()

class Fails(Callback):
    def on_step_end(self, trainer, loss):
        if comm.Get_rank() == 1 and trainer.step == 5:
            raise RuntimeError("the disk of rank 1 is gone")

X, y = np.ones((400, 4)), np.arange(400) % 2
fit(mlp(4, [8], 2), X, y, batch_size=10, epochs=50, verbose=0, comm=comm, callbacks=[Fails()])
"""


def test_a_rank_that_raises_ends_the_job_naming_itself_and_the_cause(tmp_path):
    script = tmp_path / "raises.py"
    script.write_text(RAISES)
    start = time.monotonic()
    done = mpi(2, sys.executable, str(script), timeout=60)
    assert time.monotonic() - start < 30  # rank 0 does not wait forever in its next Allreduce
    assert done.returncode != 0
    assert "rank 1 of 2 failed (RuntimeError: the disk of rank 1 is gone)" in done.stderr


ABORTS = """
from mpi4py import MPI
from minigd.distributed.comm import abort_job

comm = MPI.COMM_WORLD
if comm.Get_rank() == 1:
    abort_job(comm, RuntimeError("the disk of rank 1 is gone"))
comm.Barrier()  # rank 0 waits here, as in a collective, until the abort ends it
"""


def test_the_reason_reaches_stderr_in_every_one_of_many_aborted_jobs(tmp_path):
    """MPI_Abort kills the job at once; the reason must be forwarded first, every time (it was
    lost in 1 of 12 jobs). 16 jobs, 4 at a time so that they compete for the cores."""
    script = tmp_path / "aborts.py"
    script.write_text(ABORTS)
    argv = [MPIEXEC, "-n", "2", sys.executable, str(script)]
    silent = []
    for _ in range(4):
        jobs = [
            subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
            )
            for _ in range(4)
        ]
        for job in jobs:
            _, err = job.communicate(timeout=60)
            assert job.returncode != 0
            if "rank 1 of 2 failed (RuntimeError: the disk of rank 1 is gone)" not in err:
                silent.append(err)
    assert silent == []


def test_a_failing_rank_waits_until_its_last_words_were_read():
    """The wait before MPI_Abort ends when the reader (mpiexec's proxy) has taken every byte."""
    from minigd.distributed.comm import _wait_until_read

    read_fd, write_fd = os.pipe()
    taken = []
    with os.fdopen(write_fd, "w") as stream:
        stream.write("rank 1 of 2 failed\n")
        stream.flush()

        def read_later():
            taken.append("reading")
            taken.append(os.read(read_fd, 100))

        reader = threading.Timer(0.2, read_later)
        reader.start()
        _wait_until_read(stream, 30.0)
        assert taken[:1] == ["reading"]  # it returned only once the reader had come
        reader.join()
        assert taken[1] == b"rank 1 of 2 failed\n"
        stream.write("nobody reads this\n")
        stream.flush()
        _wait_until_read(stream, 0.05)  # and gives up after its limit
    os.close(read_fd)


def test_a_rank_that_fails_before_training_ends_the_job_with_its_reason(tmp_path):
    """MPMD: rank 1 is given a data file that does not exist; rank 0 would wait in the first
    collective forever. The failing rank says why and ends the job within seconds."""
    np.savez(tmp_path / "ok.npz", X=np.zeros((64, 3), np.float32), y=np.arange(64) % 2)
    command = [sys.executable, "-m", "minigd", "train", "--model", "softmax", "--epochs", "1",
               "--out", str(tmp_path / "run"), "--quiet", "--data"]  # fmt: skip
    job = subprocess.Popen(
        [MPIEXEC, "-n", "1", *command, str(tmp_path / "ok.npz"),
         ":", "-n", "1", *command, str(tmp_path / "missing.npz")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        start_new_session=True,
    )  # fmt: skip
    try:
        _, err = job.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        job.communicate()
        pytest.fail("the job did not end within 60 s of a rank's failure")
    assert job.returncode != 0
    assert "missing.npz' is neither a dataset" in err and "Traceback" not in err


def test_ranks_given_different_run_folders_are_refused(tmp_path):
    np.savez(tmp_path / "ok.npz", X=np.zeros((64, 3), np.float32), y=np.arange(64) % 2)
    command = [sys.executable, "-m", "minigd", "train", "--data", str(tmp_path / "ok.npz"),
               "--model", "softmax", "--epochs", "1", "--quiet", "--out"]  # fmt: skip
    done = mpi(1, *command, str(tmp_path / "a"), ":", "-n", "1", *command, str(tmp_path / "b"))
    assert done.returncode != 0
    assert "not started alike: out" in done.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


OVERLAP = """
import json, sys
import numpy as np
from minigd.distributed import world
from minigd.nn import mlp
from minigd.training import make_trainer

comm = world()
worst, buckets = {}, {}
for name, m, b, optimizer, batchnorm, overlap, bucket_bytes in json.loads(sys.argv[1]):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((m, 7)), rng.integers(0, 3, m)
    runs = []
    for c in (comm, None):
        model = mlp(7, [16, 16, 16], 3, batchnorm=batchnorm, dtype=np.float64, seed=1)
        trainer = make_trainer(model, X, y, batch_size=b, epochs=3, optimizer=optimizer,
                               lr=0.05, verbose=0, comm=c, threads=1)
        if c is not None:
            trainer.gradient.reduction = "mpi"
            trainer.gradient.overlap, trainer.gradient.bucket_bytes = overlap, bucket_bytes
        history = trainer.run()
        runs.append(np.concatenate([v.ravel() for v in model.state().values()]))
        if c is not None:
            buckets[name] = history.meta["overlap_buckets"]
    worst[name] = float(np.abs(runs[0] - runs[1]).max() / np.abs(runs[1]).max())
if comm.Get_rank() == 0:
    print(json.dumps({"worst": worst, "buckets": buckets}))
"""

OVERLAP_CASES = [
    # name, m, global batch, optimizer, batchnorm, overlap, bucket bytes
    ("one bucket a layer", 203, 32, "sgd", False, True, 1),
    ("buckets of two layers", 203, 32, "momentum", False, True, 2200),
    ("batchnorm between buckets", 203, 48, "adam", True, True, 1),
    ("2 of 3 ranks without a row", 201, 100, "sgd", False, True, 1),
    ("no overlap", 203, 32, "sgd", False, False, 1),
]


@pytest.mark.parametrize("n", [2, 3])
def test_the_allreduce_overlapped_with_backward_trains_the_model_one_process_trains(tmp_path, n):
    """Each layer's gradient (or bucket of layers) is summed by a non-blocking Allreduce
    started as soon as backward has produced it; synced BatchNorm's own Allreduces run between
    them, in the same order on every rank."""
    result = json.loads(mpi_script(tmp_path, n, OVERLAP, json.dumps(OVERLAP_CASES)))
    print(f"{n} ranks: {result}")
    assert all(diff < 1e-10 for diff in result["worst"].values()), result
    # the MLP 7-16-16-16-3 has 4 Dense layers: 4 buckets at 1 byte
    assert result["buckets"]["one bucket a layer"] == 4
    assert result["buckets"]["buckets of two layers"] == 2  # 16x16+16 floats = 2176 bytes
    assert result["buckets"]["no overlap"] == 0
