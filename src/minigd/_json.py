"""JSON for NumPy values and result dataclasses: scalars become Python numbers, arrays lists,
dataclasses dicts of their fields."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any

import numpy as np


def to_plain(value: Any) -> Any:
    """``default=`` for ``json.dumps``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dataclass_dict(obj: Any, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """A dataclass's fields as plain data, nested dataclasses as dicts, leaving out ``exclude``
    (what is saved elsewhere, a run's History say). ``dataclasses.asdict`` without the deep copy
    of what is left out; NumPy values are left to ``to_plain``."""
    return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj) if f.name not in exclude}


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return dataclass_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
