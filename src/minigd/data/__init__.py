"""Data entering minigd: array checks and layouts, files, IDX, downloads and named datasets."""

from minigd.data import datasets
from minigd.data.arrays import as_rows, targets_as_rows
from minigd.data.files import Dataset, encode_labels, load_arrays
from minigd.data.idx import IDXError, read_idx, write_idx

__all__ = [
    "Dataset",
    "IDXError",
    "as_rows",
    "datasets",
    "encode_labels",
    "load_arrays",
    "read_idx",
    "targets_as_rows",
    "write_idx",
]
