"""minigd: mini-batch gradient descent in NumPy, and the tools to choose the batch size."""

from minigd import data, nn, optim
from minigd._version import __version__
from minigd.batching import MiniBatches
from minigd.data import datasets, load_arrays

__all__ = ["MiniBatches", "__version__", "data", "datasets", "load_arrays", "nn", "optim"]
