"""Data entering minigd: array checks and layouts, files, IDX, downloads and named datasets."""

from minigd.data import datasets
from minigd.data.arrays import as_rows, describe_layout, n_features, targets_as_rows
from minigd.data.files import Dataset, encode_labels, load_arrays
from minigd.data.idx import IDXError, read_idx, write_idx
from minigd.data.loading import load

__all__ = [
    "Dataset",
    "IDXError",
    "as_rows",
    "datasets",
    "describe_layout",
    "encode_labels",
    "load",
    "load_arrays",
    "n_features",
    "read_idx",
    "targets_as_rows",
    "write_idx",
]
