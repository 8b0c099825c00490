"""A training run as a folder: what ``minigd train`` does, callable from Python too.

A run folder holds ``config.json`` (everything needed to repeat or resume the run), ``model.npz``,
``history.json``, ``history.csv`` (one row per step), ``epochs.csv`` and ``checkpoints/``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from minigd.data import datasets
from minigd.data.files import Dataset, load_arrays
from minigd.nn.models import parse_model_spec
from minigd.training.callbacks import Checkpoint
from minigd.training.history import History
from minigd.training.trainer import fit


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
    extra: dict[str, Any] = field(default_factory=dict)

    def default_name(self) -> str:
        name = f"{Path(self.data).stem}-{self.model}-{self.optimizer}-b{self.batch_size}"
        return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def load_data(spec: str, *, target=None, y_path=None) -> tuple[Dataset, Dataset | None]:
    """A dataset name gives its (train, test); a file gives (data, None)."""
    if spec in datasets.REGISTRY:
        return datasets.load(spec)
    if not Path(spec).exists():
        raise FileNotFoundError(
            f"{spec!r} is neither a dataset ({', '.join(datasets.names())}) nor an existing file."
        )
    return load_arrays(spec, target=target, y_path=y_path), None


def n_features(data: Dataset, sample_axis: int) -> int:
    X = np.asarray(data.X)
    return int(np.prod(np.delete(np.array(X.shape), sample_axis)))


def build_model(config: RunConfig, train: Dataset):
    k = train.n_classes
    return parse_model_spec(
        config.model,
        n_features(train, config.sample_axis),
        k,
        seed=config.seed,
        dtype=np.dtype(config.dtype),
    )


def train_run(
    config: RunConfig, out: str | Path, *, resume: bool = False, verbose: int = 1
) -> tuple[Any, History, dict[str, float]]:
    """Trains as ``config`` says, writing the run folder ``out``; returns (model, history,
    final metrics)."""
    out = Path(out)
    train, test = load_data(config.data, target=config.target, y_path=config.y_path)
    model = build_model(config, train)
    validation = None if test is None else (test.X, test.y)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:  # a fresh run in an old folder must not resume from the old checkpoints later
        for stale in (out / "checkpoints").glob("checkpoint-*.npz"):
            stale.unlink()
    (out / "config.json").write_text(
        json.dumps(
            asdict(config) | {"classes": None if train.classes is None else train.classes.tolist()},
            indent=2,
            default=str,
        )
    )
    history = fit(
        model,
        train.X,
        train.y,
        batch_size=config.batch_size,
        epochs=config.epochs,
        optimizer=config.optimizer,
        lr=config.lr,
        validation=validation,
        validation_split=config.validation_split if validation is None else 0.0,
        sample_axis=config.sample_axis,
        seed=config.seed,
        last_batch=config.last_batch,
        callbacks=[Checkpoint(out / "checkpoints", every_epoch=True, keep_last=2)],
        verbose=verbose,
        resume=(out / "checkpoints") if resume else None,
    )
    model.save(out / "model.npz")
    history.to_json(out / "history.json")
    history.to_csv(out / "history.csv", "steps")
    history.to_csv(out / "epochs.csv", "epochs")
    metrics = {
        f"train_{k}": v
        for k, v in model.evaluate(train.X, train.y, sample_axis=config.sample_axis).items()
    }
    if history.epochs:
        metrics.update({k: v for k, v in history.epochs[-1].items() if k.startswith("val_")})
    metrics["seconds"] = history.meta.get("seconds", float("nan"))
    metrics["samples_per_second"] = history.meta.get("samples_seen", 0) / max(
        metrics["seconds"], 1e-9
    )
    return model, history, metrics


def read_config(folder: str | Path) -> RunConfig:
    path = Path(folder) / "config.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: --resume takes a run folder written by minigd train --out."
        )
    raw = json.loads(path.read_text())
    raw.pop("classes", None)
    return RunConfig(**raw)
