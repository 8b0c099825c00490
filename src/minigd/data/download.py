"""Downloads with a SHA-256 check, a cache, and atomic writes.

A file is streamed to a temporary name in the cache folder while its digest is computed; only when
the digest matches is it renamed into place (``os.replace`` is atomic on one file system). A failed,
interrupted or corrupt download therefore never leaves a file under the final name.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from minigd._io import atomic_write

CHUNK = 1 << 20


class DownloadError(OSError):
    """No mirror delivered a file with the expected checksum."""


def cache_dir() -> Path:
    """Where datasets are cached: ``$MINIGD_DATA``, else ``~/.cache/minigd``."""
    root = os.environ.get("MINIGD_DATA")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "minigd"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    filename: str,
    sha256: str,
    mirrors: Sequence[str],
    folder: Path,
    *,
    timeout: float = 30.0,
) -> Path:
    """Returns the path of ``folder/filename``, downloading it from the first mirror that works.

    A cached file is used only if its digest matches. Each mirror is tried in turn; a mirror that
    is unreachable or serves a file with the wrong digest is skipped, and nothing is left behind.

    Raises:
        DownloadError: every mirror failed; the message lists why and where to put the file by hand.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"cannot create the dataset cache ({exc.strerror}); set MINIGD_DATA to a folder "
            "you can write to",
            str(folder),
        ) from None
    target = folder / filename
    if target.exists():
        if sha256_of(target) == sha256:
            return target
        target.unlink()  # a stale or corrupt copy: fetch a good one
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        try:
            _download_verified(url, target, sha256, timeout)
            return target
        except (OSError, urllib.error.URLError, ValueError) as exc:
            failures.append(f"{url}: {exc}")
    raise DownloadError(
        f"could not download {filename} with SHA-256 {sha256}. Tried:\n  "
        + "\n  ".join(failures)
        + f"\nWithout network access, copy the file to {target} by hand."
    )


def _download_verified(url: str, target: Path, sha256: str, timeout: float) -> None:
    def stream(out) -> None:
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:  # raising here leaves nothing under the final name
            raise ValueError(f"checksum mismatch (got SHA-256 {digest.hexdigest()})")

    atomic_write(target, stream)
