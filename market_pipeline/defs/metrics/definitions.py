"""The metrics stage: `pipeline_metrics` and `pipeline_metrics_hourly` in the warehouse."""

import dagster as dg

from market_pipeline.defs.common.backfill import SINGLE_RUN
from market_pipeline.defs.common.resources import DUCKDB_POOL
from market_pipeline.defs.metrics.assets import build_metrics_assets


def build_metrics_definitions(
    partitions_def: dg.PartitionsDefinition,
    backfill_policy: dg.BackfillPolicy = SINGLE_RUN,
    warehouse_pool: str | None = DUCKDB_POOL,
) -> dg.Definitions:
    """The metrics stage's assets, partitioned by `partitions_def` and split into runs by `backfill_policy`."""
    return dg.Definitions(assets=build_metrics_assets(partitions_def, backfill_policy, warehouse_pool))
