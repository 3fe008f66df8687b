"""The quality stage: `validation_reports` (daily and hourly tables, and the day's HTML report)."""

import dagster as dg

from market_pipeline.defs.common.backfill import SINGLE_RUN
from market_pipeline.defs.common.resources import DUCKDB_POOL
from market_pipeline.defs.quality.assets import build_quality_assets


def build_quality_definitions(
    partitions_def: dg.PartitionsDefinition,
    backfill_policy: dg.BackfillPolicy = SINGLE_RUN,
    warehouse_pool: str | None = DUCKDB_POOL,
) -> dg.Definitions:
    """The quality stage's assets, partitioned by `partitions_def` and split into runs by `backfill_policy`."""
    return dg.Definitions(assets=build_quality_assets(partitions_def, backfill_policy, warehouse_pool))
