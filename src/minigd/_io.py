"""Atomic file writes, the one way minigd puts a file on disk, and ``slug``, the one way it
names one after a spec or a label.

The content goes to a temporary file in the target's folder, is flushed and fsync'ed, and is then
renamed over the target (``os.replace`` is atomic on one file system); the folder is fsync'ed so the
rename itself survives a power cut. A process killed at any instant, or a full disk, leaves either
the old file or the new one under the target's name, never a torn one, and a failed write leaves
no temporary file behind.

The temporary file is created with mode 0600 (``mkstemp``); the finished file gets the usual
permissions, those ``open()`` would give (0666 less the umask).
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(
    path: str | os.PathLike, write: Callable[[IO[Any]], None], *, text: bool = False
) -> Path:
    """Calls ``write(f)`` on a temporary file, then renames it to ``path``; returns the path.

    Args:
        path: the file to create or replace; its folder is created if missing.
        write: fills the open file. An exception it raises aborts the write: the temporary file
            is removed and ``path`` is left as it was.
        text: open the file in text mode (UTF-8, no newline translation) instead of binary.
    """
    path = _writable_path(Path(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        mode = "w" if text else "wb"
        options = {"encoding": "utf-8", "newline": ""} if text else {}
        with os.fdopen(fd, mode, **options) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _writable_path(path: Path) -> Path:
    """``path``, with its folder made; a folder in its place, or a file where a folder of its
    path should be, is an OSError whose sentence says which (raw, both read "File exists")."""
    if path.is_dir():
        raise IsADirectoryError(
            errno.EISDIR, f"{path} is a folder; give a file name, such as {path / path.name}", path
        )
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise NotADirectoryError(
            errno.ENOTDIR, f"{blocking} is a file, so {path} cannot be written under it", path
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, content: str) -> Path:
    """Writes ``content`` to ``path`` atomically (UTF-8)."""
    return atomic_write(path, lambda f: f.write(content), text=True)


def ensure_writable(folder: str | os.PathLike) -> Path:
    """Creates ``folder`` if needed and proves a file can be written there, before a long
    computation whose results would otherwise be lost; raises the OSError that says why not."""
    folder = Path(folder)
    probe = atomic_write(folder / ".minigd-write-test", lambda f: f.write(b"ok"))
    probe.unlink()
    return folder


def fsync_dir(folder: Path) -> None:
    """Makes a rename in ``folder`` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back); read once at
    import, before any thread that could race with the two calls exists."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def slug(text: str) -> str:
    """A file or folder name from specs and labels: "mlp:256,128+bn" -> "mlp256-128+bn",
    "mini-batch (B=64)" -> "mini-batch-B64"."""
    text = re.sub(r"[,\s]+", "-", text.strip())
    return re.sub(r"[^A-Za-z0-9_.+-]", "", text).strip("-.") or "run"
