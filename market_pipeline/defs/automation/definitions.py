"""The automation stage: the whole-graph daily job and its schedule, the freshness checks with
their job and schedule, the new-day sensor, and the sensor removing a successful run's scratch.

It works on the assets the code location merged (`market_pipeline.definitions`): every
daily-partitioned asset gets a freshness check, and the new-day sensor watches every asset that
names a vendor `lake_table` (the raw ones), so a new asset needs no hand-kept list here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import dagster as dg

from market_pipeline.defs.automation.freshness import build_freshness_checks
from market_pipeline.defs.automation.schedules import (
    build_daily_pipeline_job,
    build_daily_pipeline_schedule,
    build_freshness_job,
    build_freshness_schedule,
)
from market_pipeline.defs.automation.scratch import build_scratch_sensor
from market_pipeline.defs.automation.sensors import build_new_source_days_sensor, raw_tables

FRESHNESS_CHECKS = "freshness"  # the name of the check step judging every daily asset


def daily_asset_keys(
    assets: Sequence[dg.AssetsDefinition], partitions_def: dg.PartitionsDefinition
) -> list[dg.AssetKey]:
    """The keys of every asset partitioned by `partitions_def`, in the order given."""
    return [key for asset in assets for key in asset.keys if asset.partitions_def == partitions_def]


def build_automation_definitions(
    assets: Sequence[dg.AssetsDefinition],
    partitions_def: dg.TimeWindowPartitionsDefinition,
    *,
    default_status: Literal["running", "stopped"],
    daily_hour_utc: int,
    source_sensor_interval_seconds: int,
    run_config: dict | None = None,
) -> dg.Definitions:
    """Jobs, schedules, sensors and freshness checks over `assets` (every stage's, merged).

    `default_status` is the daily schedule's, the freshness schedule's and the new-day sensor's
    status until toggled in the UI (schedule.default_status); `run_config` the jobs' default run
    config (e.g. which run logger to use).
    """
    freshness = build_freshness_checks(FRESHNESS_CHECKS, daily_asset_keys(assets, partitions_def))
    freshness_selection = dg.AssetSelection.checks(freshness)
    daily_job = build_daily_pipeline_job(freshness_selection, run_config)
    freshness_job = build_freshness_job(freshness_selection, run_config)
    schedule_status = dg.DefaultScheduleStatus(default_status.upper())
    return dg.Definitions(
        asset_checks=[freshness],
        jobs=[daily_job, freshness_job],
        schedules=[
            build_daily_pipeline_schedule(daily_job, hour_utc=daily_hour_utc, default_status=schedule_status),
            build_freshness_schedule(freshness_job, default_status=schedule_status),
        ],
        sensors=[
            build_new_source_days_sensor(
                daily_job,
                partitions_def,
                raw_tables(assets),
                interval_seconds=source_sensor_interval_seconds,
                default_status=dg.DefaultSensorStatus(default_status.upper()),
            ),
            build_scratch_sensor(source_sensor_interval_seconds),
        ],
    )
