"""A data file's fingerprint: enough to tell whether a resumed run would see the same data.

Size plus a SHA-256: of the whole file when it is small (up to 64 MiB), else of the size and 64
blocks of 64 KiB spread evenly over it (first and last included), which reads 4 MiB of a file of
any size. A changed size, an edit anywhere in a small file, or an edit touching a sampled block of
a large one changes the fingerprint; what the sampling can miss is stated in the fingerprint
(``"sampled": true``). A folder (of shards) is fingerprinted file by file, in name order.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

WHOLE_UP_TO = 64 << 20
BLOCKS, BLOCK = 64, 64 << 10


def fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """{"path": absolute path, "size": bytes, "sha256": hex digest, "sampled": bool}."""
    path = Path(path).resolve()
    if path.is_dir():
        return _folder_fingerprint(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    _digest_file(path, size, digest)
    return {
        "path": str(path),
        "size": size,
        "sha256": digest.hexdigest(),
        "sampled": size > WHOLE_UP_TO,
    }


def _folder_fingerprint(folder: Path) -> dict[str, Any]:
    """The fingerprint of every file in a folder (names, sizes, contents), in name order."""
    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
    digest, size = hashlib.sha256(), 0
    for f in files:
        n = f.stat().st_size
        digest.update(f"{f.name}:{n};".encode())
        _digest_file(f, n, digest)
        size += n
    return {
        "path": str(folder),
        "size": size,
        "sha256": digest.hexdigest(),
        "sampled": any(f.stat().st_size > WHOLE_UP_TO for f in files),
    }


def _digest_file(path: Path, size: int, digest) -> None:
    """Feeds a file to ``digest``: whole when small, else its size and 64 spread blocks."""
    with open(path, "rb") as f:
        if size <= WHOLE_UP_TO:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        else:
            digest.update(str(size).encode())
            for i in range(BLOCKS):
                f.seek((size - BLOCK) * i // (BLOCKS - 1))
                digest.update(f.read(BLOCK))


def changed(saved: dict[str, Any], path: str | os.PathLike) -> str | None:
    """Why the file at ``path`` is not the one ``saved`` describes, or None if it is."""
    if not Path(path).exists():
        return f"{path} no longer exists"
    now = fingerprint(path)
    if now["size"] != saved.get("size"):
        return f"{path} was {saved.get('size')} bytes when the run started and is {now['size']} now"
    if now["sha256"] != saved.get("sha256"):
        return f"{path} has the same size but other content than when the run started"
    return None
