"""One instrument-day of `validation_reports`: the daily row, its 24 hourly rows and report details."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.quality.book_sync import sync_figures
from market_pipeline.core.quality.checksums import CHECKSUM_COLUMNS, ChecksumFigures, checksum_columns
from market_pipeline.core.quality.crossed import crossed_figures, scan_books_touch, scan_snapshot_tops, touch_share
from market_pipeline.core.quality.fidelity import FIDELITY_COLUMNS, capture_fidelity
from market_pipeline.core.quality.gaps import gap_summary, hourly_gaps, repaired_gaps, snapshot_sequence, worst_gaps
from market_pipeline.core.quality.lake_day import DayFiles, read_day_stats
from market_pipeline.core.quality.precision_figures import snapshot_precision, tally_tables, worst_precision
from market_pipeline.core.quality.skew import skew_figures
from market_pipeline.core.quality.snapshot_agreement import agreement_figures

# Column contract of main.validation_reports (pipeline_metrics reads these names).
DAILY_SCHEMA: dict[str, pl.DataType] = {
    "dt": pl.Date(),
    "exchange": pl.String(),
    "symbol": pl.String(),
    "messages": pl.Int64(),
    "delta_rows": pl.Int64(),
    "trades": pl.Int64(),
    "gaps_detected": pl.Int64(),
    "gaps_filled": pl.Int64(),
    "gaps_unrepaired": pl.Int64(),
    "sequence_jumps": pl.Int64(),
    "chain_breaks": pl.Int64(),
    "missing_sequence_numbers": pl.Int64(),
    "out_of_order_messages": pl.Int64(),
    "divergences": pl.Int64(),
    "vendor_snapshots": pl.Int64(),
    "snapshots_mismatched": pl.Int64(),
    "max_mid_dev_ticks": pl.Float64(),
    "p99_mid_dev_ticks": pl.Float64(),
    "max_mid_dev_bps": pl.Float64(),
    "p99_mid_dev_bps": pl.Float64(),
    "snapshot_exact_match_share": pl.Float64(),
    "book_rows": pl.Int64(),
    "unsynced_rows": pl.Int64(),
    "unsynced_share": pl.Float64(),
    "mismatches_by_level": pl.List(pl.Int64()),
    "levels_mismatched_mean": pl.Float64(),
    "skew_p1_ms": pl.Float64(),
    "skew_p50_ms": pl.Float64(),
    "skew_p99_ms": pl.Float64(),
    "skew_max_ms": pl.Float64(),
    "skew_min_ms": pl.Float64(),
    "skew_negative_share": pl.Float64(),
    "off_grid_values": pl.Int64(),
    "precision_loss_events": pl.Int64(),
    "price_decimals_max": pl.Int64(),
    "crossed_events": pl.Int64(),
    "vendor_crossed_snapshots": pl.Int64(),
    "rebuilt_crossed_rows": pl.Int64(),
    "trades_at_or_inside_touch_share": pl.Float64(),
    **FIDELITY_COLUMNS,
    **CHECKSUM_COLUMNS,
}

HOURLY_SCHEMA: dict[str, pl.DataType] = {
    "dt": pl.Date(),
    "hour": pl.Datetime("us"),  # start of the hour, UTC
    "exchange": pl.String(),
    "symbol": pl.String(),
    "messages": pl.Int64(),
    "gaps_detected": pl.Int64(),
    "gaps_filled": pl.Int64(),
    "book_rows": pl.Int64(),
    "unsynced_rows": pl.Int64(),
    "skew_p1_ms": pl.Float64(),
    "skew_p50_ms": pl.Float64(),
    "skew_p99_ms": pl.Float64(),
    "skew_max_ms": pl.Float64(),
    "skew_negative_share": pl.Float64(),
}


@dataclass
class DayValidation:
    instrument: Instrument
    day: dt.date
    row: dict[str, object]
    hourly: pl.DataFrame
    details: dict[str, object] = field(default_factory=dict)  # worst rows, for the report


def validate_instrument_day(
    files: DayFiles, rebuild_counters: dict[str, int] | None, checksums: ChecksumFigures | None = None
) -> DayValidation:
    """The day's validation in bounded memory, from the measures the checks use too: the raw
    tables' figures from their day statistics (one pass over three columns of the deltas for the
    exact skew quantiles), the tables with a row per vendor snapshot or rebuilt row through lazy
    scans of the columns needed. `checksums`: the exchange's book checksums of the day, replayed by
    the source that has them (None: it has none)."""
    instrument, day = files.instrument, files.day
    stats = read_day_stats(files, "book_delta_v2")
    files.require(files.snapshots)  # the gaps a vendor snapshot repairs: the day has them
    events = repaired_gaps(files, stats, snapshot_sequence(files))
    skew = skew_figures(files, stats)
    trade_stats = read_day_stats(files, "trades")
    precision = tally_tables(files, {"book_delta_v2": stats, "trades": trade_stats})
    agreement = agreement_figures(files)

    gap_figures = gap_summary(events)
    gaps_by_hour = hourly_gaps(events, agreement.divergent, day)
    sync = sync_figures(files.require(files.books), day)

    snap_off, snap_loss = snapshot_precision(files)
    off_grid = snap_off + precision.off_grid
    loss = snap_loss + precision.loss

    vendor_crossed, _ = crossed_figures(scan_snapshot_tops(files), by_time=False)
    rebuilt_crossed, _ = crossed_figures(scan_books_touch(files), by_time=True)

    # Written by the capture rebuild beside the day's books; all null for books not rebuilt from a capture.
    fidelity = capture_fidelity(files.fidelity)

    row: dict[str, object] = {
        "dt": day,
        "exchange": instrument.exchange,
        "symbol": instrument.symbol,
        "messages": int(stats.summary["messages"]),
        "delta_rows": int(stats.summary["rows"]),
        "trades": int(trade_stats.summary["rows"]),
        "gaps_detected": int(gaps_by_hour["gaps_detected"].sum()),
        "gaps_filled": int(gaps_by_hour["gaps_filled"].sum()),
        "gaps_unrepaired": gap_figures["gaps_unrepaired"],
        "sequence_jumps": gap_figures["sequence_jumps"],
        "chain_breaks": gap_figures["chain_breaks"],
        "missing_sequence_numbers": gap_figures["missing_sequence_numbers"],
        "out_of_order_messages": gap_figures["out_of_order_messages"],
        **agreement.summary,
        **sync.daily(),
        **skew.day,
        "off_grid_values": off_grid,
        "precision_loss_events": loss,
        "price_decimals_max": stats.summary["price_decimals_max"],
        "crossed_events": None if rebuild_counters is None else rebuild_counters.get("crossed_events"),
        "vendor_crossed_snapshots": vendor_crossed,
        "rebuilt_crossed_rows": rebuilt_crossed,
        "trades_at_or_inside_touch_share": touch_share(files),
        **fidelity,
        **checksum_columns(checksums),
    }
    hour_start = dt.datetime.combine(day, dt.time())
    hourly = (
        gaps_by_hour.join(sync.hourly, on="hour")
        .join(skew.hourly, on="hour")
        .with_columns(
            pl.lit(day).alias("dt"),
            pl.lit(instrument.exchange).alias("exchange"),
            pl.lit(instrument.symbol).alias("symbol"),
            (pl.lit(hour_start) + pl.duration(hours=pl.col("hour"))).alias("hour"),
        )
        .select(list(HOURLY_SCHEMA))
        .cast(HOURLY_SCHEMA)
    )
    details = {
        "gaps": worst_gaps(events),
        "skew": skew.worst,
        "precision": worst_precision(precision.frame()),
        "agreement": agreement.worst,
        "hourly_mid_dev_ticks": agreement.hourly_max_ticks,
    }
    return DayValidation(instrument, day, row, hourly, details)


def daily_frame(days: list[DayValidation]) -> pl.DataFrame:
    return pl.DataFrame([d.row for d in days], schema=DAILY_SCHEMA)


def hourly_frame(days: list[DayValidation]) -> pl.DataFrame:
    if not days:
        return pl.DataFrame(schema=HOURLY_SCHEMA)
    return pl.concat([d.hourly for d in days])
