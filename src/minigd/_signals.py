"""SIGTERM as an exception, like Ctrl-C's KeyboardInterrupt, from the process's first instant.

The training loop catches both signals itself and checkpoints before it stops. Everywhere else
(loading, writing results) a SIGTERM raises ``Terminated``, which the command line turns into
exit code 143 with one line, instead of the default action killing the process mid-write.
Standard library only: ``minigd.__main__`` installs the handler before anything heavy is imported.
"""

from __future__ import annotations

import signal


class Terminated(BaseException):
    """SIGTERM arrived outside the training loop."""


def _raise_terminated(signum, frame):
    raise Terminated


def install() -> object:
    """Makes SIGTERM raise Terminated in this (the main) thread; returns the previous handler."""
    return signal.signal(signal.SIGTERM, _raise_terminated)
