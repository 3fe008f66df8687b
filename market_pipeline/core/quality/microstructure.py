"""Market-microstructure figures of one instrument-day, computed from the lake with DuckDB.

Book shape comes from the rebuilt books' rows at vendor snapshots (`trigger = 'snapshot'`,
written after the snapshot's check and fill), so it is measured at the vendor's 100 ms cadence
whatever the sampling interval. Prices and sizes are turned into integer ticks and lots first,
so the comparisons (within N bps of mid) are exact:

    |price - mid| / mid <= N / 10_000   <=>   |2 p - (b0 + a0)| * 10_000 <= N (b0 + a0)   (in ticks)

Only the levels the books carry count, so for a fine tick (BTC-USDT at 0.01) the top 20 levels
usually all lie within 5 bps and the three depths coincide.

Depth is summed over the levels the books carry (`PIPELINE_BOOK__DEPTH`, at most 20 a side),
in base-currency units. Quantiles are nearest-rank (DuckDB `quantile_disc`).

DuckDB streams the Parquet files, with a memory limit and a spill directory, so a
realistic day (864,000 snapshots, ~34 M delta rows) fits in bounded memory; the update ranks,
an as-of join of every delta row with the last snapshot before it, come hour by hour from
`update_ranks.py`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl

from market_pipeline.core.lake import parquet_io
from market_pipeline.core.quality import update_ranks

DEPTH_BPS = (5, 10, 25)
# Level rank from the touch: 0 = at or inside the touch, r = r better levels on that side.
# Ranks at or beyond the levels carried (20 by default) are counted as "deeper".
RANK_BUCKETS = (("0", 0, 0), ("1", 1, 1), ("2", 2, 2), ("3", 3, 3), ("4", 4, 4), ("5_9", 5, 9), ("10_19", 10, 19))
SKEW_SAMPLE_ROWS = 10_000
DAILY_SCHEMA: dict[str, pl.DataType] = {
    "snapshots": pl.Int64,
    "spread_p50_ticks": pl.Int64,
    "spread_p90_ticks": pl.Int64,
    "spread_p99_ticks": pl.Int64,
    "spread_mean_ticks": pl.Float64,
    **{f"depth_{n}bps_mean": pl.Float64 for n in DEPTH_BPS},
    "book_messages": pl.Int64,
    "trades": pl.Int64,
    "trade_to_book_ratio": pl.Float64,
    "book_updates_unranked": pl.Int64,
    **{f"updates_per_s_rank_{label}": pl.Float64 for label, _, _ in RANK_BUCKETS},
    "updates_per_s_rank_deeper": pl.Float64,
}
_HOUR_NS = 3_600 * 1_000_000_000
_DAY_SECONDS = 86_400


@dataclass
class Microstructure:
    daily: dict[str, float | int | None]
    hourly: pl.DataFrame  # hour, snapshots, spread_p50_ticks, depth_*bps_mean, book_messages, trades
    rank_counts: list[int]  # delta rows by level rank from the touch; the last entry is "deeper"
    skew_sample_seconds: list[float] = field(default_factory=list)


def _levels(path: Path) -> int:
    names = set(parquet_io.read_schema(path).names)
    return sum(1 for i in range(1000) if f"bid_{i}_price" in names)


def _parquet(path: Path) -> str:
    return parquet_io.duckdb_read_parquet(str(path.resolve()))


# DuckDB's own budget (it spills beyond it); the process adds Python and the result frames.
MEMORY_LIMIT = "256MB"  # the step process itself needs ~450 MB of the 1 GB budget


def _snapshot_view(con: duckdb.DuckDBPyConnection, books: Path, tick: Decimal, lot: Decimal, day: dt.date) -> int:
    levels = _levels(books)
    day_start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000_000
    cols = []
    for side, short in (("bid", "b"), ("ask", "a")):
        for i in range(levels):
            cols.append(f"CAST(round(CAST({side}_{i}_price AS DOUBLE) / {float(tick)!r}) AS BIGINT) AS {short}{i}")
            cols.append(f"CAST(round(CAST({side}_{i}_size AS DOUBLE) / {float(lot)!r}) AS BIGINT) AS {short}l{i}")
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW snaps AS
        SELECT received_time,
               least(greatest((received_time - {day_start}) // {_HOUR_NS}, 0), 23) AS hour,
               {", ".join(cols)}
        FROM {_parquet(books)} WHERE trigger = 'snapshot'"""
    )
    return levels


def _bounds_expr(bps: int) -> str:
    """The tick range [lo, hi] within `bps` of mid.

    lo = ceil(m2 (1e4 - bps) / 2e4), hi = floor(m2 (1e4 + bps) / 2e4).
    """
    return f"-((-(b0 + a0) * {10_000 - bps}) // 20000) AS lo{bps}, ((b0 + a0) * {10_000 + bps}) // 20000 AS hi{bps}"


def _depth_expr(levels: int, bps: int) -> str:
    # An absent level (NULL tick) fails BETWEEN and adds 0.
    return " + ".join(
        f"CASE WHEN {s}{i} BETWEEN lo{bps} AND hi{bps} THEN {s}l{i} ELSE 0 END"
        for s in ("b", "a")
        for i in range(levels)
    )


def compute_microstructure(
    books: Path, deltas: Path, trades: Path, tick: Decimal, lot: Decimal, day: dt.date, spill_dir: Path
) -> Microstructure:
    """Spread, depth near mid, update frequency by rank and trade-to-book ratio of one instrument-day."""
    for needed in (books, deltas, trades):
        if not needed.is_file():
            raise FileNotFoundError(f"{day}: lake file missing: {needed}")
    lot_f = float(lot)
    day_start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000_000
    # No query here depends on row order.
    with parquet_io.scratch_duckdb(spill_dir, MEMORY_LIMIT, preserve_insertion_order=False) as con:
        levels = _snapshot_view(con, books, tick, lot, day)
        depth_cols = ", ".join(f"{_depth_expr(levels, n)} AS depth_{n}bps_lots" for n in DEPTH_BPS)
        bounds = ", ".join(_bounds_expr(n) for n in DEPTH_BPS)
        con.execute(  # small (5 columns): computed once, aggregated twice
            f"""CREATE OR REPLACE TEMP TABLE shape AS
            SELECT hour, a0 - b0 AS spread_ticks, {depth_cols}
            FROM (SELECT *, {bounds} FROM snaps WHERE b0 IS NOT NULL AND a0 IS NOT NULL)"""
        )
        depth_means = ", ".join(f"avg(depth_{n}bps_lots) * {lot_f!r} AS depth_{n}bps_mean" for n in DEPTH_BPS)
        daily_row = (
            con.execute(
                f"""SELECT count(*) AS snapshots,
                   quantile_disc(spread_ticks, [0.5, 0.9, 0.99]) AS q, avg(spread_ticks) AS spread_mean_ticks,
                   {depth_means}
            FROM shape"""
            )
            .pl()
            .row(0, named=True)
        )
        hourly_shape = con.execute(
            f"""SELECT hour, count(*) AS snapshots, quantile_disc(spread_ticks, 0.5) AS spread_p50_ticks, {depth_means}
            FROM shape GROUP BY hour"""
        ).pl()
        hours_of = f"least(greatest((received_time - {day_start}) // {_HOUR_NS}, 0), 23)"
        messages = con.execute(
            f"""SELECT {hours_of} AS hour, count(DISTINCT sequence_number) AS book_messages, count(*) AS book_delta_rows
            FROM {_parquet(deltas)} GROUP BY hour"""
        ).pl()
        trade_counts = con.execute(
            f"SELECT {hours_of} AS hour, count(*) AS trades FROM {_parquet(trades)} GROUP BY hour"
        ).pl()
        skew = con.execute(
            f"""SELECT (received_time - origin_time) / 1e9 FROM {_parquet(deltas)}
            USING SAMPLE reservoir({SKEW_SAMPLE_ROWS} ROWS) REPEATABLE (7)"""
        ).fetchall()

    hours = pl.DataFrame({"hour": list(range(24))}, schema={"hour": pl.Int64})
    hourly = (
        hours.join(hourly_shape.with_columns(pl.col("hour").cast(pl.Int64)), on="hour", how="left")
        .join(messages.with_columns(pl.col("hour").cast(pl.Int64)), on="hour", how="left")
        .join(trade_counts.with_columns(pl.col("hour").cast(pl.Int64)), on="hour", how="left")
        .with_columns(pl.col("snapshots", "book_messages", "book_delta_rows", "trades").fill_null(0).cast(pl.Int64))
        .with_columns(
            pl.when(pl.col("book_messages") > 0)
            .then(pl.col("trades") / pl.col("book_messages"))
            .otherwise(None)
            .alias("trade_to_book_ratio")
        )
        .sort("hour")
    )
    rank_counts = update_ranks.rank_counts(books, deltas, float(tick), levels, day_start)
    total_messages = int(hourly["book_messages"].sum())
    total_trades = int(hourly["trades"].sum())
    q = daily_row["q"] or [None, None, None]
    daily: dict[str, float | int | None] = {
        "snapshots": int(daily_row["snapshots"]),
        "spread_p50_ticks": q[0],
        "spread_p90_ticks": q[1],
        "spread_p99_ticks": q[2],
        "spread_mean_ticks": daily_row["spread_mean_ticks"],
        **{f"depth_{n}bps_mean": daily_row[f"depth_{n}bps_mean"] for n in DEPTH_BPS},
        "book_messages": total_messages,
        "trades": total_trades,
        "trade_to_book_ratio": total_trades / total_messages if total_messages else None,
        "book_updates_unranked": int(hourly["book_delta_rows"].sum()) - sum(rank_counts),
    }
    for label, low, high in RANK_BUCKETS:
        daily[f"updates_per_s_rank_{label}"] = sum(rank_counts[low : min(high + 1, levels)]) / _DAY_SECONDS
    daily["updates_per_s_rank_deeper"] = rank_counts[levels] / _DAY_SECONDS
    return Microstructure(daily, hourly, rank_counts, [float(s) for (s,) in skew])
