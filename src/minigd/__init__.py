"""minigd: mini-batch gradient descent in NumPy, and the tools to choose the batch size."""

from minigd import data, nn, optim, training
from minigd._version import __version__
from minigd.batching import MiniBatches
from minigd.data import datasets, load_arrays
from minigd.training import History, fit

__all__ = [
    "History",
    "MiniBatches",
    "__version__",
    "data",
    "datasets",
    "fit",
    "load_arrays",
    "nn",
    "optim",
    "training",
]
