"""What the benchmarks share: the MNIST-shaped data, thread settings, timing and result files.

The training set is the note's X = (784, 60000), made deterministically from the real
5000-sample MNIST subset (mnist-5k): each of 60000 rows is one of its 4000 training images shifted
by 1 or 2 pixels along each axis (zero fill). The 1000 real test images stay untouched as the test
set.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
FLOP_PER_SAMPLE = 409_088  # one step of 784-128-10: 2*(784*128 + 128*10) forward, twice back


def mnist_shaped(m: int = 60000, seed: int = 0):
    """(X_train (m, 784) float32, y_train, X_test (1000, 784), y_test) from mnist-5k."""
    from minigd import datasets

    train, test = datasets.load("mnist-5k")
    rng = np.random.default_rng(seed)
    source = rng.integers(0, len(train.X), m)
    shifts = rng.choice(np.array([-2, -1, 1, 2]), size=(m, 2))
    images = train.X.reshape(-1, 28, 28)
    X = np.zeros((m, 28, 28), dtype=np.float32)
    for dy, dx in {tuple(s) for s in shifts.tolist()}:
        rows = np.flatnonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
        shifted = np.roll(images[source[rows]], (dy, dx), axis=(1, 2))
        # zero the pixels that rolled around the edge
        if dy > 0:
            shifted[:, :dy] = 0
        elif dy < 0:
            shifted[:, dy:] = 0
        if dx > 0:
            shifted[:, :, :dx] = 0
        elif dx < 0:
            shifted[:, :, dx:] = 0
        X[rows] = shifted
    return X.reshape(m, 784), train.y[source].astype(np.int64), test.X, test.y.astype(np.int64)


def set_threads(n: int, with_torch: bool = True) -> dict:
    """The same thread count for NumPy's BLAS and PyTorch; returns what NumPy's BLAS is."""
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(n)
    if with_torch:
        try:
            import torch

            torch.set_num_threads(n)
        except ImportError:
            pass
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    return blas[0] if blas else {}


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(
                ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    for module in ("torch", "sklearn"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    return info


def summary(seconds: list[float]) -> dict:
    return {
        "median": statistics.median(seconds),
        "min": min(seconds),
        "max": max(seconds),
        "runs": seconds,
    }


def interleaved(impls, rounds: int, pause: float, after_round=None) -> list[list[float]]:
    """Epoch seconds of each implementation (anything with ``epoch(e)``) over ``rounds`` rounds
    in which each runs one epoch in turn, after one discarded warm-up epoch each.

    Each timed epoch starts after ``pause`` seconds of idle: torch's OpenMP and OpenBLAS threads
    spin for a while after their work ends, and without the pause the implementation that ran
    next lost up to 20% to them. ``after_round()`` runs after every round (a measurement that
    should see the same drift as the epochs)."""
    for impl in impls:
        impl.epoch(0)
    runs: list[list[float]] = [[] for _ in impls]
    for r in range(rounds):
        for impl, out in zip(impls, runs, strict=True):
            time.sleep(pause)
            start = time.perf_counter()
            impl.epoch(r + 1)
            out.append(time.perf_counter() - start)
        if after_round is not None:
            after_round()
    return runs


def paired_ratios(a: list[float], b: list[float]) -> list[float]:
    """a[r] / b[r] for each round r: on a machine whose speed drifts, the two epochs of a round
    ran within seconds of each other, so the drift mostly cancels in their ratio."""
    return [x / y for x, y in zip(a, b, strict=True)]


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM belongs to the address space, so a fresh
    interpreter starts from zero; ru_maxrss would carry over the forking parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_results(name: str, data: dict, markdown: str) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d")
    json_path = RESULTS / f"{stamp}-{name}.json"
    md_path = RESULTS / f"{stamp}-{name}.md"
    json_path.write_text(json.dumps(data, indent=2, default=float))
    md_path.write_text(markdown)
    return json_path, md_path
