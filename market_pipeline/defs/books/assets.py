"""`reconstructed_books`: full order books rebuilt from raw deltas, checked against vendor snapshots."""

import datetime as dt

import dagster as dg

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake.catalog import create_parquet_view
from market_pipeline.core.security.audit import audit_scope
from market_pipeline.core.telemetry import telemetry
from market_pipeline.defs.common.resources import DUCKDB_POOL, PipelineSettings
from market_pipeline.defs.common.stage_metrics import usage_metadata
from market_pipeline.vendors.base import BookDay, BookDayResult, VendorSource
from market_pipeline.vendors.registry import build_source

BOOKS_GROUP = "books"
# The raw assets the rebuild reads, by key; the last three feed the Binance-rules path
# (PIPELINE_SOURCE=capture) only.
RAW_INPUTS = ["raw_book_deltas", "raw_book_snapshots", "raw_depth_snapshots", "raw_book_ticker", "raw_trades"]


def rebuild_instrument_day(
    source: VendorSource, settings: PipelineSettings, instrument: Instrument, day: dt.date
) -> BookDayResult | None:
    """The vendor's rebuild of one instrument-day into the books lake."""
    job = BookDay(settings.lake_dir, instrument, day, settings.book.depth, settings.book.sample_interval_ms)
    return source.rebuild_books(job)


def materialize_books(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    """Rebuild every instrument-day of the run's partitions into the books lake."""
    source = build_source(settings)
    days = [dt.date.fromisoformat(key) for key in context.partition_keys]
    totals = {"deltas_applied": 0, "gaps": 0, "fills": 0}
    for day in days:
        day_meta: dict[str, object] = {}
        for instrument in settings.universe:
            with (
                audit_scope("book.rebuild", settings.data_dir, dt=day, instrument=instrument.key),
                telemetry.measure_stage("reconstructed_books", instrument=instrument.key) as usage,
            ):
                result = rebuild_instrument_day(source, settings, instrument, day)
            if result is None:
                day_meta["missing_instruments"] = int(day_meta.get("missing_instruments", 0)) + 1  # type: ignore[call-overload]
                day_meta[f"{instrument.key} missing"] = "the source has no data for this instrument-day"
                context.log.warning(f"{instrument.key} {day}: the source has no data for it; recorded as missing")
                continue
            day_meta.update(result.metadata(instrument.key))
            day_meta.update(usage_metadata("reconstructed_books", instrument.key, usage, result.events))
            for name, value in result.totals.items():
                totals[name] += value
            context.log.info(f"{instrument.key} {day}: {result.summary()}")
        day_meta["rows"] = sum(v for k, v in day_meta.items() if k.endswith(" deltas_applied") and isinstance(v, int))
        context.add_asset_metadata(day_meta, partition_key=day.isoformat())
    lake = settings.lake_dir
    with telemetry.timed("mdp_sink_commit_seconds", stage="reconstructed_books", sink="duckdb_view"):
        create_parquet_view(settings.warehouse_path, "books", "reconstructed_books", lake, "books")
        create_parquet_view(settings.warehouse_path, "books", "vendor_agreement", lake, "book_agreement")
    telemetry.flush()  # a step process may end right after this step: export its metrics now
    return dg.MaterializeResult(metadata={"days_in_run": len(days), **totals})


def build_book_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        group_name=BOOKS_GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=RAW_INPUTS,
        pool=DUCKDB_POOL,  # refreshes the books.* views in the warehouse
        kinds={"parquet", "numba"},
    )
    def reconstructed_books(
        context: dg.AssetExecutionContext, pipeline: dg.ResourceParam[PipelineSettings]
    ) -> dg.MaterializeResult:
        """Top-N books per instrument-day, sampled at vendor snapshots and on a fixed interval."""
        return materialize_books(context, pipeline)

    return [reconstructed_books]
