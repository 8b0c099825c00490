"""The critical batch size on mnist-5k and on the closed-form problem, and the adaptive batch size
against the best fixed one.

1. mnist-5k, mlp:128, SGD: ``sweep`` over B = 16..1024 with the default learning-rate grid
   (extended per batch size until the best rate is interior), 3 seeds, targets val_accuracy 0.85
   and 0.9: S_min, B_crit and E_min with bootstrap intervals, and B_simple measured where the
   reference run (the smallest batch size's best) reached each target.
2. The isotropic least-squares problem (d=64, sigma=1, 32768 samples), targets loss 1.5 and 1.25:
   the same fit, against B_noise(target) in closed form and the B_crit the expected-loss model
   predicts for the same grid.
3. Adaptive vs fixed, mnist-5k, target val_accuracy 0.9: ``batch_size="adaptive"`` (from 32, at
   the sweep's best lr for B=32, kept constant as the batch grows, or scaled by the square root
   of the growth) against the sweep's best fixed batch size by steps and by seconds, each at its
   best lr; seeds interleaved, medians of steps and training seconds (evaluations excluded).

Usage: ``python benchmarks/bench_critical_batch.py``. Writes results/<date>-bench_critical_batch.*
"""

from __future__ import annotations

import statistics
import time

from common import machine, set_threads, write_results
from minigd import datasets
from minigd.batchsize.closed_form import IsotropicLeastSquares
from minigd.batchsize.critical import fit_critical_batch
from minigd.experiments.metrics import Target, TargetTracker
from minigd.experiments.sweep import sweep
from minigd.nn.models import linear_regression, model_for_data
from minigd.training import AdaptiveBatchSize, fit

SEEDS = (0, 1, 2)


def fits_table(result, b_noise=None, predicted=None) -> list[str]:
    lines = ["| target | B_crit (95% CI) | S_min | E_min | B_simple at target (95% CI) | "
             "B_crit / B_simple | rms off fit |" + (" B_noise | model B_crit |" if b_noise else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|" if b_noise else "")]  # fmt: skip
    for k, reading in enumerate(result.fits):
        c, n = reading.critical, reading.noise
        if c is None:
            lines.append(f"| {reading.target} | {reading.note} |")
            continue
        lo, hi = c.b_crit_interval
        noise = "-" if n is None else f"{n.b_simple:.0f} ({n.interval[0]:.0f}-{n.interval[1]:.0f})"
        ratio = "-" if reading.ratio is None else f"{reading.ratio:.2f}"
        extra = f" {b_noise[k]:.0f} | {predicted[k]:.0f} |" if b_noise else ""
        crit = f"{c.b_crit:.0f} ({lo:.0f}-{hi:.0f})"
        lines.append(f"| {reading.target} | {crit} | {c.s_min:.1f} | {c.e_min:.0f} | {noise} | "
                     f"{ratio} | {c.residual_rms:.2f} |{extra}")  # fmt: skip
    return lines


def rows_table(result) -> list[str]:
    lines = ["| B | best lr | steps (median) | seeds min-max | interior | lrs tried |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in result.rows:
        spread = "-" if r.spread is None else f"{r.spread[0]:.1f}-{r.spread[1]:.1f}"
        tried = ", ".join(f"{lr:g}" for lr in result.lr_grid[r.batch_size])
        steps = "-" if r.steps_to_target is None else f"{r.steps_to_target:.1f}"
        lines.append(f"| {r.batch_size} | {r.best_lr} | {steps} | {spread} | "
                     f"{r.interior} | {tried} |")  # fmt: skip
    return lines


def mnist_sweep():
    start = time.perf_counter()
    result = sweep("mlp:128", "mnist-5k", seeds=SEEDS, max_epochs=30, threads=2,
                   target=[Target("val_accuracy", 0.85), Target("val_accuracy", 0.9)])  # fmt: skip
    return result, time.perf_counter() - start


def closed_form_sweep():
    problem = IsotropicLeastSquares(d=64, sigma=1.0)
    train, test = problem.split(32768, 4096)
    losses = (1.5, 1.25)
    start_loss = problem.loss(linear_regression(64, seed=0))
    result = sweep("linear", (train, test), batch_sizes=[2**k for k in range(3, 13)],
                   learning_rates=[0.0625, 0.125, 0.25, 0.5], seeds=SEEDS, max_epochs=5,
                   target=[Target("val_loss", v) for v in losses], threads=2,
                   standardize_targets=False)  # the closed form is of the raw problem  # fmt: skip
    rates = sorted({lr for tried in result.lr_grid.values() for lr in tried})
    b_noise = [problem.b_noise_at_loss(v) for v in losses]
    predicted = []
    for v in losses:
        steps = problem.predicted_steps(result.lr_grid, rates, v, start_loss, len(train.X))
        predicted.append(fit_critical_batch({b: [s] for b, s in steps.items()}, bootstrap=0).b_crit)
    return result, b_noise, predicted


def to_target(batch_size, lr, seed, train, test, target):
    """(steps, training seconds, samples, largest batch) to the target; None when not reached.
    ``batch_size`` "adaptive:RULE" grows the batch with that learning-rate rule."""
    model = model_for_data("mlp:128", train.X, train.n_classes, seed=seed)
    tracker = TargetTracker(target, model.prepare(test.X, test.y), stop=True)
    callbacks = [tracker]
    if str(batch_size).startswith("adaptive"):
        callbacks.append(AdaptiveBatchSize(32, lr_rule=batch_size.partition(":")[2]))
        batch_size = "adaptive"
    history = fit(model, train.X, train.y, batch_size=batch_size, lr=lr, epochs=30, seed=seed,
                  callbacks=callbacks, verbose=0, threads=2)  # fmt: skip
    r = tracker.reached
    if r is None:
        return None
    return r.steps, r.seconds, r.samples, max(history.steps["batch_size"])


def adaptive_vs_fixed(result):
    train, test = datasets.load("mnist-5k")
    target = Target("val_accuracy", 0.9)
    rows = [r for r in result.rows if r.steps_to_target is not None]
    by_steps = min(rows, key=lambda r: r.steps_to_target)
    by_seconds = min(rows, key=lambda r: r.seconds_to_target)
    start_lr = next(r.best_lr for r in result.rows if r.batch_size == 32)
    runs = {
        "adaptive from 32, lr constant": ("adaptive:constant", start_lr),
        "adaptive from 32, lr x sqrt(growth)": ("adaptive:sqrt", start_lr),
        f"fixed B={by_steps.batch_size} (fewest steps)": (by_steps.batch_size, by_steps.best_lr),
        f"fixed B={by_seconds.batch_size} (fewest s)": (by_seconds.batch_size, by_seconds.best_lr),
    }
    measured = {name: [] for name in runs}
    for seed in SEEDS:  # interleaved: each seed runs every contender before the next seed
        for name, (b, lr) in runs.items():
            measured[name].append(to_target(b, lr, seed, train, test, target))
    out = {}
    for name, got in measured.items():
        ok = [g for g in got if g is not None]
        out[name] = {
            "batch_size": runs[name][0], "lr": runs[name][1], "reached": f"{len(ok)}/{len(got)}",
            "steps": statistics.median(g[0] for g in ok) if ok else None,
            "seconds": statistics.median(g[1] for g in ok) if ok else None,
            "samples": statistics.median(g[2] for g in ok) if ok else None,
            "largest_batch": max(g[3] for g in ok) if ok else None,
            "per_seed": got,
        }  # fmt: skip
    return out


def main() -> None:
    threads = set_threads(2, with_torch=False)
    mnist, mnist_seconds = mnist_sweep()
    closed, b_noise, predicted = closed_form_sweep()
    race = adaptive_vs_fixed(mnist)
    lines = [
        "# The critical batch size, fitted and measured; the adaptive batch size", "",
        f"Machine: {machine()}; BLAS threads: {threads}.", "",
        f"## mnist-5k, mlp:128, SGD, seeds {SEEDS} (sweep took {mnist_seconds:.0f} s)", "",
        *fits_table(mnist), "", *rows_table(mnist), "",
        "## Isotropic least squares (d=64, sigma=1): B_noise known in closed form", "",
        *fits_table(closed, b_noise, predicted), "", *rows_table(closed), "",
        "## Adaptive vs the best fixed batch size, mnist-5k, to val_accuracy >= 0.9", "",
        "| run | lr | reached | steps | seconds | samples | largest batch |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, r in race.items():
        steps, seconds, samples = (r[k] for k in ("steps", "seconds", "samples"))
        lines.append(f"| {name} | {r['lr']:g} | {r['reached']} | {steps:.1f} | {seconds:.3f} | "
                     f"{samples:.0f} | {r['largest_batch']} |")  # fmt: skip
    data = {"machine": machine(), "mnist": mnist.to_dict(), "closed_form": closed.to_dict(),
            "closed_form_b_noise": b_noise, "closed_form_model_b_crit": predicted,
            "adaptive_vs_fixed": race}  # fmt: skip
    paths = write_results("bench_critical_batch", data, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print("wrote", *paths)


if __name__ == "__main__":
    main()
