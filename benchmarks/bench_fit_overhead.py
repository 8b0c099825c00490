"""What ``fit`` with its default callbacks costs on top of the bare step loop.

    python benchmarks/bench_fit_overhead.py

Epoch times of a real model on this shared 2-core machine move by +-40% from one epoch to the
next, which hides a difference of a few percent. So the overhead is measured twice:

1. Directly: the bare loop and ``fit`` run with a stub model (``loss_and_grad`` returns a constant)
   and a no-op optimizer, so all that is left is batching plus the loop's own bookkeeping (history,
   smoothed loss, divergence guard, progress lines). The difference per step is fit's overhead.
2. Side by side on the real MLP 784-128-10 (SGD): many rounds of one bare-loop epoch and one fit
   epoch; the median of the per-round ratios.

The overhead of (1) over the bare loop's real step time (from (2)) is the share of the step that
fit adds. Results go to ``benchmarks/results/<date>-bench_fit_overhead.{md,json}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_epoch import PAUSE, MinigdFit, MinigdLoop, initial_weights
from common import (
    interleaved,
    machine,
    mnist_shaped,
    paired_ratios,
    set_threads,
    summary,
    write_results,
)


def stub(impl) -> None:
    """Makes an implementation's step free: no forward/backward, no update."""
    impl.model.loss_and_grad = lambda xb, yb: 0.5
    optimizer = impl.trainer.optimizer if hasattr(impl, "trainer") else impl.opt
    optimizer.step = lambda params, grads: None


def measure(batch: int, data, weights, rounds: int) -> dict:
    X, y = data[0], data[1]
    steps = -(-len(X) // batch)
    stubs = [MinigdLoop(batch, "sgd", X, y, weights), MinigdFit(batch, "sgd", X, y, weights)]
    for impl in stubs:
        stub(impl)
    loop_stub, fit_stub = interleaved(stubs, rounds, pause=0.05)
    real = [MinigdLoop(batch, "sgd", X, y, weights), MinigdFit(batch, "sgd", X, y, weights)]
    loop_real, fit_real = interleaved(real, rounds, pause=PAUSE)
    overhead_us = 1e6 * (np.median(fit_stub) - np.median(loop_stub)) / steps
    step_us = 1e6 * np.median(loop_real) / steps
    ratios = paired_ratios(fit_real, loop_real)
    return {
        "steps": steps,
        "stub_loop": summary(loop_stub),
        "stub_fit": summary(fit_stub),
        "real_loop": summary(loop_real),
        "real_fit": summary(fit_real),
        "overhead_us_per_step": overhead_us,
        "real_step_us": step_us,
        "overhead_share": overhead_us / step_us,
        "paired_ratio": summary(ratios),
    }


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [
        f"# fit overhead, {meta['date']}",
        "",
        f"MLP 784-128-10, SGD, 60000 x 784 MNIST-shaped float32, {meta['threads']} threads, "
        f"{meta['rounds']} interleaved rounds. The stub columns run with a free step (no "
        f"forward/backward, no update): what is left is batching and the loop's bookkeeping.",
        "",
        "| batch | stub loop (s) | stub fit (s) | fit overhead per step (us) | real step (us) | "
        "overhead share | real fit/loop, median [min, max] of per-round ratios |",
        "|---|---|---|---|---|---|---|",
    ]
    for batch, row in result["batches"].items():
        pr = row["paired_ratio"]
        lines.append(
            f"| {batch} | {row['stub_loop']['median']:.4f} | {row['stub_fit']['median']:.4f} | "
            f"{row['overhead_us_per_step']:.1f} | {row['real_step_us']:.0f} | "
            f"{100 * row['overhead_share']:.1f}% | "
            f"{pr['median']:.3f} [{pr['min']:.3f}, {pr['max']:.3f}] |"
        )
    lines += ["", "Reproduce: `python benchmarks/bench_fit_overhead.py`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="32,64,256,1024")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    set_threads(args.threads, with_torch=False)
    data, weights = mnist_shaped(), initial_weights()
    result = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "rounds": args.rounds,
            "threads": args.threads,
            "machine": machine(),
        },
        "batches": {},
    }
    for batch in map(int, args.batch_sizes.split(",")):
        row = result["batches"][batch] = measure(batch, data, weights, args.rounds)
        print(
            f"B={batch}: overhead {row['overhead_us_per_step']:.1f} us/step of "
            f"{row['real_step_us']:.0f} us ({100 * row['overhead_share']:.1f}%); paired "
            f"fit/loop {row['paired_ratio']['median']:.3f}",
            flush=True,
        )
    json_path, md_path = write_results("bench_fit_overhead", result, markdown(result))
    print(markdown(result))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
