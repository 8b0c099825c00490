"""The ``minigd`` command: ``main(argv) -> exit code``; run_commands.py runs train, evaluate and
predict, commands.py the others, parser.py parses their arguments, main.py is the process
boundary (errors, exit codes, signals)."""

from minigd.cli.main import main, os_error_text
from minigd.cli.parser import build_parser

__all__ = ["build_parser", "main", "os_error_text"]
