"""Raw lake assets: the vendor's tables, one daily partition per UTC day, every configured instrument."""

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

import dagster as dg

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.telemetry import progress, telemetry
from market_pipeline.core.telemetry.telemetry import StageUsage, count
from market_pipeline.defs.common.backfill import SINGLE_RUN
from market_pipeline.defs.common.blocked import SKIPPED
from market_pipeline.defs.common.importer import ImportFailure, PartitionRejected, PartitionStats, import_partition
from market_pipeline.defs.common.json_logs import stage_log_fields
from market_pipeline.defs.common.lake_reads import reads_lake
from market_pipeline.defs.common.parallel import run_tasks
from market_pipeline.defs.common.recorded import SKIPPED_INSTRUMENTS
from market_pipeline.defs.common.resources import PipelineSettings
from market_pipeline.defs.common.stage_metrics import usage_metadata
from market_pipeline.vendors.base import DayNotCovered, MissingSourceData, VendorSource
from market_pipeline.vendors.registry import build_source, source_of

RAW_GROUP = "raw"


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="milliseconds")


def _served_by(record: dict[tuple[str, str, dt.date], str], table: str, day: dt.date) -> dict[str, str]:
    """instrument -> the endpoint/bucket that served it, for sources with failover (s3).

    `record` is the sources' `served_by` entries, gathered from the processes that imported.
    """
    return {key: label for (t, key, d), label in record.items() if t == table and d == day}


@dataclass
class ImportOutcome:
    """What importing one instrument-day gave, returned by a worker process to the step."""

    instrument: str
    day: dt.date
    stats: PartitionStats | None = None
    usage: StageUsage | None = None
    absent: str | None = None  # DayNotCovered: recorded, not a failure
    failure: ImportFailure | None = None
    rejected: bool = False  # the failure quarantined the partition
    served_by: dict[tuple[str, str, dt.date], str] = field(default_factory=dict)


def import_instrument_day(
    source: VendorSource,
    settings: PipelineSettings,
    stage: str,
    table: str,
    instrument: Instrument,
    day: dt.date,
    run_id: str,
) -> ImportOutcome:
    """Import one instrument-day (in a worker process or the step's own); expected errors become the outcome."""
    outcome = ImportOutcome(instrument.key, day)
    try:
        with (
            progress.task(f"{stage} {day} {instrument.key}"),
            telemetry.measure_stage(stage, instrument=instrument.key) as usage,
        ):
            outcome.stats = import_partition(source, settings, table, instrument, day, run_id)
        outcome.usage = usage
    except DayNotCovered as exc:
        outcome.absent = str(exc)
    except PartitionRejected as exc:
        outcome.failure, outcome.rejected = exc.failure, True
    except MissingSourceData as exc:
        outcome.failure = ImportFailure(instrument.key, day, str(exc))
    record = getattr(source, "served_by", {})
    outcome.served_by = {k: v for k, v in record.items() if k[0] == table and k[1] == instrument.key and k[2] == day}
    return outcome


def _day_metadata(stats: list[PartitionStats], served_by: dict[str, str], sources: dict[str, str]) -> dict[str, object]:
    """Per-partition metadata: totals the UI plots, then one entry per instrument."""
    metadata: dict[str, object] = {
        "rows": sum(s.rows for s in stats),
        "bytes": sum(s.bytes for s in stats),
        "quarantined_rows": sum(s.quarantined_rows for s in stats),
        # Exact duplicate rows found, and those dropped as lossless (docs/data-formats.md).
        "duplicate_rows": sum(s.duplicate_rows for s in stats),
        "duplicate_rows_dropped": sum(s.duplicate_rows_dropped for s in stats),
    }
    for s in stats:
        metadata[f"{s.instrument} rows"] = s.rows
        metadata[f"{s.instrument} bytes"] = s.bytes
        metadata[f"{s.instrument} duplicate_rows"] = s.duplicate_rows
        detail = {
            "source": sources[s.instrument],  # the instrument's primary (PIPELINE_SOURCES)
            "path": str(s.path),
            "quarantined_rows": s.quarantined_rows,
            "quarantined_outside_day": s.quarantined_outside_day,
            "rows_outside_day": s.rows_outside_day,
            "duplicate_rows": s.duplicate_rows,
            "duplicate_rows_dropped": s.duplicate_rows_dropped,
            "first_received_time": _iso(s.first_received_time),
            "last_received_time": _iso(s.last_received_time),
        }
        if s.conflicting_trade_ids:
            detail["conflicting_trade_ids"] = s.conflicting_trade_ids
        if s.out_of_order_rows:
            detail["out_of_order_rows"] = s.out_of_order_rows
        if s.stats_dir is not None:
            detail["stats"] = str(s.stats_dir)
        if s.first_sequence is not None:
            detail["sequence_range"] = [s.first_sequence, s.last_sequence]
        if s.instrument in served_by:
            detail["served_by"] = served_by[s.instrument]
            metadata[f"{s.instrument} served_by"] = served_by[s.instrument]
        metadata[f"{s.instrument} detail"] = dg.MetadataValue.json(detail)
    return metadata


def _failed_metadata(failures: list[ImportFailure]) -> dg.MetadataValue:
    return dg.MetadataValue.json(
        [
            {
                "instrument": f.instrument,
                "dt": f.day.isoformat(),
                "error": f.message,
                "quarantined": [str(p) for p in f.quarantined],
            }
            for f in failures
        ]
    )


def _missing_metadata(instruments: list[str]) -> dict[str, object]:
    """Instruments the source has no data for on the day by nature (no capture running)."""
    if not instruments:
        return {}
    return {"missing_instruments": len(instruments), "missing": dg.MetadataValue.json(instruments)}


@reads_lake
def materialize_raw_table(
    context: dg.AssetExecutionContext, settings: PipelineSettings, table: str
) -> dg.MaterializeResult:
    source = build_source(settings)
    days = [dt.date.fromisoformat(key) for key in context.partition_keys]
    sources = {i.key: source_of(source, i).name for i in settings.universe}
    # Instruments whose primary source provides the table (every instrument, unless PIPELINE_SOURCES
    # mixes vendors whose tables differ): the others have nothing to import and nothing wrong.
    provided = [i for i in settings.universe if table in source_of(source, i).tables]
    if not provided:
        # Nothing to import and nothing wrong: say so per day instead of writing empty files.
        note = f"the {source.name} source does not provide the {table} table"
        context.log.info(note)
        for day in days:
            context.add_asset_metadata({"rows": 0, "provided": False, "note": note}, partition_key=day.isoformat())
        return dg.MaterializeResult(metadata={"days_in_run": len(days), "source": source.name, "provided": False})
    written: dict[dt.date, list[PartitionStats]] = defaultdict(list)
    absent: dict[dt.date, list[str]] = defaultdict(list)
    failures: list[ImportFailure] = []
    stage = context.asset_key.to_user_string()
    usage_meta: dict[dt.date, dict[str, object]] = defaultdict(dict)  # seconds, throughput, memory
    served_by: dict[tuple[str, str, dt.date], str] = {}
    tasks = [(stage, table, instrument, day, context.run.run_id) for day in days for instrument in provided]
    # Instrument-days on PIPELINE_WORKERS processes; results (and their metrics) in serial order.
    for result in run_tasks(settings, import_instrument_day, tasks, source=source):
        result.replay()
        outcome: ImportOutcome = result.value
        served_by.update(outcome.served_by)
        day = outcome.day
        if outcome.absent is not None:  # e.g. no capture that day: recorded, not a failure
            absent[day].append(outcome.instrument)
            context.log.warning(outcome.absent, extra=stage_log_fields(stage, day, outcome.instrument))
            continue
        if outcome.failure is not None:
            failures.append(outcome.failure)
            prefix = "quarantined: " if outcome.rejected else ""
            context.log.error(
                f"{prefix}{outcome.failure.message}", extra=stage_log_fields(stage, day, outcome.instrument)
            )
            continue
        stats, usage = outcome.stats, outcome.usage
        assert stats is not None and usage is not None
        written[day].append(stats)
        usage_meta[day].update(usage_metadata(stage, outcome.instrument, usage, stats.rows))
        count("mdp_source_items_total", stats.rows, table=table, instrument=stats.instrument)
        count("mdp_quarantined_rows_total", stats.quarantined_rows, table=table, instrument=stats.instrument)
        context.log.info(
            f"{table} {outcome.instrument} {day}: {stats.rows} rows -> {stats.path}",
            extra=stage_log_fields(stage, day, outcome.instrument),
        )

    # No warehouse write here: the raw.* views read a hive glob and are created once, by the
    # `lake_views` step (catalog.ensure_lake_views), so this step needs no duckdb pool.
    telemetry.flush()  # a step process may end right after this step: export its metrics now

    failed: dict[dt.date, list[ImportFailure]] = defaultdict(list)
    for failure in failures:
        failed[failure.day].append(failure)
    if failures and len(failed) == len(days):
        lines = "\n".join(f"- {f.message}" for f in failures)
        raise dg.Failure(
            description=f"{table}: {len(failures)} instrument-day(s) not imported; no day complete.\n{lines}",
            metadata={"failed": _failed_metadata(failures)},
        )
    # Skips are per instrument-day: an instrument that could not be imported is recorded under
    # SKIPPED_INSTRUMENTS, and the downstream stages leave out that instrument only
    # (recorded.missing_instruments) while the day's other instruments go on. A day on which no
    # instrument was imported is recorded as skipped whole (defs/common/blocked.py).
    for day in days:
        metadata = {
            **_day_metadata(written[day], _served_by(served_by, table, day), sources),
            **usage_meta[day],
            **_missing_metadata(absent[day]),
        }
        if day in failed:
            reasons = "\n".join(f"{table} import: {f.message}" for f in failed[day])
            if written[day]:
                metadata[SKIPPED_INSTRUMENTS] = dg.MetadataValue.json({f.instrument: f.message for f in failed[day]})
            else:
                metadata[SKIPPED] = reasons
            metadata["failed"] = _failed_metadata(failed[day])
        context.add_asset_metadata(metadata, partition_key=day.isoformat())
    if failures:
        context.log.error(
            f"{table}: {len(failures)} instrument-day(s) not imported; {len(days) - len(failed)} of {len(days)} "
            f"day(s) written; skipped: {', '.join(d.isoformat() for d in sorted(failed))}"
        )
    return dg.MaterializeResult(
        metadata={"days_in_run": len(days), "instruments": len(provided), "source": source.name}
    )


def build_raw_asset(
    name: str,
    table: str,
    description: str,
    partitions_def: dg.PartitionsDefinition,
    backfill_policy: dg.BackfillPolicy = SINGLE_RUN,
) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        group_name=RAW_GROUP,
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        kinds={"parquet"},  # writes the lake only: no duckdb pool, runs beside other Parquet steps
        description=description,
        metadata={"lake_table": table},
    )
    def _raw_asset(
        context: dg.AssetExecutionContext, pipeline: dg.ResourceParam[PipelineSettings]
    ) -> dg.MaterializeResult:
        return materialize_raw_table(context, pipeline, table)

    return _raw_asset


# asset name -> (vendor table, description); other stages refer to these assets by key.
RAW_ASSET_TABLES: dict[str, tuple[str, str]] = {
    "raw_trades": ("trades", "Vendor trades (Crypto Lake `trades`) per instrument and UTC day."),
    "raw_book_snapshots": ("book", "Vendor 20-level book snapshots (Crypto Lake `book`), at least every 100 ms."),
    "raw_book_deltas": ("book_delta_v2", "Vendor level updates of unlimited depth (Crypto Lake `book_delta_v2`)."),
    "raw_book_ticker": (
        "book_ticker",
        "Best bid/ask messages (Binance `@bookTicker`) per instrument and UTC day; captures only.",
    ),
    "raw_depth_snapshots": (
        "depth_snapshot",
        "Full-depth REST order-book snapshots, one row per level; captures only.",
    ),
}


def build_raw_assets(
    partitions_def: dg.PartitionsDefinition, backfill_policy: dg.BackfillPolicy = SINGLE_RUN
) -> list[dg.AssetsDefinition]:
    """One asset per vendor table, partitioned by `partitions_def`."""
    return [
        build_raw_asset(name, table, description, partitions_def, backfill_policy)
        for name, (table, description) in RAW_ASSET_TABLES.items()
    ]
