"""The CLI's argument types: each turns a piece of text into a value, or into a sentence that
says what was expected (argparse shows it with the option's name)."""

from __future__ import annotations

import argparse

from minigd.batching import parse_batch_size
from minigd.experiments import Target


def batch_size(text: str) -> int | str:
    try:
        return parse_batch_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def target(text: str):
    metric, _, value = text.partition(":")
    if not value:
        raise argparse.ArgumentTypeError("a target is METRIC:VALUE, e.g. val_accuracy:0.9")
    return Target(metric, float(value))


def targets(text: str) -> list:
    """METRIC:VALUE[,VALUE...]: one target per value (val_accuracy:0.8,0.85,0.9)."""
    metric, _, values = text.partition(":")
    if not values:
        raise argparse.ArgumentTypeError(
            "a target is METRIC:VALUE[,VALUE...], e.g. val_accuracy:0.8,0.85,0.9"
        )
    try:
        return [Target(metric, float(v)) for v in values.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{values!r}: target values are numbers, e.g. val_accuracy:0.8,0.85,0.9"
        ) from None


def comma_list(parse, what: str):
    """An argparse type for "a,b,c": each item through ``parse``; a sentence on a bad one."""

    def parse_list(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}; received {text!r}")
        try:
            return [parse(t) for t in items]
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what}; {exc} in {text!r}"
            ) from None

    parse_list.__name__ = what
    return parse_list


def number(kind, minimum: float, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {what}") from None
        if not value >= minimum or value != value or abs(value) == float("inf"):
            raise ValueError(f"{text!r} is not {what}")
        return value

    return parse


def reference(text: str) -> tuple[int, float]:
    """ "64:0.1" -> (64, 0.1): a batch size and a learning rate known to work with it."""
    b0, sep, lr0 = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return number(int, 1, "")(b0), number(float, 1e-300, "")(lr0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected B0:LR0, a batch size >= 1 and a learning rate > 0 such as 64:0.1; "
            f"received {text!r}"
        ) from None


def count(text: str) -> int:
    """A whole number >= 0 (how many learning rates a sweep may add beyond an edge)."""
    try:
        return number(int, 0, "a count of learning rates >= 0")(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1; received {text!r}")
    return value


def checkpoint_every(text: str) -> tuple[int | None, float | None]:
    """ "500" (steps), "90s" or "5m" (seconds of wall time) -> (steps, seconds)."""
    raw = text.strip().lower()
    try:
        if raw.endswith(("s", "m")):
            seconds = float(raw[:-1]) * (60 if raw.endswith("m") else 1)
            if seconds > 0:
                return None, seconds
        elif int(raw) >= 1:
            return int(raw), None
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(
        f"expected a number of steps (500) or of seconds (90s, 5m); received {text!r}"
    )


# the lists options take, comma-separated
batch_sizes = comma_list(parse_batch_size, "batch sizes")  # "full,64,1"
whole_batch_sizes = comma_list(number(int, 1, "a batch size >= 1"), "batch sizes")  # "32,64"
learning_rates = comma_list(number(float, 1e-300, "a learning rate > 0"), "learning rates")
seeds = comma_list(number(int, 0, "a seed >= 0"), "seeds")
