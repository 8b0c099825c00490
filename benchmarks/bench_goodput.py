"""Time to target: the goodput-driven adaptive batch against every fixed (B, lr) on a grid.

The question the adaptive batch answers: trained once, from a base learning rate at B0 = 32 and
no sweep, how long does it take to reach a demanding validation target, against the best fixed
(batch size, learning rate) found in hindsight on a grid, the grid's median, the advisor's static
choice, and the old doubling rule (double the batch when B_simple passes 2B, lr constant)?

Seconds are training seconds to the first validation evaluation at the target (evaluations are
excluded, ``Trainer.exclude``; the adaptive run's seed pass and noise measurements are training
time). Rounds are interleaved: each seed runs every configuration in a shuffled order, so a
machine that slows down slows all of them. A configuration that misses the target within the
epoch budget counts as infinitely slow for the medians.

Parts: ``grid`` (the table per problem, then its best in hindsight, adaptive and adaptive at
the best rate for B0 again on ``--fresh`` new seeds: the best of ~24 noisy medians is partly
the luckiest), ``overhead`` (a step with the noise measured every 8th step against a plain
step, at B = 32, 256, 1024, and the policy held at B with SGD and with Adam), ``busy`` (the
adaptive run and a fixed one beside a competing training process, against their quiet times
before and after).

Usage: ``python benchmarks/bench_goodput.py --seeds 3 [--problems mnist5k-sgd,...]``.
Writes results/<date>-bench_goodput.* (without the grid: results/<date>-bench_goodput-<parts>.*)
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from common import machine, mnist_shaped, write_results
from minigd import datasets
from minigd.batchsize import advise
from minigd.batchsize.closed_form import IsotropicLeastSquares
from minigd.experiments.metrics import Target, TargetTracker
from minigd.nn import mlp
from minigd.nn.models import linear_regression
from minigd.noise import ExampleNoise
from minigd.training import make_trainer
from minigd.training.adaptive import AdaptiveBatchSize
from minigd.training.goodput import GoodputBatchSize

SIZES = (32, 64, 128, 256, 512, 1024)
B0 = 32


@dataclass
class Problem:
    name: str
    data: tuple  # X, y, X_val, y_val
    model: object  # seed -> a fresh model
    optimizer: str
    base_lr: float  # the lr given for B0
    rates: tuple[float, ...]  # the grid's rates
    target: Target
    epochs: int
    notes: list[str] = field(default_factory=list)


def problems() -> dict[str, Problem]:
    train, test = datasets.load("mnist-5k")
    small = (train.X, train.y, test.X, test.y)
    ls = IsotropicLeastSquares(d=256, sigma=1.0)
    X, y = ls.data(65536, seed=0, dtype=np.float32)
    squares = (X, y, *ls.data(8192, seed=1, dtype=np.float32))
    sgd_rates, adam_rates = (0.03, 0.1, 0.3, 1.0), (3e-4, 1e-3, 3e-3)
    accuracy = Target("val_accuracy", 0.93)
    listed = [
        Problem("mnist5k-sgd", small, _mlp, "sgd", 0.1, sgd_rates, accuracy, 40),
        Problem("mnist5k-adam", small, _mlp, "adam", 1e-3, adam_rates, accuracy, 40),
        Problem("least-squares", squares, _linear, "sgd", 0.003, (0.001, 0.003, 0.01, 0.03),
                Target("val_loss", 1.01), 30),
    ]  # fmt: skip
    by_name = {p.name: p for p in listed}
    by_name["mnist60k-sgd"] = Problem("mnist60k-sgd", None, _mlp, "sgd", 0.1, sgd_rates,
                                      Target("val_accuracy", 0.95), 8)  # fmt: skip
    return by_name


def _mlp(seed: int):
    return mlp(784, [128], 10, seed=seed)


def _linear(seed: int):
    return linear_regression(256, seed=seed)


def data_of(problem: Problem) -> tuple:
    """The problem's (X, y, X_val, y_val); the 60000-row set is made when first asked for."""
    if problem.data is None:
        problem.data = mnist_shaped()
    return problem.data


def run(problem: Problem, config: dict, seed: int) -> dict:
    """Trains one configuration to the target; its training seconds, steps and samples there."""
    X, y, X_val, y_val = data_of(problem)
    model = problem.model(seed)
    tracker = TargetTracker(problem.target, model.prepare(X_val, y_val), stop=True)
    callbacks = [tracker, *config.get("callbacks", lambda: [])()]
    trainer = make_trainer(model, X, y, batch_size=config["batch_size"], epochs=problem.epochs,
                           optimizer=problem.optimizer, lr=config["lr"], seed=seed,
                           callbacks=callbacks, verbose=0)  # fmt: skip
    history = trainer.run()
    got = tracker.reached
    largest = max(history.steps["batch_size"])
    if got is None:
        return {"seconds": math.inf, "steps": math.inf, "samples": math.inf, "largest": largest}
    return {"seconds": got.seconds, "steps": got.steps, "samples": got.samples, "largest": largest}


def configs(problem: Problem) -> dict[str, dict]:
    X, y, *_ = data_of(problem)
    out = {
        "adaptive": {"batch_size": "adaptive", "lr": problem.base_lr},
        "doubling": {
            "batch_size": B0,
            "lr": problem.base_lr,
            "callbacks": lambda: [AdaptiveBatchSize(start=B0)],
        },
    }
    advice = advise(problem.model(0), X, y, optimizer=problem.optimizer,
                    reference=(B0, problem.base_lr))  # fmt: skip
    b = advice.batch_size if advice.batch_size != "full" else len(X)
    out[f"advisor B={b} lr={advice.lr:.3g}"] = {"batch_size": b, "lr": advice.lr}
    for lr in problem.rates:  # what the policy does with each rate for B0 (a sweep at B0)
        out[f"adaptive lr={lr:g}"] = {"batch_size": "adaptive", "lr": lr}
    for b in SIZES:
        for lr in problem.rates:
            out[f"B={b} lr={lr:g}"] = {"batch_size": b, "lr": lr}
    return out


def grid(problem: Problem, seeds: int) -> dict:
    table = configs(problem)
    runs: dict[str, list[dict]] = {name: [] for name in table}
    order = np.random.default_rng(0)
    for seed in range(seeds):
        names = list(table)
        order.shuffle(names)
        for name in names:
            runs[name].append(run(problem, table[name], seed))
        print(f"  {problem.name}: seed {seed} done", flush=True)
    return {name: summarize(rs) for name, rs in runs.items()}


def summarize(rs: list[dict]) -> dict:
    return {
        key: statistics.median(r[key] for r in rs) for key in ("seconds", "steps", "samples")
    } | {"all": [r["seconds"] for r in rs], "largest": max(r["largest"] for r in rs)}


def verdict(rows: dict) -> dict:
    fixed = {k: v for k, v in rows.items() if k.startswith("B=")}
    best = min(fixed, key=lambda k: fixed[k]["seconds"])
    tuned = {k: v for k, v in rows.items() if k.startswith("adaptive lr=")}
    best_tuned = min(tuned, key=lambda k: tuned[k]["seconds"])
    median = statistics.median(v["seconds"] for v in fixed.values())
    adaptive = rows["adaptive"]["seconds"]
    return {
        "best_fixed": best,
        "best_seconds": fixed[best]["seconds"],
        "grid_median_seconds": median,
        "adaptive_over_best": adaptive / fixed[best]["seconds"],
        "adaptive_over_median": adaptive / median,
        "best_adaptive_rate": best_tuned,
        "tuned_adaptive_over_best": tuned[best_tuned]["seconds"] / fixed[best]["seconds"],
    }


def confirm(problem: Problem, rows: dict, seeds: int, fresh: int) -> dict:
    """The grid's best in hindsight is the lowest of ~24 medians of 3 noisy runs, so it is
    partly the luckiest: it, adaptive and adaptive at the best rate for B0 run again on
    ``fresh`` new seeds (interleaved), which measures all three the same way."""
    v, table = verdict(rows), configs(problem)
    names = [v["best_fixed"], "adaptive", v["best_adaptive_rate"]]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    order = np.random.default_rng(1)
    for seed in range(seeds, seeds + fresh):
        order.shuffle(names)
        for name in names:
            runs[name].append(run(problem, table[name], seed))
    return {name: summarize(rs) for name, rs in runs.items()}


# -- overhead: what the adaptive batch's measurements cost ----------------------------------
OVERHEAD_KINDS = ("plain", "noise", "policy", "adam plain", "adam policy")


def overhead(rounds: int) -> dict:
    """Four epochs of 16384 rows at a fixed B: plain; with the per-sample noise every 8th step
    (``ExampleNoise``); with the whole goodput policy held at B (noise, step timing, decisions;
    no move, so no seed pass: ``seed_pass``); and Adam plain and with the policy (its noise
    divided by Adam's divisor, every 16th step). Paired rounds, medians of the ratios to the
    plain run of the same optimizer."""
    X, y, *_ = mnist_shaped(16384)
    out = {}
    for b in (32, 256, 1024):
        times: dict[str, list[float]] = {kind: [] for kind in OVERHEAD_KINDS}
        for _ in range(rounds):
            for kind in OVERHEAD_KINDS:
                times[kind].append(_epochs_seconds(X, y, b, kind))
        out[b] = {"plain_s": statistics.median(times["plain"]),
                  "adam_plain_s": statistics.median(times["adam plain"])}  # fmt: skip
        for kind in ("noise", "policy", "adam policy"):
            plain = "adam plain" if kind.startswith("adam") else "plain"
            pairs = zip(times[kind], times[plain], strict=True)
            out[b][kind.replace(" ", "_")] = statistics.median(m / p for m, p in pairs)
    return out


def seed_pass(rounds: int) -> float:
    """Milliseconds of the seed pass an adaptive run from B0 = 32 times once, at its start
    (bare steps at 32 and 128 on a copy of the model), median of ``rounds`` after one."""
    X, y, *_ = mnist_shaped(16384)
    policy = GoodputBatchSize(B0, 1024)
    trainer = make_trainer(mlp(784, [128], 10), X, y, batch_size="adaptive", epochs=1, lr=0.05,
                           verbose=0, threads=2, callbacks=[policy])  # fmt: skip
    seconds = []
    for _ in range(rounds + 1):
        start = time.perf_counter()
        policy._seed(trainer)
        seconds.append(time.perf_counter() - start)
    return 1e3 * statistics.median(seconds[1:])


def _epochs_seconds(X, y, b: int, kind: str) -> float:
    policy = [GoodputBatchSize(b, b)] if kind.endswith("policy") else []
    adam = kind.startswith("adam")
    trainer = make_trainer(mlp(784, [128], 10), X, y, epochs=4, verbose=0, threads=2,
                           optimizer="adam" if adam else "sgd", lr=1e-3 if adam else 0.05,
                           batch_size="adaptive" if policy else b,
                           callbacks=policy)  # fmt: skip
    if kind == "noise":
        trainer.gradient = ExampleNoise(8, beta=0.95, population=len(X))
    trainer.run()
    return trainer.elapsed()


# -- busy: a competing training process -------------------------------------------------------
COMPETITOR = """
from minigd import datasets, fit
from minigd.nn import mlp
train, _ = datasets.load("mnist-5k")
while True:
    fit(mlp(784, [128], 10), train.X, train.y, batch_size=64, epochs=1, lr=0.1, verbose=0)
"""


def busy(problem: Problem, seeds: int) -> dict:
    """Adaptive and a fixed B=32 at the same rate, quiet, beside a competing training, and
    quiet again (the machine drifts: quiet runs moved 0.075 -> 0.104 s within minutes here), each
    against the mean of its quiet medians. The fixed run's ratio is what sharing two cores costs
    a run that makes no choice: the adaptive run's should be no worse."""
    table = {"adaptive": configs(problem)["adaptive"],
             "fixed B=32": {"batch_size": B0, "lr": problem.base_lr}}  # fmt: skip

    def medians() -> dict[str, float]:
        return {name: statistics.median(run(problem, config, s)["seconds"] for s in range(seeds))
                for name, config in table.items()}  # fmt: skip

    before = medians()
    competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR])
    try:
        time.sleep(2.0)
        loaded = medians()
    finally:
        competitor.kill()
        competitor.wait()
    after = medians()
    out = {}
    for name in table:
        quiet = (before[name] + after[name]) / 2
        out[name] = {"quiet_s": quiet, "busy_s": loaded[name], "ratio": loaded[name] / quiet,
                     "quiet_before_s": before[name], "quiet_after_s": after[name]}  # fmt: skip
    return out


def markdown(results: dict) -> str:
    lines = ["# Time to target: adaptive (goodput) against a fixed grid", ""]
    for name, part in results["grid"].items():
        v = part["verdict"]
        lines += [f"## {name}", "", "| configuration | seconds (median) | steps | samples | "
                  "largest B | per seed |", "|---|---|---|---|---|---|"]  # fmt: skip
        for config, row in sorted(part["rows"].items(), key=lambda kv: kv[1]["seconds"]):
            seeds = ", ".join(f"{s:.3f}" for s in row["all"])
            lines.append(f"| {config} | {row['seconds']:.3f} | {row['steps']:.0f} | "
                         f"{row['samples']:.0f} | {row['largest']} | {seeds} |")  # fmt: skip
        lines += ["", f"Best fixed in hindsight: {v['best_fixed']} ({v['best_seconds']:.3f} s); "
                  f"{_median_words(v)}. With the best rate for B0 "
                  f"({v['best_adaptive_rate']}): {v['tuned_adaptive_over_best']:.2f}x the best "
                  "fixed.", ""]  # fmt: skip
        if "fresh" in part:
            lines += _fresh_lines(part["fresh"], v)
    if "overhead" in results:
        lines += ["## What the measurements cost: 4 epochs held at B, against plain epochs", ""]
        for b, row in results["overhead"].items():
            lines.append(
                f"- B={b}: per-sample noise every 8th step {row['noise']:.3f}x, the whole "
                f"policy {row['policy']:.3f}x ({row['plain_s']:.3f} s plain); Adam, the whole "
                f"policy {row['adam_policy']:.3f}x ({row['adam_plain_s']:.3f} s plain)"
            )
        lines.append(f"- and once per run from B0 = 32, the seed pass: "
                     f"{results['seed_pass_ms']:.1f} ms")  # fmt: skip
    if "busy" in results:
        lines += ["", "## Beside a competing training process (against the mean of quiet runs "
                  "before and after)", ""]  # fmt: skip
        for name, r in results["busy"].items():
            lines.append(f"- {name}: {r['busy_s']:.3f} s against {r['quiet_s']:.3f} s quiet "
                         f"({r['ratio']:.2f}x; quiet before {r['quiet_before_s']:.3f} s, after "
                         f"{r['quiet_after_s']:.3f} s)")  # fmt: skip
    return "\n".join(lines) + "\n"


def _median_words(v: dict) -> str:
    """The grid's median and adaptive against it, or that the median configuration missed
    (more than half of the grid did not reach the target within the epoch budget)."""
    best = f"Adaptive / best = {v['adaptive_over_best']:.2f}"
    if math.isinf(v["grid_median_seconds"]):
        return (f"grid median: a miss (more than half of the grid did not reach the target in "
                f"the epoch budget). {best}")  # fmt: skip
    return (f"grid median {v['grid_median_seconds']:.3f} s. {best}, adaptive / median = "
            f"{v['adaptive_over_median']:.2f}")  # fmt: skip


def _fresh_lines(fresh: dict, v: dict) -> list[str]:
    best = fresh[v["best_fixed"]]
    cells = [f"{name} {row['seconds']:.3f} s ({row['seconds'] / best['seconds']:.2f}x)"
             for name, row in fresh.items() if name != v["best_fixed"]]  # fmt: skip
    head = (f"Again on {len(best['all'])} fresh seeds: the best fixed {v['best_fixed']} "
            f"{best['seconds']:.3f} s (in the grid {v['best_seconds']:.3f} s); ")  # fmt: skip
    return [head + "; ".join(cells) + ".", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--problems", default="mnist5k-sgd,mnist5k-adam,least-squares,mnist60k-sgd")
    parser.add_argument("--parts", default="grid,overhead,busy")
    parser.add_argument("--fresh", type=int, default=9,
                        help="seeds after the grid's that rerun its best, adaptive and adaptive "
                             "at the best rate for B0 (0: none)")  # fmt: skip
    args = parser.parse_args()
    every = problems()
    results: dict = {"machine": machine(), "grid": {}}
    parts = args.parts.split(",")
    if "grid" in parts:
        for name in args.problems.split(","):
            rows = grid(every[name], args.seeds)
            results["grid"][name] = {"rows": rows, "verdict": verdict(rows)}
            if args.fresh:
                again = confirm(every[name], rows, args.seeds, args.fresh)
                results["grid"][name]["fresh"] = again
            print(markdown({"grid": {name: results["grid"][name]}}), flush=True)
    if "overhead" in parts:
        results["overhead"] = overhead(max(3, args.seeds))
        results["seed_pass_ms"] = seed_pass(max(3, args.seeds))
    if "busy" in parts:
        results["busy"] = busy(every["mnist5k-sgd"], args.seeds)
    text = markdown(results)
    print(text)
    # a run of some parts only is kept beside the full table, not written over it
    name = "bench_goodput" if "grid" in parts else "bench_goodput-" + "-".join(parts)
    write_results(name, results, text)


if __name__ == "__main__":
    main()
