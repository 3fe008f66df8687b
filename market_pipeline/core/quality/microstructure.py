"""Market-microstructure figures of one instrument-day, computed from the lake.

Book shape comes from the rebuilt books' rows at vendor snapshots (`trigger = 'snapshot'`,
written after the snapshot's check and fill), so it is measured at the vendor's 100 ms cadence
whatever the sampling interval. Prices and sizes are turned into integer ticks and lots first,
so the comparisons (within N bps of mid) are exact:

    |price - mid| / mid <= N / 10_000   <=>   |2 p - (b0 + a0)| * 10_000 <= N (b0 + a0)   (in ticks)

Only the levels the books carry count, so for a fine tick (BTC-USDT at 0.01) the top 20 levels
usually all lie within 5 bps and the three depths coincide.

Depth is summed over the levels the books carry (`PIPELINE_BOOK__DEPTH`, at most 20 a side),
in base-currency units. Quantiles are nearest-rank (DuckDB `quantile_disc`).

A realistic day (864,000 snapshots, ~34 M delta rows) is read in bounded memory: the shape rows
(`book_shape.py`: spread and depth per snapshot, in integers) from the file the rebuild stored
beside the books, or else from the books' level columns one row group at a time through pyarrow
(its decimals as exact integers, several times faster than DuckDB's casts), aggregated in DuckDB; the
update ranks, an as-of join of every delta row with the last snapshot before it, the messages
per hour and the skew sample come hour by hour from `update_ranks.py`; DuckDB streams the
trades, with a memory limit and a spill directory.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from market_pipeline.core.book.fixed_point import grid_steps, unscaled_int64
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.quality import update_ranks
from market_pipeline.core.quality.book_shape import DEPTH_BPS, SHAPE_SCHEMA, read_shape, shape_rows
from market_pipeline.core.quality.delta_pass_stream import read_delta_pass
from market_pipeline.core.telemetry.memory import release_free_memory

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
    return parquet_io.duckdb_read_parquet(path)


# DuckDB's own budget (it spills beyond it); the process adds Python and the result frames.
MEMORY_LIMIT = "256MB"  # the step process itself needs ~450 MB of the 1 GB budget


def _round_half_away(values: np.ndarray) -> np.ndarray:
    """DuckDB's round() of doubles (C `round`: half away from zero), exactly: x - trunc(x) is exact."""
    whole = np.trunc(values)
    return whole + np.where(np.abs(values - whole) >= 0.5, np.sign(values), 0.0)


def _steps(column: pa.ChunkedArray, step: Decimal) -> tuple[np.ndarray, np.ndarray]:
    """(CAST(round(CAST(column AS DOUBLE) / step) AS BIGINT), valid) as the former SQL computed them.

    A decimal column on the step's grid (the rebuilt books always are: the kernel writes integer
    ticks and lots) is divided exactly in integers; any other value takes DuckDB's float route:
    the unscaled integer over 10^scale, over the step, rounded half away from zero.
    """
    array = column.combine_chunks()
    valid = array.is_valid().to_numpy(zero_copy_only=False) if array.null_count else np.ones(len(array), bool)
    steps = grid_steps(array, step)
    if steps is not None:
        return steps, valid
    unscaled = unscaled_int64(array)
    if unscaled is not None:
        as_float = unscaled.astype(np.float64) / 10.0**array.type.scale
    else:
        as_float = np.asarray(array.cast(pa.float64()).fill_null(0.0))
    return _round_half_away(as_float / float(step)).astype(np.int64), valid


def _snapshot_shape(books: Path, tick: Decimal, lot: Decimal, day: dt.date) -> pa.Table:
    """The shape rows (`book_shape.shape_rows`) of a books file without a matching shape file,
    row group by row group: only the level columns of one row group are in memory."""
    levels = _levels(books)
    day_start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000_000
    levels_of = [f"{side}_{i}_{field}" for side in ("bid", "ask") for i in range(levels) for field in ("price", "size")]
    columns = ["received_time", "trigger", *levels_of]
    parts: list[pa.Table] = []
    with parquet_io.open_file(books, pre_buffer=False) as reader:
        for group in range(reader.num_row_groups):
            table = reader.read_row_group(group, columns=columns)
            with_touch = pc.and_(
                pc.equal(table["trigger"], "snapshot"),
                pc.and_(pc.is_valid(table["bid_0_price"]), pc.is_valid(table["ask_0_price"])),
            )
            table = table.filter(with_touch)
            if not table.num_rows:
                continue
            sides = []
            for side in ("bid", "ask"):
                for field, step in (("price", tick), ("size", lot)):
                    steps = [_steps(table[f"{side}_{i}_{field}"], step) for i in range(levels)]
                    sides += [np.stack([values for values, _ in steps]), np.stack([valid for _, valid in steps])]
            recv = table["received_time"].to_numpy()
            parts.append(shape_rows(np.arange(table.num_rows), recv, tuple(sides), day_start))
    # The allocators keep the decoded row groups' pages for reuse (~100 MB): hand them back.
    release_free_memory()
    return pa.concat_tables(parts) if parts else SHAPE_SCHEMA.empty_table()


def compute_microstructure(
    books: Path,
    deltas: Path,
    trades: Path,
    tick: Decimal,
    lot: Decimal,
    day: dt.date,
    spill_dir: Path,
    shape: Path | None = None,
    delta_pass: Path | None = None,
) -> Microstructure:
    """Spread, depth near mid, update frequency by rank and trade-to-book ratio of one instrument-day.

    `shape` is the shape file the rebuild stored beside the books (`book_shape.write_shape`); the
    shape rows come from it when it matches `books`, else from the books themselves. Likewise
    `delta_pass`, the pass over the deltas the rebuild stored (`delta_pass_stream`): the update
    ranks, hourly messages and skew sample come from it when it matches `books` and `deltas`, else
    from `update_ranks.delta_pass`.
    """
    for needed in (books, deltas, trades):
        if not needed.is_file():
            raise FileNotFoundError(f"{day}: lake file missing: {needed}")
    lot_f = float(lot)
    day_start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000_000
    # The rank pass first: it is the step's peak, and the memory pools have retained less before it.
    levels = _levels(books)
    stored_pass = (
        read_delta_pass(delta_pass, books, deltas, tick, levels, day_start, SKEW_SAMPLE_ROWS)
        if delta_pass is not None
        else None
    )
    rank_counts, messages, skew = stored_pass or update_ranks.delta_pass(
        books, deltas, tick, levels, day_start, SKEW_SAMPLE_ROWS
    )
    # No query here depends on row order.
    with parquet_io.scratch_duckdb(spill_dir, MEMORY_LIMIT, preserve_insertion_order=False) as con:
        stored = read_shape(shape, books) if shape is not None else None
        con.register("shape", stored if stored is not None else _snapshot_shape(books, tick, lot, day))
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
        trade_counts = con.execute(
            f"SELECT {hours_of} AS hour, count(*) AS trades FROM {_parquet(trades)} GROUP BY hour"
        ).pl()

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
    return Microstructure(daily, hourly, rank_counts, skew)
