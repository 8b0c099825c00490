"""Data-parallel training on MPI: what two ranks buy on this machine, and a projection to many.

(a) 1 rank x 2 BLAS threads against 2 ranks x 1 thread (``mpiexec -n 2``), MLP 784-128-10, SGD,
    the 60000-row MNIST-shaped set, B = 256 and 1024: median epoch seconds (2 timed epochs after
    a warm-up one), the Allreduce's seconds per step and its share of the step.
(b) The noise scale the ranks measure as they train (B_simple from each step's per-rank and
    reduced gradients, running averages) against ``minigd.batchsize.noise_scale`` (pairs of 128
    and 1024 samples, bootstrap 95% interval) on the model the same run ends with.
(c) A projection on paper: a ring Allreduce of n bytes over N ranks takes
    2 (N-1)/N * n / bandwidth + 2 (N-1) * latency (alpha-beta model); a step at global batch B
    on N ranks takes t(B/N) + that, with t(b) the measured single-process step time here, fitted
    as t(b) = t0 + b * t1. Scaling efficiency = t(B) / (N * step time), for N = 8, 64, 512.

Usage: ``python benchmarks/bench_distributed.py``. Writes results/<date>-bench_distributed.*
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import machine, write_results

HERE = Path(__file__).parent
PARAMS = 784 * 128 + 128 + 128 * 10 + 10  # 101,770 float32 parameters: 407 KB per Allreduce

EPOCHS = """
import json, sys, time
sys.path.insert(0, {here!r})
from common import mnist_shaped
from minigd.distributed import launched_under_mpi, world
from minigd.nn import mlp
from minigd.training import make_trainer
comm = world() if launched_under_mpi() else None
X, y, _, _ = mnist_shaped(60000)
b, threads = int(sys.argv[1]), int(sys.argv[2])
trainer = make_trainer(mlp(784, [128], 10, seed=0), X, y, batch_size=b, epochs=0 + 1,
                       lr=0.05, verbose=0, threads=threads, comm=comm)
seconds = []
for e in range(3):
    trainer.epochs = e + 1
    start = time.perf_counter()
    reduce_before = trainer.parallel.allreduce_seconds if trainer.parallel else 0.0
    trainer.run()
    seconds.append(time.perf_counter() - start)
    reduced = (trainer.parallel.allreduce_seconds if trainer.parallel else 0.0) - reduce_before
if comm is None or comm.Get_rank() == 0:
    steps = len(trainer.batches)
    print(json.dumps({{"epoch_s": seconds[1:], "allreduce_s_per_step": reduced / steps,
                      "steps": steps}}))
"""

NOISE = """
import json, sys
from minigd import datasets
from minigd.batchsize import noise_scale
from minigd.distributed import world
from minigd.nn import mlp
from minigd.training import fit
comm = world()
train, _ = datasets.load("mnist-5k")
model = mlp(784, [128], 10, seed=0)
history = fit(model, train.X, train.y, batch_size=256, epochs=int(sys.argv[1]), lr=0.1,
              verbose=0, threads=1, comm=comm)
if comm.Get_rank() == 0:
    import numpy as np
    from minigd.noise import estimate_components
    measured = noise_scale(model, train.X, train.y, b_small=128, b_big=1024, n_batches=60,
                           seed=1, bootstrap=300)
    # the ranks' pairs of the last epochs, as the probe's: means first, bootstrap over steps
    last = int(sys.argv[2])
    small = np.array(history.steps["grad_sq_rank"][-last:])
    big = np.array(history.steps["grad_sq"][-last:])
    g2, tr = estimate_components(small.mean(), big.mean(), 128, 256)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, last, (1000, last))
    g2s, trs = estimate_components(small[picks].mean(1), big[picks].mean(1), 128, 256)
    boot = np.where(g2s > 0, trs / np.where(g2s > 0, g2s, 1), np.inf)
    print(json.dumps({"ranks_running": history.meta["b_simple"], "ranks": tr / g2,
                      "ranks_interval": [float(np.percentile(boot, 2.5)),
                                         float(np.percentile(boot, 97.5))],
                      "steps": last, "probe": measured.b_simple,
                      "interval": list(measured.interval)}))
"""


def run(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def part_a() -> dict:
    mpiexec = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
    script = EPOCHS.format(here=str(HERE))
    out = {}
    for b in (256, 1024):
        one = run([sys.executable, "-c", script, str(b), "2"])
        two = run([mpiexec, "-n", "2", sys.executable, "-c", script, str(b), "1"])
        step_two = statistics.median(two["epoch_s"]) / two["steps"]
        out[b] = {
            "one_rank_2_threads_s": statistics.median(one["epoch_s"]),
            "two_ranks_1_thread_s": statistics.median(two["epoch_s"]),
            "allreduce_ms_per_step": 1000 * two["allreduce_s_per_step"],
            "allreduce_share": two["allreduce_s_per_step"] / step_two,
            "one_step_ms": 1000 * statistics.median(one["epoch_s"]) / one["steps"],
        }
        print(f"(a) B={b}: {out[b]}", flush=True)
    small = run([sys.executable, "-c", script, "32", "2"])  # the step's fixed cost, for (c)
    out["one_step_ms_b32"] = 1000 * statistics.median(small["epoch_s"]) / small["steps"]
    return out


def part_b(epochs: int = 6, last_steps: int = 32) -> dict:
    mpiexec = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
    result = run([mpiexec, "-n", "2", sys.executable, "-c", NOISE, str(epochs), str(last_steps)])
    print(f"(b) {result}", flush=True)
    return result


def step_time_fit(a: dict) -> tuple[float, float]:
    """t(b) = t0 + b t1 through the measured one-process step times at B=32 and 1024 (s)."""
    t_small, t_big = a["one_step_ms_b32"] / 1000, a[1024]["one_step_ms"] / 1000
    t1 = (t_big - t_small) / (1024 - 32)
    return t_small - 32 * t1, t1


NETWORKS = {  # bandwidth bytes/s, latency s per message
    "InfiniBand HDR (25 GB/s, 1.5 us)": (25e9, 1.5e-6),
    "100 Gb Ethernet (12.5 GB/s, 10 us)": (12.5e9, 10e-6),
    "10 Gb Ethernet (1.25 GB/s, 30 us)": (1.25e9, 30e-6),
}


def part_c(a: dict) -> dict:
    t0, t1 = step_time_fit(a)
    nbytes = PARAMS * 4
    out = {"t0_s": t0, "t1_s": t1, "bytes": nbytes, "rows": []}
    for network, (bandwidth, latency) in NETWORKS.items():
        for n in (8, 64, 512):
            ring = 2 * (n - 1) / n * nbytes / bandwidth + 2 * (n - 1) * latency
            for b in (1024, 8192, 65536):
                step = t0 + t1 * max(1.0, b / n) + ring
                out["rows"].append(
                    {
                        "network": network,
                        "ranks": n,
                        "batch": b,
                        "allreduce_ms": 1000 * ring,
                        "step_ms": 1000 * step,
                        "efficiency": (t0 + t1 * b) / (n * step),
                        "samples_per_s": b / step,
                    }
                )
    return out


def markdown(r: dict) -> str:
    lines = [
        "# bench_distributed",
        "",
        f"machine: {r['machine']}",
        "",
        "## (a) 1 rank x 2 threads vs 2 ranks x 1 thread (epoch s, medians)",
        "",
        "| B | 1 x 2 | 2 x 1 | ratio | Allreduce ms/step | its share |",
        "|---|---|---|---|---|---|",
    ]
    for b, v in r["a"].items():
        if not isinstance(v, dict):
            continue
        lines.append(
            f"| {b} | {v['one_rank_2_threads_s']:.3f} | {v['two_ranks_1_thread_s']:.3f} | "
            f"{v['two_ranks_1_thread_s'] / v['one_rank_2_threads_s']:.2f} | "
            f"{v['allreduce_ms_per_step']:.3f} | {v['allreduce_share']:.1%} |"
        )
    b = r["b"]
    lines += [
        "",
        "## (b) noise scale: from the ranks vs the probe on the final model",
        "",
        f"ranks (B=256 on 2 ranks: pairs of 128/256 over the last {b['steps']} steps): "
        f"{b['ranks']:.1f}, 95% CI {b['ranks_interval'][0]:.1f} .. {b['ranks_interval'][1]:.1f} "
        f"(the running average the progress line showed: {b['ranks_running']:.1f}); probe "
        f"(128/1024 pairs on the final model): {b['probe']:.1f}, 95% CI "
        f"{b['interval'][0]:.1f} .. {b['interval'][1]:.1f}",
        "",
        "## (c) projection (ring Allreduce, alpha-beta model)",
        "",
        f"t(b) = {1e6 * r['c']['t0_s']:.0f} us + b x {1e6 * r['c']['t1_s']:.2f} us (fitted "
        f"to (a)'s 1-process steps); {r['c']['bytes']:,} bytes per Allreduce",
        "",
        "| network | ranks | global B | Allreduce ms | step ms | efficiency | samples/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["c"]["rows"]:
        lines.append(
            f"| {row['network']} | {row['ranks']} | {row['batch']} | "
            f"{row['allreduce_ms']:.3f} | {row['step_ms']:.3f} | {row['efficiency']:.0%} | "
            f"{row['samples_per_s']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    start = time.perf_counter()
    results = {"machine": machine()}
    results["a"] = part_a()
    results["b"] = part_b()
    results["c"] = part_c(results["a"])
    paths = write_results("bench_distributed", results, markdown(results))
    print(f"wrote {paths[0]} and {paths[1]} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
