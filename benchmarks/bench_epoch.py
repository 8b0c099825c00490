"""Epoch time of an MLP 784-128-10 on MNIST-shaped data: minigd against PyTorch and scikit-learn.

Run from the repository root:

    python benchmarks/bench_epoch.py                 # everything, ~5 minutes on 2 cores
    python benchmarks/bench_epoch.py --quick         # B=64 and 1024, SGD only

Implementations, all with the same thread count (NumPy's BLAS and torch's intra-op pool):

- minigd loop: ``model.loss_and_grad`` and ``optimizer.step`` over ``MiniBatches.epoch(e)``;
- minigd fit: the Trainer that ``minigd.fit`` builds, with its default callbacks (divergence guard,
  progress lines), driven one epoch at a time;
- torch hand loop: ``randperm``, one gather of the epoch, slices per step, fused optimizer,
  ``zero_grad(set_to_none=True)``;
- torch DataLoader: the typical ``DataLoader(TensorDataset(X, y), shuffle=True)`` loop;
- scikit-learn: ``MLPClassifier.partial_fit`` (one epoch per call), float32.

Method: one discarded warm-up epoch each, then rounds in which every implementation runs one epoch
in turn (A, B, C, D, E, A, B, ...), so drifts of a shared, noisy machine hit all alike; each timed
epoch starts after half a second of idle, so no implementation pays for the spinning worker threads
of the one before. Reported:
median epoch seconds with min and max; ratios as the median over rounds of the two epochs of the
same round; achieved GFLOP/s; and the fraction of the matmul-bound limit: the step's five matrix
products timed alone with the same BLAS (each in its faster orientation), times the steps of an
epoch, measured once per round between the epochs (median over rounds) and divided by minigd's
median epoch. Peak RSS is measured per implementation in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    FLOP_PER_SAMPLE,
    interleaved,
    machine,
    mnist_shaped,
    paired_ratios,
    peak_rss_mb,
    set_threads,
    summary,
    write_results,
)

BATCH_SIZES = (32, 64, 256, 1024, 60000)
PAUSE = 0.5  # seconds of idle before each timed epoch
LR = {"sgd": 0.1, "adam": 1e-3}
THREADS = 2  # every implementation's BLAS threads (--threads); minigd's fit would measure them


def initial_weights(seed: int = 0) -> dict[str, np.ndarray]:
    from minigd.nn import mlp

    return {k: v.copy() for k, v in mlp(784, [128], 10, seed=seed).named_parameters()}


# -- implementations ------------------------------------------------------------------------
class MinigdLoop:
    name = "minigd loop"

    def __init__(self, batch, opt, X, y, weights):
        from minigd import MiniBatches
        from minigd.nn import mlp
        from minigd.optim import SGD, Adam

        self.model = mlp(784, [128], 10)
        self.model.load_state(weights)
        self.opt = SGD(LR["sgd"]) if opt == "sgd" else Adam(LR["adam"])
        self.batches = MiniBatches(X, y, batch_size=batch, seed=0)

    def epoch(self, e):
        model, opt = self.model, self.opt
        for xb, yb in self.batches.epoch(e):
            model.loss_and_grad(xb, yb)
            opt.step(model.params, model.grads)

    def predict(self, X):
        return self.model.predict(X)


class MinigdFit:
    name = "minigd fit"

    def __init__(self, batch, opt, X, y, weights):
        from minigd.nn import mlp
        from minigd.training import make_trainer

        self.model = mlp(784, [128], 10)
        self.model.load_state(weights)
        # the thread count every implementation is given: fit's own choice (ThreadChoice,
        # 1 or 2 measured on the run) is bench_threads.py's subject
        self.trainer = make_trainer(self.model, X, y, batch_size=batch, epochs=1, optimizer=opt,
                                    lr=LR[opt], verbose=1, threads=THREADS)  # fmt: skip
        self.sink = io.StringIO()

    def epoch(self, e):
        self.trainer.epochs = e + 1
        with contextlib.redirect_stdout(self.sink):
            self.trainer.run()
        self.sink.seek(0)
        self.sink.truncate()

    def predict(self, X):
        return self.model.predict(X)


def _torch_net(weights, opt):
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.from_numpy(weights[name]))
    if opt == "sgd":
        optimizer = torch.optim.SGD(net.parameters(), lr=LR["sgd"], fused=True)
    else:
        optimizer = torch.optim.Adam(net.parameters(), lr=LR["adam"], fused=True)
    return net, optimizer


class TorchHand:
    name = "torch hand loop"

    def __init__(self, batch, opt, X, y, weights):
        import torch

        self.torch = torch
        self.net, self.opt = _torch_net(weights, opt)
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)
        self.batch = batch
        self.gen = torch.Generator().manual_seed(0)

    def epoch(self, e):
        torch, net, opt, b = self.torch, self.net, self.opt, self.batch
        cross_entropy = torch.nn.functional.cross_entropy
        perm = torch.randperm(len(self.X), generator=self.gen)
        Xs, ys = self.X[perm], self.y[perm]  # one gather per epoch, then views
        for i in range(0, len(Xs), b):
            loss = cross_entropy(net(Xs[i : i + b]), ys[i : i + b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def predict(self, X):
        with self.torch.no_grad():
            return self.net(self.torch.from_numpy(X)).argmax(1).numpy()


class TorchDataLoader(TorchHand):
    name = "torch DataLoader"

    def __init__(self, batch, opt, X, y, weights):
        super().__init__(batch, opt, X, y, weights)
        from torch.utils.data import DataLoader, TensorDataset

        self.loader = DataLoader(
            TensorDataset(self.X, self.y), batch_size=batch, shuffle=True, generator=self.gen
        )

    def epoch(self, e):
        cross_entropy = self.torch.nn.functional.cross_entropy
        for xb, yb in self.loader:
            loss = cross_entropy(self.net(xb), yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()


class SklearnMLP:
    name = "scikit-learn MLP"

    def __init__(self, batch, opt, X, y, weights):
        from sklearn.neural_network import MLPClassifier

        kwargs = (
            {"solver": "sgd", "momentum": 0.0, "nesterovs_momentum": False}
            if opt == "sgd"
            else {"solver": "adam"}
        )
        self.clf = MLPClassifier(
            hidden_layer_sizes=(128,),
            activation="relu",
            alpha=0.0,
            batch_size=batch,
            learning_rate_init=LR[opt],
            shuffle=True,
            random_state=0,
            **kwargs,
        )
        self.X, self.y = X, y

    def epoch(self, e):
        self.clf.partial_fit(self.X, self.y, classes=np.arange(10))

    def predict(self, X):
        return self.clf.predict(X)


IMPLEMENTATIONS = {
    cls.name: cls for cls in (MinigdLoop, MinigdFit, TorchHand, TorchDataLoader, SklearnMLP)
}


# -- measurements ---------------------------------------------------------------------------
def matmul_seconds(batch: int, reps: int) -> float:
    """Seconds of the step's five matrix products at this batch size, alone, at the best rate
    this BLAS reaches on them here: each product is timed in both orientations (C = A B and
    C^T = B^T A^T, each into a C-ordered output) and the fastest of ``reps`` repetitions of the
    faster orientation counts. Whatever layout an implementation picks, it cannot beat this."""
    rng = np.random.default_rng(0)
    f32 = np.float32

    def arr(*shape):
        return rng.random(shape, dtype=f32)

    x, w1, w2 = arr(batch, 784), arr(128, 784), arr(10, 128)
    h, dz, dh = arr(batch, 128), arr(batch, 10), arr(batch, 128)
    products = [  # (A, B) for C = A @ B
        (x, w1.T),  # forward, layer 1
        (h, w2.T),  # forward, layer 2
        (dz.T, h),  # dW2
        (dz, w2),  # dx of layer 2
        (dh.T, x),  # dW1
    ]
    total = 0.0
    for a, b in products:
        best = np.inf
        for left, right in ((a, b), (b.T, a.T)):
            out = np.empty((left.shape[0], right.shape[1]), f32)
            for i in range(reps + 2):
                start = time.perf_counter()
                np.matmul(left, right, out=out)
                if i >= 2:
                    best = min(best, time.perf_counter() - start)
        total += best
    return total


def time_epochs(batch, opt, names, data, weights, rounds):
    """Epoch seconds per implementation over interleaved rounds, and the matmul-bound epoch
    measured once per round between them."""
    X, y = data[0], data[1]
    impls = [IMPLEMENTATIONS[n](batch, opt, X, y, weights) for n in names]
    steps = -(-len(X) // batch)
    bound = []

    def measure_bound():
        time.sleep(PAUSE)
        bound.append(steps * matmul_seconds(batch, reps=max(5, min(50, 60000 // batch))))

    runs = interleaved(impls, rounds, PAUSE, after_round=measure_bound)
    seconds = {impl.name: summary(r) for impl, r in zip(impls, runs, strict=True)}
    return seconds, summary(bound)


def paired_ratio(seconds: dict, a: str, b: str) -> float:
    """Median over rounds of a's epoch over b's in the same round."""
    return float(np.median(paired_ratios(seconds[a]["runs"], seconds[b]["runs"])))


def accuracy_check(data, weights, epochs=5):
    """Test accuracy after 5 epochs at B=64, SGD lr 0.1: minigd against the torch hand loop."""
    X, y, Xt, yt = data
    out = {}
    for cls in (MinigdLoop, TorchHand):
        impl = cls(64, "sgd", X, y, weights)
        for e in range(epochs):
            impl.epoch(e)
        out[cls.name] = float(np.mean(impl.predict(Xt) == yt))
    return out


def rss_of(name: str, batch: int, threads: int, data_file: Path) -> tuple[float, float]:
    """Peak RSS (MB) of a fresh process that loads the data (saved .npy), builds ``name`` and
    trains two epochs: (peak before training, peak after)."""
    code = (
        f"import sys; sys.argv=['x']; sys.path.insert(0, {str(Path(__file__).parent)!r});"
        f"import bench_epoch as b; print(*b._rss_child({name!r}, {batch}, {threads}, "
        f"{str(data_file)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = out.stdout.strip().splitlines()[-1].split()
    return float(before), float(after)


def _rss_child(name: str, batch: int, threads: int, data_file: str) -> tuple[float, float]:
    global THREADS
    THREADS = threads
    set_threads(threads, with_torch=name.startswith("torch"))  # torch alone weighs ~190 MB
    X, y = np.load(f"{data_file}.X.npy"), np.load(f"{data_file}.y.npy")  # read in place
    impl = IMPLEMENTATIONS[name](batch, "sgd", X, y, initial_weights())
    before = peak_rss_mb()
    for e in range(2):
        impl.epoch(e)
    return before, peak_rss_mb()


# -- report ---------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [
        f"# Epoch benchmark, {meta['date']}",
        "",
        f"MLP 784-128-10, ReLU, softmax cross-entropy, float32; 60000 x 784 MNIST-shaped training "
        f"set (mnist-5k shifted by 1-2 pixels), {meta['rounds']} interleaved rounds after one "
        f"warm-up epoch; medians, [min, max] in seconds. Ratios are medians of the per-round "
        f"ratios. The matmul-bound epoch is measured between the rounds (median).",
        "",
        f"Machine: {meta['machine'].get('cpu', '?')}, {meta['machine']['cpus']} CPUs; "
        f"{meta['threads']} threads for every implementation; NumPy {meta['machine']['numpy']} "
        f"on {meta['blas'].get('internal_api', '?')} {meta['blas'].get('version', '')} "
        f"({meta['blas'].get('architecture', '?')} kernel); torch {meta['machine']['torch']}; "
        f"scikit-learn {meta['machine']['sklearn']}.",
        "",
    ]
    for opt, rows in result["epochs"].items():
        names = list(next(iter(rows.values()))["seconds"])
        lines += [f"## {opt.upper()} (lr {LR[opt]:g})", ""]
        head = [
            "batch",
            *names,
            "minigd/torch",
            "minigd/sklearn",
            "fit/loop",
            "GFLOP/s",
            "matmul-bound s",
            "of bound",
        ]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for batch, row in rows.items():
            sec = row["seconds"]
            cells = [str(batch)] + [
                f"{sec[n]['median']:.3f} [{sec[n]['min']:.3f}, {sec[n]['max']:.3f}]" for n in names
            ]
            cells += [
                f"{row.get(k, float('nan')):.2f}"
                for k in ("minigd_over_torch", "minigd_over_sklearn", "fit_over_loop")
            ]
            cells += [
                f"{row['gflops']:.1f}",
                f"{row['matmul_bound']:.3f}",
                f"{100 * row['fraction_of_bound']:.0f}%",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if result.get("accuracy"):
        acc = result["accuracy"]
        lines += ["## Accuracy after 5 epochs at B=64 (SGD lr 0.1, same initial weights)", ""]
        lines += [f"- {k}: {100 * v:.2f}%" for k, v in acc.items()]
        lines.append("")
    if result.get("rss"):
        lines += [
            "## Peak RSS of a fresh process, 2 epochs at B=64 (MB)",
            "",
            "The 60000 x 784 float32 training set alone is 188 MB.",
            "",
            "| implementation | data loaded, model built | after training | training added |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {a:.0f} | {b:.0f} | {b - a:.0f} |" for k, (a, b) in result["rss"].items()
        ]
        lines.append("")
    lines += ["Reproduce: `python benchmarks/bench_epoch.py`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--optimizers", default="sgd,adam")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--quick", action="store_true", help="B=64,1024, SGD, no RSS/accuracy")
    parser.add_argument("--no-extras", action="store_true", help="skip RSS and accuracy")
    parser.add_argument("--name", default="bench_epoch")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.optimizers, args.no_extras = "64,1024", "sgd", True
    global THREADS
    THREADS = args.threads
    blas = set_threads(args.threads)
    data = mnist_shaped()
    weights = initial_weights()
    names = args.implementations.split(",")
    result = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "rounds": args.rounds,
            "threads": args.threads,
            "blas": blas,
            "machine": machine(),
        },
        "epochs": {},
    }
    for opt in args.optimizers.split(","):
        result["epochs"][opt] = {}
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            seconds, bound = time_epochs(batch, opt, names, data, weights, args.rounds)
            ours = seconds.get("minigd loop", {}).get("median", float("nan"))
            row = {
                "seconds": seconds,
                "matmul_bound": bound["median"],
                "matmul_bound_runs": bound["runs"],
                "fraction_of_bound": bound["median"] / ours,
                "gflops": FLOP_PER_SAMPLE * len(data[0]) / ours / 1e9,
            }
            for key, other in (
                ("minigd_over_torch", "torch hand loop"),
                ("minigd_over_sklearn", "scikit-learn MLP"),
            ):
                if other in seconds and "minigd loop" in seconds:
                    row[key] = paired_ratio(seconds, "minigd loop", other)
            if "minigd fit" in seconds and "minigd loop" in seconds:
                row["fit_over_loop"] = paired_ratio(seconds, "minigd fit", "minigd loop")
            result["epochs"][opt][batch] = row
            medians = ", ".join(f"{n} {s['median']:.3f}" for n, s in seconds.items())
            print(f"{opt} B={batch}: {medians}; bound {bound['median']:.3f}", flush=True)
    if not args.no_extras:
        result["accuracy"] = accuracy_check(data, weights)
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            data_file = Path(tmp) / "data"
            np.save(f"{data_file}.X.npy", data[0])
            np.save(f"{data_file}.y.npy", data[1])
            result["rss"] = {n: rss_of(n, 64, args.threads, data_file) for n in names}
    json_path, md_path = write_results(args.name, result, markdown(result))
    print(markdown(result))
    print(f"wrote {json_path} and {md_path}")
    json.dumps(result, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
