"""``python -m minigd`` and the ``minigd`` command: the command-line tool.

``run`` imports the tool inside a guard, so that a Ctrl-C while Python is still loading NumPy and
minigd exits quietly with 130, as one during training does. Once the command has returned, its
files are written and its exit code is decided: a Ctrl-C or SIGTERM arriving while the interpreter
shuts down is ignored (CPython resets its own handlers then, and the default action would end the
process by the signal, hiding a success), and an interrupted command leaves with its own code.
"""

import os
import signal
import sys

INTERRUPTED = (130, 143)  # Ctrl-C, SIGTERM


def run() -> int:
    from minigd import _signals

    _signals.install()  # before NumPy loads: a SIGTERM from here on is answered, not fatal
    try:
        from minigd.cli import main

        code = main()
    except KeyboardInterrupt:  # while loading, or in the instant after the command returned
        print("\nminigd: interrupted", file=sys.stderr)
        code = 130
    except _signals.Terminated:
        print("minigd: terminated", file=sys.stderr)
        code = 143
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    if code in INTERRUPTED:
        # A KeyboardInterrupt that passed through a C extension's own evaluation while it was
        # importing sets a CPython flag that no Python code can clear; at exit the interpreter
        # then kills itself with SIGINT, turning a handled Ctrl-C (130) into a death by signal
        # (seen in 7% of interrupts during start-up). Leave here, with the streams flushed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(run())
