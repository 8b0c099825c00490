"""``python -m minigd`` and the ``minigd`` command: the command-line tool.

``run`` imports the tool inside a guard, so that a Ctrl-C while Python is still loading NumPy and
minigd exits quietly with 130, as one during training does.
"""

import sys


def run() -> int:
    try:
        from minigd.cli import main
    except KeyboardInterrupt:
        print("\nminigd: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
