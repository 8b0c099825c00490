"""A training run as a folder: what ``minigd train`` does, callable from Python too.

``config`` holds a run's settings (config.json), ``folder`` the folder's files and lock, and
``train`` the run itself: check everything, lock, train with checkpoints, write the results.
"""

from minigd.runs.config import RunConfig, read_config, should_stream
from minigd.runs.folder import RunFolder, RunFolderError
from minigd.runs.train import RunOutcome, describe, final_metrics, train_run

__all__ = [
    "RunConfig",
    "RunFolder",
    "RunFolderError",
    "RunOutcome",
    "describe",
    "final_metrics",
    "read_config",
    "should_stream",
    "train_run",
]
