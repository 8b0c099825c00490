"""Streaming from disk: what prefetch hides, what a larger-than-RAM epoch costs, and why reads.

(a) From the page cache: epoch seconds of the MLP 784-128-10 (SGD, B=64 and B=1024, 2 BLAS
    threads) on the 60000-row MNIST-shaped set held in memory, against the same rows streamed
    from a .npy file (rows shuffle: the same batches; blocks shuffle: the on-disk default, the
    file mapped under a read lease, ``data.leased_map``), interleaved rounds of 4-epoch runs,
    paired ratios. Target: within 10%. Also the blocks read into buffers instead of mapped
    (``NpySource.map_rows = False``), those at 2 threads held at 1 while the reader copies a
    buffer (``Trainer.threads_while_reading``), and memory and mapped blocks with the BLAS
    threads chosen as ``fit`` chooses them when it is given none (``ThreadChoice``: the faster
    of 1 and 2 threads, measured on the run's steps, the reader's wait included).
(b) Larger than RAM: a generated .npy of ``--big-gb`` GB (30 GB = 9.6 million MNIST-shaped rows,
    on a 24 GiB machine), page cache dropped first, one epoch with the block shuffle in a fresh
    process: epoch seconds, MB/s read, the share of the epoch the step waited on I/O, peak RSS.
(c) Rows vs blocks from the disk: random rows (batches of 1024 random rows, one read per row)
    against random 1 MiB blocks, page cache dropped, MB/s and rows/s.
(d) Memory map vs positioned reads: peak RSS (VmHWM) of one pass of shuffled batches over a
    2 GB file through ``np.load(mmap_mode="r")`` and through ``NpySource``, each in a fresh process.
(e) Each rank reads its share: one block-shuffled epoch (B=1024) of a ``--share-gb`` GB file read
    with O_DIRECT (so nothing comes from the page cache, as for a file larger than it), by one
    process (1 and 2 BLAS threads) and by 2 MPI ranks (1 thread each): epoch seconds, bytes read
    by each rank, the share of the epoch spent waiting on reads.
(f) Memory over steps: a tiny model (MLP 4-4-2, B=1, ~20 us a step) trained for ``--steps``
    steps in a fresh process, its RSS and peak RSS read at 10^3, 10^4, ... steps; with a
    Checkpoint callback (the History's older steps go to files) and without (all in memory).
(g) Memory over rows: sparse .npy files declaring 10^7, 10^8 and 10^9 rows of 4 float32
    features (and a uint8 label, two classes), trained for ``--declared-seconds`` each at B=64
    with the block shuffle and checkpoints (as in a run folder) in a fresh process: RSS when
    training starts, peak RSS at the end.

Usage: ``python benchmarks/bench_streaming.py --parts a,b,c,d,e,f --big-gb 30 --rounds 5``
(b and c need root to drop the page cache; the big file goes to --scratch and is removed after).
Writes results/<date>-bench_streaming.*
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import (
    RESULTS,
    interleaved,
    machine,
    mnist_shaped,
    paired_ratios,
    set_threads,
    write_results,
)
from minigd import data
from minigd.nn import mlp
from minigd.training import make_trainer

ROW = 784 * 4


EPOCHS_PER_TIMING = 4  # one timing is a run() of several epochs, as a training run is


class Epochs:
    """``EPOCHS_PER_TIMING`` more epochs of a trainer per ``epoch(e)`` call (what
    ``interleaved`` times): a run's first epoch waits for its first buffer, later ones find it
    read ahead, as in a real run."""

    def __init__(
        self, X, y, b: int, shuffle: str, threads: int | None = 2, while_reading=None
    ) -> None:
        self.trainer = make_trainer(
            mlp(784, [128], 10, seed=0),
            X,
            y,
            batch_size=b,
            epochs=1,
            lr=0.05,
            shuffle=shuffle,
            verbose=0,
            seed=0,
            threads=threads,  # None: measured, as fit does
        )
        self.trainer.epochs = 0
        self.while_reading = while_reading

    def epoch(self, e: int) -> None:
        self.trainer.epochs += EPOCHS_PER_TIMING
        if self.while_reading is not None:  # as ThreadChoice holds it in a streamed run
            self.trainer.threads_while_reading = self.while_reading
        self.trainer.run()


def part_a(folder: Path, rounds: int) -> dict:
    X, y, _, _ = mnist_shaped(60000)
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", y)
    on_disk = data.open_source(folder / "X.npy", y=folder / "y.npy")
    read = data.open_source(folder / "X.npy", y=folder / "y.npy")
    read.X.map_rows = False
    out = {}
    for b in (64, 1024):
        impls = {
            "memory (rows)": Epochs(X, y, b, "rows"),
            "disk (rows)": Epochs(on_disk, None, b, "rows"),
            "disk (blocks)": Epochs(on_disk, None, b, "blocks"),
            "disk (blocks), read into buffers": Epochs(read, None, b, "blocks"),
            "read, 1 thread while reading": Epochs(read, None, b, "blocks", 2, 1),
            "memory (rows), threads chosen": Epochs(X, y, b, "rows", None),
            "disk (blocks), threads chosen": Epochs(on_disk, None, b, "blocks", None),
        }
        timings = interleaved(list(impls.values()), rounds, 1.0)
        per_epoch = [[t / EPOCHS_PER_TIMING for t in ts] for ts in timings]
        runs = dict(zip(impls, per_epoch, strict=True))
        base = runs["memory (rows)"]
        chosen = runs["disk (blocks), threads chosen"]
        versus_chosen = paired_ratios(chosen, runs["memory (rows), threads chosen"])
        out[b] = {
            name: {
                "median_s": statistics.median(r),
                "ratio_to_memory": statistics.median(paired_ratios(r, base)),
                "runs": r,
            }
            for name, r in runs.items()
        }
        out[b]["chosen_ratio_to_memory_chosen"] = statistics.median(versus_chosen)
        out[b]["threads_chosen"] = {
            name: impls[name].trainer.threads for name in runs if name.endswith("chosen")
        }
        streamed = impls["disk (blocks)"].trainer.batches.rows.stats
        epochs_run = EPOCHS_PER_TIMING * (rounds + 1)  # with the discarded warm-up
        out[b]["wait_share_blocks"] = streamed.wait_seconds / (
            statistics.mean(runs["disk (blocks)"]) * epochs_run
        )
        print(
            f"(a) B={b}: "
            + ", ".join(
                f"{k} {v['median_s']:.3f}s x{v['ratio_to_memory']:.3f}"
                for k, v in out[b].items()
                if isinstance(v, dict) and "median_s" in v
            ),
            flush=True,
        )
    return out


def write_big(path: Path, gb: float) -> int:
    """A .npy of MNIST-shaped rows, about ``gb`` GB, written 60000 rows at a time."""
    X, _, _, _ = mnist_shaped(60000)
    rows = int(gb * 1e9 // ROW)
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, 784)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for lo in range(0, rows, 60000):
            f.write(X[: min(60000, rows - lo)].tobytes())
    np.save(path.with_name("y_big.npy"), (np.arange(rows) % 10).astype(np.int8))
    return rows


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


BIG_EPOCH = """
import json, sys, time
from minigd import data
from minigd.nn import mlp
from minigd.training import make_trainer
d = data.open_source(sys.argv[1], y=sys.argv[2])
b = int(sys.argv[3])
trainer = make_trainer(mlp(784, [128], 10, seed=0), d, batch_size=b, epochs=1, lr=0.05, verbose=0)
start = time.perf_counter()
history = trainer.run()
seconds = time.perf_counter() - start
stats = trainer.batches.rows.stats
direct = d.X.direct
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"batch_size": b, "rows": len(d), "epoch_s": seconds,
    "bytes_read": stats.bytes_read, "wait_s": stats.wait_seconds, "read_s": stats.read_seconds,
    "loss": history.epochs[-1]["loss"], "peak_rss_mb": hwm / 1024,
    "pipeline_mb": trainer.batches.pipeline_bytes / 2**20, "o_direct": direct}))
"""


def part_b(path: Path, gb: float, batch_sizes: list[int]) -> dict:
    start = time.perf_counter()
    rows = write_big(path, gb)
    written = time.perf_counter() - start
    print(f"(b) wrote {rows:,} rows ({rows * ROW / 1e9:.1f} GB) in {written:.0f}s", flush=True)
    out = {"rows": rows, "gb": rows * ROW / 1e9, "write_s": written, "epochs": []}
    for b in batch_sizes:
        out["cache_dropped"] = drop_caches()
        done = subprocess.run(
            [sys.executable, "-c", BIG_EPOCH, str(path), str(path.with_name("y_big.npy")), str(b)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(done.stdout)
        r["mb_per_s"] = r["bytes_read"] / r["epoch_s"] / 1e6
        r["wait_share"] = r["wait_s"] / r["epoch_s"]
        out["epochs"].append(r)
        print(
            f"(b) B={b}: epoch {r['epoch_s']:.0f}s, {r['mb_per_s']:.0f} MB/s, waited "
            f"{r['wait_share']:.0%}, peak RSS {r['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    return out


SHARE_EPOCH = """
import json, sys, time
from minigd import data
from minigd.distributed import launched_under_mpi, world
from minigd.nn import mlp
from minigd.training import make_trainer
d = data.open_source(sys.argv[1], y=sys.argv[2])
d.X.direct = True  # read past the page cache, as a file larger than it is
comm = world() if launched_under_mpi() else None
trainer = make_trainer(mlp(784, [128], 10, seed=0), d, batch_size=1024, epochs=1, lr=0.05,
                       verbose=0, comm=comm, threads=int(sys.argv[3]), shuffle="blocks")
start = time.perf_counter()
history = trainer.run()
seconds = time.perf_counter() - start
stats = trainer.batches.rows.stats
if comm is None or comm.Get_rank() == 0:
    print(json.dumps({"epoch_s": seconds, "wait_s": stats.wait_seconds,
        "bytes_per_rank": history.meta.get("bytes_read_per_rank", [stats.bytes_read]),
        "o_direct": d.X.direct, "loss": history.epochs[-1]["loss"]}))
"""


def part_e(path: Path, gb: float) -> dict:
    rows = write_big(path, gb)
    y = str(path.with_name("y_big.npy"))
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    runs = {
        "1 process x 1 thread": [sys.executable, "-c", SHARE_EPOCH, str(path), y, "1"],
        "1 process x 2 threads": [sys.executable, "-c", SHARE_EPOCH, str(path), y, "2"],
        "2 ranks x 1 thread": [mpiexec, "-n", "2", sys.executable, "-c", SHARE_EPOCH, str(path),
                               y, "1"],
    }  # fmt: skip
    out = {"rows": rows, "gb": rows * ROW / 1e9, "runs": {}}
    for name, command in runs.items():
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        r["wait_share"] = r["wait_s"] / r["epoch_s"]
        out["runs"][name] = r
        per_rank = ", ".join(f"{b / 1e9:.2f}" for b in r["bytes_per_rank"])
        print(f"(e) {name}: epoch {r['epoch_s']:.1f} s, GB read per rank {per_rank}, "
              f"waited {r['wait_share']:.0%}", flush=True)  # fmt: skip
    return out


def part_c(path: Path, seconds: float) -> dict:
    source = data.NpySource(path)
    rng = np.random.default_rng(0)
    out = {}
    for kind in ("rows", "blocks"):
        drop_caches()
        rows = 0
        buf = np.empty((1024 if kind == "rows" else source.block_rows, 784), np.float32)
        end = time.perf_counter() + seconds
        start = time.perf_counter()
        while time.perf_counter() < end:
            if kind == "rows":
                index = np.sort(rng.choice(source.n_rows, 1024, replace=False))
                source.read_rows(index, buf)
                rows += 1024
            else:
                lo = int(rng.integers(0, source.n_rows - len(buf)))
                source.read_range(lo, lo + len(buf), buf)
                rows += len(buf)
        took = time.perf_counter() - start
        out[kind] = {"rows_per_s": rows / took, "mb_per_s": rows * ROW / took / 1e6}
        print(
            f"(c) random {kind}: {out[kind]['mb_per_s']:.1f} MB/s, "
            f"{out[kind]['rows_per_s']:,.0f} rows/s",
            flush=True,
        )
    return out


PASS = """
import sys, numpy as np
from minigd.data import NpySource
path, how = sys.argv[1], sys.argv[2]
n = NpySource(path).n_rows
order = np.random.default_rng(0).permutation(n)
buf = np.empty((1024, 784), np.float32)
if how == "mmap":
    X = np.load(path, mmap_mode="r")
    for lo in range(0, n, 1024):
        np.take(X, np.sort(order[lo:lo + 1024]), axis=0, out=buf[: min(1024, n - lo)])
else:
    s = NpySource(path)
    for lo in range(0, n, 1024):
        idx = np.sort(order[lo:lo + 1024])
        s.read_rows(idx, buf[: len(idx)])
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024)
"""


def part_d(folder: Path) -> dict:
    X, _, _, _ = mnist_shaped(60000)
    path = folder / "two_gb.npy"
    rows = 640_000
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (rows, 784)}
        )
        for lo in range(0, rows, 60000):
            f.write(X[: min(60000, rows - lo)].tobytes())
    out = {}
    for how in ("mmap", "reads"):
        done = subprocess.run(
            [sys.executable, "-c", PASS, str(path), how], capture_output=True, text=True, check=True
        )
        out[how] = float(done.stdout)
        print(f"(d) {how}: peak RSS {out[how]:.0f} MB over one pass of a 2.0 GB file", flush=True)
    path.unlink()
    return out


STEPS_RSS = """
import json, math, sys, time
import numpy as np
from minigd.nn import mlp
from minigd.training import Callback, Checkpoint, fit

folder, steps, where = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def status():
    fields = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


class Probe(Callback):
    def __init__(self):
        self.marks = {10**k for k in range(3, 10)} | {steps}
        self.seen, self.start = [], time.perf_counter()

    def on_step_end(self, trainer, loss):
        if trainer.step in self.marks:
            seconds = time.perf_counter() - self.start
            self.seen.append({"step": trainer.step, "s": seconds, **status()})


rng = np.random.default_rng(0)
X = rng.standard_normal((10000, 4))
y = (X[:, 0] > 0).astype(int)
probe = Probe()
callbacks = [probe]
if where == "disk":
    callbacks.append(Checkpoint(folder, every_seconds=60, every_epoch=False))
fit(mlp(4, [4], 2, seed=0), X, y, batch_size=1, epochs=math.ceil(steps / 10000), verbose=0,
    threads=1, callbacks=callbacks)
print(json.dumps(probe.seen))
"""


DECLARED = """
import json, sys, tempfile, time
from minigd.data import open_source
from minigd.nn import mlp
from minigd.training import Callback, Checkpoint, fit

def kib(field):
    status = open("/proc/self/status").read()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(field)))

class Clock(Callback):
    def on_train_begin(self, trainer):
        self.start, self.rss = time.perf_counter(), kib("VmRSS")

    def on_step_end(self, trainer, loss):
        if time.perf_counter() - self.start > float(sys.argv[3]):
            trainer.stop_training = True

source = open_source(sys.argv[1], y=sys.argv[2])
clock = Clock()
with tempfile.TemporaryDirectory() as folder:  # checkpoints, as a run folder has them
    checkpoints = Checkpoint(folder, every_seconds=60, every_epoch=False)
    history = fit(mlp(4, [4], 2, seed=0), source.X, source.y, batch_size=64, epochs=10**6,
                  verbose=0, threads=1, callbacks=[clock, checkpoints])
print(json.dumps({"start_mb": clock.rss / 1024, "peak_mb": kib("VmHWM") / 1024,
                  "steps": history.n_steps, "seconds": time.perf_counter() - clock.start}))
"""


def sparse_npy(path: Path, shape: tuple, dtype) -> int:
    """A .npy declaring ``shape`` whose data are a hole in the file: no disk, zeros."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
        )
        start = f.tell()
        f.truncate(start + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return start


def part_g(folder: Path, seconds: float) -> dict:
    out = {}
    for rows in (10**7, 10**8, 10**9):
        x, y = folder / f"declared_x{rows}.npy", folder / f"declared_y{rows}.npy"
        sparse_npy(x, (rows, 4), np.float32)
        start = sparse_npy(y, (rows,), np.uint8)
        with open(y, "r+b") as f:  # a second class, here and there
            for i in range(0, rows, rows // 1000):
                f.seek(start + i)
                f.write(b"\x01")
        done = subprocess.run(
            [sys.executable, "-c", DECLARED, str(x), str(y), str(seconds)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        out[rows] = json.loads(done.stdout)
        print(f"(g) {rows:.0e} rows: {out[rows]}", flush=True)
        x.unlink()
        y.unlink()
    return out


def part_f(folder: Path, steps: int) -> dict:
    out = {}
    for where in ("disk", "memory"):
        done = subprocess.run(
            [sys.executable, "-c", STEPS_RSS, str(folder / "checkpoints"), str(steps), where],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        out[where] = json.loads(done.stdout)
        print(f"(f) {where}: {out[where][-1]}", flush=True)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    return out


def markdown(results: dict) -> str:
    lines = ["# bench_streaming", "", f"machine: {results['machine']}", ""]
    if "a" in results:
        lines += [
            "## (a) page cache: streamed vs in memory, epoch seconds (median)",
            "",
            "| B | memory (rows) | disk (rows) | disk (blocks, mapped) | disk (blocks), read into "
            "buffers | read, 1 thread while reading | wait share (blocks) |",
            "|---|---|---|---|---|---|---|",
        ]
        for b, r in results["a"].items():
            names = ["memory (rows)", "disk (rows)", "disk (blocks)"]
            names += ["disk (blocks), read into buffers", "read, 1 thread while reading"]
            cells = [
                f"{r[k]['median_s']:.3f} (x{r[k]['ratio_to_memory']:.3f})" if k in r else "-"
                for k in names
            ]
            lines.append(f"| {b} | {' | '.join(cells)} | {r['wait_share_blocks']:.1%} |")
        lines += [
            "",
            "Threads chosen as `fit` chooses them (ratios to memory at 2 threads; last: streamed",
            "to memory, both chosen), the counts they ended at:",
            "",
            "| B | memory (rows), chosen | disk (blocks), chosen | disk / memory, both chosen |",
            "|---|---|---|---|",
        ]
        for b, r in results["a"].items():
            if "chosen_ratio_to_memory_chosen" not in r:
                continue
            cells = [
                f"{r[k]['median_s']:.3f} (x{r[k]['ratio_to_memory']:.3f}, "
                f"{r['threads_chosen'][k]} thr)"
                for k in ("memory (rows), threads chosen", "disk (blocks), threads chosen")
            ]
            both = r["chosen_ratio_to_memory_chosen"]
            lines.append(f"| {b} | {' | '.join(cells)} | x{both:.3f} |")
    if "b" in results:
        b = results["b"]
        lines += [
            "",
            f"## (b) larger than RAM: {b['rows']:,} rows, {b['gb']:.1f} GB, one epoch",
            "",
            "| B | epoch s | MB/s read | waited on I/O | peak RSS MB | pipeline MB |",
            "|---|---|---|---|---|---|",
        ]
        for r in b["epochs"]:
            lines.append(
                f"| {r['batch_size']} | {r['epoch_s']:.0f} | {r['mb_per_s']:.0f} | "
                f"{r['wait_share']:.0%} | {r['peak_rss_mb']:.0f} | {r['pipeline_mb']:.0f} |"
            )
    if "b_page_cache" in results:
        lines += ["", "### (b) the same epoch read through the page cache (before O_DIRECT)", ""]
        for r in results["b_page_cache"]["epochs"]:
            lines.append(
                f"- B={r['batch_size']}: epoch {r['epoch_s']:.0f} s, {r['mb_per_s']:.0f} MB/s, "
                f"waited {r['wait_share']:.0%}, peak RSS {r['peak_rss_mb']:.0f} MB"
            )
    if "c" in results:
        lines += [
            "",
            "## (c) random reads from disk",
            "",
            "| read | MB/s | rows/s |",
            "|---|---|---|",
        ]
        for k, r in results["c"].items():
            lines.append(f"| {k} | {r['mb_per_s']:.1f} | {r['rows_per_s']:,.0f} |")
    if "d" in results:
        d = results["d"]
        lines += [
            "",
            "## (d) one shuffled pass over a 2.0 GB file, peak RSS",
            "",
            f"memory map {d['mmap']:.0f} MB, positioned reads {d['reads']:.0f} MB",
        ]
    if "e" in results:
        e = results["e"]
        lines += [
            "",
            f"## (e) each rank reads its share: {e['rows']:,} rows, {e['gb']:.1f} GB, O_DIRECT, "
            "one epoch, B=1024, block shuffle",
            "",
            "| run | epoch s | GB read, per rank | waited on reads (rank 0) |",
            "|---|---|---|---|",
        ]
        for name, r in e["runs"].items():
            per_rank = ", ".join(f"{b / 1e9:.2f}" for b in r["bytes_per_rank"])
            lines.append(f"| {name} | {r['epoch_s']:.1f} | {per_rank} | {r['wait_share']:.0%} |")
    if "f" in results:
        f = results["f"]
        lines += [
            "",
            "## (f) memory over steps (MLP 4-4-2, B=1), RSS / peak RSS in MB",
            "",
            "| steps | History kept on disk (with checkpoints) | all in memory | seconds (disk) |",
            "|---|---|---|---|",
        ]
        memory = {r["step"]: r for r in f["memory"]}
        for r in f["disk"]:
            m = memory.get(r["step"])
            held = "-" if m is None else f"{m['VmRSS']:.0f} / {m['VmHWM']:.0f}"
            lines.append(
                f"| {r['step']:,} | {r['VmRSS']:.0f} / {r['VmHWM']:.0f} | {held} | {r['s']:.0f} |"
            )
    if "g" in results:
        lines += [
            "",
            "## (g) memory over rows: sparse files of 4 float32 features, B=64, block shuffle",
            "",
            "| declared rows | RSS at start MB | peak RSS MB | steps | seconds |",
            "|---|---|---|---|---|",
        ]
        for rows, r in results["g"].items():
            lines.append(
                f"| {int(rows):,} | {r['start_mb']:.0f} | {r['peak_mb']:.0f} | "
                f"{r['steps']:,} | {r['seconds']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="a,b,c,d")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--big-gb", type=float, default=30.0)
    parser.add_argument("--big-batch-sizes", default="1024,64")
    parser.add_argument("--share-gb", type=float, default=4.0)
    parser.add_argument("--scratch", default="/work/bench-scratch")
    parser.add_argument("--steps", type=int, default=10_000_000)
    parser.add_argument("--declared-seconds", type=float, default=600.0)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine() | {"blas": set_threads(2, with_torch=False)}}
    try:
        if "a" in parts:
            results["a"] = part_a(scratch, args.rounds)
        big = scratch / "x_big.npy"
        if "b" in parts:
            sizes = [int(b) for b in args.big_batch_sizes.split(",")]
            results["b"] = part_b(big, args.big_gb, sizes)
        if "c" in parts and big.exists():
            results["c"] = part_c(big, 20.0)
        if "d" in parts:
            results["d"] = part_d(scratch)
        if "e" in parts:
            results["e"] = part_e(scratch / "x_share.npy", args.share_gb)
        if "f" in parts:
            results["f"] = part_f(scratch, args.steps)
        if "g" in parts:
            results["g"] = part_g(scratch, args.declared_seconds)
    finally:
        for f in scratch.glob("*.npy"):
            f.unlink()
    earlier = RESULTS / f"{time.strftime('%Y-%m-%d')}-bench_streaming.json"
    if earlier.exists():  # parts run separately today land in one file
        results = json.loads(earlier.read_text()) | results
    paths = write_results("bench_streaming", results, markdown(results))
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
