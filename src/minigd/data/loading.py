"""Where data enters minigd by name: a dataset's name or a file's path -> (train, test).

The command line and the experiments take one string for the data ("mnist-5k", "X.npz",
"table.csv"); this module decides what it names. A named dataset brings its fixed held-out split;
a file gives its samples and no test split (None), which a caller can fill with
``validation_split``.
"""

from __future__ import annotations

import os
from pathlib import Path

from minigd.data import datasets
from minigd.data.files import Dataset
from minigd.data.formats import load_arrays, suffixes


def load(
    spec: str | os.PathLike,
    *,
    target: int | str | None = None,
    y_path: str | os.PathLike | None = None,
    task: str = "auto",
) -> tuple[Dataset, Dataset | None]:
    """A named dataset's (train, test), or a data file's (data, None).

    Args:
        spec: a name from ``datasets.names()``, the path of a data file (``formats``) or of a
            shard folder.
        target, y_path, task: for files, as ``load_arrays`` takes them.
    """
    name = os.fspath(spec)
    if name in datasets.REGISTRY:
        if task == "regression":
            raise ValueError(f"the dataset {name!r} holds class labels; leave --task out.")
        return datasets.load(name)
    if not Path(name).exists():
        raise FileNotFoundError(
            f"{name!r} is neither a dataset ({', '.join(datasets.names())}) nor an existing "
            f"{suffixes()} file or shard folder."
        )
    return load_arrays(name, target=target, y_path=y_path, task=task), None
