"""Data-parallel training over MPI (mpi4py): one Allreduce of the flat gradient per step."""

from minigd.distributed.comm import abort_job, check_same, deal, launched_under_mpi, world
from minigd.distributed.data_parallel import DataParallel

__all__ = ["DataParallel", "abort_job", "check_same", "deal", "launched_under_mpi", "world"]
