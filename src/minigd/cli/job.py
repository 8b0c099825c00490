"""The processes one command runs as: itself, or the ranks ``mpiexec -n N minigd ...`` started.

Every rank runs the command's code; only rank 0 speaks to the user and writes the reports, and
every rank runs on one BLAS thread (two ranks of two threads each on two cores would make a step
2-60x slower).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from minigd.distributed.comm import launched_under_mpi, say_then_abort, world


@dataclass(frozen=True)
class Job:
    comm: Any = None  # an MPI communicator of every rank, None for one process

    @classmethod
    def current(cls) -> Job:
        """This process's job: the MPI world when started by mpiexec, else one process."""
        return cls(world() if launched_under_mpi() else None)

    @property
    def root(self) -> bool:
        """Whether this process speaks for the job (rank 0, or the only process)."""
        return self.comm is None or self.comm.Get_rank() == 0

    def say(self, *lines: Any) -> None:
        """Prints on rank 0 only, at once (a rank's output is not buffered behind training)."""
        if self.root:
            print(*lines, flush=True)

    def say_error(self, line: str) -> None:
        """A line on stderr, from rank 0 only."""
        if self.root:
            print(line, file=sys.stderr, flush=True)

    def threads(self, requested: int | None) -> int | None:
        """BLAS threads for each process: one per rank under MPI, else what was asked."""
        return 1 if self.comm is not None else requested

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (it is measured once and sent)."""
        return value if self.comm is None else self.comm.bcast(value, root=0)


def end_job_on_failure(code: int) -> None:
    """Under mpiexec, a command that failed on this rank (its sentence is on stderr already)
    ends every rank: the others would wait forever in their first collective (a data file
    missing on one node, an argument one rank was started without)."""
    if launched_under_mpi():
        comm = world()
        if comm.Get_size() > 1:
            say_then_abort(comm, None, code)
