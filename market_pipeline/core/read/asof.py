"""The last synced book at or before given instants (as-of joins on the receive clock), one day of
books at a time: memory is one day's selected book columns plus the instants of that day.

"At or before": the books row with the greatest `received_time` <= the instant, among rows with
`synced` true; of rows sharing that time, the last in the file (the book's latest state). The day
before the first instant's day is read too, so an instant before the day's first synced row gets
the previous day's last one.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Sequence

import polars as pl

from market_pipeline.core.day_clock import NS_PER_DAY
from market_pipeline.core.read.errors import EmptyRange, SkippedDaysWarning
from market_pipeline.core.read.ranges import TimeRange
from market_pipeline.core.read.reader import LakeReader

TOP_OF_BOOK = ("bid_0_price", "bid_0_size", "ask_0_price", "ask_0_size")
ROW = "__row"


def instants_ns(times: pl.Series | Sequence[object]) -> pl.Series:
    """Instants as int64 ns since the epoch: datetimes (naive = UTC) or integers already in ns."""
    series = times if isinstance(times, pl.Series) else pl.Series("time", list(times))
    if isinstance(series.dtype, pl.Datetime):
        if series.dtype.time_zone is not None:
            series = series.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return series.dt.cast_time_unit("ns").cast(pl.Int64).rename("time")
    if series.dtype.is_integer():
        return series.cast(pl.Int64).rename("time")
    raise TypeError(f"times must be datetimes or int64 nanoseconds, got {series.dtype}")


def _day_of(ns: pl.Expr) -> pl.Expr:
    return (ns // NS_PER_DAY).cast(pl.Int32).cast(pl.Date)


def _synced_books(
    reader: LakeReader, instrument: str, day: dt.date, columns: list[str], include_failed: bool
) -> pl.DataFrame:
    """The day's synced rows, sorted by received_time with the file order kept among equal times."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedDaysWarning)  # the caller reports the days it left out
        try:
            frame = reader.scan("books", instrument, day, columns=None, include_failed=include_failed)
        except EmptyRange:
            return pl.DataFrame()
    return (
        frame.filter(pl.col("synced"))
        .select(["received_time", *columns])
        .with_row_index(ROW)
        .sort(["received_time", ROW])
        .drop(ROW)
        .collect()
    )


def book_at(
    reader: LakeReader,
    instrument: str,
    times: pl.Series | Sequence[object],
    columns: Sequence[str] = TOP_OF_BOOK,
    include_failed: bool = False,
) -> pl.DataFrame:
    """One row per instant, in the order given: `time` (ns), `book_time` (the row's received_time,
    null when no synced book precedes the instant) and `columns` of that books row."""
    wanted = [c for c in columns if c != "received_time"]
    instants = instants_ns(times).to_frame().with_row_index("order").with_columns(_day_of(pl.col("time")).alias("day"))
    if instants.is_empty():
        raise EmptyRange("book_at: no instants given")
    first, last = instants["day"].min(), instants["day"].max()
    reader.day_files("books", instrument, TimeRange.of(first, last), include_failed)  # errors and warnings once
    carry: pl.DataFrame | None = None
    parts = []
    for day in TimeRange.of(first - dt.timedelta(days=1), last).days:
        books = _synced_books(reader, instrument, day, wanted, include_failed)
        if not books.is_empty():
            books = books.rename({"received_time": "book_time"})
        pieces = [f for f in (carry, books) if f is not None and not f.is_empty()]
        todays = instants.filter(pl.col("day") == day).sort("time")
        if not todays.is_empty() and not pieces:  # no synced book yet: nulls
            parts.append(todays.with_columns(pl.lit(None, pl.Int64).alias("book_time")))
        elif not todays.is_empty():
            parts.append(todays.join_asof(pl.concat(pieces), left_on="time", right_on="book_time", strategy="backward"))
        if not books.is_empty():
            carry = books.tail(1)
    return pl.concat(parts, how="diagonal_relaxed").sort("order").select(["time", "book_time", *wanted])


def trades_with_book(
    reader: LakeReader,
    instrument: str,
    start: dt.date | dt.datetime,
    end: dt.date | dt.datetime | None = None,
    trade_columns: Sequence[str] | None = None,
    book_columns: Sequence[str] = TOP_OF_BOOK,
    include_failed: bool = False,
) -> pl.DataFrame:
    """The trades of the range, each with the last synced book received at or before the trade was
    received (`book_time` and `book_columns`), in the trades' file order."""
    trades = reader.scan("trades", instrument, start, end, columns=trade_columns, include_failed=include_failed)
    trades = trades.collect()
    if "received_time" not in trades.columns:
        raise ValueError("trades_with_book needs received_time among trade_columns")
    books = book_at(reader, instrument, trades["received_time"], book_columns, include_failed)
    return pl.concat([trades, books.drop("time")], how="horizontal")
