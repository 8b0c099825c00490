"""Where a minigd train step spends its time: gather, forward, loss, backward, update.

    python benchmarks/profile_step.py --threads 1,2

Each phase is timed separately over many steps of the MLP 784-128-10 on MNIST-shaped data (random
data of that shape: the phase costs do not depend on the values), median microseconds per step.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import set_threads
from minigd import MiniBatches
from minigd.nn import mlp
from minigd.optim import SGD, Adam


def profile(batch: int, opt_name: str, steps: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    X = rng.random((60000, 784), dtype=np.float32)
    y = rng.integers(0, 10, len(X))
    model = mlp(784, [128], 10)
    opt = SGD(0.1) if opt_name == "sgd" else Adam(1e-3)
    batches = MiniBatches(X, y, batch_size=batch)
    phases = {k: [] for k in ("gather", "forward", "loss", "backward", "update", "step")}
    it = iter(batches.epoch(0))
    for i in range(steps + 5):
        t0 = time.perf_counter()
        try:
            xb, yb = next(it)
        except StopIteration:
            it = iter(batches.epoch(i))
            xb, yb = next(it)
        t1 = time.perf_counter()
        z = model.forward(xb, True)
        t2 = time.perf_counter()
        _, dz = model.loss(z, yb)
        t3 = time.perf_counter()
        model.backward(dz)
        t4 = time.perf_counter()
        opt.step(model.params, model.grads)
        t5 = time.perf_counter()
        if i >= 5:
            for key, (a, b) in zip(
                phases, [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t0, t5)], strict=True
            ):
                phases[key].append(b - a)
    return {k: 1e6 * float(np.median(v)) for k, v in phases.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-sizes", default="32,64,256,1024")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    print(
        f"{'B':>5} {'thr':>3} "
        + " ".join(f"{k:>9}" for k in ("gather", "forward", "loss", "backward", "update", "step"))
        + "   (us, medians)"
    )
    for batch in map(int, args.batch_sizes.split(",")):
        for threads in map(int, args.threads.split(",")):
            set_threads(threads)
            result = profile(batch, args.optimizer, max(30, args.steps * 64 // batch))
            print(f"{batch:>5} {threads:>3} " + " ".join(f"{v:>9.1f}" for v in result.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
