"""A run folder's files and the lock that keeps a second writer out; the checks that decide
whether a command may continue, replace or start the run in it."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from dataclasses import asdict
from pathlib import Path

from minigd._io import atomic_write_text
from minigd._validation import message
from minigd.data.files import Dataset
from minigd.data.fingerprint import changed, fingerprint
from minigd.runs.config import RunConfig, read_json
from minigd.training.checkpoint import STEPS_FOLDER, list_checkpoints
from minigd.training.history import History
from minigd.training.step_columns import SUFFIX

RUN_FILES = ("model.npz", "history.json", "history.csv", "epochs.csv", "config.json")


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (it exists, it is locked, it is not a run)."""


class RunFolder:
    """The files of one run, and the lock that keeps a second writer out.

    ``resume`` and ``overwrite`` say what the command claims: to continue the run there, to
    replace it, or (neither) to start one where there is none. The claim is checked before
    anything is read, and again under the lock (``begin``), so two commands racing for one new
    folder cannot both start a run there.
    """

    def __init__(
        self, path: str | os.PathLike, *, resume: bool = False, overwrite: bool = False
    ) -> None:
        self.path = Path(path)
        if not str(path).strip():
            raise ValueError(message("the run folder (--out)", "a non-empty path", str(path)))
        self.checkpoints = self.path / "checkpoints"
        self.resume, self.overwrite = resume, overwrite

    def has_run(self) -> bool:
        return (self.path / "config.json").exists()

    @contextlib.contextmanager
    def locked(self):
        """Holds the folder's exclusive lock; refuses at once if another process holds it."""
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        self.refuse_links()
        try:  # O_NOFOLLOW: a link planted as .lock is refused, not followed and truncated
            fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise self._link_error(self.path / ".lock") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise RunFolderError(
                    f"another minigd process (pid {holder}) is writing to {self.path}; wait for "
                    "it to finish, or choose another --out."
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield self
        finally:
            os.close(fd)  # closing releases the lock

    def refuse_links(self) -> None:
        """Refuses a symbolic link where the run writes a file or a folder: nothing outside the
        run folder is ever written through a link planted inside it."""
        steps = f"checkpoints/{STEPS_FOLDER}"
        for name in (".lock", "checkpoints", steps, "tensorboard", *RUN_FILES):
            if (self.path / name).is_symlink():
                raise self._link_error(self.path / name)

    @staticmethod
    def _link_error(path: Path) -> RunFolderError:
        return RunFolderError(
            f"{path} is a symbolic link; minigd writes nothing through a link inside a run "
            "folder. Remove the link, or choose another --out."
        )

    def clean_partial_writes(self) -> None:
        """Removes the temporary files of writes a killed process never finished (those in
        ``checkpoints/`` are the Checkpoint callback's to clean, when training begins)."""
        for partial in self.path.glob(".*.tmp"):
            partial.unlink(missing_ok=True)

    def start_fresh(self) -> None:
        """Removes an old run's files, so nothing of it can be resumed or mistaken for this one."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for stale in list_checkpoints(self.checkpoints):
            stale.unlink()
        for stale in (self.checkpoints / STEPS_FOLDER).glob(f"*{SUFFIX}"):
            stale.unlink()

    def write_config(self, config: RunConfig, train: Dataset) -> None:
        classes = None if train.classes is None else train.classes.tolist()
        prints = {role: fingerprint(path) for role, path in config.data_files().items()}
        saved = asdict(config) | {"classes": classes, "data_fingerprints": prints}
        atomic_write_text(self.path / "config.json", json.dumps(saved, indent=2, default=str))

    def check_data(self, config: RunConfig) -> None:
        """Refuses a resume whose data files differ from those the run started with."""
        saved = read_json(self.path / "config.json").get("data_fingerprints", {})
        for role, path in config.data_files().items():
            if role in saved and (why := changed(saved[role], path)):
                raise RunFolderError(
                    f"cannot resume {self.path}: {why}. An exact resume needs the same data; "
                    "restore the file, or start a new run with another --out."
                )

    def write_results(self, model, history: History) -> None:
        model.save(self.path / "model.npz")
        history.to_json(self.path / "history.json")
        history.to_csv(self.path / "history.csv", "steps")
        history.to_csv(self.path / "epochs.csv", "epochs")


def check_folder(folder: RunFolder) -> None:
    """Whether the folder allows what the command claims (``RunFolder``'s resume, overwrite)."""
    resume, overwrite = folder.resume, folder.overwrite
    if folder.path.exists() and not folder.path.is_dir():
        raise RunFolderError(
            f"{folder.path} is a file; --out names the folder a run's files go to. Choose "
            "another --out."
        )
    if resume and overwrite:
        raise ValueError("--resume continues a run and --overwrite replaces one: pick one.")
    if resume and not folder.has_run():
        raise FileNotFoundError(
            f"{folder.path / 'config.json'} not found: --resume takes a run folder written by "
            "minigd train --out."
        )
    if not resume and not overwrite and folder.has_run():
        raise RunFolderError(
            f"{folder.path} already holds a run. Continue it with --resume {folder.path}, "
            "replace it with --overwrite, or choose another --out."
        )


def begin(folder: RunFolder, config: RunConfig, train: Dataset, restored: Path | None) -> None:
    """Under the lock, with every check passed: only now does the folder change. The claim is
    checked again here, where no other writer can act between the check and the writes."""
    check_folder(folder)
    newest = list_checkpoints(folder.checkpoints)
    if restored is not None and newest[-1:] != [restored]:
        raise RunFolderError(
            f"{folder.path} changed while this run started (its newest checkpoint is now "
            f"{newest[-1].name if newest else 'gone'}); start the command again."
        )
    if restored is None:
        folder.start_fresh()
    folder.clean_partial_writes()
    folder.write_config(config, train)
