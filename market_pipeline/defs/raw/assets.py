"""Raw lake assets: the vendor's tables, one daily partition per UTC day, every configured instrument."""

import datetime as dt
from collections import defaultdict

import dagster as dg

from market_pipeline.core.lake.catalog import create_parquet_view
from market_pipeline.core.telemetry import telemetry
from market_pipeline.core.telemetry.telemetry import count
from market_pipeline.defs.common.resources import DUCKDB_POOL, PipelineSettings
from market_pipeline.defs.common.stage_metrics import usage_metadata
from market_pipeline.defs.raw.importer import ImportFailure, PartitionRejected, PartitionStats, import_partition
from market_pipeline.vendors.base import DayNotCovered, MissingSourceData
from market_pipeline.vendors.registry import build_source

RAW_GROUP = "raw"


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="milliseconds")


def _served_by(source: object, table: str, day: dt.date) -> dict[str, str]:
    """instrument -> the endpoint/bucket that served it, for sources with failover (s3)."""
    record = getattr(source, "served_by", {})
    return {key: label for (t, key, d), label in record.items() if t == table and d == day}


def _day_metadata(stats: list[PartitionStats], served_by: dict[str, str]) -> dict[str, object]:
    """Per-partition metadata: totals the UI plots, then one entry per instrument."""
    metadata: dict[str, object] = {
        "rows": sum(s.rows for s in stats),
        "bytes": sum(s.bytes for s in stats),
        "quarantined_rows": sum(s.quarantined_rows for s in stats),
    }
    for s in stats:
        metadata[f"{s.instrument} rows"] = s.rows
        metadata[f"{s.instrument} bytes"] = s.bytes
        detail = {
            "path": str(s.path),
            "quarantined_rows": s.quarantined_rows,
            "first_received_time": _iso(s.first_received_time),
            "last_received_time": _iso(s.last_received_time),
        }
        if s.first_sequence is not None:
            detail["sequence_range"] = [s.first_sequence, s.last_sequence]
        if s.instrument in served_by:
            detail["served_by"] = served_by[s.instrument]
            metadata[f"{s.instrument} served_by"] = served_by[s.instrument]
        metadata[f"{s.instrument} detail"] = dg.MetadataValue.json(detail)
    return metadata


def _missing_metadata(instruments: list[str]) -> dict[str, object]:
    """Instruments the source has no data for on the day by nature (no capture running)."""
    if not instruments:
        return {}
    return {"missing_instruments": len(instruments), "missing": dg.MetadataValue.json(instruments)}


def materialize_raw_table(
    context: dg.AssetExecutionContext, settings: PipelineSettings, table: str
) -> dg.MaterializeResult:
    source = build_source(settings)
    days = [dt.date.fromisoformat(key) for key in context.partition_keys]
    if table not in source.tables:
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
    for day in days:
        for instrument in settings.universe:
            try:
                with telemetry.measure_stage(stage, instrument=instrument.key) as usage:
                    stats = import_partition(source, settings, table, instrument, day, context.run.run_id)
            except DayNotCovered as exc:  # e.g. no capture that day: recorded, not a failure
                absent[day].append(instrument.key)
                context.log.warning(str(exc))
                continue
            except PartitionRejected as exc:
                failures.append(exc.failure)
                context.log.error(f"quarantined: {exc.failure.message}")
                continue
            except MissingSourceData as exc:
                failures.append(ImportFailure(instrument.key, day, str(exc)))
                context.log.error(str(exc))
                continue
            written[day].append(stats)
            usage_meta[day].update(usage_metadata(stage, instrument.key, usage, stats.rows))
            count("mdp_source_items_total", stats.rows, table=table, instrument=stats.instrument)
            count("mdp_quarantined_rows_total", stats.quarantined_rows, table=table, instrument=stats.instrument)
            context.log.info(f"{table} {instrument.key} {day}: {stats.rows} rows -> {stats.path}")

    if written:
        with telemetry.timed("mdp_sink_commit_seconds", stage=stage, sink="duckdb_view"):
            create_parquet_view(settings.warehouse_path, "raw", table, settings.lake_dir / "raw", table)
    telemetry.flush()  # a step process may end right after this step: export its metrics now

    failed_days = {f.day for f in failures}
    complete_days = [d for d in days if d not in failed_days]
    if failures:
        # The step fails, so Dagster records nothing by itself: record the days that did land.
        for day in complete_days:
            context.log_event(
                dg.AssetMaterialization(
                    asset_key=context.asset_key,
                    partition=day.isoformat(),
                    metadata={
                        **_day_metadata(written[day], _served_by(source, table, day)),
                        **usage_meta[day],
                        **_missing_metadata(absent[day]),
                    },
                )
            )
        lines = "\n".join(f"- {f.message}" for f in failures)
        raise dg.Failure(
            description=f"{table}: {len(failures)} instrument-day(s) not imported; "
            f"{len(complete_days)} of {len(days)} day(s) written.\n{lines}",
            metadata={
                "failed": dg.MetadataValue.json(
                    [
                        {
                            "instrument": f.instrument,
                            "dt": f.day.isoformat(),
                            "error": f.message,
                            "quarantined": [str(p) for p in f.quarantined],
                        }
                        for f in failures
                    ]
                ),
            },
        )

    for day in days:
        context.add_asset_metadata(
            {
                **_day_metadata(written[day], _served_by(source, table, day)),
                **usage_meta[day],
                **_missing_metadata(absent[day]),
            },
            partition_key=day.isoformat(),
        )
    return dg.MaterializeResult(
        metadata={"days_in_run": len(days), "instruments": len(settings.universe), "source": source.name}
    )


def build_raw_asset(
    name: str, table: str, description: str, partitions_def: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        group_name=RAW_GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=DUCKDB_POOL,  # refreshes the raw.* views in the warehouse
        kinds={"parquet", "duckdb"},
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


def build_raw_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """One asset per vendor table, partitioned by `partitions_def`."""
    return [
        build_raw_asset(name, table, description, partitions_def)
        for name, (table, description) in RAW_ASSET_TABLES.items()
    ]
