"""`validation_reports`: how good each instrument-day is, in DuckDB and as a daily HTML report."""

import datetime as dt

import dagster as dg
import polars as pl

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.quality.report import CheckVerdict, write_report
from market_pipeline.core.quality.validation import DayValidation, daily_frame, hourly_frame, validate_instrument_day
from market_pipeline.core.security.audit import audit_scope
from market_pipeline.core.telemetry import progress
from market_pipeline.defs.common.backfill import SINGLE_RUN
from market_pipeline.defs.common.blocked import days_to_run
from market_pipeline.defs.common.checks import day_files
from market_pipeline.defs.common.exchange_checksums import day_checksums
from market_pipeline.defs.common.json_logs import stage_log_fields
from market_pipeline.defs.common.lake_reads import reads_lake
from market_pipeline.defs.common.parallel import run_tasks
from market_pipeline.defs.common.recorded import missing_instruments, rebuild_counters
from market_pipeline.defs.common.resources import (
    DUCKDB_POOL,
    IO_MANAGER_ROW_COUNT,
    PipelineSettings,
    warehouse_table,
)
from market_pipeline.vendors.base import VendorSource

QUALITY_GROUP = "quality"
DAILY = dg.AssetKey("validation_reports")
HOURLY = dg.AssetKey("validation_reports_hourly")
# What validation reads, by key: the rebuilt books and the raw tables.
UPSTREAM = ["reconstructed_books", "raw_trades", "raw_book_snapshots", "raw_book_deltas"]

# Per-day figures the UI plots across partitions: (column, how to combine instruments).
_PLOTTED = {
    "gaps_detected": "sum",
    "gaps_filled": "sum",
    "gaps_unrepaired": "sum",
    "off_grid_values": "sum",
    "precision_loss_events": "sum",
    "skew_max_ms": "max",
    "snapshot_exact_match_share": "min",
    "max_mid_dev_ticks": "max",
}


def _day_metadata(daily: pl.DataFrame, report: str) -> dict[str, object]:
    meta: dict[str, object] = {
        "rows": daily.height,
        IO_MANAGER_ROW_COUNT: daily.height,
        "instruments": daily.height,
        "report": dg.MetadataValue.path(report),
        "report_url": dg.MetadataValue.url(f"file://{report}"),
    }
    for column, how in _PLOTTED.items():
        value = getattr(daily[column], how)()
        if value is not None:
            meta[column] = value
    return meta


def check_verdicts(context: dg.AssetExecutionContext, day: dt.date) -> list[CheckVerdict]:
    """The day's check evaluations in this run (the checks of the upstream assets ran before this
    step), the latest per check, for the report's verdict table."""
    latest: dict[tuple[str, str], CheckVerdict] = {}
    for entry in context.instance.all_logs(context.run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.asset_check_evaluation
        if evaluation is None or evaluation.partition != day.isoformat():
            continue
        asset = evaluation.asset_key.to_user_string()
        latest[(asset, evaluation.check_name)] = CheckVerdict(
            asset=asset,
            check=evaluation.check_name,
            passed=evaluation.passed,
            severity=getattr(evaluation.severity, "value", str(evaluation.severity)),
            description=evaluation.description or "",
        )
    return list(latest.values())


def validation_task(
    source: VendorSource,
    settings: PipelineSettings,
    instrument: Instrument,
    day: dt.date,
    counters: dict[str, int] | None,
) -> DayValidation:
    """One instrument-day's validation (in a worker process or the step's own)."""
    with (
        progress.task(f"validation_reports {day} {instrument.key}"),
        # The skew quantiles it may store beside the day statistics are audited.
        audit_scope("quality.validation", settings.data_dir, dt=day, instrument=instrument.key),
    ):
        checksums = day_checksums(settings, instrument, day, source)
        figures = checksums.figures if checksums is not None else None
        return validate_instrument_day(day_files(settings, instrument, day), counters, figures)


@reads_lake
def validate_days(context: dg.AssetExecutionContext, settings: PipelineSettings):
    """Validate every instrument-day of the run against the vendor, its own sequence and the grid."""
    # The report describes every day that has books, also one whose books failed a blocking check
    # (book_in_sync, no_crossed_books): that is the day a reader needs it for. Days without books
    # (a raw check blocked the rebuild) are left out.
    days = days_to_run(context, checks_block=False)
    judged = {  # no source data that day: nothing to judge
        day: [i for i in settings.universe if i.key not in missing_instruments(context.instance, day)] for day in days
    }
    tasks = [
        (instrument, day, rebuild_counters(context.instance, instrument.key, day))
        for day in days
        for instrument in judged[day]
    ]
    # Instrument-days on PIPELINE_WORKERS processes; results (and their metrics) in serial order.
    outcomes = iter(run_tasks(settings, validation_task, tasks))
    validations = []
    for day in days:
        day_validations = []
        for _ in judged[day]:
            outcome = next(outcomes)
            outcome.replay()
            day_validations.append(outcome.value)
        report = write_report(settings.shared_dir, day, day_validations, check_verdicts(context, day))
        daily = daily_frame(day_validations)
        context.add_asset_metadata(_day_metadata(daily, str(report)), asset_key=DAILY, partition_key=day.isoformat())
        hourly_rows = daily.height * 24
        context.add_asset_metadata(
            {"rows": hourly_rows, IO_MANAGER_ROW_COUNT: hourly_rows}, asset_key=HOURLY, partition_key=day.isoformat()
        )
        context.log.info(
            f"validation {day}: {daily.height} instrument(s), report {report}",
            extra=stage_log_fields([DAILY, HOURLY], day),
        )
        validations.extend(day_validations)
    daily, hourly = daily_frame(validations), hourly_frame(validations)
    # Only per-run facts here: Dagster copies this metadata into every day's materialization.
    yield dg.Output(daily, output_name="validation_reports", metadata={"days_in_run": len(days)})
    yield dg.Output(hourly, output_name="validation_reports_hourly", metadata={"days_in_run": len(days)})


def build_quality_assets(
    partitions_def: dg.PartitionsDefinition,
    backfill_policy: dg.BackfillPolicy = SINGLE_RUN,
    warehouse_pool: str | None = DUCKDB_POOL,
) -> list[dg.AssetsDefinition]:
    """`warehouse_pool`: the pool of the steps that write the warehouse (None: a DuckLake catalog, many writers)."""

    @dg.multi_asset(
        outs={
            "validation_reports": warehouse_table(
                DAILY,
                "One row per instrument-day: vendor agreement, gaps, clock skew, precision, "
                "crossed books, trades against the touch, capture fidelity, the exchange's book checksums "
                "(docs/data-formats.md).",
                group_name=QUALITY_GROUP,
                kinds={"duckdb", "polars"},
            ),
            "validation_reports_hourly": warehouse_table(
                HOURLY,
                "24 rows per instrument-day: gaps detected and filled, clock-skew distribution.",
                group_name=QUALITY_GROUP,
                kinds={"duckdb", "polars"},
            ),
        },
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        deps=UPSTREAM,
        pool=warehouse_pool,  # the IO manager writes main.validation_reports* in the warehouse
    )
    def validation_reports(context: dg.AssetExecutionContext, pipeline: dg.ResourceParam[PipelineSettings]):
        """Validate every instrument-day of the run against the vendor, its own sequence and the grid."""
        yield from validate_days(context, pipeline)

    return [validation_reports]
