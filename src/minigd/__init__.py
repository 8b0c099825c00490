"""minigd: mini-batch gradient descent in NumPy, and the tools to choose the batch size.

The public API is re-exported here and imported on first use (PEP 562), so that ``minigd`` on
the command line can answer Ctrl-C from its first instant: importing the package costs nothing
until a name is asked for.
"""

from importlib import import_module

from minigd._version import __version__

_EXPORTS = {
    "History": "minigd.training",
    "MiniBatches": "minigd.batching",
    "fit": "minigd.training",
    "load_arrays": "minigd.data",
    "datasets": "minigd.data",
}
_SUBMODULES = ("data", "nn", "optim", "training")

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


def __getattr__(name: str):
    if name in _SUBMODULES:
        return import_module(f"minigd.{name}")
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'minigd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
