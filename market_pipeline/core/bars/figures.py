"""What the checks on `ohlcv_bars` measure, read from the lake: bar values, completeness against
the raw trades, and trades priced away from the rebuilt touch (polars scans)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import polars.selectors as cs

from market_pipeline.core.bars.build import day_bounds_ns, read_bar_counts, require
from market_pipeline.core.bars.intervals import BarInterval
from market_pipeline.core.lake import parquet_io

WORST_ROWS = 10  # offending rows listed in check metadata
PRICES = ("open", "high", "low", "close")
SUMS = ("volume", "quote_volume", "buy_volume")
# Must be set on every bar; `vwap` only where volume > 0, `mid`/`spread` only once the day has a book.
REQUIRED = ("interval", "bar_start", *PRICES, *SUMS, "trade_count")

OHLC_INCONSISTENT = (
    (pl.col("low") > pl.min_horizontal("open", "close"))
    | (pl.col("high") < pl.max_horizontal("open", "close"))
    | (pl.col("low") > pl.col("high"))
)
NEGATIVE_VOLUME = (
    pl.any_horizontal(*(pl.col(c) < 0 for c in SUMS))
    | (pl.col("buy_volume") > pl.col("volume"))
    | (pl.col("trade_count") < 0)
)


def _missing(column: str, dtype: pl.DataType) -> pl.Expr:
    missing = pl.col(column).is_null()
    return missing | pl.col(column).is_nan() if dtype.is_float() else missing


def missing_value_expr(schema: pl.Schema) -> pl.Expr:
    """True on a bar with a null (or NaN, in a float column) where a value is required."""
    required = [_missing(c, schema[c]) for c in REQUIRED]
    vwap = _missing("vwap", schema["vwap"]) & (pl.col("volume") > 0)
    return pl.any_horizontal(*required, vwap)


def worst(frame: pl.LazyFrame, condition: pl.Expr) -> tuple[int, list[dict[str, object]]]:
    """(rows where `condition` holds, the first WORST_ROWS of them as JSON-able records)."""
    hits = frame.filter(condition)
    count = int(hits.select(pl.len()).collect().item())
    rows = hits.head(WORST_ROWS).with_columns(cs.decimal().cast(pl.String), cs.datetime().dt.to_string("iso"))
    return count, rows.collect().to_dicts() if count else []


def scan_bars(path: Path) -> pl.LazyFrame:
    return parquet_io.scan(require(path, "bars file"))


def trades_in_day(trades: Path, day: dt.date) -> int:
    start, end = day_bounds_ns(day)
    frame = parquet_io.scan(require(trades, "raw trades file")).filter(pl.col("origin_time").is_between(start, end - 1))
    return int(frame.select(pl.len()).collect().item())


def completeness(bars: Path, trades: Path, day: dt.date, intervals: tuple[BarInterval, ...]) -> dict[str, object]:
    """Per interval: bars, absent bars, trades covered, and every breach of the absent-bar rule.

    A bar must start on the interval's grid inside the day, once, with at least one trade; the
    bars of each interval together must hold every trade of the day (by origin_time).
    """
    start, end = day_bounds_ns(day)
    expected = trades_in_day(trades, day)
    frame = scan_bars(bars)
    found = frame.group_by("interval").agg(
        pl.len().alias("bars"),
        pl.col("trade_count").sum().alias("trades"),
        (pl.col("trade_count") < 1).sum().alias("empty"),
        pl.col("bar_start").is_duplicated().sum().alias("duplicated"),
    )
    by_name = {row["interval"]: row for row in found.collect().iter_rows(named=True)}
    built = read_bar_counts(bars)["bars"]  # the intervals the file was built for (a day may have no trades)
    figures: dict[str, object] = {"trades_in_day": expected, "problems": []}
    problems: list[str] = figures["problems"]  # type: ignore[assignment]
    ns_start = pl.col("bar_start").dt.epoch("ns")
    for interval in intervals:
        if interval.name not in built:  # type: ignore[operator]
            problems.append(f"{interval.name}: {bars} was built without this interval (rematerialize ohlcv_bars)")
            continue
        row = by_name.get(interval.name, {"bars": 0, "trades": 0, "empty": 0, "duplicated": 0})
        off_grid = frame.filter(
            (pl.col("interval") == interval.name)
            & (((ns_start - start) % interval.ns != 0) | (ns_start < start) | (ns_start >= end))
        )
        misaligned = int(off_grid.select(pl.len()).collect().item())
        figures[f"{interval.name} bars"] = row["bars"]
        figures[f"{interval.name} absent_bars"] = interval.bars_per_day - row["bars"]
        if row["trades"] != expected:
            problems.append(f"{interval.name}: bars hold {row['trades']} trade(s), the day has {expected}")
        for name, count in (("empty", row["empty"]), ("duplicated", row["duplicated"]), ("misaligned", misaligned)):
            if count:
                problems.append(f"{interval.name}: {count} {name} bar(s)")
    return figures


def off_touch_trades(trades: Path, books: Path, day: dt.date, tolerance_bps: float) -> dict[str, object]:
    """Trades of the day priced outside the last in-sync rebuilt touch at or before their
    `origin_time` by more than `tolerance_bps` of the touch price."""
    start, end = day_bounds_ns(day)
    touch = (
        parquet_io.scan(require(books, "rebuilt books file"))
        .filter(pl.col("synced"))
        .select("origin_time", pl.col("bid_0_price", "ask_0_price").cast(pl.Float64))
        .drop_nulls()
        .sort("origin_time", maintain_order=True)
    )
    day_trades = (
        parquet_io.scan(require(trades, "raw trades file"))
        .filter(pl.col("origin_time").is_between(start, end - 1))
        .select("origin_time", "trade_id", "side", "price")
        .sort("origin_time", maintain_order=True)
    )
    joined = day_trades.join_asof(touch, on="origin_time", strategy="backward").with_columns(
        (
            pl.max_horizontal(pl.col("bid_0_price") - pl.col("price"), pl.col("price") - pl.col("ask_0_price"), 0)
            / pl.when(pl.col("price") < pl.col("bid_0_price"))
            .then(pl.col("bid_0_price"))
            .otherwise(pl.col("ask_0_price"))
            * 10_000
        ).alias("off_touch_bps")
    )
    totals = joined.select(
        pl.len().alias("trades"),
        pl.col("bid_0_price").is_null().sum().alias("trades_without_book"),
        (pl.col("off_touch_bps") > tolerance_bps).sum().alias("off_touch_trades"),
        pl.col("off_touch_bps").max().alias("max_off_touch_bps"),
    )
    figures = totals.collect().row(0, named=True)
    beyond = joined.filter(pl.col("off_touch_bps") > tolerance_bps).sort("off_touch_bps", descending=True)
    rows = beyond.head(WORST_ROWS).with_columns(
        pl.col("origin_time").cast(pl.Datetime("ns", "UTC")).dt.to_string("iso")
    )
    return {**figures, "worst_rows": rows.collect().to_dicts() if figures["off_touch_trades"] else []}


# The warehouse summary's sums: one decimal type for every instrument (each file has its grid's scale).
SUMMARY_DECIMAL = pl.Decimal(38, 18)
SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "interval": pl.String(),
    "bars": pl.Int64(),
    "trades": pl.Int64(),
    "volume": SUMMARY_DECIMAL,
    "quote_volume": SUMMARY_DECIMAL,
    "buy_volume": SUMMARY_DECIMAL,
    "first_bar_start": pl.Datetime("ns", "UTC"),
    "last_bar_start": pl.Datetime("ns", "UTC"),
    "bars_without_book": pl.Int64(),
    "trades_outside_day": pl.Int64(),
    "off_grid_trades": pl.Int64(),
}


def day_summary(bars: Path) -> pl.DataFrame:
    """One row per interval of a bars file: counts, exact sums, first and last bar, and the day's
    counts `build_bar_day` stored in the file."""
    counts = read_bar_counts(require(bars, "bars file"))
    built = pl.LazyFrame({"interval": list(counts["bars"])}, schema={"interval": pl.String})  # type: ignore[call-overload]
    found = (
        scan_bars(bars)
        .group_by("interval")
        .agg(
            pl.len().alias("bars"),
            pl.col("trade_count").sum().alias("trades"),
            *(pl.col(c).sum().cast(SUMMARY_DECIMAL) for c in SUMS),
            pl.col("bar_start").min().alias("first_bar_start"),
            pl.col("bar_start").max().alias("last_bar_start"),
            pl.col("mid").is_null().sum().alias("bars_without_book"),
        )
    )
    summary = (
        built.join(found, on="interval", how="left")  # an interval of a day without trades: zero bars
        .with_columns(pl.col("bars", "trades", *SUMS, "bars_without_book").fill_null(0))
        .with_columns(
            pl.lit(counts["trades_outside_day"]).alias("trades_outside_day"),
            pl.lit(counts["off_grid_trades"]).alias("off_grid_trades"),
        )
        .sort("interval")
        .collect()
    )
    return summary.cast(SUMMARY_SCHEMA).select(list(SUMMARY_SCHEMA))  # type: ignore[arg-type]
