"""The MPI world, found without importing MPI where there is none, and checks that every rank
was started alike.

mpiexec (MPICH's hydra, Open MPI, Slurm's PMI) tells each process its rank and the world's size in
environment variables; ``launched_under_mpi`` reads them, so a plain ``minigd train`` never loads
mpi4py. ``world`` then returns mpi4py's COMM_WORLD, or says which extra brings it.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from minigd._extras import require

SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS")
ABORT_GRACE_SECONDS = 0.5  # after mpiexec has read a failing rank's last words, to pass them on
ABORT_DRAIN_SECONDS = 5.0  # the longest a failing rank waits for mpiexec to read them


def launched_under_mpi() -> bool:
    """True when this process is one of several started by mpiexec (or srun)."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return True
    return False


def world():
    """mpi4py's COMM_WORLD (``pip install 'minigd[mpi]'``: mpi4py and MPICH's mpiexec; on a
    cluster, build mpi4py against the cluster's own MPI instead)."""
    require("mpi4py", "mpi", "distributed training")
    from mpi4py import MPI

    return MPI.COMM_WORLD


def check_same(comm, what: dict[str, Any]) -> None:
    """Refuses to start when the ranks disagree on ``what`` (data length, seed, model, batch
    size): every rank compares every rank's values in one collective, so all of them raise the
    same sentence instead of one waiting forever in a later collective."""
    mine = json.dumps(what, sort_keys=True, default=str)
    digests = comm.allgather(hashlib.sha256(mine.encode()).hexdigest())
    if len(set(digests)) == 1:
        return
    everyone = comm.allgather(mine)
    first = json.loads(everyone[0])
    for rank, text in enumerate(everyone):
        theirs = json.loads(text)
        differs = sorted(k for k in first if theirs.get(k) != first.get(k))
        if differs:
            detail = ", ".join(
                f"{k} {first[k]!r} on rank 0, {theirs.get(k)!r} on rank {rank}" for k in differs
            )
            raise ValueError(
                f"the {comm.Get_size()} ranks were not started alike: {detail}. Every rank must "
                "see the same data and settings."
            )


def abort_job(comm, exc: BaseException) -> None:
    """Ends every rank of the job after an error on this one: names the rank and the cause on
    stderr, then ``MPI_Abort`` (the others would otherwise wait forever in the next collective).
    A KeyboardInterrupt (a second Ctrl-C) exits 130."""
    rank = comm.Get_rank()
    what = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
    say_then_abort(
        comm,
        f"minigd: rank {rank} of {comm.Get_size()} failed ({what}); ending the job.",
        130 if isinstance(exc, KeyboardInterrupt) else 1,
    )


def say_then_abort(comm, line: str | None, code: int) -> None:
    """Writes ``line`` to stderr, waits until mpiexec has read it, then ends every rank.

    ``MPI_Abort`` kills the job's processes at once, and mpiexec's proxy may not yet have read
    what the failing rank wrote: with no wait, 1 job in 12 ended with exit 1 and no reason. So
    the rank watches its stderr pipe empty (the bytes still unread, ``FIONREAD``), then leaves
    the proxy a moment to forward them.
    """
    import sys
    import time

    if line is not None:
        print(line, file=sys.stderr, flush=True)
    sys.stdout.flush()
    _wait_until_read(sys.stderr, ABORT_DRAIN_SECONDS)
    time.sleep(ABORT_GRACE_SECONDS)
    comm.Abort(code)


def _wait_until_read(stream, most: float) -> None:
    """Waits (at most ``most`` seconds) until the pipe behind ``stream`` holds no unread bytes;
    returns at once where it is not a pipe (a file, a terminal)."""
    import fcntl
    import stat
    import struct
    import termios
    import time

    try:
        fd = stream.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return
        end = time.monotonic() + most
        while time.monotonic() < end:
            unread = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
            if unread == 0:
                return
            time.sleep(0.005)
    except (OSError, ValueError, AttributeError):
        return  # no descriptor to watch: the grace alone


def deal(run, items: list, comm) -> list | None:
    """``[run(item) for item in items]`` computed by the ranks of ``comm`` in turn (rank r takes
    items r, r + N, ...), gathered on rank 0 in the items' order; None on the other ranks.
    What ``mpiexec -n N minigd sweep`` and ``compare`` spread: independent runs, one BLAS
    thread each."""
    rank, size = comm.Get_rank(), comm.Get_size()
    mine = {i: run(item) for i, item in enumerate(items) if i % size == rank}
    gathered = comm.gather(mine, root=0)
    if rank != 0:
        return None
    done = {i: value for part in gathered for i, value in part.items()}
    return [done[i] for i in range(len(items))]
