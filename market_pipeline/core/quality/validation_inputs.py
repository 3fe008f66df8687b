"""Data-quality figures of `validation_reports`, read (not recomputed) from its warehouse tables.

Contract with the quality domain: `main.validation_reports` (one row per dt, exchange, symbol)
and `main.validation_reports_hourly` (plus `hour`), with the columns below.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl

from market_pipeline.core.lake import warehouse
from market_pipeline.core.lake.warehouse import WarehouseTarget

DAILY_TABLE = "validation_reports"
HOURLY_TABLE = "validation_reports_hourly"
SKEW_COLUMNS = ("skew_p1_ms", "skew_p50_ms", "skew_p99_ms", "skew_max_ms", "skew_negative_share")
DAILY_COLUMNS: dict[str, pl.DataType] = {
    "gaps_detected": pl.Int64,
    "gaps_filled": pl.Int64,
    "max_mid_dev_ticks": pl.Float64,
    "p99_mid_dev_ticks": pl.Float64,
    "max_mid_dev_bps": pl.Float64,
    "p99_mid_dev_bps": pl.Float64,
    "snapshot_exact_match_share": pl.Float64,
    **{c: pl.Float64 for c in SKEW_COLUMNS},
    "off_grid_values": pl.Int64,
    "precision_loss_events": pl.Int64,
    "crossed_events": pl.Int64,
    "trades_at_or_inside_touch_share": pl.Float64,
}
HOURLY_COLUMNS: dict[str, pl.DataType] = {
    "gaps_detected": pl.Int64,
    "gaps_filled": pl.Int64,
    **{c: pl.Float64 for c in SKEW_COLUMNS},
}
KEYS = ("dt", "exchange", "symbol")


def _as_date(frame: pl.DataFrame) -> pl.DataFrame:
    dtype = frame.schema["dt"]
    if dtype == pl.Date:
        return frame
    if isinstance(dtype, pl.Datetime):
        return frame.with_columns(pl.col("dt").dt.date())
    return frame.with_columns(pl.col("dt").cast(pl.String).str.slice(0, 10).str.to_date())


def _read(
    con: duckdb.DuckDBPyConnection,
    table: str,
    keys: tuple[str, ...],
    columns: dict[str, pl.DataType],
    days: list[dt.date],
) -> pl.DataFrame | None:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() "
        "AND table_schema = 'main' AND table_name = ?",
        [table],
    ).fetchone()[0]
    if not exists:
        return None
    frame = con.execute(
        f'SELECT * FROM main."{table}" WHERE CAST(dt AS DATE) BETWEEN ? AND ?', [min(days), max(days)]
    ).pl()
    missing = [c for c in keys if c not in frame.columns]
    if missing:
        raise ValueError(f"warehouse table main.{table} lacks the key column(s) {missing}")
    frame = _as_date(frame)
    return frame.select(
        *keys,
        *[(pl.col(c) if c in frame.columns else pl.lit(None)).cast(t).alias(c) for c, t in columns.items()],
    ).filter(pl.col("dt").is_in(days))


def read_validation(target: WarehouseTarget, days: list[dt.date]) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """(daily, hourly) rows of validation_reports for `days`; None for a table that does not exist."""
    if not target.exists():
        return None, None
    with warehouse.connect(target, read_only=True) as con:
        daily = _read(con, DAILY_TABLE, KEYS, DAILY_COLUMNS, days)
        hourly = _read(con, HOURLY_TABLE, (*KEYS, "hour"), HOURLY_COLUMNS, days)
    if hourly is not None:
        # `hour` is the hour of day (0-23) or the hour's start as a timestamp: join on the hour of day.
        hour = pl.col("hour").dt.hour() if isinstance(hourly.schema["hour"], pl.Datetime) else pl.col("hour")
        hourly = hourly.with_columns(hour.cast(pl.Int64).alias("hour"))
    return daily, hourly
