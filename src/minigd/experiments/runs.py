"""A training run as a folder: what ``minigd train`` does, callable from Python too.

A run folder holds ``config.json`` (everything needed to repeat or resume the run), ``model.npz``,
``history.json``, ``history.csv`` (one row per step), ``epochs.csv`` and ``checkpoints/``. Every
file is written atomically. Folder and file names made from specs go through ``slug``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from minigd._io import atomic_write_text
from minigd.data.files import Dataset
from minigd.data.loading import load
from minigd.nn.models import model_for_data
from minigd.training.callbacks import Checkpoint
from minigd.training.history import History
from minigd.training.trainer import fit


def slug(text: str) -> str:
    """A file or folder name from specs and labels: "mlp:256,128+bn" -> "mlp256-128+bn",
    "mini-batch (B=64)" -> "mini-batch-B64"."""
    text = re.sub(r"[,\s]+", "-", text.strip())
    return re.sub(r"[^A-Za-z0-9_.+-]", "", text).strip("-.") or "run"


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

    def default_name(self) -> str:
        return slug(f"{Path(self.data).stem}-{self.model}-{self.optimizer}-b{self.batch_size}")

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


def train_run(
    config: RunConfig, out: str | Path, *, resume: bool = False, verbose: int = 1
) -> tuple[Any, History, dict[str, float]]:
    """Trains as ``config`` says, writing the run folder ``out``; returns (model, history,
    final metrics)."""
    out = Path(out)
    train, test = load(config.data, target=config.target, y_path=config.y_path)
    model = config.build_model(train)
    validation = None if test is None else (test.X, test.y)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:  # a fresh run in an old folder must not resume from the old checkpoints later
        for stale in (out / "checkpoints").glob("checkpoint-*.npz"):
            stale.unlink()
    classes = None if train.classes is None else train.classes.tolist()
    atomic_write_text(
        out / "config.json",
        json.dumps(asdict(config) | {"classes": classes}, indent=2, default=str),
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
    return model, history, final_metrics(model, history, train, config.sample_axis)


def final_metrics(model, history: History, train: Dataset, sample_axis: int) -> dict[str, float]:
    """The train metrics of the finished model, the last validation metrics, and the speed."""
    evaluated = model.evaluate(train.X, train.y, sample_axis=sample_axis)
    metrics = {f"train_{k}": v for k, v in evaluated.items()}
    if history.epochs:
        metrics.update({k: v for k, v in history.epochs[-1].items() if k.startswith("val_")})
    metrics["seconds"] = history.meta.get("seconds", float("nan"))
    metrics["samples_per_second"] = history.meta.get("samples_seen", 0) / max(
        metrics["seconds"], 1e-9
    )
    return metrics


def read_config(folder: str | Path) -> RunConfig:
    """The RunConfig of a run folder, with a sentence naming the file and field when it is off."""
    path = Path(folder) / "config.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: --resume takes a run folder written by minigd train --out."
        )
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); it cannot be resumed.") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object of run settings.")
    raw.pop("classes", None)
    unknown = sorted(set(raw) - {f.name for f in fields(RunConfig)})
    if unknown:
        raise ValueError(f"{path} has unknown settings {unknown}; it cannot be resumed.")
    return RunConfig(**raw)
