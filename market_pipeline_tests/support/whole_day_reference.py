"""The former whole-day quality readers, kept as the tests' oracle: each loads a table of one
instrument-day whole with polars and computes a figure the plain way. The production measures
(core/quality: gaps, skew, precision_figures, snapshot_agreement, crossed) compute the same
figures in bounded memory; the tests hold them to these, exactly.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from market_pipeline.core.day_clock import NS_PER_MS, hour_of, iso
from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.schemas import BOOK_LEVELS
from market_pipeline.core.quality.gaps import hourly_gaps as gaps_by_hour
from market_pipeline.core.quality.lake_day import WORST_ROWS, DayFiles
from market_pipeline.core.quality.precision import grid_flags
from market_pipeline.core.quality.sequence import gap_messages, repair_gaps
from market_pipeline.core.quality.snapshot_agreement import worst_disagreements

SNAPSHOT_TOP_SCHEMA = {
    "received_time": pl.Int64,
    "origin_time": pl.Int64,
    "sequence_number": pl.Int64,
    "bid_0_price": pl.Float64,
    "ask_0_price": pl.Float64,
}
AGREEMENT_SCHEMA = {
    "received_time": pl.Int64,
    "sequence_number": pl.Int64,
    "matched": pl.Boolean,
    "mid_deviation_half_ticks": pl.Int64,
    "levels_mismatched": pl.Int64,
    "first_mismatched_level": pl.Int64,
    "synced_before": pl.Boolean,
    "mismatched_level_mask": pl.Int64,
}


def messages(deltas: pl.DataFrame) -> pl.DataFrame:
    """First row of each message, in file order: received_time, origin_time, sequence_number."""
    new_message = (
        (pl.col("sequence_number") != pl.col("sequence_number").shift(1))
        | (pl.col("received_time") != pl.col("received_time").shift(1))
    ).fill_null(True)
    return deltas.select("received_time", "origin_time", "sequence_number").filter(new_message)


def gap_events(deltas: pl.DataFrame, snapshots: pl.DataFrame, contiguous: bool) -> pl.DataFrame:
    """One row per gap (GAP_SCHEMA), in file order.

    `deltas` needs received_time, origin_time and sequence_number in file order; `snapshots`
    needs received_time and sequence_number of the day's vendor snapshots in file order.
    """
    msgs = messages(deltas).with_columns(pl.col("sequence_number").cum_max().shift(1).alias("previous_sequence_number"))
    return repair_gaps(gap_messages(msgs, contiguous), snapshots)


def read_deltas(files: DayFiles) -> pl.DataFrame:
    """The whole delta day in memory (~1.6 GB for a realistic day): prefer `day_stats`."""
    return parquet_io.read_frame(files.require(files.deltas))


def read_snapshot_tops(files: DayFiles) -> pl.DataFrame:
    """Times, sequence numbers and touch prices of the vendor snapshots, in file order."""
    return parquet_io.read_frame(files.require(files.snapshots), list(SNAPSHOT_TOP_SCHEMA))


def read_agreement(files: DayFiles, tops: pl.DataFrame) -> pl.DataFrame:
    """The rebuild's per-snapshot agreement rows beside the vendor snapshot they describe."""
    if not files.has_agreement:
        return pl.DataFrame(
            schema={**AGREEMENT_SCHEMA, "bid_0_price": pl.Float64, "ask_0_price": pl.Float64, "origin_time": pl.Int64}
        )
    agreement = parquet_io.read_frame(files.require(files.agreement))
    same = agreement.height == tops.height and agreement.select("received_time", "sequence_number").equals(
        tops.select("received_time", "sequence_number")
    )
    if not same:
        raise ValueError(
            f"{files.instrument.key} {files.day}: {files.agreement} ({agreement.height} rows) does not "
            f"line up with the vendor snapshots in {files.snapshots} ({tops.height} rows); "
            "re-materialize reconstructed_books for this day"
        )
    return agreement.with_columns(tops.select("bid_0_price", "ask_0_price", "origin_time"))


def read_books_touch(files: DayFiles) -> pl.DataFrame:
    """Rebuilt touch per sampled row, as floats, sorted by receive time."""
    return (
        parquet_io.read_frame(
            files.require(files.books),
            ["received_time", "sequence_number", "synced", "trigger", "bid_0_price", "ask_0_price"],
        )
        .with_columns(pl.col("bid_0_price", "ask_0_price").cast(pl.Float64))
        .sort("received_time", maintain_order=True)
    )


def gaps(files: DayFiles, deltas: pl.DataFrame, tops: pl.DataFrame) -> pl.DataFrame:
    return gap_events(deltas, tops, files.contiguous)


def hourly_gaps(events: pl.DataFrame, agreement: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """gaps per hour, the divergences taken from the whole agreement table."""
    return gaps_by_hour(events, agreement.filter(~pl.col("matched") & pl.col("synced_before")), day)


def skew_messages(deltas: pl.DataFrame) -> pl.DataFrame:
    """One row per message with skew_ms = (received_time - origin_time) in ms."""
    return messages(deltas).with_columns(
        ((pl.col("received_time") - pl.col("origin_time")) / NS_PER_MS).alias("skew_ms")
    )


def skew_aggregates() -> list[pl.Expr]:
    skew = pl.col("skew_ms")
    return [
        skew.quantile(0.01, "linear").alias("skew_p1_ms"),
        skew.quantile(0.50, "linear").alias("skew_p50_ms"),
        skew.quantile(0.99, "linear").alias("skew_p99_ms"),
        skew.max().alias("skew_max_ms"),
        skew.min().alias("skew_min_ms"),
        (skew < 0).mean().alias("skew_negative_share"),
    ]


def hourly_skew(skew: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    hours = pl.DataFrame({"hour": pl.Series(range(24), dtype=pl.Int32)})
    per_hour = skew.group_by(hour_of("received_time", day).alias("hour")).agg(
        *skew_aggregates(), pl.len().alias("messages")
    )
    return hours.join(per_hour, on="hour", how="left").with_columns(pl.col("messages").fill_null(0))


def skew_rows(skew: pl.DataFrame, limit: int = WORST_ROWS) -> list[dict[str, object]]:
    """The messages with the largest |skew|."""
    worst = skew.sort(pl.col("skew_ms").abs(), descending=True).head(limit)
    return [
        {
            "received_time": iso(r["received_time"]),
            "origin_time": iso(r["origin_time"]),
            "sequence_number": r["sequence_number"],
            "skew_ms": r["skew_ms"],
        }
        for r in worst.iter_rows(named=True)
    ]


def precision_flags(frame: pl.DataFrame, columns: dict[str, str], instrument: Instrument) -> pl.DataFrame:
    """Rows of `frame` with an off-grid or precision-loss value, one row per bad value.

    `columns` maps a float column to "price" or "size" (tick or lot grid).
    """
    keep = [c for c in ("received_time", "sequence_number") if c in frame.columns]
    found = []
    for column, grid in columns.items():
        step = instrument.tick_size if grid == "price" else instrument.lot_size
        values = frame[column].to_numpy()
        off_grid, loss = grid_flags(values, step)
        bad = np.flatnonzero(off_grid | loss)
        found.append(
            frame.select(keep)[bad].with_columns(
                pl.Series("row", bad, pl.Int64),
                pl.lit(column).alias("column"),
                pl.Series("value", values[bad], pl.Float64),
                pl.Series("off_grid", off_grid[bad], pl.Boolean),
                pl.Series("steps", values[bad] / float(step), pl.Float64),
            )
        )
    return pl.concat(found, how="diagonal_relaxed")


def agreement_summary(agreement: pl.DataFrame, instrument: Instrument) -> dict[str, object]:
    tick = float(instrument.tick_size)
    dev = agreement.select(
        (pl.col("mid_deviation_half_ticks").abs() / 2).alias("ticks"),
        (
            pl.col("mid_deviation_half_ticks").abs()
            / 2
            * tick
            / ((pl.col("bid_0_price") + pl.col("ask_0_price")) / 2)
            * 1e4
        ).alias("bps"),
    )
    stats = dev.select(
        pl.col("ticks").max().alias("max_mid_dev_ticks"),
        pl.col("ticks").quantile(0.99, "linear").alias("p99_mid_dev_ticks"),
        pl.col("bps").max().alias("max_mid_dev_bps"),
        pl.col("bps").quantile(0.99, "linear").alias("p99_mid_dev_bps"),
    ).row(0, named=True)
    n = agreement.height
    matched = int(agreement["matched"].sum()) if n else 0
    # Bit L of mismatched_level_mask: level L (bid or ask side) disagreed with the vendor.
    masks = agreement["mismatched_level_mask"].to_numpy()
    by_level = [int(((masks >> level) & 1).sum()) for level in range(BOOK_LEVELS)]
    return {
        "vendor_snapshots": n,
        "snapshots_mismatched": n - matched,
        "snapshot_exact_match_share": matched / n if n else None,
        "divergences": int((~agreement["matched"] & agreement["synced_before"]).sum()) if n else 0,
        **{k: (float(v) if v is not None else None) for k, v in stats.items()},
        "mismatches_by_level": by_level,
        "levels_mismatched_mean": float(agreement.filter(~pl.col("matched"))["levels_mismatched"].mean() or 0.0),
    }


def agreement_rows(agreement: pl.DataFrame, limit: int = WORST_ROWS) -> list[dict[str, object]]:
    """The worst disagreements, chosen from the whole table (formatted as the production rows)."""
    worst = (
        agreement.filter(~pl.col("matched"))
        .sort([pl.col("mid_deviation_half_ticks").abs(), "levels_mismatched"], descending=True)
        .head(limit)
    )
    return worst_disagreements(worst)


def crossed_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows whose best bid is at or above the best ask (crossed or locked)."""
    return frame.filter(pl.col("bid_0_price") >= pl.col("ask_0_price"))


def trades_at_or_inside_touch_share(trades: pl.DataFrame, books: pl.DataFrame) -> float | None:
    """Share of trades printed at or between the rebuilt best bid and ask.

    Each trade is compared with the last in-sync rebuilt row received at or before it (rows
    are sampled at vendor snapshots and on the sampling interval, so this is approximate).
    """
    touch = books.filter("synced").select("received_time", "bid_0_price", "ask_0_price").drop_nulls()
    if trades.is_empty() or touch.is_empty():
        return None
    joined = (
        trades.select("received_time", "price")
        .sort("received_time")
        .join_asof(touch, on="received_time", strategy="backward")
        .drop_nulls("bid_0_price")
    )
    if joined.is_empty():
        return None
    inside = (pl.col("price") >= pl.col("bid_0_price")) & (pl.col("price") <= pl.col("ask_0_price"))
    return float(joined.select(inside.mean()).item())
