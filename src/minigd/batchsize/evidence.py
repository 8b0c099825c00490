"""What earlier runs measured, for the advisor: a run's noise scale as it trained, a sweep's
fitted critical batch size.

A run folder's ``history.json`` holds the running B_simple per step (column ``b_simple``) when
the run measured it (``--noise-every``, an adaptive batch, or data-parallel ranks, which measure
it for free); a sweep's ``sweep.json`` holds B_crit per target. ``read_evidence`` takes either
(a folder, or the file) and returns what it found; the advisor then prefers these measurements,
made on the trained path, to its own probe at the initial weights.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RUN_FILE, SWEEP_FILE = "history.json", "sweep.json"
EDGE = 0.1  # the noise at a run's start and end: the median of its first and last tenth


@dataclass(frozen=True)
class Evidence:
    """Measurements from an earlier run or sweep (None where it did not measure them).

    Attributes:
        source: the file they were read from.
        noise_start, noise_end: the running noise scale early and late in a run.
        critical, target: a sweep's fitted B_crit and the target it was fitted for (its last,
            the most demanding).
    """

    source: str
    noise_start: float | None = None
    noise_end: float | None = None
    critical: float | None = None
    target: str | None = None


def read_evidence(path: str | os.PathLike) -> Evidence:
    """Reads a run folder (or its history.json) or a sweep folder (or its sweep.json)."""
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in (RUN_FILE, SWEEP_FILE) if (path / name).exists()]
        if not found:
            raise FileNotFoundError(
                f"{path} holds neither {RUN_FILE} (a run folder) nor {SWEEP_FILE} (a sweep's "
                "folder); pass one of those."
            )
        path = found[0]
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is neither a run's history nor a sweep's results.")
    if "fits" in data:
        return _from_sweep(path, data)
    if "steps" in data:
        return _from_run(path, data)
    raise ValueError(f"{path} is neither a run's history nor a sweep's results.")


def _from_run(path: Path, data: dict[str, Any]) -> Evidence:
    column = data["steps"].get("b_simple") if isinstance(data["steps"], dict) else None
    values = _finite(column or [])
    if len(values) < 2:
        raise ValueError(
            f"{path}: the run did not measure its noise scale (no b_simple column); train with "
            "--noise-every 10 (or --batch-size adaptive, or on several MPI ranks) to measure it."
        )
    k = max(1, int(EDGE * len(values)))
    return Evidence(str(path), float(np.median(values[:k])), float(np.median(values[-k:])))


def _from_sweep(path: Path, data: dict[str, Any]) -> Evidence:
    fits = [f for f in data.get("fits") or [] if isinstance(f, dict) and f.get("critical")]
    if not fits:
        raise ValueError(f"{path}: the sweep fitted no critical batch size (no target reached).")
    fit = fits[-1]
    b_crit = fit["critical"].get("b_crit")
    if not isinstance(b_crit, (int, float)) or not math.isfinite(b_crit) or b_crit <= 0:
        raise ValueError(f"{path}: the critical batch size {b_crit!r} is not a positive number.")
    target = fit.get("target")
    text = f"{target['metric']} {target['value']:g}" if isinstance(target, dict) else None
    return Evidence(str(path), critical=float(b_crit), target=text)


def _finite(values: list[Any]) -> np.ndarray:
    array = np.array([v for v in values if isinstance(v, (int, float))], dtype=float)
    return array[np.isfinite(array) & (array > 0)]
