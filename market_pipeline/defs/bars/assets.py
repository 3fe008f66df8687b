"""`ohlcv_bars`: OHLCV bars per instrument-day and interval in the lake (core/bars/build.py), and
`ohlcv_bars_summary`: one warehouse row per instrument-day and interval, plus the `bars.ohlcv` view."""

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl

from market_pipeline.core.bars.build import BarDayResult, BarsInputError, build_bar_day
from market_pipeline.core.bars.figures import SUMMARY_SCHEMA, day_summary
from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake.catalog import BARS_VIEWS, ensure_lake_views
from market_pipeline.core.lake.paths import PARTITION_FILE, bars_partition_dir, books_partition_dir, raw_partition_dir
from market_pipeline.core.security.audit import audit_scope
from market_pipeline.core.telemetry import telemetry
from market_pipeline.core.telemetry.telemetry import StageUsage
from market_pipeline.defs.common.backfill import SINGLE_RUN
from market_pipeline.defs.common.blocked import SKIPPED, days_to_run
from market_pipeline.defs.common.lake_reads import reads_lake
from market_pipeline.defs.common.parallel import run_tasks
from market_pipeline.defs.common.recorded import missing_instruments
from market_pipeline.defs.common.resources import DUCKDB_POOL, PipelineSettings, warehouse_table
from market_pipeline.defs.common.stage_metrics import usage_metadata
from market_pipeline.vendors.base import VendorSource

BARS_GROUP = "bars"
BARS_ASSET = "ohlcv_bars"
SUMMARY_KEY = dg.AssetKey("ohlcv_bars_summary")
# What the bars read, by key: the raw trades and the rebuilt books (the touch at each bar's close).
UPSTREAM = ["raw_trades", "reconstructed_books"]


@dataclass(frozen=True)
class BarFiles:
    """The lake files of one instrument-day's bars: the two inputs and the output."""

    trades: Path
    books: Path
    bars: Path

    @classmethod
    def of(cls, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> "BarFiles":
        lake, ex, sym = settings.lake_dir, instrument.exchange, instrument.symbol
        return cls(
            trades=raw_partition_dir(lake, "trades", ex, sym, day) / PARTITION_FILE,
            books=books_partition_dir(lake, ex, sym, day) / PARTITION_FILE,
            bars=bars_partition_dir(lake, ex, sym, day) / PARTITION_FILE,
        )


@dataclass
class BarsOutcome:
    """One instrument-day's bars (or why there are none), returned by a worker process to the step."""

    result: BarDayResult | None = None
    usage: StageUsage | None = None
    error: str | None = None


def bars_task(_source: VendorSource, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> BarsOutcome:
    """Build one instrument-day's bars, audited and measured; a bad input becomes the outcome."""
    files = BarFiles.of(settings, instrument, day)
    try:
        with (
            audit_scope("bars", settings.data_dir, dt=day, instrument=instrument.key),
            telemetry.measure_stage(BARS_ASSET, instrument=instrument.key) as usage,
        ):
            result = build_bar_day(
                files.trades,
                files.books,
                files.bars,
                instrument,
                day,
                settings.bars.bar_intervals,
                settings.data_dir / "tmp" / "duckdb",
            )
    except BarsInputError as exc:
        return BarsOutcome(error=str(exc))
    return BarsOutcome(result, usage)


def _result_metadata(result: BarDayResult) -> dict[str, object]:
    key = result.instrument
    meta: dict[str, object] = {f"{key} {name} bars": n for name, n in result.bars.items()}
    meta[f"{key} trades"] = result.trades
    meta[f"{key} trades_outside_day"] = result.trades_outside_day
    meta[f"{key} off_grid_trades"] = result.off_grid_trades
    meta[f"{key} path"] = dg.MetadataValue.path(result.path)
    return meta


@reads_lake
def materialize_bars(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    """Build the bars of every instrument-day of the run; a day with a bad input is skipped, the others complete."""
    days = days_to_run(context)  # the run's days minus those an upstream blocking check failed
    missing = {day: missing_instruments(context.instance, day) for day in days}
    tasks = [(i, day) for day in days for i in settings.universe if i.key not in missing[day]]
    meta: dict[dt.date, dict[str, object]] = defaultdict(dict)
    errors: dict[dt.date, list[str]] = defaultdict(list)
    # Instrument-days on PIPELINE_WORKERS processes; results (and their metrics) in serial order.
    for (instrument, day), outcome in zip(tasks, run_tasks(settings, bars_task, tasks), strict=True):
        outcome.replay()
        bars: BarsOutcome = outcome.value
        if bars.error is not None:
            errors[day].append(bars.error)
            context.log.error(bars.error)
            continue
        assert bars.result is not None and bars.usage is not None
        meta[day].update(_result_metadata(bars.result))
        meta[day].update(usage_metadata(BARS_ASSET, instrument.key, bars.usage, bars.result.trades))
        meta[day]["rows"] = int(meta[day].get("rows", 0)) + sum(bars.result.bars.values())  # type: ignore[call-overload]
        context.log.info(f"{instrument.key} {day}: {bars.result.bars} bars from {bars.result.trades} trades")
    telemetry.flush()  # a step process may end right after this step: export its metrics now
    if errors and len(errors) == len(days):
        lines = "\n".join(f"- {e}" for day_errors in errors.values() for e in day_errors)
        raise dg.Failure(description=f"{BARS_ASSET}: no day complete.\n{lines}")
    for day in days:
        day_meta = meta[day]
        for key in sorted(missing[day]):
            day_meta[f"{key} missing"] = "the source has no data for this instrument-day"
        if day in errors:  # downstream (checks, summary) leaves the day out; the other days complete
            day_meta[SKIPPED] = "\n".join(f"{BARS_ASSET}: {e}" for e in errors[day])
        day_meta.setdefault("rows", 0)
        context.add_asset_metadata(day_meta, partition_key=day.isoformat())
    return dg.MaterializeResult(
        metadata={"days_in_run": len(days), "intervals": ",".join(settings.bars.intervals), "days_failed": len(errors)}
    )


@reads_lake
def summarize_bars(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.Output:
    """One warehouse row per instrument-day and interval from the bars files; creates `bars.ohlcv` once."""
    days = days_to_run(context)
    with telemetry.timed("mdp_sink_commit_seconds", stage=SUMMARY_KEY.path[-1], sink="duckdb_view"):
        created = ensure_lake_views(settings.warehouse, settings.lake_dir, BARS_VIEWS)
    if created:
        context.log.info(f"created the view(s) {', '.join(created)} in {settings.warehouse.describe()}")
    frames = []
    for day in days:
        missing = missing_instruments(context.instance, day)
        day_frames = [
            day_summary(BarFiles.of(settings, i, day).bars).with_columns(
                pl.lit(day).alias("dt"), pl.lit(i.exchange).alias("exchange"), pl.lit(i.symbol).alias("symbol")
            )
            for i in settings.universe
            if i.key not in missing
        ]
        context.add_asset_metadata(
            {"rows": sum(f.height for f in day_frames)}, asset_key=SUMMARY_KEY, partition_key=day.isoformat()
        )
        frames.extend(day_frames)
    telemetry.flush()
    empty = pl.DataFrame(schema={"dt": pl.Date, "exchange": pl.String, "symbol": pl.String, **SUMMARY_SCHEMA})
    summary = pl.concat([empty, *(f.select(empty.columns) for f in frames)], how="vertical")
    return dg.Output(
        summary, output_name=SUMMARY_KEY.path[-1], metadata={"rows_in_run": summary.height, "days_in_run": len(days)}
    )


def build_bars_assets(
    partitions_def: dg.PartitionsDefinition,
    backfill_policy: dg.BackfillPolicy = SINGLE_RUN,
    warehouse_pool: str | None = DUCKDB_POOL,
) -> list[dg.AssetsDefinition]:
    """`warehouse_pool`: the pool of the steps that write the warehouse (None: a DuckLake catalog, many writers)."""

    @dg.asset(
        name=BARS_ASSET,
        group_name=BARS_GROUP,
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        deps=UPSTREAM,
        kinds={"parquet", "duckdb"},  # writes the lake only (DuckDB in memory): no duckdb pool
    )
    def ohlcv_bars(
        context: dg.AssetExecutionContext, pipeline: dg.ResourceParam[PipelineSettings]
    ) -> dg.MaterializeResult:
        """OHLCV bars per instrument-day and interval, by exchange time, with the book's mid and spread at close."""
        return materialize_bars(context, pipeline)

    @dg.multi_asset(
        outs={
            SUMMARY_KEY.path[-1]: warehouse_table(
                SUMMARY_KEY,
                "One row per instrument-day and bar interval: bars, trades, volumes, first and last bar, "
                "bars without a book, trades outside the day and off the grid (docs/data-formats.md).",
                group_name=BARS_GROUP,
                kinds={"duckdb", "polars"},
            )
        },
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        deps=[BARS_ASSET],
        pool=warehouse_pool,  # writes main.ohlcv_bars_summary (and bars.ohlcv once) in the warehouse
    )
    def ohlcv_bars_summary(
        context: dg.AssetExecutionContext, pipeline: dg.ResourceParam[PipelineSettings]
    ) -> dg.Output:
        """The warehouse summary of the run's bars, and the `bars.ohlcv` view over every bars file."""
        return summarize_bars(context, pipeline)

    return [ohlcv_bars, ohlcv_bars_summary]
