"""Asset checks on the raw lake: one evaluation per day of the run (defs/common/checks.py).

Blocking (ERROR stops downstream assets of the run): sequence_gaps, price_precision,
schema_and_row_counts (on every raw table). Non-blocking: clock_skew, duplicate_rows and
origin_time (on every raw table), out_of_order_trades (and the freshness checks, defs/automation).

The checks read the small day statistics the import wrote beside each day
(core/quality/day_stats.py via `lake_day.read_day_stats`), never the raw day itself; statistics that
no longer describe the lake file are recomputed from it in row batches. Where a figure needs more
(the exact skew quantiles, the off-grid values' rows), the measure that `validation_reports` uses
computes it, so a check and the report never disagree.
"""

import datetime as dt

import dagster as dg
import polars as pl

from market_pipeline.core.day_clock import NS_PER_MS, iso
from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.paths import rejected_rows_path
from market_pipeline.core.lake.schemas import NULLABLE_COLUMNS, OPTIONAL_COLUMNS, TABLE_SCHEMAS
from market_pipeline.core.quality.chain import CHAIN_BREAK
from market_pipeline.core.quality.day_stats import (
    CONFLICTING_TRADE_ID,
    DUPLICATE,
    OUT_OF_ORDER_RECEIVED,
    OUT_OF_ORDER_TRADE_ID,
    DayStats,
    histogram_count,
)
from market_pipeline.core.quality.gaps import gap_summary, repaired_gaps, snapshot_sequence, worst_gaps
from market_pipeline.core.quality.lake_day import WORST_ROWS, read_day_stats
from market_pipeline.core.quality.precision_figures import tally_tables, worst_precision
from market_pipeline.core.quality.skew import skew_figures, worst_skews
from market_pipeline.defs.common.checks import (
    ERROR,
    WARN,
    DailyCheck,
    Finding,
    build_daily_checks,
    daily_check,
    day_files,
)
from market_pipeline.defs.common.recorded import latest_metadata
from market_pipeline.defs.common.resources import PipelineSettings
from market_pipeline.vendors.registry import build_source, source_of


@daily_check(
    "raw_book_deltas",
    "sequence_gaps",
    blocking=True,
    additional_deps=["raw_book_snapshots"],
    description="Sequence gaps in book_delta_v2: ERROR when a gap has no later vendor snapshot in the "
    "day to repair it, WARN when every gap is repaired; breaks of a capture's update-id chain WARN "
    "(book_in_sync on reconstructed_books judges the out-of-sync span they cause).",
)
def sequence_gaps(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
    files = day_files(settings, instrument, day)
    # Without the day's vendor snapshots (raw_book_snapshots not materialized) no gap can be
    # proven repaired: every gap then counts as unrepaired, and the summary says why.
    has_snapshots = files.snapshots.is_file()
    events = repaired_gaps(files, read_day_stats(files, "book_delta_v2"), snapshot_sequence(files))
    figures = gap_summary(events)
    figures["sequence_semantics"] = "contiguous" if files.contiguous else "monotonic"
    figures["vendor_snapshots_available"] = int(has_snapshots)
    total = events.height
    # A broken capture chain leaves the rebuilt book out of sync until a REST snapshot; the rebuild
    # marks those rows (`synced`) and book_in_sync judges how much of the day they are, so a break
    # warns here instead of blocking the rebuild that measures it.
    breaks = events.filter(pl.col("kind") == CHAIN_BREAK)
    breaks_unrepaired = int((~breaks["repaired"]).sum())
    if figures["gaps_unrepaired"] > breaks_unrepaired:
        why = "a later snapshot" if has_snapshots else f"a snapshot (no raw book partition: {files.snapshots})"
        unrepaired = figures["gaps_unrepaired"] - breaks_unrepaired
        severity, summary = ERROR, f"{unrepaired} of {total - breaks.height} gap(s) not repaired by {why}"
    elif breaks.height:
        severity, summary = (
            WARN,
            (
                f"{breaks.height} break(s) of the capture's update-id chain, {breaks_unrepaired} without a later "
                "REST snapshot (the rebuilt rows after a break are out of sync: book_in_sync)"
            ),
        )
    elif total:
        severity, summary = WARN, f"{total} gap(s), all repaired by a later vendor snapshot"
    else:
        severity, summary = None, "no gaps"
    return Finding(severity, summary, figures, worst_gaps(events))


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
    files = day_files(settings, instrument, day)
    stats = read_day_stats(files, "book_delta_v2")
    if not int(stats.summary.get("messages") or 0):
        return Finding(None, "no messages")
    skew = skew_figures(files, stats)
    figures: dict = dict(skew.day)
    hourly = skew.hourly.drop_nulls("skew_p99_ms").sort("skew_p99_ms", descending=True, maintain_order=True)
    figures["worst_hour_p99_ms"] = hourly["skew_p99_ms"][0]
    figures["worst_hour"] = int(hourly["hour"][0])
    figures.update(_skew_beyond(stats, limits))
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
    return Finding(severity, summary, figures, skew.worst)


@daily_check(
    "raw_book_deltas",
    "price_precision",
    blocking=True,
    description="Prices and sizes of book_delta_v2 on the instrument's tick and lot grid: ERROR for values "
    "off the grid, WARN for float noise (on the grid but not the nearest float).",
)
def price_precision(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
    files = day_files(settings, instrument, day)
    stats = read_day_stats(files, "book_delta_v2")
    off_grid = int(stats.summary["off_grid_values"])
    loss = int(stats.summary["precision_loss_events"])
    figures = {
        "off_grid_values": off_grid,
        "precision_loss_events": loss,
        "price_decimals_max": stats.summary["price_decimals_max"],
        "tick_size": str(instrument.tick_size),
        "lot_size": str(instrument.lot_size),
    }
    if off_grid:
        severity, summary = ERROR, f"{off_grid} value(s) off the grid"
    elif loss:
        severity, summary = WARN, f"{loss} value(s) with float noise"
    else:
        severity, summary = None, "every value on the grid"
    return Finding(severity, summary, figures, worst_precision(tally_tables(files, {"book_delta_v2": stats}).frame()))


# ---------------------------------------------------------------------------------------
# Every raw table: rows and quarantine, duplicates, origin times (#12.2, #12.3)
# ---------------------------------------------------------------------------------------

RAW_TABLE_ASSETS = {"book_delta_v2": "raw_book_deltas", "book": "raw_book_snapshots", "trades": "raw_trades"}


def _not_provided(settings: PipelineSettings, instrument: Instrument, table: str) -> Finding | None:
    source = source_of(build_source(settings), instrument)  # the instrument's primary source
    if table in source.tables:
        return None
    return Finding(None, f"the {source.name} source does not provide the {table} table")


def _recorded_rows(context, asset: str, instrument: Instrument, day: dt.date) -> int | None:
    if context is None or getattr(context, "instance", None) is None:
        return None
    value = latest_metadata(context.instance, dg.AssetKey(asset), day.isoformat())[0].get(f"{instrument.key} rows")
    return None if value is None else int(value)


def _file_figures(path) -> tuple[pl.Schema, int, dict[str, int], int | None, int | None]:
    """Schema, rows, null counts per column and received_time range from the Parquet footer only."""
    reader = parquet_io.open_file(path)
    meta = reader.metadata
    schema = pl.from_arrow(reader.schema_arrow.empty_table()).schema
    nulls: dict[str, int] = {}
    first = last = None
    names = reader.schema_arrow.names
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c, name in enumerate(names):
            column_stats = group.column(c).statistics
            if column_stats is None or not column_stats.has_null_count:
                continue
            nulls[name] = nulls.get(name, 0) + column_stats.null_count
            if name == "received_time" and column_stats.has_min_max:
                lo, hi = int(column_stats.min), int(column_stats.max)
                first = lo if first is None else min(first, lo)
                last = hi if last is None else max(last, hi)
    return schema, meta.num_rows, nulls, first, last


def make_schema_and_row_counts(table: str, asset: str) -> DailyCheck:
    @daily_check(
        asset,
        "schema_and_row_counts",
        blocking=True,
        description=f"The {table} partition exists, has the lake schema, no nulls, at least one row and as many "
        "rows as the import recorded (ERROR otherwise); WARN when rows were quarantined on import (e.g. received "
        "outside the day beyond partition_tolerance_minutes). Read from the Parquet footer and the day statistics.",
    )
    def schema_and_row_counts(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
        if (skip := _not_provided(settings, instrument, table)) is not None:
            return skip
        files = day_files(settings, instrument, day)
        path = files.raw_file(table)
        if not path.is_file():
            return Finding(ERROR, f"partition file missing: {path}")
        schema, rows, null_counts, first, last = _file_figures(path)
        expected_schema = TABLE_SCHEMAS[table]
        optional = OPTIONAL_COLUMNS.get(table, {})  # e.g. Binance update ids from captures
        problems = (
            [
                f"column {name}: expected {dtype}, found {schema.get(name, 'nothing')}"
                for name, dtype in expected_schema.items()
                if schema.get(name) != dtype
            ]
            + [
                f"column {name}: expected {dtype}, found {schema[name]}"
                for name, dtype in optional.items()
                if name in schema and schema[name] != dtype
            ]
            + [f"unexpected column {name}" for name in schema if name not in expected_schema and name not in optional]
        )
        if problems:
            return Finding(ERROR, "; ".join(problems), {"path": str(path)})
        nulls = {
            name: count
            for name, count in null_counts.items()
            if count and name not in NULLABLE_COLUMNS and not _is_level(name)
        }
        rejected = rejected_rows_path(settings.lake_dir, table, instrument.exchange, instrument.symbol, day)
        quarantined = parquet_io.num_rows(rejected) if rejected.is_file() else 0
        stats = read_day_stats(files, table)
        recorded = _recorded_rows(context, asset, instrument, day)
        figures = {
            "rows": rows,
            "recorded_rows": recorded,
            "quarantined_rows": quarantined,
            "quarantined_outside_day": stats.summary.get("quarantined_outside_day"),
            "rows_outside_day": stats.summary.get("rows_outside_day"),
            "null_values": sum(nulls.values()),
            "first_received_time": iso(first),
            "last_received_time": iso(last),
        }
        errors = []
        # The books need the day's deltas; a day with no trades or no vendor snapshots can be
        # genuine (a capture without a REST snapshot that day continues from the checkpoint).
        if rows == 0 and table == "book_delta_v2":
            errors.append("no rows")
        if nulls:
            errors.append(f"null values {nulls}")
        if recorded is not None and recorded != rows:
            errors.append(f"{rows} rows in the lake but the import recorded {recorded}")
        if errors:
            return Finding(ERROR, "; ".join(errors), figures)
        if quarantined:
            return Finding(WARN, f"{quarantined} row(s) quarantined on import ({rejected})", figures)
        if rows == 0:
            return Finding(WARN, "no rows", figures)
        return Finding(None, f"{rows} rows", figures)

    return schema_and_row_counts


def _is_level(name: str) -> bool:
    """A book level column (bid_3_price...): null where a side has fewer levels."""
    return name.startswith(("bid_", "ask_")) and name.count("_") == 2


def _sample_rows(stats: DayStats, kind: str) -> list[dict[str, object]]:
    return [
        {
            "row": r["row"],
            "received_time": iso(r["received_time"]),
            "origin_time": iso(r["origin_time"]),
            **({"sequence_number": r["sequence_number"]} if r["sequence_number"] is not None else {}),
            **({"trade_id": r["trade_id"]} if r["trade_id"] is not None else {}),
            **({"previous": r["previous"]} if r["previous"] is not None else {}),
            **({"dropped": r["dropped"]} if r["dropped"] is not None else {}),
        }
        for r in stats.samples_of(kind).iter_rows(named=True)
    ]


def make_duplicate_rows(table: str, asset: str) -> DailyCheck:
    @daily_check(
        asset,
        "duplicate_rows",
        blocking=False,
        description=f"Exact duplicate rows of {table} (identical in every column; docs/data-formats.md, "
        "'Duplicate rows'): WARN when their share of the day's rows exceeds checks.duplicate_rows_max_share "
        "(default 0: any), or when a trade id comes again with other values. Duplicates the import could drop "
        "losslessly are gone from the lake and counted as duplicate_rows_dropped.",
    )
    def duplicate_rows(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
        if (skip := _not_provided(settings, instrument, table)) is not None:
            return skip
        stats = read_day_stats(day_files(settings, instrument, day), table)
        s = stats.summary
        duplicates, dropped = int(s["duplicate_rows"]), int(s["duplicate_rows_dropped"])
        conflicting = int(s.get("conflicting_trade_ids") or 0)
        received = int(s["rows"]) + dropped  # rows the vendor sent (good ones)
        share = duplicates / received if received else 0.0
        figures = {
            "duplicate_rows": duplicates,
            "duplicate_rows_dropped": dropped,
            "duplicate_share": share,
            "duplicate_rule": s.get("duplicate_rule"),
        }
        if table == "trades":
            figures["conflicting_trade_ids"] = conflicting
        rows = _sample_rows(stats, DUPLICATE) + _sample_rows(stats, CONFLICTING_TRADE_ID)
        problems = []
        if duplicates and share > settings.checks.duplicate_rows_max_share:
            problems.append(
                f"{duplicates} exact duplicate row(s) ({share:.2%}), {dropped} dropped as lossless on import"
            )
        if conflicting:
            problems.append(f"{conflicting} trade(s) repeating an earlier trade id with other values (kept)")
        if problems:
            return Finding(WARN, "; ".join(problems), figures, rows[:WORST_ROWS])
        return Finding(None, f"{duplicates} duplicate row(s)", figures)

    return duplicate_rows


def make_origin_time(table: str, asset: str) -> DailyCheck:
    @daily_check(
        asset,
        "origin_time",
        blocking=False,
        description=f"origin_time of {table} against the day and received_time: ERROR when any origin_time lies "
        "more than checks.origin_time_tolerance_minutes outside the partition's UTC day, or a row (a message for "
        "deltas) was received more than checks.negative_skew_tolerance_ms before its origin_time.",
    )
    def origin_time(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
        if (skip := _not_provided(settings, instrument, table)) is not None:
            return skip
        limits = settings.checks
        stats = read_day_stats(day_files(settings, instrument, day), table)
        outside = stats.origin_outside_day
        tolerance = limits.origin_time_tolerance_minutes
        beyond = outside.filter(pl.col("minutes_outside_day").abs() > tolerance)
        negative = histogram_count(stats.skew_histogram, below_ns=-limits.negative_skew_tolerance_ms * NS_PER_MS)
        if stats.summary.get("skew_min_ns") is not None and stats.summary["skew_min_ns"] >= (
            -limits.negative_skew_tolerance_ms * NS_PER_MS
        ):
            negative = 0
        figures = {
            "origin_outside_day": int(outside["rows"].sum()),
            "origin_beyond_tolerance": int(beyond["rows"].sum()),
            "origin_tolerance_minutes": tolerance,
            "received_before_origin_beyond_tolerance": negative,
            "skew_min_ms": None if stats.summary.get("skew_min_ns") is None else stats.summary["skew_min_ns"] / 1e6,
        }
        problems = []
        if figures["origin_beyond_tolerance"]:
            problems.append(
                f"{figures['origin_beyond_tolerance']} row(s) with origin_time more than {tolerance:g} min outside "
                f"{day.isoformat()} (UTC)"
            )
        if negative:
            problems.append(
                f"{negative} row(s) received more than {limits.negative_skew_tolerance_ms} ms before their origin time"
            )
        if problems:
            return Finding(ERROR, "; ".join(problems), figures, worst_skews(stats))
        return Finding(
            None, f"{figures['origin_outside_day']} origin time(s) outside the day, within tolerance", figures
        )

    return origin_time


@daily_check(
    "raw_trades",
    "out_of_order_trades",
    blocking=False,
    description="Trades in file order: WARN when a trade's received_time is below an earlier trade's, or (for "
    "integer trade ids) its id is below an earlier id.",
)
def out_of_order_trades(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
    if (skip := _not_provided(settings, instrument, "trades")) is not None:
        return skip
    stats = read_day_stats(day_files(settings, instrument, day), "trades")
    s = stats.summary
    late, back = int(s["out_of_order_received"]), s.get("out_of_order_trade_ids")
    figures = {"out_of_order_received": late, "out_of_order_trade_ids": back, "rows": s["rows"]}
    problems = []
    if late:
        problems.append(f"{late} trade(s) received before an earlier trade")
    if back:
        problems.append(f"{back} trade id(s) below an earlier id")
    rows = _sample_rows(stats, OUT_OF_ORDER_RECEIVED) + _sample_rows(stats, OUT_OF_ORDER_TRADE_ID)
    if problems:
        return Finding(WARN, "; ".join(problems), figures, rows[:WORST_ROWS])
    return Finding(None, "trades in order", figures)


def _skew_beyond(stats: DayStats, limits) -> dict[str, int]:
    """Messages beyond the skew limits, from the histogram; exact 0 when the exact min/max are within."""
    s = stats.summary
    negative_ns = -limits.negative_skew_tolerance_ms * NS_PER_MS
    max_ns = limits.clock_skew_max_error_ms * NS_PER_MS
    below = (
        0 if s["skew_min_ns"] >= negative_ns else max(1, histogram_count(stats.skew_histogram, below_ns=negative_ns))
    )
    above = 0 if s["skew_max_ns"] <= max_ns else max(1, histogram_count(stats.skew_histogram, above_ns=max_ns))
    return {"messages_beyond_negative_tolerance": below, "messages_above_max": above}


schema_and_row_counts = make_schema_and_row_counts("book_delta_v2", "raw_book_deltas")

RAW_CHECKS: list[DailyCheck] = [
    sequence_gaps,
    clock_skew,
    price_precision,
    schema_and_row_counts,
    make_schema_and_row_counts("book", "raw_book_snapshots"),
    make_schema_and_row_counts("trades", "raw_trades"),
    *(make_duplicate_rows(table, asset) for table, asset in RAW_TABLE_ASSETS.items()),
    *(make_origin_time(table, asset) for table, asset in RAW_TABLE_ASSETS.items()),
    out_of_order_trades,
]


def build_raw_checks(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    return build_daily_checks(RAW_CHECKS, partitions_def)
