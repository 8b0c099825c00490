"""``python -m minigd`` runs the command-line tool."""

import sys

from minigd.cli import main

if __name__ == "__main__":
    sys.exit(main())
