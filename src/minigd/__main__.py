"""``python -m minigd`` and the ``minigd`` command: the command-line tool.

``run`` imports the tool inside a guard, so that a Ctrl-C while Python is still loading NumPy and
minigd exits quietly with 130, as one during training does. Once the command has returned, its
files are written and its exit code is decided: a Ctrl-C or SIGTERM arriving while the interpreter
shuts down is ignored (CPython resets its own handlers then, and the default action would end the
process by the signal, hiding a success).
"""

import signal
import sys


def run() -> int:
    try:
        from minigd.cli import main
    except KeyboardInterrupt:
        print("\nminigd: interrupted", file=sys.stderr)
        return 130
    try:
        code = main()
    except KeyboardInterrupt:  # in the instant between the command's end and the lines below
        code = 130
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(run())
