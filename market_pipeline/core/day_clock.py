"""UTC days in integer nanoseconds, the lake's clock: a day's start, the hour of a time, the units.

Every time column of the lake is int64 ns since the epoch (UTC). A day's start is computed in
integers (never through a float timestamp), so it is exact for every date.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

NS_PER_MS = 1_000_000
NS_PER_SECOND = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_SECOND
NS_PER_HOUR = 3_600 * NS_PER_SECOND
NS_PER_DAY = 86_400 * NS_PER_SECOND
HOURS = 24
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_ns(moment: dt.datetime) -> int:
    """A datetime (naive: UTC) as ns since the epoch, exactly (to the microsecond it holds)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
    delta = aware - EPOCH
    return (delta.days * 86_400 + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1_000


def day_start_ns(day: dt.date) -> int:
    """00:00 UTC of `day` in ns since the epoch."""
    return (day - EPOCH.date()).days * NS_PER_DAY


def hour_of(column: str, day: dt.date) -> pl.Expr:
    """Hour of the day (0-23) of a ns time column, clamped: a time before the day counts in hour 0,
    one after it in hour 23 (as the book kernel's hourly counters and the agreement's spills do)."""
    return ((pl.col(column) - day_start_ns(day)) // NS_PER_HOUR).clip(0, HOURS - 1).cast(pl.Int32)


def iso(ns: int | None) -> str | None:
    """A ns time as ISO 8601 UTC to the millisecond, for check metadata and report rows."""
    if ns is None:
        return None
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="milliseconds")
