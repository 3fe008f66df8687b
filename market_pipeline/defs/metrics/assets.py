"""`pipeline_metrics` and `pipeline_metrics_hourly`: one row per instrument-day (and hour) with
performance, data quality and microstructure, in the warehouse through `warehouse_io_manager`.

- performance: read from the upstream assets' latest materialization metadata of the day;
- data quality: read from `validation_reports` (never recomputed here);
- microstructure: computed from the lake (rebuilt books, raw deltas and trades).

Both tables use `partition_expr = dt`: the DuckDB IO manager deletes the run's day range before
inserting, so re-materializing a range replaces its rows.
"""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import polars as pl

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake.paths import (
    PARTITION_FILE,
    books_delta_pass_path,
    books_partition_dir,
    books_shape_path,
    checkpoint_path,
    raw_partition_dir,
)
from market_pipeline.core.quality.microstructure import DAILY_SCHEMA, DEPTH_BPS, Microstructure, compute_microstructure
from market_pipeline.core.quality.validation_inputs import DAILY_COLUMNS, HOURLY_COLUMNS, read_validation
from market_pipeline.core.telemetry import progress, telemetry
from market_pipeline.defs.common.backfill import SINGLE_RUN
from market_pipeline.defs.common.blocked import days_to_run
from market_pipeline.defs.common.lake_reads import reads_lake
from market_pipeline.defs.common.parallel import run_tasks
from market_pipeline.defs.common.recorded import missing_instruments
from market_pipeline.defs.common.resources import DUCKDB_POOL, IO_MANAGER_ROW_COUNT, PipelineSettings, warehouse_table
from market_pipeline.defs.metrics.stage_figures import STAGE_SCHEMA, stage_figures
from market_pipeline.vendors.base import VendorSource

OBSERVABILITY_GROUP = "observability"
VALIDATION_REPORTS = dg.AssetKey("validation_reports")
VALIDATION_REPORTS_HOURLY = dg.AssetKey("validation_reports_hourly")
DAILY_KEY = dg.AssetKey("pipeline_metrics")
HOURLY_KEY = dg.AssetKey("pipeline_metrics_hourly")
# What the metrics read, by key: the raw tables, the rebuilt books and the validation tables.
UPSTREAM = [
    "raw_trades",
    "raw_book_snapshots",
    "raw_book_deltas",
    "reconstructed_books",
    VALIDATION_REPORTS,
    VALIDATION_REPORTS_HOURLY,
]

# Figures copied into each partition's metadata per instrument, so the UI plots them over days.
_PLOTTED = (
    "raw_book_deltas_events_per_s",
    "reconstructed_books_events_per_s",
    "reconstructed_books_seconds",
    "reconstructed_books_peak_rss_mb",
    "spread_p50_ticks",
    "spread_p99_ticks",
    *(f"depth_{n}bps_mean" for n in DEPTH_BPS),
    "trade_to_book_ratio",
    "updates_per_s_rank_0",
    "gaps_detected",
    "gaps_filled",
    "max_mid_dev_bps",
    "skew_p99_ms",
    "precision_loss_events",
)


def metrics_task(
    source: VendorSource, settings: PipelineSettings, instrument: Instrument, day: dt.date
) -> Microstructure | str:
    """One instrument-day's microstructure (in a worker process or the step's own); a missing lake
    file is returned as its message."""
    with (
        progress.task(f"pipeline_metrics {day} {instrument.key}"),
        telemetry.measure_stage("pipeline_metrics", instrument=instrument.key),
    ):
        try:
            return _instrument_day(settings, instrument, day)
        except FileNotFoundError as exc:
            return str(exc)


def _instrument_day(settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Microstructure:
    lake, ex, sym = settings.lake_dir, instrument.exchange, instrument.symbol
    micro = compute_microstructure(
        books=books_partition_dir(lake, ex, sym, day) / PARTITION_FILE,
        deltas=raw_partition_dir(lake, "book_delta_v2", ex, sym, day) / PARTITION_FILE,
        trades=raw_partition_dir(lake, "trades", ex, sym, day) / PARTITION_FILE,
        tick=instrument.tick_size,
        lot=instrument.lot_size,
        day=day,
        spill_dir=settings.data_dir / "tmp" / "duckdb",
        shape=books_shape_path(lake, ex, sym, day),
        delta_pass=books_delta_pass_path(lake, ex, sym, day),
    )
    for skew in micro.skew_sample_seconds:
        size, direction = telemetry.clock_skew_attributes(skew)
        telemetry.observe("mdp_clock_skew_seconds", size, instrument=instrument.key, **direction)
    return micro


def _with_quality(frame: pl.DataFrame, quality: pl.DataFrame | None, keys: list[str], columns: dict) -> pl.DataFrame:
    if quality is None:
        return frame.with_columns(*[pl.lit(None, dtype=t).alias(c) for c, t in columns.items()])
    return frame.join(quality, on=keys, how="left")


def _partition_metadata(rows: list[dict[str, object]], found_validation: bool) -> dict[str, object]:
    meta: dict[str, object] = {
        "rows": len(rows),
        IO_MANAGER_ROW_COUNT: len(rows),
        "validation_reports_found": found_validation,
    }
    for row in rows:
        key = f"{row['exchange']}:{row['symbol']}"
        for column in _PLOTTED:
            value = row.get(column)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                meta[f"{key} {column}"] = value
    return meta


@reads_lake
def compute_metrics(context: dg.AssetExecutionContext, settings: PipelineSettings) -> Iterator[dg.Output]:
    """Performance, data quality and microstructure per instrument-day and instrument-hour."""
    days = days_to_run(context)  # the run's days minus those an upstream blocking check failed
    keys = [i.key for i in settings.universe]
    daily_rows: list[dict[str, object]] = []
    hourly_frames: list[pl.DataFrame] = []
    failures: list[str] = []
    measured = {  # no source data that day: no figures
        day: [i for i in settings.universe if i.key not in missing_instruments(context.instance, day)] for day in days
    }
    tasks = [(instrument, day) for day in days for instrument in measured[day]]
    # Instrument-days on PIPELINE_WORKERS processes; results (and their metrics) in serial order.
    outcomes = iter(run_tasks(settings, metrics_task, tasks))
    for day in days:
        performance = stage_figures(context.instance, day.isoformat(), keys)
        for instrument in measured[day]:
            outcome = next(outcomes)
            outcome.replay()
            micro = outcome.value
            if isinstance(micro, str):
                failures.append(micro)
                continue
            ident = {"dt": day, "exchange": instrument.exchange, "symbol": instrument.symbol}
            checkpoint = checkpoint_path(settings.lake_dir, instrument.exchange, instrument.symbol, day)
            daily_rows.append(
                {**ident, **performance[instrument.key], "checkpoint_written": checkpoint.is_file(), **micro.daily}
            )
            hourly_frames.append(micro.hourly.with_columns(*[pl.lit(v).alias(k) for k, v in ident.items()]))
    telemetry.flush()
    if failures:
        raise dg.Failure(
            description=f"pipeline_metrics: {len(failures)} instrument-day(s) lack lake files "
            "(materialize raw_* and reconstructed_books first):\n" + "\n".join(f"- {f}" for f in failures)
        )

    quality_daily, quality_hourly = read_validation(settings.warehouse, days)
    if quality_daily is None:
        context.log.warning(
            f"main.validation_reports not found in {settings.warehouse.describe()}: data-quality columns are null "
            "(materialize validation_reports for these days first)"
        )
    schema = {
        "dt": pl.Date,
        "exchange": pl.String,
        "symbol": pl.String,
        **STAGE_SCHEMA,
        "checkpoint_written": pl.Boolean,
        **DAILY_SCHEMA,
    }
    daily = _with_quality(
        pl.DataFrame(daily_rows, schema=schema), quality_daily, ["dt", "exchange", "symbol"], DAILY_COLUMNS
    )
    hourly = _with_quality(
        pl.concat(hourly_frames, how="vertical_relaxed"),
        quality_hourly,
        ["dt", "hour", "exchange", "symbol"],
        HOURLY_COLUMNS,
    )
    hourly = hourly.select("dt", "hour", "exchange", "symbol", pl.exclude("dt", "hour", "exchange", "symbol"))
    daily = daily.sort("dt", "exchange", "symbol")
    hourly = hourly.sort("dt", "exchange", "symbol", "hour")

    for day in days:
        rows = daily.filter(pl.col("dt") == day).to_dicts()
        context.add_asset_metadata(
            _partition_metadata(rows, quality_daily is not None), asset_key=DAILY_KEY, partition_key=day.isoformat()
        )
        hourly_rows = hourly.filter(pl.col("dt") == day).height
        context.add_asset_metadata(
            {"rows": hourly_rows, IO_MANAGER_ROW_COUNT: hourly_rows},
            asset_key=HOURLY_KEY,
            partition_key=day.isoformat(),
        )
    yield dg.Output(daily, output_name=DAILY_KEY.path[-1], metadata={"days_in_run": len(days)})
    yield dg.Output(hourly, output_name=HOURLY_KEY.path[-1], metadata={"days_in_run": len(days)})


def build_metrics_assets(
    partitions_def: dg.PartitionsDefinition,
    backfill_policy: dg.BackfillPolicy = SINGLE_RUN,
    warehouse_pool: str | None = DUCKDB_POOL,
) -> list[dg.AssetsDefinition]:
    """`warehouse_pool`: the pool of the steps that write the warehouse (None: a DuckLake catalog, many writers)."""

    @dg.multi_asset(
        outs={
            DAILY_KEY.path[-1]: warehouse_table(
                DAILY_KEY,
                "One row per instrument-day: stage throughput and memory, data quality from "
                "validation_reports, spread, depth near mid, update frequency by level rank.",
                kinds={"duckdb"},
            ),
            HOURLY_KEY.path[-1]: warehouse_table(
                HOURLY_KEY,
                "One row per instrument-hour: depth near mid, spread, book messages, trades, gaps and clock skew.",
                kinds={"duckdb"},
            ),
        },
        deps=UPSTREAM,
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        group_name=OBSERVABILITY_GROUP,
        pool=warehouse_pool,  # reads validation tables and writes two tables in the warehouse
    )
    def pipeline_metrics(
        context: dg.AssetExecutionContext, pipeline: dg.ResourceParam[PipelineSettings]
    ) -> Iterator[dg.Output]:
        """Performance, data quality and microstructure per instrument-day and instrument-hour."""
        yield from compute_metrics(context, pipeline)

    return [pipeline_metrics]
