"""`reconstructed_books`: full order books rebuilt from raw deltas, checked against vendor snapshots."""

import datetime as dt

import dagster as dg

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake.catalog import LAKE_VIEWS, ensure_lake_views
from market_pipeline.core.security.audit import audit_scope
from market_pipeline.core.telemetry import progress, telemetry
from market_pipeline.core.telemetry.telemetry import StageUsage
from market_pipeline.defs.common.backfill import SINGLE_RUN
from market_pipeline.defs.common.blocked import days_to_run
from market_pipeline.defs.common.json_logs import stage_log_fields
from market_pipeline.defs.common.lake_reads import reads_lake
from market_pipeline.defs.common.parallel import run_tasks
from market_pipeline.defs.common.recorded import skipped_instruments
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
    book = settings.book
    job = BookDay(settings.lake_dir, instrument, day, book.depth, book.sample_interval_ms, settings.data_dir / "tmp")
    return source.rebuild_books(job)


def rebuild_task(
    source: VendorSource, settings: PipelineSettings, instrument: Instrument, day: dt.date
) -> tuple[BookDayResult | None, StageUsage]:
    """One instrument-day's rebuild, audited and measured (in a worker process or the step's own)."""
    with (
        audit_scope("book.rebuild", settings.data_dir, dt=day, instrument=instrument.key),
        progress.task(f"reconstructed_books {day} {instrument.key}"),
        telemetry.measure_stage("reconstructed_books", instrument=instrument.key) as usage,
    ):
        result = rebuild_instrument_day(source, settings, instrument, day)
    return result, usage


@reads_lake
def materialize_books(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    """Rebuild every instrument-day of the run's partitions into the books lake."""
    source = build_source(settings)
    days = days_to_run(context)  # the run's days minus those an upstream blocking check failed
    # Instrument-days whose raw import failed are left out; the day's other instruments go on.
    skipped = {day: skipped_instruments(context.instance, day) for day in days}
    tasks = [
        (instrument, day) for day in days for instrument in settings.universe if instrument.key not in skipped[day]
    ]
    # Instrument-days on PIPELINE_WORKERS processes; results (and their metrics) in serial order.
    outcomes = iter(run_tasks(settings, rebuild_task, tasks, source=source))
    for day in days:
        # The day's totals, not the run's: Dagster copies run-level metadata into every day's
        # materialization, so a run total would plot as each day's value in the UI.
        day_meta: dict[str, object] = {"deltas_applied": 0, "gaps": 0, "fills": 0}
        for instrument in settings.universe:
            if instrument.key in skipped[day]:
                day_meta[f"{instrument.key} skipped"] = f"raw import failed: {skipped[day][instrument.key]}"
                context.log.warning(
                    f"{instrument.key} {day}: skipped, its raw import failed: {skipped[day][instrument.key]}",
                    extra=stage_log_fields(context.asset_key, day, instrument.key),
                )
                continue
            outcome = next(outcomes)
            outcome.replay()
            result, usage = outcome.value
            if result is None:
                day_meta["missing_instruments"] = int(day_meta.get("missing_instruments", 0)) + 1  # type: ignore[call-overload]
                day_meta[f"{instrument.key} missing"] = "the source has no data for this instrument-day"
                context.log.warning(
                    f"{instrument.key} {day}: the source has no data for it; recorded as missing",
                    extra=stage_log_fields(context.asset_key, day, instrument.key),
                )
                continue
            day_meta.update(result.metadata(instrument.key))
            day_meta.update(usage_metadata("reconstructed_books", instrument.key, usage, result.events))
            for name, value in result.totals.items():
                day_meta[name] += value  # type: ignore[operator]
            context.log.info(
                f"{instrument.key} {day}: {result.summary()}",
                extra=stage_log_fields(context.asset_key, day, instrument.key),
            )
        day_meta["rows"] = sum(v for k, v in day_meta.items() if k.endswith(" deltas_applied") and isinstance(v, int))
        context.add_asset_metadata(day_meta, partition_key=day.isoformat())
    # No warehouse write here: the books.* views read a hive glob and are created once, by the
    # `lake_views` step, so this step needs no duckdb pool.
    telemetry.flush()  # a step process may end right after this step: export its metrics now
    return dg.MaterializeResult(metadata={"days_in_run": len(days)})


def materialize_lake_views(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    """Create the warehouse views over the lake that are missing (once per table, over a hive glob)."""
    with telemetry.timed("mdp_sink_commit_seconds", stage=LAKE_VIEWS_ASSET, sink="duckdb_view"):
        created = ensure_lake_views(settings.warehouse, settings.lake_dir)
    telemetry.flush()
    if created:
        context.log.info(f"created the views {', '.join(created)} in {settings.warehouse.describe()}")
    return dg.MaterializeResult(
        metadata={
            "created": dg.MetadataValue.json(created),
            "views": len(LAKE_VIEWS),
            "days_in_run": len(context.partition_keys),
        }
    )


LAKE_VIEWS_ASSET = "lake_views"


def build_book_assets(
    partitions_def: dg.PartitionsDefinition,
    backfill_policy: dg.BackfillPolicy = SINGLE_RUN,
    warehouse_pool: str | None = DUCKDB_POOL,
) -> list[dg.AssetsDefinition]:
    """`warehouse_pool`: the pool of the steps that write the warehouse (None: a DuckLake catalog, many writers)."""

    @dg.asset(
        group_name=BOOKS_GROUP,
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        deps=RAW_INPUTS,
        kinds={"parquet", "numba"},  # writes the lake only: no duckdb pool, runs beside other Parquet steps
    )
    def reconstructed_books(
        context: dg.AssetExecutionContext, pipeline: dg.ResourceParam[PipelineSettings]
    ) -> dg.MaterializeResult:
        """Top-N books per instrument-day, sampled at vendor snapshots and on a fixed interval."""
        return materialize_books(context, pipeline)

    @dg.asset(
        name=LAKE_VIEWS_ASSET,
        group_name=BOOKS_GROUP,
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        deps=[*RAW_INPUTS, "reconstructed_books"],
        pool=warehouse_pool,  # writes the warehouse (only when a view is missing)
        kinds={"duckdb"},
    )
    def lake_views(
        context: dg.AssetExecutionContext, pipeline: dg.ResourceParam[PipelineSettings]
    ) -> dg.MaterializeResult:
        """The DuckDB views raw.* and books.* over the lake's hive globs, created once a table has files."""
        return materialize_lake_views(context, pipeline)

    return [reconstructed_books, lake_views]
