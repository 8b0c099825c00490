"""Argument checks and the one sentence shape their errors share.

Every error minigd raises for bad input reads the same way: what was wrong, what was expected,
what was received, and how to fix it (scikit-learn's parameter validation and Keras'
"Received: ..." are the model).
Keeping the checks here keeps the sentences consistent and the callers short.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np


def message(what: str, expected: str, received: Any, fix: str | None = None) -> str:
    """Builds ``"<what> must be <expected>; received <received>. <fix>"``."""
    text = f"{what} must be {expected}; received {_show(received)}."
    if fix:
        text += f" {fix}"
    return text


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, (bool, numbers.Number, type(None))):
        return repr(value)
    if isinstance(value, (tuple, list)):
        simple = all(isinstance(v, (str, bool, numbers.Number, type(None))) for v in value)
        if simple and len(value) <= 8:
            return repr(value)
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def is_int(value: Any) -> bool:
    """True for Python and NumPy integers, false for bools (which are ints to Python)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value: Any, *, minimum: int | None = None, fix: str | None = None) -> int:
    """Returns ``value`` as an int, or raises TypeError/ValueError naming ``name``."""
    expected = "an integer" if minimum is None else f"an integer >= {minimum}"
    if not is_int(value):
        raise TypeError(message(name, expected, value, fix))
    if minimum is not None and value < minimum:
        raise ValueError(message(name, expected, value, fix))
    return int(value)


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    inclusive: bool = True,
    fix: str | None = None,
) -> float:
    """Returns ``value`` as a finite float within the given bounds."""
    low = "" if minimum is None else (">= " if inclusive else "> ") + f"{minimum:g}"
    high = "" if maximum is None else (" and <= " if low else "<= ") + f"{maximum:g}"
    expected = f"a finite number {low}{high}".rstrip()
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(message(name, expected, value, fix))
    value = float(value)
    too_low = minimum is not None and (value < minimum if inclusive else value <= minimum)
    too_high = maximum is not None and value > maximum
    if not np.isfinite(value) or too_low or too_high:
        raise ValueError(message(name, expected, value, fix))
    return value


def check_choice(name: str, value: Any, choices: Iterable[str], fix: str | None = None) -> str:
    """Returns ``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(message(name, f"one of {listed}", value, fix))
    return value


STATE_TYPES = {
    "int": lambda v: is_int(v),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
    "none": lambda v: v is None,
}


def check_state(owner: str, state: Any, fields: dict[str, str]) -> dict[str, Any]:
    """Checks a saved state (JSON from a checkpoint) before anything takes it: a dict with each
    field of ``fields`` of one of its kinds (e.g. ``"number|none"``), so an edited file is a
    sentence at resume, not a type error many steps later."""
    if not isinstance(state, dict):
        raise ValueError(f"{owner}'s saved state must be an object; found {_show(state)}.")
    for name, kinds in fields.items():
        value = state.get(name)
        if name not in state or not any(STATE_TYPES[k](value) for k in kinds.split("|")):
            raise ValueError(
                f"{owner}'s saved state needs {name!r} as {kinds.replace('|', ' or ')}; "
                f"found {_show(value) if name in state else 'nothing'}."
            )
    return state
