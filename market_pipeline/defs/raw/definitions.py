"""The raw stage: one asset per vendor table and the per-day checks on the raw lake."""

import dagster as dg

from market_pipeline.defs.common.backfill import SINGLE_RUN
from market_pipeline.defs.raw.assets import build_raw_assets
from market_pipeline.defs.raw.checks import build_raw_checks


def build_raw_definitions(
    partitions_def: dg.PartitionsDefinition, backfill_policy: dg.BackfillPolicy = SINGLE_RUN
) -> dg.Definitions:
    """The raw stage's assets and checks, partitioned by `partitions_def` and split into runs by `backfill_policy`."""
    return dg.Definitions(
        assets=build_raw_assets(partitions_def, backfill_policy), asset_checks=build_raw_checks(partitions_def)
    )
