"""Small pieces shared by the CLI commands: errors with exit codes, date parsing, text tables."""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Sequence
from typing import TextIO

# Exit codes: one per kind of error (market_pipeline/core/errors.py, docs/operations.md "Exit codes").
from market_pipeline.core.errors import EXIT_BLOCKED as EXIT_BLOCKED
from market_pipeline.core.errors import EXIT_CONFIGURATION as EXIT_CONFIGURATION
from market_pipeline.core.errors import EXIT_INTERNAL as EXIT_INTERNAL
from market_pipeline.core.errors import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from market_pipeline.core.errors import EXIT_OK as EXIT_OK
from market_pipeline.core.errors import EXIT_RUN_FAILED as EXIT_FAILED  # a step of the run failed
from market_pipeline.core.errors import EXIT_USAGE as EXIT_USAGE  # bad arguments or environment
from market_pipeline.core.errors import UsageError

WIDTH = 100  # every table fits in this many columns

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class CliError(UsageError):
    """A problem to report as `error: <message>` on stderr before exiting with `exit_code`
    (per instance: usage problems exit 2, others give the code of their kind)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code  # type: ignore[misc]  # per instance, over the kind's


def parse_date(value: str, option: str) -> dt.date:
    """A calendar date written YYYY-MM-DD (nothing else: no 20240301, no 2024-3-1)."""
    text = value.strip()
    if not _DATE_RE.match(text):
        raise CliError(f"{option} {value!r} is not a date in YYYY-MM-DD form", EXIT_USAGE)
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise CliError(f"{option} {value!r} is not a valid date: {exc}", EXIT_USAGE) from None


def days_between(start: dt.date, end: dt.date) -> str:
    """`dt` from `start` to `end` as a SQL condition, the days written in as literals: a query
    with parameters makes DuckDB's Python client import pandas, which a run whose steps build no
    Arrow arrays never needs (pyarrow imports it for them): the row counts of a `--select
    lake_views` run took 0.16-0.17 s so, 0.05 s now. Only dates, as `isoformat` writes them, reach
    the SQL."""
    if not (isinstance(start, dt.date) and isinstance(end, dt.date)):
        raise TypeError(f"days_between takes dates, not {start!r} and {end!r}")
    return f"CAST(dt AS VARCHAR) BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'"


def eprint(*lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def fmt_int(value: int | float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _clip(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "~" if width > 0 else ""


def format_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    right: Sequence[bool] | None = None,
    width: int = WIDTH,
    indent: int = 2,
) -> list[str]:
    """A plain-text table; the widest left-aligned columns are clipped until it fits `width`."""
    cells = [[str(c) for c in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    ncol = len(headers)
    right = list(right) if right is not None else [False] * ncol
    widths = [max(len(row[i]) for row in cells) for i in range(ncol)]
    gap = 2
    budget = width - indent - gap * (ncol - 1)
    while sum(widths) > budget:
        # Shrink the widest left-aligned (text) column; numbers are never clipped.
        candidates = [i for i in range(ncol) if not right[i] and widths[i] > max(len(headers[i]), 8)]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
    pad = " " * indent
    out = []
    for n, row in enumerate(cells):
        parts = []
        for i, text in enumerate(row):
            text = _clip(text, widths[i])
            parts.append(text.rjust(widths[i]) if right[i] else text.ljust(widths[i]))
        out.append((pad + (" " * gap).join(parts)).rstrip())
        if n == 0:
            out.append((pad + (" " * gap).join("-" * w for w in widths)).rstrip())
    return out


def print_lines(lines: Sequence[str], file: TextIO | None = None) -> None:
    for line in lines:
        print(line, file=file or sys.stdout)
