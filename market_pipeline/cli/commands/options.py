"""The options several commands share, as argparse parent parsers, and the registration contract."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NamedTuple

Handler = Callable[[argparse.Namespace], int]


class Parents(NamedTuple):
    """Parent parsers a command's parser takes its shared options from."""

    verbose: argparse.ArgumentParser  # -v/--verbose, --debug after the command name too
    progress: argparse.ArgumentParser  # --no-progress, for the commands that execute a run


def build_parents() -> Parents:
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="show Dagster's logs (-v: INFO, -vv: DEBUG and full tracebacks)",
    )
    verbose.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="print the traceback of an error"
    )
    progress = argparse.ArgumentParser(add_help=False)
    progress.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress while the run executes (default: a live display on a terminal, plain lines otherwise)",
    )
    return Parents(verbose, progress)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
