"""JSON for NumPy values: scalars become Python numbers, arrays become lists."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_plain(value: Any) -> Any:
    """``default=`` for ``json.dumps``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
