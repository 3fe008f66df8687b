"""Asset checks on the raw lake: one evaluation per day of the run (defs/common/checks.py).

Blocking (ERROR stops downstream assets of the run): sequence_gaps, price_precision,
schema_and_row_counts. Non-blocking: clock_skew (and the freshness checks, defs/automation).
"""

import datetime as dt

import dagster as dg
import polars as pl
import pyarrow.parquet as pq

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake.paths import partition_dir, quarantine_dir
from market_pipeline.core.lake.schemas import BOOK_DELTA_SCHEMA, NULLABLE_COLUMNS, OPTIONAL_COLUMNS
from market_pipeline.core.quality import measures as m
from market_pipeline.core.quality.precision import max_decimals
from market_pipeline.defs.common.checks import ERROR, WARN, DailyCheck, Finding, daily_check, day_files
from market_pipeline.defs.common.recorded import recorded_rows
from market_pipeline.defs.common.resources import PipelineSettings


@daily_check(
    "raw_book_deltas",
    "sequence_gaps",
    blocking=True,
    additional_deps=["raw_book_snapshots"],
    description="Sequence gaps in book_delta_v2: ERROR when a gap has no later vendor snapshot in the "
    "day to repair it, WARN when every gap is repaired.",
)
def sequence_gaps(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
    files = day_files(settings, instrument, day)
    # Without the day's vendor snapshots (raw_book_snapshots not materialized) no gap can be
    # proven repaired: every gap then counts as unrepaired, and the summary says why.
    has_snapshots = files.snapshots.is_file()
    tops = m.read_snapshot_tops(files) if has_snapshots else m.empty_snapshot_tops()
    events = m.gaps(files, m.read_deltas(files), tops)
    figures = m.gap_summary(events)
    figures["sequence_semantics"] = "contiguous" if files.contiguous else "monotonic"
    figures["vendor_snapshots_available"] = int(has_snapshots)
    total = events.height
    if figures["gaps_unrepaired"]:
        why = "a later snapshot" if has_snapshots else f"a snapshot (no raw book partition: {files.snapshots})"
        severity, summary = ERROR, f"{figures['gaps_unrepaired']} of {total} gap(s) not repaired by {why}"
    elif total:
        severity, summary = WARN, f"{total} gap(s), all repaired by a later vendor snapshot"
    else:
        severity, summary = None, "no gaps"
    return Finding(severity, summary, figures, m.gap_rows(events))


@daily_check(
    "raw_book_deltas",
    "clock_skew",
    blocking=False,
    description="received_time - origin_time per message: WARN when p99 (of the day or of any hour) exceeds "
    "checks.clock_skew_p99_warn_ms; ERROR when any skew exceeds checks.clock_skew_max_error_ms or is more "
    "negative than -checks.negative_skew_tolerance_ms.",
)
def clock_skew(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
    limits = settings.checks
    skew = m.skew_messages(m.read_deltas(day_files(settings, instrument, day)))
    if skew.is_empty():
        return Finding(None, "no messages")
    figures = skew.select(m.skew_aggregates()).row(0, named=True)
    hourly = m.hourly_skew(skew, day).drop_nulls("skew_p99_ms").sort("skew_p99_ms", descending=True)
    figures["worst_hour_p99_ms"] = hourly["skew_p99_ms"][0]
    figures["worst_hour"] = int(hourly["hour"][0])
    figures["messages_beyond_negative_tolerance"] = int((skew["skew_ms"] < -limits.negative_skew_tolerance_ms).sum())
    figures["messages_above_max"] = int((skew["skew_ms"] > limits.clock_skew_max_error_ms).sum())
    problems_error, problems_warn = [], []
    if figures["messages_above_max"]:
        problems_error.append(f"max skew {figures['skew_max_ms']:.1f} ms > {limits.clock_skew_max_error_ms} ms")
    if figures["messages_beyond_negative_tolerance"]:
        problems_error.append(
            f"{figures['messages_beyond_negative_tolerance']} message(s) received more than "
            f"{limits.negative_skew_tolerance_ms} ms before their origin time (min {figures['skew_min_ms']:.1f} ms)"
        )
    worst_p99 = max(figures["skew_p99_ms"], figures["worst_hour_p99_ms"])
    if worst_p99 > limits.clock_skew_p99_warn_ms:
        problems_warn.append(
            f"p99 skew {worst_p99:.1f} ms (day {figures['skew_p99_ms']:.1f}, hour {figures['worst_hour']:02d}) "
            f"> {limits.clock_skew_p99_warn_ms} ms"
        )
    severity = ERROR if problems_error else WARN if problems_warn else None
    summary = "; ".join(problems_error + problems_warn) or f"p99 {figures['skew_p99_ms']:.1f} ms"
    return Finding(severity, summary, figures, m.skew_rows(skew))


@daily_check(
    "raw_book_deltas",
    "price_precision",
    blocking=True,
    description="Prices and sizes of book_delta_v2 on the instrument's tick and lot grid: ERROR for values "
    "off the grid, WARN for float noise (on the grid but not the nearest float).",
)
def price_precision(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
    deltas = m.read_deltas(day_files(settings, instrument, day))
    flags = m.precision_flags(deltas, m.DELTA_VALUE_COLUMNS, instrument)
    off_grid = int(flags["off_grid"].sum())
    loss = flags.height - off_grid
    figures = {
        "off_grid_values": off_grid,
        "precision_loss_events": loss,
        "price_decimals_max": max_decimals(deltas["price"]),
        "tick_size": str(instrument.tick_size),
        "lot_size": str(instrument.lot_size),
    }
    if off_grid:
        severity, summary = ERROR, f"{off_grid} value(s) off the grid"
    elif loss:
        severity, summary = WARN, f"{loss} value(s) with float noise"
    else:
        severity, summary = None, "every value on the grid"
    return Finding(severity, summary, figures, m.precision_rows(flags))


@daily_check(
    "raw_book_deltas",
    "schema_and_row_counts",
    blocking=True,
    description="The book_delta_v2 partition exists, has the lake schema, no nulls, at least one row and "
    "as many rows as the import recorded (ERROR otherwise); WARN when rows were quarantined.",
)
def schema_and_row_counts(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
    files = day_files(settings, instrument, day)
    if not files.deltas.is_file():
        return Finding(ERROR, f"partition file missing: {files.deltas}")
    schema = pl.from_arrow(pq.read_schema(files.deltas).empty_table()).schema
    optional = OPTIONAL_COLUMNS.get("book_delta_v2", {})  # e.g. Binance update ids from captures
    problems = (
        [
            f"column {name}: expected {dtype}, found {schema.get(name, 'nothing')}"
            for name, dtype in BOOK_DELTA_SCHEMA.items()
            if schema.get(name) != dtype
        ]
        + [
            f"column {name}: expected {dtype}, found {schema[name]}"
            for name, dtype in optional.items()
            if name in schema and schema[name] != dtype
        ]
        + [f"unexpected column {name}" for name in schema if name not in BOOK_DELTA_SCHEMA and name not in optional]
    )
    if problems:
        return Finding(ERROR, "; ".join(problems), {"path": str(files.deltas)})
    deltas = m.read_deltas(files)
    nulls = {
        name: count
        for name, count in deltas.null_count().row(0, named=True).items()
        if count and name not in NULLABLE_COLUMNS
    }
    rejected = (
        partition_dir(quarantine_dir(settings.lake_dir), "book_delta_v2", instrument.exchange, instrument.symbol, day)
        / "rejected_rows.parquet"
    )
    quarantined = pq.ParquetFile(rejected).metadata.num_rows if rejected.is_file() else 0
    recorded = recorded_rows(context.instance, instrument.key, day)
    figures = {
        "rows": deltas.height,
        "recorded_rows": recorded,
        "quarantined_rows": quarantined,
        "null_values": sum(nulls.values()),
        "first_received_time": m.iso(deltas["received_time"].min()),
        "last_received_time": m.iso(deltas["received_time"].max()),
    }
    errors = []
    if deltas.is_empty():
        errors.append("no rows")
    if nulls:
        errors.append(f"null values {nulls}")
    if recorded is not None and recorded != deltas.height:
        errors.append(f"{deltas.height} rows in the lake but the import recorded {recorded}")
    if errors:
        return Finding(ERROR, "; ".join(errors), figures)
    if quarantined:
        return Finding(WARN, f"{quarantined} row(s) quarantined on import ({rejected})", figures)
    return Finding(None, f"{deltas.height} rows", figures)


RAW_CHECKS: list[DailyCheck] = [sequence_gaps, clock_skew, price_precision, schema_and_row_counts]


def build_raw_checks(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    return [check.build(partitions_def) for check in RAW_CHECKS]
