"""The bars stage: `ohlcv_bars`, its per-day checks, and `ohlcv_bars_summary` in the warehouse."""

import dagster as dg

from market_pipeline.defs.bars.assets import build_bars_assets
from market_pipeline.defs.bars.checks import build_bars_checks
from market_pipeline.defs.common.backfill import SINGLE_RUN
from market_pipeline.defs.common.resources import DUCKDB_POOL


def build_bars_definitions(
    partitions_def: dg.PartitionsDefinition,
    backfill_policy: dg.BackfillPolicy = SINGLE_RUN,
    warehouse_pool: str | None = DUCKDB_POOL,
) -> dg.Definitions:
    """The bars stage's assets and checks, partitioned by `partitions_def` and split into runs by `backfill_policy`."""
    return dg.Definitions(
        assets=build_bars_assets(partitions_def, backfill_policy, warehouse_pool),
        asset_checks=build_bars_checks(partitions_def),
    )
