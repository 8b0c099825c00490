"""minigd's MiniBatchClassifier against scikit-learn's MLPClassifier, configured alike.

Same architecture (one hidden layer of 128 ReLU units, softmax output), same solver (Adam, lr
1e-3, betas 0.9/0.999, eps 1e-8; and SGD, lr 0.05, no momentum), same batch size (64), same
epochs (20), no L2 penalty (MLPClassifier's alpha=0), no early stopping (tol=0 and
n_iter_no_change above the epochs), shuffled each epoch, float32 data, 2 BLAS threads for both.
Datasets: mnist-5k (4000 train / 1000 test, 784 features) and digits (1437 / 360, 64 features),
features as loaded (in [0, 1]). Rounds interleave the two estimators; each round uses a new
random_state for both. Reports fit seconds and test accuracy: medians, and the paired ratio.

Usage: ``python benchmarks/bench_sklearn.py --rounds 5``. Writes results/<date>-bench_sklearn.*
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import numpy as np

from common import machine, set_threads, write_results
from minigd import datasets
from minigd.sklearn import MiniBatchClassifier

EPOCHS, BATCH = 20, 64
SOLVERS = {"adam": 1e-3, "sgd": 0.05}


def estimators(solver: str, seed: int):
    from sklearn.neural_network import MLPClassifier

    lr = SOLVERS[solver]
    theirs = MLPClassifier(
        hidden_layer_sizes=(128,),
        solver=solver,
        learning_rate_init=lr,
        momentum=0.0,
        nesterovs_momentum=False,
        batch_size=BATCH,
        max_iter=EPOCHS,
        alpha=0.0,
        tol=0.0,
        n_iter_no_change=EPOCHS + 1,
        shuffle=True,
        random_state=seed,
    )
    ours = MiniBatchClassifier(
        (128,),
        optimizer=solver,
        learning_rate=lr,
        batch_size=BATCH,
        epochs=EPOCHS,
        tol=0.0,
        n_iter_no_change=EPOCHS + 1,
        shuffle=True,
        random_state=seed,
        threads=2,
    )
    return {"minigd": ours, "scikit-learn": theirs}


def one_fit(estimator, X, y, X_test, y_test) -> tuple[float, float]:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLPClassifier's ConvergenceWarning at max_iter
        estimator.fit(X, y)
    seconds = time.perf_counter() - start
    return seconds, float(np.mean(estimator.predict(X_test) == y_test))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    blas = set_threads(2, with_torch=False)
    results: dict = {"machine": machine() | {"blas": blas}, "epochs": EPOCHS, "batch": BATCH}
    lines = [
        "# bench_sklearn",
        "",
        f"machine: {results['machine']}",
        "",
        f"MLP 784/64-128-K, batch {BATCH}, {EPOCHS} epochs, float32, medians of "
        f"{args.rounds} interleaved rounds",
        "",
        "| data | solver | minigd fit s | sklearn fit s | minigd / sklearn (paired) | "
        "minigd acc | sklearn acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("mnist-5k", "digits"):
        train, test = datasets.load(name)
        X, X_test = train.X.astype(np.float32), test.X.astype(np.float32)
        for solver in SOLVERS:
            runs = {"minigd": [], "scikit-learn": []}
            for r in range(args.rounds + 1):  # round 0 warms up (compilation, caches)
                for label, est in estimators(solver, seed=r).items():
                    seconds, acc = one_fit(est, X, train.y, X_test, test.y)
                    if r:
                        runs[label].append((seconds, acc))
            ours, theirs = runs["minigd"], runs["scikit-learn"]
            ratio = statistics.median(a[0] / b[0] for a, b in zip(ours, theirs, strict=True))
            row = {
                label: {
                    "fit_s": statistics.median(s for s, _ in v),
                    "accuracy": statistics.median(a for _, a in v),
                    "runs": v,
                }
                for label, v in runs.items()
            }
            row["ratio"] = ratio
            results[f"{name}/{solver}"] = row
            lines.append(
                f"| {name} | {solver} | {row['minigd']['fit_s']:.2f} | "
                f"{row['scikit-learn']['fit_s']:.2f} | {ratio:.2f} | "
                f"{row['minigd']['accuracy']:.1%} | {row['scikit-learn']['accuracy']:.1%} |"
            )
            print(lines[-1], flush=True)
    paths = write_results("bench_sklearn", results, "\n".join(lines) + "\n")
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
