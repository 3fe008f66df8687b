"""The Dagster code location: the one place settings enter it.

`build_definitions(settings)` builds the daily partitions, their backfill policy
(`backfill_days_per_run`), the resources and each stage's definitions from the settings it is
given, then merges them (`dg.Definitions.merge`). Each stage folder under `defs/` is
self-contained: its `definitions.py` exposes a builder that takes only what it needs (the
partitions definition and backfill policy, intervals, statuses) and returns `dg.Definitions`;
stages refer to each other's assets by key, never by importing them. Automation (jobs,
schedules, the new-day sensor, freshness checks) is built last, over the merged assets.

`defs` below is what `dagster dev` / workspace.yaml load: a lazy `@dg.definitions` entry point,
built from the settings of the environment (config.yaml, `.env`, PIPELINE_* variables) when
Dagster loads the code location, not when this module is imported. The CLI builds its own, once,
from the settings it loaded (e.g. the demo's), without touching the environment.
"""

from __future__ import annotations

import dagster as dg

from market_pipeline.core.structured_logs import configure_console_logs
from market_pipeline.defs.agreement.definitions import build_agreement_definitions
from market_pipeline.defs.alerts.definitions import build_alert_definitions
from market_pipeline.defs.automation.definitions import build_automation_definitions
from market_pipeline.defs.bars.definitions import build_bars_definitions
from market_pipeline.defs.books.definitions import build_book_definitions
from market_pipeline.defs.common.backfill import backfill_policy
from market_pipeline.defs.common.json_logs import run_logger_config, run_loggers
from market_pipeline.defs.common.log_scrubbing import harden_code_location
from market_pipeline.defs.common.partitions import daily_partitions
from market_pipeline.defs.common.resources import DUCKDB_POOL, build_resources
from market_pipeline.defs.metrics.definitions import build_metrics_definitions
from market_pipeline.defs.quality.definitions import build_quality_definitions
from market_pipeline.defs.raw.definitions import build_raw_definitions
from market_pipeline.settings import PipelineSettings, load_settings

# PIPELINE_RUN_EXECUTOR: how the runs that Dagster launches (UI, schedules, sensors, backfills) execute.
# "multiprocess" is Dagster's default executor, which runs a process per step and still takes a run's
# `execution: {config: {in_process: {}}}` (the README's `dagster asset materialize --config-json`).
RUN_EXECUTORS = {"multiprocess": dg.multi_or_in_process_executor, "in_process": dg.in_process_executor}


def build_definitions(settings: PipelineSettings) -> dg.Definitions:
    """The code location for `settings`."""
    # Every Dagster process running pipeline code (code server, run and step workers) loads this:
    # umask 077 and secret scrubbing of every log record, Dagster's event log included.
    harden_code_location(settings)
    configure_console_logs(settings.log_format)  # the process's Python logging; run_loggers below: the runs'
    partitions = daily_partitions(settings.start_date)
    policy = backfill_policy(settings.backfill_days_per_run)  # one run per backfill, or runs of N days
    # The warehouse file has one writer at a time (the `duckdb` pool); a DuckLake catalog has many.
    pool = None if settings.warehouse.is_ducklake else DUCKDB_POOL
    stages = dg.Definitions.merge(
        build_raw_definitions(partitions, policy),
        build_book_definitions(partitions, policy, pool),
        build_quality_definitions(partitions, policy, pool),
        build_metrics_definitions(partitions, policy, pool),
        build_bars_definitions(partitions, policy, pool),
        # Only with a reference source (PIPELINE_SOURCES): otherwise the graph is as it was.
        *(
            [build_agreement_definitions(partitions, policy, settings.agreement.blocking, pool)]
            if settings.reference_sources
            else []
        ),
    )
    automation = build_automation_definitions(
        list(stages.assets or []),
        partitions,
        default_status=settings.schedule.default_status,
        daily_hour_utc=settings.schedule.daily_hour_utc,
        source_sensor_interval_seconds=settings.schedule.source_sensor_interval_seconds,
        run_config=run_logger_config(settings.log_format),
    )
    return dg.Definitions.merge(
        stages,
        automation,
        build_alert_definitions(settings.alerts.sensor_interval_seconds),
        dg.Definitions(
            resources=build_resources(settings),
            loggers=run_loggers(settings.log_format),
            executor=RUN_EXECUTORS[settings.run_executor],
        ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location of the environment's settings, built when Dagster loads it."""
    return build_definitions(load_settings())
