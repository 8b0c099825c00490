"""History: what a run did, step by step and epoch by epoch, as plain data.

Per step: the mini-batch loss (noisy: each step sees different samples), the batch size, samples
seen so far, seconds since training began, and the learning rate used. Per epoch: the train loss
(the sample-weighted mean of the epoch's step losses), validation metrics, and the epoch's seconds.

History saves to JSON and CSV; plots and reports read it back with ``from_json``. Each
per-step column is a ``StepColumn``, a list in memory, or with ``keep_on_disk`` the last few
thousand steps in memory and the rest in files (``step_columns``), so a run of ten million steps
holds as much as a run of ten thousand.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from minigd._extras import require
from minigd._io import atomic_write
from minigd._json import to_plain
from minigd._validation import check_choice, check_int
from minigd.training.step_columns import CHUNK, WINDOW, ColumnFiles, StepColumn

STEP_FIELDS = ("epoch", "loss", "batch_size", "samples_seen", "seconds", "lr")
INT_FIELDS = frozenset({"epoch", "batch_size", "samples_seen"})
STORED = "stored_steps"  # a checkpoint's count of the steps its columns' files hold


def _column(name: str, values=(), files: ColumnFiles | None = None) -> StepColumn:
    return StepColumn(values, name=name, files=files, integer=name in INT_FIELDS)


@dataclass
class History:
    """Per-step columns (each a ``StepColumn``, all of one length), per-epoch records, and
    free-form metadata."""

    steps: dict[str, StepColumn] = field(default_factory=lambda: {k: [] for k in STEP_FIELDS})
    epochs: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    ema_beta: float = 0.98
    _ema: float = 0.0
    _files: ColumnFiles | None = field(default=None, compare=False, repr=False)
    _writing: bool = field(default=False, compare=False, repr=False)
    # with keep_on_disk: steps kept in memory after an append to the files, steps appended at once
    window: int = field(default=WINDOW, compare=False, repr=False)
    chunk: int = field(default=CHUNK, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name, values in list(self.steps.items()):
            if not isinstance(values, StepColumn):
                self.steps[name] = _column(name, values)

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
            if name not in s:
                s[name] = self._new_column(name, len(s["loss"]) - 1)
            s[name].append(value)
        if len(s) > len(STEP_FIELDS) + len(extra):  # a column this step did not measure
            for column in s.values():
                if len(column) < len(s["loss"]):
                    column.append(math.nan)
        if math.isfinite(loss):
            self._ema = self.ema_beta * self._ema + (1.0 - self.ema_beta) * loss
        if self._writing and len(s["loss"].tail) >= self.window + self.chunk:
            self._store_oldest()

    def _new_column(self, name: str, length: int) -> StepColumn:
        """A column first recorded at step ``length``: NaN before it (stored NaN too, when the
        files are written; in memory while they are only read)."""
        if self._writing:
            self._files.add(name)
            return _column(name, [math.nan] * (length - self._files.stored), self._files)
        return _column(name, [math.nan] * length)

    def _store_oldest(self) -> None:
        """Appends the oldest ``chunk`` steps in memory to the files, and forgets them."""
        chunk = self.chunk
        self._files.append(
            {n: np.asarray(c.tail[:chunk], np.float64) for n, c in self.steps.items()}
        )
        for column in self.steps.values():
            del column.tail[:chunk]

    def keep_on_disk(self, folder: str | os.PathLike) -> None:
        """From now on keeps only the last ``window`` to ``window + chunk`` steps in memory and
        appends older ones to one file per column in ``folder`` (``step_columns``). Steps this
        History already holds in files elsewhere (a run resumed into another folder) are copied
        over; what the files hold past this History's steps is cut off."""
        check_int("window", self.window, minimum=1)
        check_int("chunk", self.chunk, minimum=1)
        files = self._files
        target = ColumnFiles(folder)
        if files is not None and files.folder.resolve() != target.folder.resolve():
            files.copy_to(target, [n for n, c in self.steps.items() if c.files is not None])
        elif files is not None:
            target = files
        target.start_writing(n for n, c in self.steps.items() if c.files is not None)
        for column in self.steps.values():
            self._adopt(column, target)
        self._files, self._writing = target, True

    @staticmethod
    def _adopt(column: StepColumn, files: ColumnFiles) -> None:
        """Points ``column`` at ``files``; a column held whole in memory writes its first
        ``files.stored`` values there and keeps the rest."""
        if column.files is None:
            values = column.tail
            with open(files.path(column.name), "wb") as f:
                f.write(np.asarray(values[: files.stored], "<f8").tobytes())
            column.tail = values[files.stored :]
        column.files = files

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
        return np.fromiter(self._smoothed_values(beta), dtype=float, count=self.n_steps)

    def _smoothed_values(self, beta: float | None = None) -> Iterator[float]:
        beta = self.ema_beta if beta is None else beta
        ema = 0.0
        for t, loss in enumerate(self.steps["loss"], start=1):
            if math.isfinite(loss):
                ema = beta * ema + (1.0 - beta) * loss
            yield ema / (1.0 - beta**t)

    def column(self, name: str) -> np.ndarray:
        return np.asarray(self.steps[name])

    @property
    def stored_steps(self) -> int:
        """How many of the first steps are in files (``keep_on_disk``), not in memory."""
        return 0 if self._files is None else self._files.stored

    def epoch_column(self, name: str) -> np.ndarray:
        return np.array([e.get(name, np.nan) for e in self.epochs], dtype=float)

    # -- serialization --------------------------------------------------------------------
    def state(
        self, stored_at: str | os.PathLike | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(the per-step columns as float64 arrays, everything else as JSON-ready data): the two
        parts a checkpoint stores, arrays in its ``.npz`` and the rest in its JSON metadata.
        When the stored steps are in ``stored_at`` (the checkpoint's ``steps`` folder), they are
        made durable and the arrays hold only the steps after them."""
        files = self._files
        if files is not None and stored_at is not None and _same(files.folder, stored_at):
            files.sync(n for n, c in self.steps.items() if c.files is not None)
            arrays = {n: np.asarray(c.tail, dtype=np.float64) for n, c in self.steps.items()}
            return arrays, {**self._rest(), STORED: files.stored}
        arrays = {name: np.asarray(v, dtype=np.float64) for name, v in self.steps.items()}
        return arrays, self._rest()

    @classmethod
    def from_state(
        cls,
        arrays: dict[str, np.ndarray],
        rest: dict[str, Any],
        stored_at: str | os.PathLike | None = None,
    ) -> History:
        """Rebuilds a History from ``state()``'s two parts (a missing column is empty); steps
        stored in files are read from ``stored_at`` as they are needed."""
        rest = dict(rest)
        stored = check_int(STORED, rest.pop(STORED, 0), minimum=0)
        files = None
        if stored:
            if stored_at is None:
                raise ValueError(f"its first {stored} steps are stored in files, but not where.")
            files = ColumnFiles(stored_at, stored)
            files.check(dict.fromkeys([*STEP_FIELDS, *arrays]))
        history = cls.from_dict({"steps": {}, **rest})
        for name in dict.fromkeys([*STEP_FIELDS, *arrays]):
            column = _column(name, (), files)
            column.tail = column.python_values(
                np.asarray(arrays.get(name, np.zeros(0)), np.float64)
            )
            history.steps[name] = column
        history._files = files
        return history

    def _rest(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "meta": self.meta,
            "ema_beta": self.ema_beta,
            "ema": self._ema,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"steps": {k: list(v) for k, v in self.steps.items()}, **self._rest()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        names = dict.fromkeys([*STEP_FIELDS, *data["steps"]])
        steps = {k: _column(k, data["steps"].get(k, [])) for k in names}
        return cls(
            steps,
            list(data.get("epochs", [])),
            dict(data.get("meta", {})),
            float(data.get("ema_beta", 0.98)),
            float(data.get("ema", 0.0)),
        )

    def to_json(self, path: str | os.PathLike) -> Path:
        """Writes the History as one JSON object, atomically, a piece of a column at a time
        (a long run's columns are never all in memory at once)."""

        def write(f) -> None:
            f.write('{"steps": {')
            for i, (name, column) in enumerate(self.steps.items()):
                f.write(f"{', ' if i else ''}{json.dumps(name)}: [")
                for j, values in enumerate(column.chunks()):
                    text = json.dumps(values, default=to_plain)[1:-1]
                    f.write((", " if j else "") + text)
                f.write("]")
            rest = json.dumps(self._rest(), default=to_plain)  # '{"epochs": ...}', never empty
            f.write("}, " + rest[1:])

        return atomic_write(path, write, text=True)

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
                rows = zip(*(self.steps[k] for k in names), strict=True)
                for i, (row, smooth) in enumerate(zip(rows, self._smoothed_values(), strict=True)):
                    writer.writerow((i + 1, *row, smooth))
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
        columns = {name: np.asarray(column) for name, column in self.steps.items()}
        frame = pd.DataFrame(columns, index=pd.RangeIndex(1, self.n_steps + 1, name="step"))
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


def _same(folder: Path, other: str | os.PathLike) -> bool:
    return folder.resolve() == Path(other).resolve()
