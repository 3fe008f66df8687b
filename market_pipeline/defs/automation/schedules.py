"""The daily pipeline job and its schedule: every asset for yesterday's UTC day.

One job over the whole asset graph (not declarative automation): a day's raw import, book
rebuild, checks and reports run as ONE run, so a day has one place to look at, blocking checks
stop the downstream steps of that run, and the duckdb pool already serialises the writers.
The new-day sensor (automation/sensors.py) targets the same job, so downstream stages always follow.
"""

from __future__ import annotations

import dagster as dg

from market_pipeline.defs.automation.freshness import FRESHNESS_JOB

DAILY_PIPELINE_JOB = "daily_pipeline"
DAILY_PIPELINE_SCHEDULE = "daily_pipeline_schedule"
FRESHNESS_SCHEDULE = "freshness_checks_schedule"


def build_daily_pipeline_job(
    freshness: dg.AssetSelection, run_config: dict | None = None
) -> dg.UnresolvedAssetJobDefinition:
    """Every asset and check of the code location but the freshness checks, for one day.

    `run_config` is the default config of its runs (the schedule's and the new-day sensor's)."""
    return dg.define_asset_job(
        DAILY_PIPELINE_JOB,
        selection=dg.AssetSelection.all() - freshness,  # every asset is daily-partitioned alike
        config=run_config,
        description="Every asset and asset check (but freshness) for one UTC day (a partition), in one run.",
    )


def build_daily_pipeline_schedule(
    job: dg.UnresolvedAssetJobDefinition, *, hour_utc: int, default_status: dg.DefaultScheduleStatus
) -> dg.ScheduleDefinition:
    # The daily partitions end at the last complete UTC day (end_offset=0), so the partition a tick
    # at HH:00 UTC on day D targets is D-1: yesterday.
    return dg.build_schedule_from_partitioned_job(
        job,
        name=DAILY_PIPELINE_SCHEDULE,
        description=f"Materializes yesterday's partition of every asset at "
        f"{hour_utc:02d}:00 UTC (PIPELINE_SCHEDULE__DAILY_HOUR_UTC).",
        hour_of_day=hour_utc,
        minute_of_hour=0,
        default_status=default_status,
    )


def build_freshness_job(
    freshness: dg.AssetSelection, run_config: dict | None = None
) -> dg.UnresolvedAssetJobDefinition:
    # Freshness is about "now", not about the day being materialized: it is judged only by its own
    # job on its own schedule, so backfilling old days never raises a freshness alert.
    return dg.define_asset_job(
        FRESHNESS_JOB,
        selection=freshness,
        config=run_config,
        description="Is the newest due daily partition of each asset materialized (checks.freshness_max_lag_hours)?",
    )


def build_freshness_schedule(
    job: dg.UnresolvedAssetJobDefinition, *, default_status: dg.DefaultScheduleStatus
) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=FRESHNESS_SCHEDULE,
        job=job,
        cron_schedule="15 * * * *",  # hourly: a late day is noticed within the hour
        execution_timezone="UTC",
        default_status=default_status,
    )
