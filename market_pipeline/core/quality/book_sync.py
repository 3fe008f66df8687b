"""How much of an instrument-day the rebuilt book was out of sync, from the books file itself.

Every rebuilt row says whether the book was in sync when it was written (`synced`): false before
the day's first sync point, and from a gap (a sequence jump, a broken capture chain, a divergence
from a vendor snapshot) until a snapshot repairs it. Rows are written on a fixed receive-time grid
plus one at each snapshot, so the share of unsynced rows is close to the share of the day's
covered time the book could not be trusted. The rebuild counts the same rows
(`rows_written_unsynced`); reading them from the file keeps the figure true to what was written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from market_pipeline.core.day_clock import hour_of
from market_pipeline.core.lake import parquet_io

HOURLY_SYNC_SCHEMA = {"hour": pl.Int32, "book_rows": pl.Int64, "unsynced_rows": pl.Int64}


@dataclass(frozen=True)
class SyncFigures:
    book_rows: int
    unsynced_rows: int
    hourly: pl.DataFrame  # HOURLY_SYNC_SCHEMA, hours 0-23

    @property
    def unsynced_share(self) -> float | None:
        return self.unsynced_rows / self.book_rows if self.book_rows else None

    def daily(self) -> dict[str, object]:
        return {"book_rows": self.book_rows, "unsynced_rows": self.unsynced_rows, "unsynced_share": self.unsynced_share}


def sync_figures(books: Path, day: dt.date) -> SyncFigures:
    """Rows and unsynced rows of a books file, for the day and per hour of `received_time`."""
    counted = (
        parquet_io.scan(books)
        .select(hour_of("received_time", day).alias("hour"), (~pl.col("synced")).cast(pl.Int64).alias("unsynced"))
        .group_by("hour")
        .agg(pl.len().cast(pl.Int64).alias("book_rows"), pl.col("unsynced").sum().alias("unsynced_rows"))
        .collect(engine="streaming")
    )
    hours = pl.DataFrame({"hour": pl.Series(range(24), dtype=pl.Int32)})
    hourly = (
        hours.join(counted, on="hour", how="left")
        .with_columns(pl.col("book_rows", "unsynced_rows").fill_null(0))
        .cast(HOURLY_SYNC_SCHEMA)
    )
    return SyncFigures(int(hourly["book_rows"].sum()), int(hourly["unsynced_rows"].sum()), hourly)
