"""Ctrl-C and SIGTERM as exceptions from the process's first instant, and never lost.

The training loop catches both signals itself, checkpoints, and then hands the signal on
(``redeliver``) to the handler that was there before. Everywhere else
(loading, writing results) SIGINT raises KeyboardInterrupt and SIGTERM raises ``Terminated``,
which the command line turns into exit codes 130 and 143 with one line, instead of the default
action killing the process mid-write. Standard library only: ``minigd.__main__`` installs the
handlers before anything heavy is imported.

A signal can land while a C library is calling back into Python (llvmlite does while Numba
loads its compiled kernels); an exception raised there is printed as "Exception ignored" and
dropped. So each handler also records the signal as ``pending``, and the training loop honours a
pending signal before its first step.
"""

from __future__ import annotations

import signal

pending: int | None = None  # a signal whose exception may have been swallowed


class Terminated(BaseException):
    """SIGTERM arrived outside the training loop."""


def _on_sigterm(signum, frame):
    global pending
    pending = signum
    raise Terminated


def _on_sigint(signum, frame):
    global pending
    pending = signum
    raise KeyboardInterrupt


def install() -> dict:
    """Installs both handlers (in the main thread); returns the previous ones for ``restore``."""
    return {
        signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm),
        signal.SIGINT: signal.signal(signal.SIGINT, _on_sigint),
    }


def restore(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def redeliver(signum: int) -> None:
    """Hands a signal that training caught, and answered by stopping after its step and writing
    its checkpoint, to the handler that was there before: Python's own raises KeyboardInterrupt
    for SIGINT and ends the process for SIGTERM, as Keras and PyTorch leave them; the command
    line's turns them into exit codes. A script looping over ``fit`` calls stops as it would
    without minigd."""
    signal.raise_signal(signum)


def take_pending() -> int | None:
    """The recorded signal, if any, forgetting it (a handled one must not stop a later run)."""
    global pending
    signum, pending = pending, None
    return signum
