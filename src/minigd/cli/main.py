"""The process boundary of the ``minigd`` command: exit codes that tell the truth, one sentence for
an error (a traceback only with --debug or MINIGD_DEBUG=1), signals answered rather than fatal."""

from __future__ import annotations

import argparse
import errno
import os
import sys
import threading
import traceback
import warnings
from collections.abc import Sequence

from minigd import _signals
from minigd._threads import blas_threads
from minigd.cli.commands import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_SIGTERM, EXIT_USAGE
from minigd.cli.job import end_job_on_failure
from minigd.cli.output import silent_when_closed
from minigd.cli.parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns its exit code (see EXIT_CODES). No traceback reaches the user
    unless --debug or MINIGD_DEBUG=1 asks for it."""
    parser = build_parser()
    if threading.current_thread() is threading.main_thread():
        previous = _signals.install()
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        args.argv = argv  # which options were written, not only their values
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        debug = args.debug or bool(os.environ.get("MINIGD_DEBUG"))
        with warnings.catch_warnings(), silent_when_closed():
            warnings.showwarning = _show_warning
            code = _run(args, debug)
        if code in (EXIT_USAGE, EXIT_ERROR):
            end_job_on_failure(code)
        return code
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training began
        _signals.take_pending()
        print("\nminigd: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _signals.Terminated:
        _signals.take_pending()
        print("minigd: terminated", file=sys.stderr)
        return EXIT_SIGTERM
    finally:
        if threading.current_thread() is threading.main_thread():
            _signals.restore(previous)


def _run(args: argparse.Namespace, debug: bool) -> int:
    try:
        if not hasattr(args, "threads"):
            return args.func(args)
        with blas_threads(args.threads):  # measurements and training alike
            return args.func(args)
    except (KeyboardInterrupt, _signals.Terminated):
        raise
    except (ValueError, TypeError, KeyError, LookupError, ImportError) as exc:
        _error(args, _text(exc), debug)
        return EXIT_USAGE
    except OSError as exc:
        _error(args, os_error_text(exc), debug)
        return EXIT_USAGE
    except MemoryError:
        _error(args, "out of memory. Use a smaller batch size, model or data set.", debug)
        return EXIT_ERROR
    except Exception as exc:
        _error(args, f"unexpected {type(exc).__name__}: {exc}", debug)
        return EXIT_ERROR


def _text(exc: BaseException) -> str:
    # KeyError's str() is the repr of its argument: show the sentence, not its quotes
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def os_error_text(exc: OSError) -> str:
    """An OS error as a sentence naming the path and what to do, not an errno alone."""
    path = exc.filename or ""
    what = {
        errno.ENOSPC: "the disk is full; free space or choose another folder",
        errno.EDQUOT: "the disk quota is exhausted; free space or choose another folder",
        errno.EACCES: "permission denied; choose a folder you can write to",
        errno.EPERM: "permission denied; choose a folder you can write to",
        errno.EROFS: "the file system is read-only; choose another folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EISDIR: "it is a folder, not a file",
    }.get(exc.errno)
    if what is None or (exc.strerror and "MINIGD_DATA" in exc.strerror):
        return f"{path}: {exc.strerror}." if path and exc.strerror else str(exc)
    return f"{path}: {what}." if path else f"{what}."


def _error(args: argparse.Namespace, text: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    hint = "" if debug else " (run with --debug for the traceback)"
    unexpected = text.startswith(("unexpected ", "out of memory"))
    print(f"minigd {args.command}: error: {text}{hint if unexpected else ''}", file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"minigd: warning: {message}", file=sys.stderr)
