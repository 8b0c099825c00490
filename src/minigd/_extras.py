"""Optional dependencies, imported where they are needed, with one sentence when they are not
installed: what needed the module and which extra brings it (docs/architecture.md, decision 16)."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, what: str) -> ModuleType:
    """``import module``, or an ImportError saying "<what> needs <package>: pip install
    'minigd[<extra>]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise ImportError(f"{what} needs {package}: pip install 'minigd[{extra}]'") from exc
