"""Data entering minigd: array checks and layouts, files, sources on disk (``open``), IDX,
downloads and named datasets."""

from minigd.data import datasets
from minigd.data.arrays import as_rows, describe_layout, n_features, targets_as_rows
from minigd.data.files import Dataset, encode_labels
from minigd.data.formats import FORMATS, load_arrays, open_source
from minigd.data.idx import IDXError, read_idx, write_idx
from minigd.data.loading import load
from minigd.data.opening import SourceData
from minigd.data.sources import ArraySource, NpySource, Source

open = open_source  # the older name, kept as an alias

__all__ = [
    "FORMATS",
    "ArraySource",
    "Dataset",
    "IDXError",
    "NpySource",
    "Source",
    "SourceData",
    "as_rows",
    "datasets",
    "describe_layout",
    "encode_labels",
    "load",
    "load_arrays",
    "n_features",
    "open",
    "open_source",
    "read_idx",
    "targets_as_rows",
    "write_idx",
]
