"""Seconds per epoch of MiniBatches alone, both layouts, against the epoch time of training.

    python benchmarks/bench_batching.py

X is the note's (784, 60000) for ``sample_axis=1`` and its transpose for ``sample_axis=0``. The
layout is converted once, when MiniBatches is built (timed separately); an epoch then gathers whole
rows. For contrast, the course-style column gather ``X[:, perm[i:i + B]]`` on the (784, m) array is
timed too. Training is the minigd loop (SGD, MLP 784-128-10) on the same data, interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, mnist_shaped, set_threads, write_results
from minigd import MiniBatches
from minigd.nn import mlp
from minigd.optim import SGD


def epoch_of(batches: MiniBatches, e: int) -> float:
    start = time.perf_counter()
    for _ in batches.epoch(e):
        pass
    return time.perf_counter() - start


def column_gather_epoch(XT: np.ndarray, batch: int, e: int) -> float:
    perm = np.random.default_rng((0, e)).permutation(XT.shape[1])
    start = time.perf_counter()
    for i in range(0, len(perm), batch):
        XT[:, perm[i : i + batch]]
    return time.perf_counter() - start


def train_epoch(model, opt, batches: MiniBatches, e: int) -> float:
    start = time.perf_counter()
    for xb, yb in batches.epoch(e):
        model.loss_and_grad(xb, yb)
        opt.step(model.params, model.grads)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-sizes", default="32,64,128,256,512,1024")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    X, y, _, _ = mnist_shaped()
    XT = np.ascontiguousarray(X.T)  # the note's layout, (784, 60000)
    start = time.perf_counter()
    MiniBatches(XT, y, batch_size=64, sample_axis=1)
    conversion = time.perf_counter() - start
    rows = []
    for b in map(int, args.batch_sizes.split(",")):
        by_rows = MiniBatches(X, y, batch_size=b)
        by_cols = MiniBatches(XT, y, batch_size=b, sample_axis=1)
        model, opt = mlp(784, [128], 10), SGD(0.1)
        prepared = MiniBatches(*model.prepare(X, y), batch_size=b)
        times = {"rows": [], "columns": [], "course": [], "train": []}
        train_epoch(model, opt, prepared, 0)
        for r in range(1, args.rounds + 1):
            times["rows"].append(epoch_of(by_rows, r))
            times["columns"].append(epoch_of(by_cols, r))
            times["course"].append(column_gather_epoch(XT, b, r))
            times["train"].append(train_epoch(model, opt, prepared, r))
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"batch_size": b, **med, "share_of_training": med["rows"] / med["train"]})
        print(
            f"B={b}: MiniBatches {med['rows']:.4f}s (rows), {med['columns']:.4f}s (columns), "
            f"course-style {med['course']:.3f}s; training {med['train']:.3f}s; "
            f"share {100 * med['rows'] / med['train']:.1f}%",
            flush=True,
        )
    lines = [
        f"# MiniBatches benchmark, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"60000 x 784 float32, {args.threads} threads, medians of {args.rounds} epochs. The "
        f"(784, 60000) layout is converted once when MiniBatches is built: {conversion:.3f} s.",
        "",
        "| batch | MiniBatches, rows (s) | MiniBatches, sample_axis=1 (s) | course-style "
        "X[:, perm] (s) | training epoch (s) | MiniBatches share |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch_size']} | {r['rows']:.4f} | {r['columns']:.4f} | "
            f"{r['course']:.3f} | {r['train']:.3f} | {100 * r['share_of_training']:.1f}% |"
        )
    lines += ["", "Reproduce: `python benchmarks/bench_batching.py`", ""]
    data = {"machine": machine(), "conversion_seconds": conversion, "rows": rows}
    json_path, md_path = write_results("bench_batching", data, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
