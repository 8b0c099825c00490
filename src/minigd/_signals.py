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
pending signal before its first step. While it trains, ``caught_while_training`` replaces both
handlers with one that only records the signal, so the loop stops after its step.
"""

from __future__ import annotations

import contextlib
import signal
import threading

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


class Caught:
    """The first SIGINT or SIGTERM received while training, if any."""

    signal: int | None = None


@contextlib.contextmanager
def caught_while_training():
    """While training, Ctrl-C (SIGINT) and SIGTERM end training after the current step instead of
    raising inside NumPy mid-update, so the run can be checkpointed where it stands. A second
    signal means the user really wants out: it raises KeyboardInterrupt. Outside the main thread
    signals cannot be caught: there a KeyboardInterrupt stays a KeyboardInterrupt."""
    caught = Caught()
    caught.signal = take_pending()  # one whose exception a C callback swallowed
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum, frame):
        if caught.signal is not None:
            raise KeyboardInterrupt
        caught.signal = signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
