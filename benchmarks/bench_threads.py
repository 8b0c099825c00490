"""BLAS threads on a busy machine: training with 2 threads vs 1 while a second training runs.

The question behind ``--threads``: with one other busy process on this 2-core machine, how fast
does minigd train with OpenBLAS's default of one thread per core, and with one thread? And what
does the throughput finder conclude in each case?

Method: mnist-5k (4000 x 784), MLP 784-128-10, SGD, B=64. Rounds alternate the thread counts
(epoch with 2 threads, epoch with 1), first on a quiet machine, then with a competitor: a second
process training the same model in a loop with its own default threads (what a user running two
trainings at once does). Reports samples/s medians and the paired ratio per round, plus the
finder's table and knee under contention for each thread count.

Usage: ``python benchmarks/bench_threads.py --rounds 5``. Writes results/<date>-bench_threads.*
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np

from common import machine, set_threads, write_results
from minigd import datasets
from minigd._threads import blas_threads, other_load
from minigd.batchsize import find_batch_size
from minigd.nn import mlp
from minigd.training import make_trainer

COMPETITOR = """
import numpy as np
from minigd import datasets, fit
from minigd.nn import mlp
train, _ = datasets.load("mnist-5k")
while True:
    fit(mlp(784, [128], 10), train.X, train.y, batch_size=64, epochs=1, lr=0.1, verbose=0)
"""


def epoch_rate(trainer, threads: int) -> float:
    """Samples per second of one more epoch at ``threads`` BLAS threads."""
    trainer.threads = threads
    trainer.epochs += 1
    start = time.perf_counter()
    trainer.run()
    return trainer.batches.samples_per_epoch / (time.perf_counter() - start)


def rounds_of(trainer, rounds: int) -> dict[int, list[float]]:
    rates: dict[int, list[float]] = {2: [], 1: []}
    for _ in range(rounds):
        for threads in (2, 1):
            rates[threads].append(epoch_rate(trainer, threads))
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    set_threads(2, with_torch=False)
    train, _ = datasets.load("mnist-5k")
    trainer = make_trainer(
        mlp(784, [128], 10), train.X, train.y, batch_size=64, epochs=1, lr=0.1, verbose=0
    )
    trainer.run()  # warm-up: buffers, compiled kernels
    results = {"machine": machine(), "quiet": rounds_of(trainer, args.rounds)}
    results["quiet_other_load"] = other_load(0.5)
    competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR])
    try:
        time.sleep(3.0)  # the competitor is loaded and training
        results["busy_other_load"] = other_load(0.5)
        results["busy"] = rounds_of(trainer, args.rounds)
        finder = {}
        for threads in (2, 1):
            with blas_threads(threads):
                r = find_batch_size(
                    mlp(784, [128], 10), train.X, train.y, candidates=(16, 32, 64, 128, 256, 512),
                    progress=False,
                )  # fmt: skip
            finder[threads] = {
                "knee": r.knee,
                "busy": r.busy,
                "rows": {row.batch_size: row.samples_per_second for row in r.rows},
            }
        results["finder_busy"] = finder
    finally:
        competitor.kill()
        competitor.wait()
    md = report(results, args.rounds)
    print(md)
    write_results("bench_threads", results, md)
    return 0


def report(results: dict, rounds: int) -> str:
    lines = [
        "# BLAS threads on a busy machine",
        "",
        f"mnist-5k, MLP 784-128-10, SGD, B=64; {rounds} interleaved rounds; samples/s medians.",
        f"Other processes' load: quiet {results['quiet_other_load']:.2f} cores, with the "
        f"competitor {results['busy_other_load']:.2f} cores.",
        "",
        "| machine | 2 threads | 1 thread | 1 thread / 2 threads (median of paired rounds) |",
        "|---|---|---|---|",
    ]
    for name in ("quiet", "busy"):
        r = results[name]
        pairs = [a / b for a, b in zip(r[1], r[2], strict=True)]
        lines.append(
            f"| {name} | {statistics.median(r[2]):,.0f} | {statistics.median(r[1]):,.0f} | "
            f"{statistics.median(pairs):.2f} (min {min(pairs):.2f}, max {max(pairs):.2f}) |"
        )
    lines += ["", "Finder under contention (samples/s per batch size, knee):", ""]
    for threads, f in results["finder_busy"].items():
        rows = ", ".join(f"{b}: {v:,.0f}" for b, v in f["rows"].items())
        lines.append(f"- {threads} thread(s): knee {f['knee']}; {rows}; busy {f['busy']:.2f}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
