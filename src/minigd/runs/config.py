"""A run's settings (``config.json``): every one checked before anything is written, data paths
made absolute so a resume reads the same files, and ``stream``/``shuffle`` decided once."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from minigd._extras import require
from minigd._io import slug
from minigd._validation import check_choice, check_float, check_int
from minigd.batching import LAST_BATCH_POLICIES, SHUFFLES
from minigd.batchsize.memory import available_memory
from minigd.data import datasets
from minigd.data.files import Dataset
from minigd.data.formats import is_streamable
from minigd.data.formats import open_source as open_data
from minigd.data.loading import load
from minigd.nn.models import model_for_data, parse_model_spec
from minigd.optim import get_optimizer

STREAM_CHOICES = ("auto", "always", "never")
STREAM_SHARE = 0.25  # auto-stream a file larger than this share of the available memory


def should_stream(path: str | os.PathLike) -> bool:
    """Whether a run streams ``path`` by default: a shard folder always; a .npy, Parquet or HDF5
    file when it would take more than a quarter of the available memory (the model, its batches
    and the OS's page cache need the rest)."""
    p = Path(path)
    if not p.exists() or not is_streamable(p):
        return False
    return p.is_dir() or p.stat().st_size > STREAM_SHARE * available_memory()


@dataclass
class RunConfig:
    """The settings of one run; saved as config.json."""

    data: str = "mnist-5k"
    model: str = "mlp:128"
    optimizer: str = "sgd"
    lr: float | None = None
    batch_size: int | str = 64
    epochs: int = 10
    seed: int = 0
    sample_axis: int = 0
    last_batch: str = "keep"
    validation_split: float = 0.0
    target: str | int | None = None
    y_path: str | None = None
    dtype: str = "float32"
    task: str = "auto"
    standardize_targets: bool = True  # regression: learn the targets in standard units
    warmup_epochs: int = 0
    stream: str = "auto"  # read the data from disk as training goes: "always", "never", "auto"
    shuffle: str = "auto"  # "rows", "blocks", "none"; auto: rows in memory, blocks streaming
    batchnorm_stats: str = "global"  # data-parallel: over the global batch, or "per-rank"
    noise_every: int | None = None  # measure B_simple every this many steps (one process)
    tensorboard: bool = False  # event files in the run folder's tensorboard/

    def default_name(self) -> str:
        return slug(f"{Path(self.data).stem}-{self.model}-{self.optimizer}-b{self.batch_size}")

    def check(self) -> None:
        """Checks every setting that needs no data, with the usual sentences."""
        check_int("epochs", self.epochs, minimum=1, fix="Train at least one epoch.")
        check_int("seed", self.seed, minimum=0)
        check_choice("sample_axis", self.sample_axis, (0, 1))
        check_choice("last_batch", self.last_batch, LAST_BATCH_POLICIES)
        check_choice("dtype", self.dtype, ("float32", "float64"))
        check_choice("task", self.task, ("auto", "classification", "regression"))
        check_choice("standardize_targets", self.standardize_targets, (True, False))
        check_int("warmup_epochs", self.warmup_epochs, minimum=0)
        check_choice("stream", self.stream, STREAM_CHOICES)
        check_choice("shuffle", self.shuffle, ("auto", *SHUFFLES))
        check_choice("batchnorm_stats", self.batchnorm_stats, ("global", "per-rank"))
        if self.noise_every is not None:
            check_int("noise_every", self.noise_every, minimum=1)
        if self.tensorboard:  # before anything is written, not at the first step
            require("tensorboardX", "tensorboard", "--tensorboard")
        if self.stream == "always" and not self.is_named_dataset and not is_streamable(self.data):
            raise ValueError(
                f"{self.data} cannot be read a chunk at a time (.npz and CSV are read whole); "
                f"convert it first: minigd convert {self.data} {Path(self.data).stem}-shards"
            )
        if self.stream == "always" and self.is_named_dataset:
            raise ValueError(f"the dataset {self.data!r} is held in memory; leave --stream out.")
        get_optimizer(self.optimizer, self.lr)  # the name and the learning rate
        split = check_float("validation_split", self.validation_split, minimum=0.0, maximum=1.0)
        if split and self.is_named_dataset:
            raise ValueError(
                f"--validation-split applies to a data file; the dataset {self.data!r} brings "
                "its own test split. Leave the option out."
            )
        if not self.y_path and Path(self.data).suffix.lower() == ".npy":
            raise ValueError(
                f"{self.data} holds the features only; give the targets with --y (a .npy of "
                "one label or value per sample)."
            )
        if self.y_path and Path(self.data).suffix.lower() != ".npy":
            raise ValueError(
                f"--y gives the targets of a .npy X; {self.data!r} holds its own targets. "
                "Leave --y out."
            )
        parse_model_spec(self.model, 1, 2)  # the spec's syntax

    @property
    def is_named_dataset(self) -> bool:
        return self.data in datasets.REGISTRY

    def absolute(self) -> RunConfig:
        """The same settings with data files named by absolute paths, so that a resume from
        another directory reads the same files."""
        data = self.data if self.is_named_dataset else str(Path(self.data).resolve())
        y_path = None if self.y_path is None else str(Path(self.y_path).resolve())
        return RunConfig(**(asdict(self) | {"data": data, "y_path": y_path}))

    def resolved(self) -> RunConfig:
        """The same settings with ``stream`` and ``shuffle`` decided, as config.json records them
        (the decision depends on this machine's free memory; a resume must not redo it)."""
        stream = self.stream
        if stream == "auto":
            stream = "always" if should_stream(self.data) else "never"
        shuffle = self.shuffle
        if shuffle == "auto":
            shuffle = "blocks" if stream == "always" else "rows"
        return RunConfig(**(asdict(self) | {"stream": stream, "shuffle": shuffle}))

    def load(self) -> tuple[Any, Any]:
        """(train, test) of the run: Datasets in memory, or a SourceData (and None) streamed."""
        if self.stream == "always":
            data = open_data(self.data, y=self.y_path, target=self.target, task=self.task)
            return data, None
        return load(self.data, target=self.target, y_path=self.y_path, task=self.task)

    def data_files(self) -> dict[str, str]:
        """The files this run reads, by role."""
        if self.is_named_dataset:
            return {}
        return {"X": self.data} | ({"y": self.y_path} if self.y_path else {})

    def build_model(self, train: Dataset):
        """The model this run trains, fitted to the data's width and classes."""
        return model_for_data(
            self.model,
            train.X,
            train.n_classes,
            sample_axis=self.sample_axis,
            seed=self.seed,
            dtype=np.dtype(self.dtype),
        )


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); it cannot be resumed.") from None


def read_config(folder: str | Path) -> RunConfig:
    """The RunConfig of a run folder, with a sentence naming the file and field when it is off."""
    path = Path(folder) / "config.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: --resume takes a run folder written by minigd train --out."
        )
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object of run settings.")
    raw.pop("classes", None)
    raw.pop("data_fingerprints", None)
    raw.setdefault("standardize_targets", False)  # runs from before the setting learned y as is
    known = {f.name: f for f in fields(RunConfig)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{path} has unknown settings {unknown}; it cannot be resumed.")
    config = RunConfig(**raw)
    try:
        config.check()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    return config
