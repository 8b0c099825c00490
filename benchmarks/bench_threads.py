"""BLAS threads chosen by measurement against every fixed count, quiet and busy.

The question behind the default: training with no ``threads`` given (minigd measures 1 thread
against the usable cores on its own steps and keeps the faster, ``training.thread_choice``), how
far is it from the best fixed thread count found in hindsight, on a quiet machine, beside a second
training process (with its own default threads), and beside a plain Python busy loop?

Method: mnist-5k (4000 x 784), MLP 784-128-10, SGD, at B=64 and B=256, each run a fresh
``fit`` of a few epochs. Rounds interleave the three settings (default, 1, 2) in a shuffled
order, so a neighbour that varies slows all of them alike; training seconds (``elapsed``), medians
over rounds. Goal: the default within 1.3x of the best fixed count in every condition.

Usage: ``python benchmarks/bench_threads.py --rounds 5``. Writes results/<date>-bench_threads.*
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np

from common import machine, write_results
from minigd import datasets
from minigd._threads import other_load
from minigd.nn import mlp
from minigd.training import make_trainer

COMPETITORS = {
    "quiet": None,
    "a second training": """
from minigd import datasets, fit
from minigd.nn import mlp
train, _ = datasets.load("mnist-5k")
while True:
    fit(mlp(784, [128], 10), train.X, train.y, batch_size=64, epochs=1, lr=0.1, verbose=0)
""",
    "a busy loop": "while True:\n    pass\n",
}
SETTINGS = {"default (measured)": None, "1 thread": 1, "2 threads": 2}


def seconds(data, batch_size: int, threads, epochs: int) -> tuple[float, list]:
    """Training seconds of a fresh fit, and the thread decisions it made."""
    X, y = data
    trainer = make_trainer(mlp(784, [128], 10), X, y, batch_size=batch_size, epochs=epochs,
                           lr=0.1, verbose=0, threads=threads)  # fmt: skip
    history = trainer.run()
    return trainer.elapsed(), history.meta.get("thread_checks", [])


def condition(data, batch_size: int, rounds: int, epochs: int) -> dict:
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    choices: list[int] = []
    order = np.random.default_rng(batch_size)
    for _ in range(rounds):
        names = list(SETTINGS)
        order.shuffle(names)
        for name in names:
            took, checks = seconds(data, batch_size, SETTINGS[name], epochs)
            times[name].append(took)
            if SETTINGS[name] is None:
                choices.append(checks[-1]["threads"] if checks else 0)
    medians = {name: statistics.median(t) for name, t in times.items()}
    best = min(medians[n] for n in SETTINGS if SETTINGS[n] is not None)
    return {"seconds": times, "medians": medians, "default_over_best": medians[
        "default (measured)"] / best, "final_choices": choices}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    train, _ = datasets.load("mnist-5k")
    data = (train.X, train.y)
    seconds(data, 64, 1, 1)  # warm-up: buffers, compiled kernels
    results: dict = {"machine": machine(), "conditions": {}}
    for name, script in COMPETITORS.items():
        competitor = None if script is None else subprocess.Popen([sys.executable, "-c", script])
        try:
            time.sleep(0 if competitor is None else 3.0)  # the competitor is up and busy
            part = {"other_load": other_load(0.5)}
            for b in (64, 256):
                part[b] = condition(data, b, args.rounds, args.epochs)
                print(f"  {name}, B={b}: {part[b]['medians']}", flush=True)
            results["conditions"][name] = part
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
    text = report(results, args)
    print(text)
    write_results("bench_threads", results, text)
    return 0


def report(results: dict, args) -> str:
    lines = [
        "# BLAS threads: measured (the default) against every fixed count",
        "",
        f"mnist-5k, MLP 784-128-10, SGD, {args.epochs} epochs per run; {args.rounds} "
        "interleaved rounds; training seconds, medians.",
        "",
        "| condition (others' load) | B | default (measured) | 1 thread | 2 threads | "
        "default / best | default's final choice per round |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, part in results["conditions"].items():
        load = "?" if part["other_load"] is None else f"{part['other_load']:.2f}"
        for b in (64, 256):
            m = part[b]["medians"]
            lines.append(
                f"| {name} ({load} cores) | {b} | {m['default (measured)']:.3f} | "
                f"{m['1 thread']:.3f} | {m['2 threads']:.3f} | "
                f"{part[b]['default_over_best']:.2f} | {part[b]['final_choices']} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
