"""Sequence gaps of a day's deltas, and the vendor snapshots that repair them: the raw check
`sequence_gaps` and `validation_reports` read them here, from the day statistics (and, for a
capture, the breaks of its update-id chain), never from the whole day."""

from __future__ import annotations

import datetime as dt

import polars as pl

from market_pipeline.core.day_clock import hour_of, iso
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.quality.chain import CHAIN_BREAK
from market_pipeline.core.quality.day_stats import DayStats
from market_pipeline.core.quality.lake_day import WORST_ROWS, DayFiles
from market_pipeline.core.quality.sequence import GAP_SCHEMA, OUT_OF_ORDER, repair_gaps
from market_pipeline.core.update_chain import has_chain

SNAPSHOT_SEQUENCE_SCHEMA = {"sequence_number": pl.Int64, "received_time": pl.Int64}


def sequence_events(files: DayFiles, stats: DayStats) -> pl.DataFrame:
    """The day's gap events before repair (`day_stats.EVENT_SCHEMA`, by receive time): the day
    statistics' sequence events, plus the breaks of the update-id chain when the deltas were
    written from a capture (`chain.py`, gathered by the import with the other statistics)."""
    if not has_chain(parquet_io.read_schema(files.require(files.deltas)).names):
        return stats.gaps
    breaks = stats.chain_breaks
    # The chain orders a capture's messages, not their numbers (as in the rebuild): a message
    # numbered below an earlier one that continues the chain (OKX's seqId reset) is in order.
    out_of_order = pl.col("kind") == OUT_OF_ORDER
    broken_too = stats.gaps.filter(out_of_order).join(breaks, on=["received_time", "sequence_number"], how="semi")
    gaps = pl.concat([stats.gaps.filter(~out_of_order), broken_too])
    return pl.concat([gaps.cast(breaks.schema), breaks]).sort("received_time", maintain_order=True)


def snapshot_sequence(files: DayFiles) -> pl.DataFrame:
    """sequence_number and received_time of the day's vendor snapshots, in file order (none when
    the day has no raw book partition: then no gap can be proven repaired)."""
    if not files.snapshots.is_file():
        return pl.DataFrame(schema=SNAPSHOT_SEQUENCE_SCHEMA)
    return parquet_io.read_frame(files.snapshots, list(SNAPSHOT_SEQUENCE_SCHEMA)).cast(SNAPSHOT_SEQUENCE_SCHEMA)


def repaired_gaps(files: DayFiles, stats: DayStats, snapshots: pl.DataFrame) -> pl.DataFrame:
    """The day's gap events (GAP_SCHEMA), each with the vendor snapshot that repairs it, if any."""
    events = sequence_events(files, stats)
    return repair_gaps(events.cast({c: GAP_SCHEMA[c] for c in events.columns}), snapshots)


def gap_summary(events: pl.DataFrame) -> dict[str, int]:
    return {
        "sequence_jumps": int((events["kind"] == "jump").sum()),
        "chain_breaks": int((events["kind"] == CHAIN_BREAK).sum()),
        "out_of_order_messages": int((events["kind"] == "out_of_order").sum()),
        "missing_sequence_numbers": int(events["missing_sequence_numbers"].sum()),
        "gaps_repaired": int(events["repaired"].sum()),
        "gaps_unrepaired": int((~events["repaired"]).sum()),
    }


def worst_gaps(events: pl.DataFrame, limit: int = WORST_ROWS) -> list[dict[str, object]]:
    """Unrepaired gaps first, then the largest ones."""
    ordered = events.sort(["repaired", "missing_sequence_numbers"], descending=[False, True]).head(limit)
    return [
        {
            "kind": r["kind"],
            "received_time": iso(r["received_time"]),
            "sequence_number": r["sequence_number"],
            "previous_sequence_number": r["previous_sequence_number"],
            "missing_sequence_numbers": r["missing_sequence_numbers"],
            "repaired_by_snapshot_at": iso(r["fill_received_time"]),
            "repaired_by_snapshot_sequence_number": r["fill_sequence_number"],
        }
        for r in ordered.iter_rows(named=True)
    ]


def hourly_gaps(events: pl.DataFrame, divergent: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """gaps_detected and gaps_filled per hour, counted like the rebuild's counters.

    Detected: sequence jumps and out-of-order messages (at the message's hour) plus
    divergences (`divergent`: the received_time of snapshots that disagreed with a book in sync,
    at the snapshot's hour). Filled: snapshots that repaired an open gap or a divergence (at the
    snapshot's hour).
    """
    detected = pl.concat(
        [
            events.select(hour_of("received_time", day).alias("hour")),
            divergent.select(hour_of("received_time", day).alias("hour")),
        ]
    )
    fills = pl.concat(
        [
            events.filter("repaired")
            .select("fill_snapshot", "fill_received_time")
            .unique("fill_snapshot")
            .select(hour_of("fill_received_time", day).alias("hour")),
            divergent.select(hour_of("received_time", day).alias("hour")),
        ]
    )
    hours = pl.DataFrame({"hour": pl.Series(range(24), dtype=pl.Int32)})
    return (
        hours.join(detected.group_by("hour").agg(pl.len().alias("gaps_detected")), on="hour", how="left")
        .join(fills.group_by("hour").agg(pl.len().alias("gaps_filled")), on="hour", how="left")
        .with_columns(pl.col("gaps_detected", "gaps_filled").fill_null(0).cast(pl.Int64))
    )
