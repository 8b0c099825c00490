"""Data-parallel training on MPI: what two ranks buy on this machine, and a projection to many.

(a) 1 rank x 2 BLAS threads against 2 ranks x 1 thread (``mpiexec -n 2``), MLP 784-128-10, SGD,
    the 60000-row MNIST-shaped set, B = 256 and 1024: median epoch seconds (2 timed epochs after
    a warm-up one, 3 interleaved rounds), the sum over the ranks' seconds per step and its share
    of the step, summed through shared memory (the default) and by MPI_Allreduce.
(b) The noise scale the ranks measure as they train (B_simple from each step's per-rank and
    reduced gradients, running averages) against ``minigd.batchsize.noise_scale`` (pairs of 128
    and 1024 samples, bootstrap 95% interval) on the model the same run ends with.
(c) A projection on paper: a ring Allreduce of n bytes over N ranks takes
    2 (N-1)/N * n / bandwidth + 2 (N-1) * latency (alpha-beta model); a step at global batch B
    on N ranks takes t(B/N) + that, with t(b) the measured single-process step time here, fitted
    as t(b) = t0 + b * t1. Scaling efficiency = t(B) / (N * step time), for N = 8, 64, 512;
    with overlap, the Allreduce in buckets hidden behind the backward pass as far as it can be;
    the model size (784-h-10) and the global batch at which 64 ranks reach 80%.

(d) The Allreduce overlapped with backward (``DataParallel(overlap=True)``, the MPI path): 2
    ranks x 1 thread, ``reduction="mpi"``, buckets of 1 MiB started as backward produces them
    against one blocking Allreduce after it, for the 784-128-10 MLP (one bucket: its first
    layer holds 99% of the gradient and is produced last) and a 784-512-512-512-10 one (3.7 MB,
    3 buckets), B = 256 and 1024, 16384 rows: epoch seconds and the exchange's exposed share of
    a step (time inside MPI calls on the step's path), interleaved rounds.

Usage: ``python benchmarks/bench_distributed.py [--parts a,b,c,d]``. Writes
results/<date>-bench_distributed.*
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, machine, write_results

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
b, threads, reduction = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
trainer = make_trainer(mlp(784, [128], 10, seed=0), X, y, batch_size=b, epochs=0 + 1,
                       lr=0.05, verbose=0, threads=threads, comm=comm)
if comm is not None:
    trainer.gradient.reduction = reduction
seconds = []
for e in range(3):
    trainer.epochs = e + 1
    start = time.perf_counter()
    reduce_before = getattr(trainer.gradient, "allreduce_seconds", 0.0)
    trainer.run()
    seconds.append(time.perf_counter() - start)
    reduced = (getattr(trainer.gradient, "allreduce_seconds", 0.0)) - reduce_before
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
    measured = noise_scale(model, train.X, train.y, b_small=128, b_big=1024, n_batches=60,
                           seed=1, bootstrap=300)
    # the ranks' per-step components of the last steps, as the probe's: means first (the
    # ratio of averages), bootstrap over steps
    last = int(sys.argv[2])
    g2 = np.array(history.steps["grad_norm_sq"][-last:])
    tr = np.array(history.steps["trace_sigma"][-last:])
    rng = np.random.default_rng(0)
    picks = rng.integers(0, last, (1000, last))
    g2s, trs = g2[picks].mean(1), tr[picks].mean(1)
    boot = np.where(g2s > 0, trs / np.where(g2s > 0, g2s, 1), np.inf)
    g2, tr = g2.mean(), tr.mean()
    print(json.dumps({"ranks_running": history.meta["b_simple"], "ranks": tr / g2,
                      "ranks_interval": [float(np.percentile(boot, 2.5)),
                                         float(np.percentile(boot, 97.5))],
                      "steps": last, "probe": measured.b_simple,
                      "interval": list(measured.interval)}))
"""


def run(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def part_a(rounds: int = 3) -> dict:
    """Interleaved rounds: one process x 2 threads, then 2 ranks x 1 thread summing through
    shared memory ("auto") and by MPI_Allreduce ("mpi"), for each batch size."""
    mpiexec = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
    script = EPOCHS.format(here=str(HERE))
    ways = {
        "one": lambda b: [sys.executable, "-c", script, str(b), "2", "-"],
        "shared": lambda b: [mpiexec, "-n", "2", sys.executable, "-c", script, str(b), "1", "auto"],
        "mpi": lambda b: [mpiexec, "-n", "2", sys.executable, "-c", script, str(b), "1", "mpi"],
    }
    seen: dict = {}
    for _ in range(rounds):
        for b in (256, 1024):
            for way, command in ways.items():
                seen.setdefault((b, way), []).append(run(command(b)))
    out = {}
    for b in (256, 1024):
        row = {"one_step_ms": _step_ms(seen[(b, "one")])}
        row["one_rank_2_threads_s"] = _epoch_s(seen[(b, "one")])
        for way in ("shared", "mpi"):
            step_ms = _step_ms(seen[(b, way)])
            reduce_ms = 1000 * statistics.median(r["allreduce_s_per_step"] for r in seen[(b, way)])
            row[f"two_ranks_{way}_s"] = _epoch_s(seen[(b, way)])
            row[f"sum_ms_per_step_{way}"] = reduce_ms
            row[f"sum_share_{way}"] = reduce_ms / step_ms
        out[b] = row
        print(f"(a) B={b}: {row}", flush=True)
    small = run([sys.executable, "-c", script, "32", "2", "-"])  # the step's fixed cost, for (c)
    out["one_step_ms_b32"] = _step_ms([small])
    return out


def _epoch_s(results: list[dict]) -> float:
    return statistics.median(s for r in results for s in r["epoch_s"])


def _step_ms(results: list[dict]) -> float:
    return 1000 * _epoch_s(results) / results[0]["steps"]


OVERLAP = """
import json, sys, time
sys.path.insert(0, {here!r})
from common import mnist_shaped
from minigd.distributed import world
from minigd.nn import mlp
from minigd.training import make_trainer
comm = world()
X, y, _, _ = mnist_shaped(16384)
b, hidden, overlap = int(sys.argv[1]), [int(h) for h in sys.argv[2].split(",")], sys.argv[3]
trainer = make_trainer(mlp(784, hidden, 10, seed=0), X, y, batch_size=b, epochs=1, lr=0.05,
                       verbose=0, threads=1, comm=comm)
trainer.gradient.reduction, trainer.gradient.overlap = "mpi", overlap == "1"
seconds, exposed = [], []
for e in range(3):
    trainer.epochs = e + 1
    before = trainer.gradient.allreduce_seconds
    start = time.perf_counter()
    trainer.run()
    seconds.append(time.perf_counter() - start)
    exposed.append(trainer.gradient.allreduce_seconds - before)
if comm.Get_rank() == 0:
    steps = len(trainer.batches)
    print(json.dumps({{"epoch_s": seconds[1:], "exposed_s": exposed[1:], "steps": steps,
                      "buckets": trainer.history.meta["overlap_buckets"]}}))
"""

MODELS = {"784-128-10": "128", "784-512-512-512-10": "512,512,512"}


def part_d(rounds: int = 3) -> dict:
    """Interleaved rounds of overlapped and blocking exchanges, per model and batch size."""
    mpiexec = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
    script = OVERLAP.format(here=str(HERE))
    seen: dict = {}
    for _ in range(rounds):
        for model, hidden in MODELS.items():
            for b in (256, 1024):
                for overlap in ("1", "0"):
                    command = [mpiexec, "-n", "2", sys.executable, "-c", script, str(b), hidden,
                               overlap]  # fmt: skip
                    seen.setdefault((model, b, overlap), []).append(run(command))
    out = []
    for (model, b, overlap), results in seen.items():
        epoch = statistics.median(s for r in results for s in r["epoch_s"])
        exposed = statistics.median(s for r in results for s in r["exposed_s"])
        row = {"model": model, "batch": b, "overlap": overlap == "1", "epoch_s": epoch}
        out.append(row | {"exposed_share": exposed / epoch, "buckets": results[0]["buckets"]})
        print(f"(d) {out[-1]}", flush=True)
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


BACKWARD_SHARE = 0.5  # of a step's per-sample time: measured 0.48-0.50 for 784-h-10 MLPs here
BUCKETS = (2, 4, 8, 16)  # the overlapped reduction's bucket counts tried (the best is taken)


def ring_seconds(nbytes: float, n: int, network: str, buckets: int = 1) -> float:
    """A ring Allreduce of ``nbytes`` over ``n`` ranks, in ``buckets`` messages."""
    bandwidth, latency = NETWORKS[network]
    return 2 * (n - 1) / n * nbytes / bandwidth + 2 * (n - 1) * latency * buckets


def step_seconds(fit: tuple, scale: float, b: int, n: int, network: str, overlap: bool) -> float:
    """One step of a model ``scale`` times the benchmark's size at global batch b on n ranks.
    Without overlap the reduction follows the backward pass; with it, k buckets reduce in the
    background as backward produces them (evenly over its time), so only what outlasts
    backward is exposed, and at least the last bucket; each bucket pays the ring's latency,
    so the best k is taken (or no overlap, where latency rules)."""
    t0, t1 = fit
    compute = t1 * scale * max(1.0, b / n)
    nbytes = PARAMS * 4 * scale
    exposed = ring_seconds(nbytes, n, network)
    if overlap:
        backward = BACKWARD_SHARE * compute
        for k in BUCKETS:
            reduce = ring_seconds(nbytes, n, network, k)
            exposed = min(exposed, max(reduce - backward * (1 - 1 / k), reduce / k))
    return t0 + compute + exposed


def efficiency(fit: tuple, scale: float, b: int, n: int, network: str, overlap: bool) -> float:
    t0, t1 = fit
    return (t0 + t1 * scale * b) / (n * step_seconds(fit, scale, b, n, network, overlap))


def width_for(fit: tuple, target: float, b: int, n: int, network: str, overlap: bool):
    """(the smallest hidden width h of a 784-h-10 MLP whose scaling efficiency reaches
    ``target``, or None where none up to 2^20 does; the efficiency at that width)."""
    for h in (2**k for k in range(4, 21)):
        reached = efficiency(fit, (795 * h + 10) / PARAMS, b, n, network, overlap)
        if reached >= target:
            return h, reached
    return None, reached


def batch_for(fit: tuple, target: float, n: int, network: str, overlap: bool):
    """The smallest global batch (a power of two up to 2^20) at which some 784-h-10 MLP
    reaches ``target`` on n ranks: [batch, width], or None."""
    for b in (2**k for k in range(10, 21)):
        h, _ = width_for(fit, target, b, n, network, overlap)
        if h is not None:
            return [b, h]
    return None


def part_c(a: dict) -> dict:
    fit = step_time_fit(a)
    out = {"t0_s": fit[0], "t1_s": fit[1], "bytes": PARAMS * 4, "rows": [], "sizes": []}
    for network in NETWORKS:
        for n in (8, 64, 512):
            for b in (1024, 8192, 65536):
                step = step_seconds(fit, 1.0, b, n, network, False)
                out["rows"].append(
                    {
                        "network": network,
                        "ranks": n,
                        "batch": b,
                        "allreduce_ms": 1000 * ring_seconds(PARAMS * 4, n, network),
                        "step_ms": 1000 * step,
                        "efficiency": efficiency(fit, 1.0, b, n, network, False),
                        "efficiency_overlap": efficiency(fit, 1.0, b, n, network, True),
                        "samples_per_s": b / step,
                    }
                )
        for overlap in (False, True):
            h, reached = width_for(fit, 0.8, 1024, 64, network, overlap)
            params = None if h is None else 795 * h + 10
            smallest = batch_for(fit, 0.8, 64, network, overlap)
            out["sizes"].append({"network": network, "overlap": overlap, "width": h,
                                 "params": params, "efficiency": reached,
                                 "batch_for_80": smallest})  # fmt: skip
    return out


def markdown(r: dict) -> str:
    lines = ["# bench_distributed", "", f"machine: {r['machine']}", ""]
    if all(part in r for part in "abc"):
        lines += markdown_abc(r)
    if "d" in r:
        lines += [
            "## (d) the Allreduce overlapped with backward (2 ranks x 1 thread, MPI path)",
            "",
            "Epoch seconds (medians) and the exchange's exposed share of a step: the time "
            "inside MPI calls on the step's path (the buckets' starts, tests and the final "
            "wait, or the one blocking Allreduce).",
            "",
            "| model | B | buckets | overlapped: epoch s | exposed | blocking: epoch s | exposed |",
            "|---|---|---|---|---|---|---|",
        ]
        rows = {(d["model"], d["batch"], d["overlap"]): d for d in r["d"]}
        for model, b in dict.fromkeys((d["model"], d["batch"]) for d in r["d"]):
            on, off = rows[(model, b, True)], rows[(model, b, False)]
            lines.append(
                f"| {model} | {b} | {on['buckets']} | {on['epoch_s']:.3f} | "
                f"{on['exposed_share']:.1%} | {off['epoch_s']:.3f} | {off['exposed_share']:.1%} |"
            )
    return "\n".join(lines) + "\n"


def markdown_abc(r: dict) -> list[str]:
    lines = [
        "## (a) 1 rank x 2 threads vs 2 ranks x 1 thread (epoch s, medians)",
        "",
        "The sum over the ranks through shared memory (the default on one machine) and by "
        "MPI_Allreduce, in interleaved rounds; its ms per step and share of the step.",
        "",
        "| B | 1 x 2 | 2 x 1 shared | 2 x 1 mpi | shared / 1 x 2 | sum ms shared | share | "
        "sum ms mpi | share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b, v in r["a"].items():
        if not isinstance(v, dict):
            continue
        lines.append(
            f"| {b} | {v['one_rank_2_threads_s']:.3f} | {v['two_ranks_shared_s']:.3f} | "
            f"{v['two_ranks_mpi_s']:.3f} | "
            f"{v['two_ranks_shared_s'] / v['one_rank_2_threads_s']:.2f} | "
            f"{v['sum_ms_per_step_shared']:.3f} | {v['sum_share_shared']:.1%} | "
            f"{v['sum_ms_per_step_mpi']:.3f} | {v['sum_share_mpi']:.1%} |"
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
        f"With overlap: the Allreduce in k buckets (the best of {BUCKETS}, or none) progressing "
        f"in the background while backward ({BACKWARD_SHARE:.0%} of the per-sample time) "
        "produces them; exposed: what outlasts backward, at least the last bucket.",
        "",
        "| network | ranks | global B | Allreduce ms | step ms | efficiency | with overlap | "
        "samples/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in r["c"]["rows"]:
        lines.append(
            f"| {row['network']} | {row['ranks']} | {row['batch']} | "
            f"{row['allreduce_ms']:.3f} | {row['step_ms']:.3f} | {row['efficiency']:.0%} | "
            f"{row['efficiency_overlap']:.0%} | {row['samples_per_s']:,.0f} |"
        )
    lines += [
        "",
        "The smallest 784-h-10 MLP at which 64 ranks reach 80% efficiency at B = 1024:",
        "",
        "| network | without overlap | with overlap | smallest B reaching 80% (h), without | "
        "with |",
        "|---|---|---|---|---|",
    ]
    sizes = {(s["network"], s["overlap"]): s for s in r["c"]["sizes"]}
    for network in NETWORKS:
        cells = [
            f"never: {s['efficiency']:.0%} at h = 2^20"
            if s["width"] is None
            else f"h = {s['width']:,} ({s['params'] / 1e6:.1f} M parameters)"
            for s in (sizes[(network, False)], sizes[(network, True)])
        ]
        for s in (sizes[(network, False)], sizes[(network, True)]):
            found = s["batch_for_80"]
            cells.append("none" if found is None else f"{found[0]:,} ({found[1]:,})")
        lines.append(f"| {network} | {' | '.join(cells)} |")
    return [*lines, ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="a,b,c,d")
    parts = set(parser.parse_args().parts.split(","))
    start = time.perf_counter()
    results: dict = {"machine": machine()}
    if "a" in parts:
        results["a"] = part_a()
    if "b" in parts:
        results["b"] = part_b()
    if "c" in parts and "a" in results:
        results["c"] = part_c(results["a"])
    if "d" in parts:
        results["d"] = part_d()
    earlier = RESULTS / f"{time.strftime('%Y-%m-%d')}-bench_distributed.json"
    if earlier.exists():  # parts run separately today land in one file
        results = json.loads(earlier.read_text()) | results
    paths = write_results("bench_distributed", results, markdown(results))
    print(f"wrote {paths[0]} and {paths[1]} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
