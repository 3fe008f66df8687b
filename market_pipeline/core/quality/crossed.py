"""Crossed or locked books (best bid at or above the best ask), of the vendor's snapshots and of
the rebuilt rows, and the share of trades printed at or inside the rebuilt touch: through lazy
scans of the few columns they need, for `validation_reports` and the book checks alike."""

from __future__ import annotations

import polars as pl

from market_pipeline.core.day_clock import iso
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.quality.lake_day import WORST_ROWS, DayFiles

SNAPSHOT_TOP_COLUMNS = ["received_time", "origin_time", "sequence_number", "bid_0_price", "ask_0_price"]


def scan_snapshot_tops(files: DayFiles) -> pl.LazyFrame:
    """Times, sequence numbers and touch prices of the vendor snapshots, in file order."""
    return parquet_io.scan(files.require(files.snapshots)).select(SNAPSHOT_TOP_COLUMNS)


def scan_books_touch(files: DayFiles) -> pl.LazyFrame:
    """Rebuilt touch per sampled row, as floats, in file order."""
    return parquet_io.scan(files.require(files.books)).select(
        "received_time",
        "sequence_number",
        "synced",
        "trigger",
        pl.col("bid_0_price", "ask_0_price").cast(pl.Float64),
    )


def crossed_figures(frame: pl.LazyFrame, by_time: bool) -> tuple[int, list[dict[str, object]]]:
    """(crossed or locked rows, the first WORST_ROWS of them), by receive time (stable) when
    `by_time` else in file order."""
    crossed = frame.filter(pl.col("bid_0_price") >= pl.col("ask_0_price"))
    count = crossed.select(pl.len()).collect(engine="streaming").item()
    if not count:
        return 0, []
    first = crossed.sort("received_time", maintain_order=True) if by_time else crossed
    rows = first.head(WORST_ROWS).collect(engine="streaming")
    return int(count), [
        {
            "received_time": iso(r["received_time"]),
            "sequence_number": r["sequence_number"],
            "bid_0_price": float(r["bid_0_price"]),
            "ask_0_price": float(r["ask_0_price"]),
        }
        for r in rows.iter_rows(named=True)
    ]


def touch_share(files: DayFiles) -> float | None:
    """Share of trades printed at or between the rebuilt best bid and ask.

    Each trade is compared with the last in-sync rebuilt row received at or before it (rows are
    sampled at vendor snapshots and on the sampling interval, so this is approximate); None when
    no trade has such a row.
    """
    touch = (
        scan_books_touch(files)
        .filter("synced")
        .select("received_time", "bid_0_price", "ask_0_price")
        .drop_nulls()
        .sort("received_time", maintain_order=True)
    )
    trades = parquet_io.scan(files.require(files.trades)).select("received_time", "price").sort("received_time")
    inside = (pl.col("price") >= pl.col("bid_0_price")) & (pl.col("price") <= pl.col("ask_0_price"))
    found = (
        trades.join_asof(touch, on="received_time", strategy="backward")
        .drop_nulls("bid_0_price")
        .select(inside.mean().alias("share"), pl.len().alias("n"))
        .collect(engine="streaming")
        .row(0, named=True)
    )
    return float(found["share"]) if found["n"] else None
