"""The daily pipeline job and its schedule: every asset for yesterday's UTC day.

One job over the whole asset graph (not declarative automation): a day's raw import, book
rebuild, checks and reports run as ONE run, so a day has one place to look at, blocking checks
stop the downstream steps of that run, and the duckdb pool already serialises the writers.
The new-day sensor (raw/sensors.py) targets the same job, so downstream stages always follow.
"""

import dagster as dg

from market_pipeline.defs.books.checks import book_freshness
from market_pipeline.defs.automation.freshness import FRESHNESS_JOB
from market_pipeline.defs.raw.checks import raw_freshness
from market_pipeline.settings import load_settings

_settings = load_settings()
AUTOMATION_DEFAULT_STATUS = _settings.schedule.default_status  # "running" | "stopped"

# Freshness is about "now", not about the day being materialized: it is judged only by its own
# job on its own schedule, so backfilling old days never raises a freshness alert.
FRESHNESS_CHECKS = dg.AssetSelection.checks(raw_freshness, book_freshness)

daily_pipeline_job = dg.define_asset_job(
    "daily_pipeline",
    selection=dg.AssetSelection.all() - FRESHNESS_CHECKS,  # partitioned by daily_partitions, like every asset
    description="Every asset and asset check (but freshness) for one UTC day (a partition), in one run.",
)

# daily_partitions end at the last complete UTC day (end_offset=0), so the partition a tick at
# HH:00 UTC on day D targets is D-1: yesterday.
daily_pipeline_schedule = dg.build_schedule_from_partitioned_job(
    daily_pipeline_job,
    name="daily_pipeline_schedule",
    description=f"Materializes yesterday's partition of every asset at "
    f"{_settings.schedule.daily_hour_utc:02d}:00 UTC (PIPELINE_SCHEDULE__DAILY_HOUR_UTC).",
    hour_of_day=_settings.schedule.daily_hour_utc,
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus(AUTOMATION_DEFAULT_STATUS.upper()),
)

freshness_checks_job = dg.define_asset_job(
    FRESHNESS_JOB,
    selection=FRESHNESS_CHECKS,
    description="Is the newest due daily partition of each asset materialized (checks.freshness_max_lag_hours)?",
)
freshness_checks_schedule = dg.ScheduleDefinition(
    name="freshness_checks_schedule",
    job=freshness_checks_job,
    cron_schedule="15 * * * *",  # hourly: a late day is noticed within the hour
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus(AUTOMATION_DEFAULT_STATUS.upper()),
)

raw_jobs: list = [daily_pipeline_job, freshness_checks_job]
raw_schedules: list = [daily_pipeline_schedule, freshness_checks_schedule]
