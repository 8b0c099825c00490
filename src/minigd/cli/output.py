"""The command's output streams, which fall silent when their reader has gone.

``minigd train ... | head -2`` closes the pipe after two lines; the next progress line would raise
BrokenPipeError inside the training loop and end the run without its model. A closed output
stream must not end a run: from then on the stream swallows what is written, and the command
goes on, writes its files and exits with the code it would have had.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TextIO


class SilentWhenClosed:
    """A text stream that writes to ``stream`` until its reader goes, and then to nowhere."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                self._fall_silent()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._fall_silent()

    def _fall_silent(self) -> None:
        """Points the file descriptor at /dev/null too, so the interpreter's last flush (and
        anything writing to the descriptor directly) cannot fail at exit."""
        self.reader_gone = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)

    def isatty(self) -> bool:
        return not self.reader_gone and self.stream.isatty()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)  # encoding, fileno, ... as the stream has them


@contextlib.contextmanager
def silent_when_closed() -> Iterator[None]:
    """stdout and stderr as ``SilentWhenClosed`` streams while a command runs."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = SilentWhenClosed(sys.stdout), SilentWhenClosed(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
