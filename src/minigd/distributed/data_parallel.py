"""Synchronous data parallelism: each global batch split across ranks, one sum over them a step.

For a global batch of B rows, rank r takes rows [lo_r, hi_r) (shares differ by at most one row; a
rank may get none of a tiny last batch and still joins the collective). It computes the mean
gradient g_r of its n_r rows, and the step needs

    g = (1/B) sum_r n_r g_r,        loss = (1/B) sum_r n_r loss_r

so each rank scales by n_r, and one sum over the ranks of [loss, |g_r|^2 n_r, stop, grads]
gives every rank the same numbers: the same update, the same History. Ranks that share a
machine sum through its shared memory (``node_sum``: 59 us against MPI_Allreduce's 95 us for
the 784-128-10 MLP here); otherwise, or with ``reduction="mpi"``, by Allreduce. The extra
scalars cost nothing: the per-rank squared norms give the gradient noise scale (McCandlish et
al. 2018, appendix A.1) and the stop flag makes Ctrl-C on one rank stop every rank after the
same step.

With ``overlap`` the Allreduce goes in buckets of layers (``bucket_bytes``), each started by a
non-blocking Allreduce as soon as backward has produced it, last layer first, and the step
waits only before the update (PyTorch DDP's buckets); the scalars travel with the last bucket.
A model whose gradient is one bucket (the 784-128-10 MLP: its first layer, produced last,
holds 99% of it) is summed by one Allreduce after backward either way.

DataParallel is one of the Trainer's gradient paths (``training.gradient``): the loop calls its
``loss_and_grad`` and knows nothing else of MPI.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

from minigd import rules
from minigd._validation import check_choice
from minigd.batching import rank_share
from minigd.distributed.comm import abort_job, check_same
from minigd.distributed.node_sum import NodeSum
from minigd.nn.layers import BatchNorm
from minigd.noise import RunningNoiseScale, norm_sq

# the exchanged vector: [loss, |g_r|^2, stop, gradient] (the scalars first: with overlap they
# travel with the last bucket, the first layers', at the vector's start)
LOSS, NORM, STOP, SCALARS = 0, 1, 2, 3
BUCKET_BYTES = 1 << 20  # an overlapped bucket closes at a layer's start once it holds this


def _ranks_on_this_machine(comm) -> int:
    """How many ranks share this machine's cores (what the BLAS threads are divided by)."""
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return local.Get_size()
    finally:
        local.Free()


class DataParallel:
    """The per-step exchange of one rank; ``loss_and_grad`` replaces the model's own.

    BatchNorm: with ``sync_batchnorm`` (the default) the layers' statistics and backward sums
    are summed over the global batch (``BatchNorm.sync``), so N ranks train exactly the model one
    process trains; without it each rank normalizes its own share (what PyTorch's DDP does by
    default) and the running statistics are averaged after each step, so the ranks stay alike.

    ``reduction``: "auto" sums through shared memory where ranks share a machine (``node_sum``),
    "mpi" always by ``MPI_Allreduce``; the results agree to rounding (bitwise on two ranks).
    ``overlap``: on the Allreduce path, sum buckets of ``bucket_bytes`` while backward runs.
    Off by default: MPICH moves a non-blocking Allreduce only inside MPI calls, so on ranks that
    keep every core busy it gains nothing (epochs 0.99-1.02x, ``benchmarks/bench_distributed.py``
    part d); it is for an MPI that progresses in the background (a spare core, an offloading
    network card).
    """

    REDUCTIONS = ("auto", "mpi")

    def __init__(
        self,
        comm,
        sync_batchnorm: bool = True,
        population: int | None = None,
        reduction: str = "auto",
        overlap: bool = False,
        bucket_bytes: int = BUCKET_BYTES,
    ) -> None:
        self.comm = comm
        self.reduction = check_choice("reduction", reduction, self.REDUCTIONS)
        self.overlap = bool(overlap)  # the MPI Allreduce, in buckets during backward
        self.bucket_bytes = int(bucket_bytes)
        self._buckets = None
        self._node_sum: NodeSum | None = None
        self.sync_batchnorm = bool(sync_batchnorm)
        self.count = 0  # rows in the current global batch (what synced BatchNorm divides by)
        self._model = None
        self._norms: list = []
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.ranks = self.size
        self._buffer: np.ndarray | None = None
        self.stop_requested = False  # some rank asked to stop after this step
        self.small_norm_sq = float("nan")  # mean over ranks of |g_r|^2, weighted by n_r
        self.big_norm_sq = float("nan")  # |g|^2 of the reduced gradient
        self.allreduce_seconds = 0.0
        # which process is which rank: MPI's own report of a dead process names its pid
        self.pids = comm.allgather(os.getpid())
        self.local_processes = _ranks_on_this_machine(comm)
        self.noise = RunningNoiseScale()
        self.population = population  # the training set's size, m
        self._batch_size = 0  # the global batch (for the summary), known at begin()

    def allreduce(self, array: np.ndarray) -> None:
        """Sums ``array`` over the ranks, in place (synced BatchNorm's statistics)."""
        from mpi4py import MPI

        self.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)

    def attach(self, model) -> None:
        """Links the model's BatchNorm layers to this exchange (once per model)."""
        if self._model is model:
            return
        self._model = model
        self._norms = [layer for layer in model.layers if isinstance(layer, BatchNorm)]
        for layer in self._norms:
            layer.sync = self if self.sync_batchnorm else None

    def begin(self, model, batches, agreed) -> None:
        """Before the first step: every rank agrees on ``agreed()`` (data, model, parameters,
        position) or all refuse with one sentence; then the batch sizes are checked."""
        check_same(self.comm, agreed())
        self.check(model, batches.batch_size, batches.smallest_batch)
        self._batch_size = batches.batch_size

    def abandon(self, exc: BaseException) -> None:
        """The other ranks would wait in the next Allreduce: end the job, saying why."""
        abort_job(self.comm, exc)

    def check(self, model, batch_size: int, smallest: int) -> None:
        """Refuses, on every rank alike, a batch too small to give each rank a row when synced
        BatchNorm needs every rank in its collectives (``smallest``: the epoch's smallest)."""
        self.attach(model)
        if self._norms and not self.sync_batchnorm:
            self._warn_small_shares(batch_size)
        if self._norms and self.sync_batchnorm and smallest < self.size:
            raise ValueError(
                f"a batch of {smallest} rows cannot give each of the {self.size} ranks a "
                "row, and synchronized BatchNorm needs every rank: use last_batch='merge' or "
                "'drop', a larger batch, or fewer ranks."
            )

    def _warn_small_shares(self, batch_size: int) -> None:
        """Rule 5 for per-rank BatchNorm: the statistics come from each rank's share, not the
        batch (said once, by rank 0)."""
        lo, hi = self.share(batch_size)
        if self.rank == 0 and rules.bn_batch_too_small(hi - lo):
            warnings.warn(
                f"with per-rank BatchNorm statistics each rank normalizes its share of {hi - lo} "
                f"rows, and batches under {rules.BN_MIN_BATCH} give poor estimates (rule 5); use "
                "--batchnorm-stats global (the default) or a larger batch.",
                stacklevel=4,
            )

    def share(self, n: int) -> tuple[int, int]:
        """This rank's rows [lo, hi) of a batch of n."""
        return rank_share(n, self.rank, self.size)

    def loss_and_grad(
        self, model, xb: np.ndarray, yb: np.ndarray, n: int, step: int = 0, stop: bool = False
    ) -> float:
        """The step's global mean loss, with ``model.grads`` the global mean gradient, from
        this rank's share (xb, yb) of a global batch of n rows (MiniBatches reads only it)."""
        mine = len(xb)
        self.attach(model)
        self.count = n
        buf = self._send_buffer(model)
        if self.overlap and self._node_sum is None and len(self._buckets_of(model)) > 1:
            buf = self._overlapped(model, xb, yb, buf, stop)
        else:
            if mine:
                loss = model.loss_and_grad(xb, yb)
                np.multiply(model.grads, mine, out=buf[SCALARS:])
                buf[LOSS], buf[NORM] = loss * mine, norm_sq(model.grads) * mine
            else:  # no row of this (tiny, last) batch: it still joins the sum
                buf[:] = 0.0
            buf[STOP] = 1.0 if stop else 0.0
            start = time.perf_counter()
            buf = self._sum(buf)
            self.allreduce_seconds += time.perf_counter() - start
        np.multiply(buf[SCALARS:], 1.0 / n, out=model.grads)
        self.stop_requested = bool(buf[STOP] > 0)
        self.big_norm_sq = norm_sq(model.grads)
        self.small_norm_sq = float(buf[NORM]) / n
        if n >= 2 * self.size:  # each rank's gradient is a batch of n/N, the reduced one of n
            b_rank = n / self.size
            self.noise.update(self.small_norm_sq, self.big_norm_sq, b_rank, n, self.population)
        else:
            self.noise.skip()
        if self._norms and not self.sync_batchnorm:
            self._average_running_statistics()
        return float(buf[LOSS]) / n

    def _overlapped(self, model, xb, yb, buf: np.ndarray, stop: bool) -> np.ndarray:
        """The step's exchange by non-blocking Allreduces of buckets of layers, each started
        as soon as backward has produced it, last layer first (as PyTorch DDP does); the
        scalars travel with the last bucket, the first layers'. Waits only at the end."""
        from mpi4py import MPI

        mine, grads, buckets = len(xb), model.grads, self._buckets_of(model)
        requests, sent, norm = [], 0, 0.0
        spent = 0.0

        def send(upto: int) -> None:  # every bucket whose rows are all at or after upto
            nonlocal sent, norm, spent
            start = time.perf_counter()
            while sent < len(buckets) and buckets[sent][0] >= upto:
                lo, hi = buckets[sent]
                part = grads[lo:hi]
                if mine:
                    norm += norm_sq(part)
                    np.multiply(part, mine, out=buf[SCALARS + lo : SCALARS + hi])
                else:
                    buf[SCALARS + lo : SCALARS + hi] = 0.0
                region = buf[SCALARS + lo : SCALARS + hi]
                if lo == 0:  # the last: the scalars go with it
                    buf[LOSS], buf[NORM] = loss * mine, norm * mine
                    buf[STOP] = 1.0 if stop else 0.0
                    region = buf[: SCALARS + hi]
                requests.append(self.comm.Iallreduce(MPI.IN_PLACE, region, op=MPI.SUM))
                sent += 1
            if requests:
                MPI.Request.Testall(requests)  # MPI moves the bytes only inside its calls
            spent += time.perf_counter() - start

        loss = 0.0
        if mine:
            z = model.forward(xb, True)
            loss, dz = model.loss(z, yb)
            model.backward(dz, ready=send)
        else:  # no row of this (tiny, last) batch: it still joins every bucket's sum
            send(0)
        start = time.perf_counter()
        MPI.Request.Waitall(requests)
        self.allreduce_seconds += spent + time.perf_counter() - start
        return buf

    def _buckets_of(self, model) -> list[tuple[int, int]]:
        """The gradient's buckets in the order backward finishes them: [lo, hi) ranges, last
        layers first, each closed at a layer's start once it holds ``bucket_bytes``; the same
        on every rank (each Iallreduce must match one on every other rank)."""
        key = (id(model), self.bucket_bytes)
        if self._buckets is None or self._buckets[0] != key:
            per_element = model.grads.itemsize
            cuts, hi = [], model.grads.size
            for lo in sorted(set(model.layer_starts), reverse=True):
                if lo == 0 or (hi - lo) * per_element >= self.bucket_bytes:
                    if hi > lo or lo == 0:
                        cuts.append((lo, hi))
                    hi = lo
            self._buckets = (key, cuts)
        return self._buckets[1]

    def _send_buffer(self, model) -> np.ndarray:
        """Where this rank writes [loss, norm, stop, grads]: its row of the shared window, or
        its own array for the Allreduce (chosen once per model size, by every rank alike)."""
        length = model.grads.size + SCALARS
        if self._buffer is None or len(self._buffer) != length:
            self._buffer = np.empty(length, model.dtype)
            self._node_sum = None
            if self.reduction == "auto":
                self._node_sum = NodeSum.for_comm(self.comm, length, model.dtype)
        return self._buffer if self._node_sum is None else self._node_sum.slot()

    def _sum(self, buf: np.ndarray) -> np.ndarray:
        """Every rank's ``buf`` summed: the shared result row, or ``buf`` itself, in place."""
        if self._node_sum is not None:
            return self._node_sum.sum()
        from mpi4py import MPI

        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return buf

    def _average_running_statistics(self) -> None:
        stats = np.concatenate([v for la in self._norms for v in (la.running_mean, la.running_var)])
        self.allreduce(stats)
        stats /= self.size
        at = 0
        for layer in self._norms:
            for v in (layer.running_mean, layer.running_var):
                v[...] = stats[at : at + v.size]
                at += v.size

    # -- what the loop records ------------------------------------------------------------
    def columns(self) -> dict[str, float]:
        """History's per-step noise columns (``noise.COLUMNS``), from the ranks' gradients."""
        return self.noise.columns()

    def summary(self) -> dict:
        lo, hi = self.share(self._batch_size) if self._batch_size else (0, 0)
        return {
            "ranks": self.size,
            "per_rank_batch": hi - lo,  # rank 0's share of a full batch (shares differ by <= 1)
            "allreduce_seconds": self.allreduce_seconds,
            "reduction": "mpi" if self._node_sum is None else "shared memory",
            "overlap_buckets": self._overlapped_buckets(),
            "b_simple": self.noise.value,
        }

    def _overlapped_buckets(self) -> int:
        """Buckets summed while backward ran (0: one sum after it)."""
        if not self.overlap or self._node_sum is not None or self._buckets is None:
            return 0
        count = len(self._buckets[1])
        return count if count > 1 else 0

    def state(self) -> dict:
        """The running noise scale, so a resumed run goes on averaging where it stood."""
        return self.noise.state()

    def load_state(self, state: dict) -> None:
        self.noise.load_state(state)

    def __repr__(self) -> str:
        sync = self.sync_batchnorm
        return f"DataParallel(rank={self.rank}, ranks={self.size}, sync_batchnorm={sync})"
