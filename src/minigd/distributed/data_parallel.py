"""Synchronous data parallelism: each global batch split across ranks, one sum over them a step.

For a global batch of B rows, rank r takes rows [lo_r, hi_r) (shares differ by at most one row; a
rank may get none of a tiny last batch and still joins the collective). It computes the mean
gradient g_r of its n_r rows, and the step needs

    g = (1/B) sum_r n_r g_r,        loss = (1/B) sum_r n_r loss_r

so each rank scales by n_r, and one sum over the ranks of [grads, loss, |g_r|^2 n_r, stop]
gives every rank the same numbers: the same update, the same History. Ranks that share a
machine sum through its shared memory (``node_sum``: 59 us against MPI_Allreduce's 95 us for
the 784-128-10 MLP here); otherwise, or with ``reduction="mpi"``, one in-place Allreduce. The
extra scalars cost nothing: the per-rank squared norms give the gradient noise scale
(McCandlish et al. 2018, appendix A.1) and the stop flag makes Ctrl-C on one rank stop every
rank after the same step.

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
    """

    REDUCTIONS = ("auto", "mpi")

    def __init__(
        self,
        comm,
        sync_batchnorm: bool = True,
        population: int | None = None,
        reduction: str = "auto",
    ) -> None:
        self.comm = comm
        self.reduction = check_choice("reduction", reduction, self.REDUCTIONS)
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
        if mine:
            loss = model.loss_and_grad(xb, yb)
            np.multiply(model.grads, mine, out=buf[:-3])
            buf[-3] = loss * mine
            buf[-2] = norm_sq(model.grads) * mine
        else:  # no row of this (tiny, last) batch: it still joins the sum
            buf[:] = 0.0
        buf[-1] = 1.0 if stop else 0.0
        start = time.perf_counter()
        buf = self._sum(buf)
        self.allreduce_seconds += time.perf_counter() - start
        np.multiply(buf[:-3], 1.0 / n, out=model.grads)
        self.stop_requested = bool(buf[-1] > 0)
        self.big_norm_sq = norm_sq(model.grads)
        self.small_norm_sq = float(buf[-2]) / n
        if n >= 2 * self.size:  # each rank's gradient is a batch of n/N, the reduced one of n
            b_rank = n / self.size
            self.noise.update(self.small_norm_sq, self.big_norm_sq, b_rank, n, self.population)
        else:
            self.noise.skip()
        if self._norms and not self.sync_batchnorm:
            self._average_running_statistics()
        return float(buf[-3]) / n

    def _send_buffer(self, model) -> np.ndarray:
        """Where this rank writes [grads, loss, norm, stop]: its row of the shared window, or
        its own array for the Allreduce (chosen once per model size, by every rank alike)."""
        length = model.grads.size + 3
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
            "b_simple": self.noise.value,
        }

    def state(self) -> dict:
        """The running noise scale, so a resumed run goes on averaging where it stood."""
        return self.noise.state()

    def load_state(self, state: dict) -> None:
        self.noise.load_state(state)

    def __repr__(self) -> str:
        sync = self.sync_batchnorm
        return f"DataParallel(rank={self.rank}, ranks={self.size}, sync_batchnorm={sync})"
