"""The exchange's own book checksums over an instrument-day of a capture: what a source that has
them reports (`vendors/base.exchange_checksums`), the `validation_reports` columns they fill and
the blocking check's verdict.

Kraken sends a CRC32 of its top 10 levels with every book update, OKX one of its top 25 with every
`books` message sent before it retired the field in 2026 (0 since: not checkable). The source's
verify replay recomputes each from the replayed book; a book that matches is exact at that update.
The figures count the book messages received within the UTC day (the replay reads a file that
started the day before from its start, to have the book).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class ChecksumMismatch:
    """The first update of the day whose checksum disagreed with the replayed book."""

    file: str
    line: int  # 1-based, in `file`
    received_time: int  # ns since the epoch, the line's receive time

    def describe(self) -> str:
        """`file:line (received <UTC time, ns>)`."""
        seconds, ns = divmod(self.received_time, 1_000_000_000)
        stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self.file}:{self.line} (received {stamp}.{ns:09d}Z)"


@dataclass(frozen=True)
class ChecksumFigures:
    """One instrument-day's exchange checksums: `checked` against the replayed book, of which
    `mismatches` disagreed (the first named), and `unchecked` messages whose checksum was 0."""

    checked: int
    mismatches: int
    unchecked: int
    first_mismatch: ChecksumMismatch | None

    def summary(self) -> str:
        """One line: the count, and the first disagreeing update when there is one."""
        counts = f"{self.mismatches} of {self.checked} exchange checksum(s) disagree with the replayed book"
        if self.first_mismatch is None:
            return f"{counts}; {self.unchecked} message(s) without a checksum"
        return f"{counts}; first at {self.first_mismatch.describe()}"


# Columns of main.validation_reports; all null when the day's source has no exchange checksum.
CHECKSUM_COLUMNS: dict[str, pl.DataType] = {
    "checksums_checked": pl.Int64(),
    "checksum_mismatches": pl.Int64(),
    "checksums_unchecked": pl.Int64(),
    "first_checksum_mismatch_file": pl.String(),
    "first_checksum_mismatch_line": pl.Int64(),
    "first_checksum_mismatch_received_time": pl.Int64(),
}


def checksum_columns(figures: ChecksumFigures | None) -> dict[str, object]:
    """CHECKSUM_COLUMNS of one instrument-day."""
    if figures is None:
        return dict.fromkeys(CHECKSUM_COLUMNS)
    first = figures.first_mismatch
    return {
        "checksums_checked": figures.checked,
        "checksum_mismatches": figures.mismatches,
        "checksums_unchecked": figures.unchecked,
        "first_checksum_mismatch_file": None if first is None else first.file,
        "first_checksum_mismatch_line": None if first is None else first.line,
        "first_checksum_mismatch_received_time": None if first is None else first.received_time,
    }
