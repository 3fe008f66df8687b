"""The one partitioning scheme: UTC days from PIPELINE_START_DATE."""

from __future__ import annotations

import dagster as dg

from market_pipeline.settings import load_settings

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=load_settings().start_date.isoformat(), timezone="UTC", end_offset=0
)
