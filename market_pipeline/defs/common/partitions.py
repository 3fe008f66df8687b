"""The one partitioning scheme: UTC days from the settings' start date (PIPELINE_START_DATE).

Built by `market_pipeline.definitions` from the settings it is given and handed to each stage's
builder, so every asset and check of a code location shares the same days.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

# Dagster's run tags for one partition and for a partition range (documented tag names; `dagster`
# does not export constants for them). A single-run backfill of a range carries the range tags.
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def daily_partitions(start_date: dt.date) -> dg.DailyPartitionsDefinition:
    """UTC days from `start_date` to the last complete day (end_offset=0: today is not a partition)."""
    return dg.DailyPartitionsDefinition(start_date=start_date.isoformat(), timezone="UTC", end_offset=0)
