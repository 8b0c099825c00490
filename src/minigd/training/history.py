"""History: what a run did, step by step and epoch by epoch, as plain data.

Per step: the mini-batch loss (noisy: each step sees different samples), the batch size, samples
seen so far, seconds since training began, and the learning rate used. Per epoch: the train loss
(the sample-weighted mean of the epoch's step losses), validation metrics, and the epoch's seconds.

History saves to JSON and CSV; plots and reports read it back with ``from_json``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from minigd._extras import require
from minigd._io import atomic_write, atomic_write_text
from minigd._json import to_plain
from minigd._validation import check_choice

STEP_FIELDS = ("epoch", "loss", "batch_size", "samples_seen", "seconds", "lr")
INT_FIELDS = frozenset({"epoch", "batch_size", "samples_seen"})


@dataclass
class History:
    """Per-step columns (lists of equal length), per-epoch records, and free-form metadata."""

    steps: dict[str, list] = field(default_factory=lambda: {k: [] for k in STEP_FIELDS})
    epochs: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    ema_beta: float = 0.98
    _ema: float = 0.0

    def record_step(
        self,
        epoch: int,
        loss: float,
        batch_size: int,
        samples_seen: int,
        seconds: float,
        lr: float,
        **extra: float,
    ) -> None:
        """Appends one step. ``extra`` columns (the noise scale a data-parallel run measures)
        are NaN for the steps that did not record them, before and after: a run resumed with
        another gradient path (2 ranks, then 1 process) keeps columns of one length."""
        s = self.steps
        s["epoch"].append(epoch)
        s["loss"].append(loss)
        s["batch_size"].append(batch_size)
        s["samples_seen"].append(samples_seen)
        s["seconds"].append(seconds)
        s["lr"].append(lr)
        for name, value in extra.items():
            s.setdefault(name, [math.nan] * (len(s["loss"]) - 1)).append(value)
        if len(s) > len(STEP_FIELDS) + len(extra):  # a column this step did not measure
            for column in s.values():
                if len(column) < len(s["loss"]):
                    column.append(math.nan)
        if math.isfinite(loss):
            self._ema = self.ema_beta * self._ema + (1.0 - self.ema_beta) * loss

    def record_epoch(self, record: dict[str, Any] | None = None, **fields: Any) -> None:
        """Appends an epoch's record. The dict itself is kept, so callbacks that run after the
        epoch is recorded (a noise-scale tracker, say) can add their measurements to it."""
        self.epochs.append(record if record is not None else fields)

    @property
    def n_steps(self) -> int:
        return len(self.steps["loss"])

    @property
    def smoothed_loss(self) -> float:
        """The bias-corrected exponential moving average of the step loss (Adam's correction):
        ema_t / (1 - beta^t), so the first values are not pulled toward zero."""
        t = self.n_steps
        if not t:
            return float("nan")
        return self._ema / (1.0 - self.ema_beta**t)

    def smoothed(self, beta: float | None = None) -> np.ndarray:
        """The bias-corrected moving average of the whole step-loss curve, one value per step."""
        beta = self.ema_beta if beta is None else beta
        out = np.empty(self.n_steps)
        ema = 0.0
        for t, loss in enumerate(self.steps["loss"], start=1):
            if math.isfinite(loss):
                ema = beta * ema + (1.0 - beta) * loss
            out[t - 1] = ema / (1.0 - beta**t)
        return out

    def column(self, name: str) -> np.ndarray:
        return np.asarray(self.steps[name])

    def epoch_column(self, name: str) -> np.ndarray:
        return np.array([e.get(name, np.nan) for e in self.epochs], dtype=float)

    # -- serialization --------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(the per-step columns as float64 arrays, everything else as JSON-ready data): the two
        parts a checkpoint stores, arrays in its ``.npz`` and the rest in its JSON metadata."""
        arrays = {name: np.asarray(v, dtype=np.float64) for name, v in self.steps.items()}
        return arrays, self._rest()

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], rest: dict[str, Any]) -> History:
        """Rebuilds a History from ``state()``'s two parts (a missing column is empty)."""
        steps = {}
        for name in dict.fromkeys([*STEP_FIELDS, *arrays]):
            column = np.asarray(arrays.get(name, np.zeros(0)))
            steps[name] = (
                column.astype(np.int64).tolist() if name in INT_FIELDS else column.tolist()
            )
        return cls.from_dict({"steps": steps, **rest})

    def _rest(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "meta": self.meta,
            "ema_beta": self.ema_beta,
            "ema": self._ema,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, **self._rest()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        names = dict.fromkeys([*STEP_FIELDS, *data["steps"]])
        steps = {k: list(data["steps"].get(k, [])) for k in names}
        return cls(
            steps,
            list(data.get("epochs", [])),
            dict(data.get("meta", {})),
            float(data.get("ema_beta", 0.98)),
            float(data.get("ema", 0.0)),
        )

    def to_json(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), default=to_plain))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> History:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_csv(self, path: str | os.PathLike, which: str = "steps") -> Path:
        """One row per step (``which="steps"``) or per epoch (``which="epochs"``), atomically."""
        check_choice("which", which, ("steps", "epochs"))

        def write(f) -> None:
            writer = csv.writer(f)
            if which == "steps":
                names = list(self.steps)
                writer.writerow(("step", *names, "smoothed_loss"))
                smooth = self.smoothed()
                for i in range(self.n_steps):
                    row = [self.steps[k][i] for k in names]
                    writer.writerow((i + 1, *row, smooth[i]))
            else:
                keys = list(dict.fromkeys(k for e in self.epochs for k in e))
                writer.writerow(keys)
                for e in self.epochs:
                    writer.writerow([e.get(k, "") for k in keys])

        return atomic_write(path, write, text=True)

    # -- for notebooks ----------------------------------------------------------------------
    def to_pandas(self, which: str = "steps"):
        """A pandas DataFrame of the steps (a row per step, with ``smoothed_loss``) or of the
        epochs (a row per epoch): what ``pd.DataFrame(history.history)`` is to a Keras user."""
        check_choice("which", which, ("steps", "epochs"))
        pd = require("pandas", "pandas", "History.to_pandas")
        if which == "epochs":
            return pd.DataFrame(self.epochs)
        frame = pd.DataFrame(self.steps, index=pd.RangeIndex(1, self.n_steps + 1, name="step"))
        frame["smoothed_loss"] = self.smoothed()
        return frame

    def plot(self, ax=None):
        """The loss per step with its smoothed trend and, on a second axis, each validation
        metric per epoch (at the step that ended the epoch); returns the matplotlib Figure."""
        plt = require("matplotlib.pyplot", "plot", "History.plot")
        if ax is None:
            _, ax = plt.subplots(figsize=(8, 4.5))
        steps = np.arange(1, self.n_steps + 1)
        ax.plot(steps, self.steps["loss"], lw=0.6, alpha=0.35, label="loss per step")
        ax.plot(steps, self.smoothed(), lw=1.6, label="smoothed")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        metrics = sorted({k for e in self.epochs for k in e if k.startswith("val_")})
        if metrics:
            ends = [e.get("steps", np.nan) for e in self.epochs]
            other = ax.twinx()
            for name in metrics:
                values = [e.get(name, np.nan) for e in self.epochs]
                other.plot(ends, values, marker="o", ls="--", label=name)
            other.set_ylabel("validation, per epoch")
            other.legend(loc="upper right")
        ax.legend(loc="upper left")
        return ax.figure

    def __repr__(self) -> str:
        last = self.epochs[-1] if self.epochs else {}
        shown = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float))
        return f"History(steps={self.n_steps}, epochs={len(self.epochs)}" + (
            f", {shown})" if shown else ")"
        )
