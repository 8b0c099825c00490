"""Names under which layers, losses and activations are saved and looked up.

A class registers itself when it is defined (``Layer.__init_subclass__`` and
``Loss.__init_subclass__`` call ``register``), so a layer or loss written in a user's own module
saves and loads once that module is imported: no list to edit. Two different classes may not
claim one name, since a saved model would then load as the wrong one; a class that is defined
again (a module reloaded, a class built in a function) takes its own name back.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T", bound=type)


def register(table: dict[str, T], name: str, cls: T, kind: str) -> None:
    """Files ``cls`` under ``name`` in ``table``; raises TypeError if another class has it."""
    held = table.get(name)
    if held is not None and _origin(held) != _origin(cls):
        raise TypeError(
            f"the {kind} name {name!r} is taken by {_origin(held)}; give "
            f"{_origin(cls)} another name."
        )
    table[name] = cls


def _origin(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
