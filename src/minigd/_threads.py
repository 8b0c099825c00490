"""BLAS threads, chosen rather than inherited, and a look at how busy the machine is.

OpenBLAS starts one thread per core and spins them between calls. When another process is busy
on the same cores, those threads fight it for every matrix product: on a 2-core machine with one
competing process a training step ran 15-60x slower with 2 BLAS threads than with 1. So minigd
sets the thread count deliberately: by default the cores this process may use
(``os.sched_getaffinity``), and one per worker wherever it runs several processes.

Setting threads needs threadpoolctl (the ``threads`` extra, also in ``all``); without it the
BLAS keeps its own choice and a warning says how to take control.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator

from minigd._validation import check_int


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | None) -> int:
    """``threads`` checked, or the usable cores when None."""
    if threads is None:
        return usable_cores()
    return check_int("threads", threads, minimum=1, fix="Use 1 when other processes are busy.")


@contextlib.contextmanager
def blas_threads(threads: int | None) -> Iterator[int]:
    """Runs the block with the BLAS limited to ``threads`` (None: the usable cores)."""
    n = resolve_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        warnings.warn(
            "threadpoolctl is not installed, so the BLAS keeps its own thread count; "
            "pip install 'minigd[threads]' to let minigd choose it.",
            stacklevel=3,
        )
        yield n
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield n


class BlasThreads:
    """The BLAS limited to ``threads`` while held, and changeable while held (``set``): the loop
    switches between 1 thread and the usable cores as it measures which trains faster
    (``training.thread_choice``). The count found on entry is restored on exit."""

    def __init__(self, threads: int | None) -> None:
        self.threads = resolve_threads(threads)
        self._controller = None
        self._limit = None

    def __enter__(self) -> BlasThreads:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            warnings.warn(
                "threadpoolctl is not installed, so the BLAS keeps its own thread count; "
                "pip install 'minigd[threads]' to let minigd choose it.",
                stacklevel=2,
            )
            return self
        self._controller = ThreadpoolController()
        self.set(self.threads)
        return self

    @property
    def settable(self) -> bool:
        return self._controller is not None

    def set(self, threads: int) -> None:
        """From now on the BLAS uses ``threads`` (no-op without threadpoolctl)."""
        self.threads = resolve_threads(threads)
        if self._controller is None:
            return
        if self._limit is not None:
            self._limit.restore_original_limits()
        self._limit = self._controller.limit(limits=self.threads, user_api="blas")

    def __exit__(self, *exc) -> None:
        if self._limit is not None:
            self._limit.restore_original_limits()
            self._limit = None


def current_blas_threads() -> int | None:
    """The threads the BLAS would use now (None where threadpoolctl cannot tell)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return max(counts) if counts else None


def other_load(seconds: float = 0.25) -> float | None:
    """Cores that other processes kept busy over the next ``seconds`` (Linux /proc), or None
    where that cannot be read. Near 0 on a quiet machine; near 1 with one busy competitor."""
    try:
        busy0, total0 = _cpu_ticks()
        own0 = time.process_time()
        time.sleep(seconds)
        busy1, total1 = _cpu_ticks()
        own = time.process_time() - own0
    except (OSError, ValueError, IndexError):
        return None
    ticks = total1 - total0
    if ticks <= 0:
        return None
    cores = os.cpu_count() or 1
    busy_cores = (busy1 - busy0) / ticks * cores
    return max(0.0, busy_cores - own / seconds)


def others_runnable(samples: int = 5) -> int | None:
    """Tasks of other processes ready to run now (the median of ``samples`` looks at the
    kernel's count in /proc/loadavg, less this process's running threads); None where that cannot
    be read, or where this process may use only some of the cores (the count covers all of
    them). A busy neighbour is 1 at every look; a quiet machine 0: one look of ~10 us finds
    only this thread running, where the full count costs ~35 us a look."""
    if usable_cores() != (os.cpu_count() or 1):
        return None
    try:
        if _running() <= 1:  # this thread alone
            return 0
        counts = sorted(_running() - _own_running() for _ in range(samples))
    except (OSError, ValueError, IndexError):
        return None
    return max(0, counts[len(counts) // 2])


def _running() -> int:
    """Tasks of every process running or ready to run now (the kernel's nr_running)."""
    with open("/proc/loadavg") as f:
        return int(f.read().split()[3].split("/")[0])


def _own_running() -> int:
    """This process's threads in state R (running or ready)."""
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended
            continue
        count += stat[stat.rindex(")") + 2] == "R"
    return count


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])
    return total - idle, total
