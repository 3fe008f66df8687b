"""The raw stage: one asset per vendor table and the per-day checks on the raw lake."""

import dagster as dg

from market_pipeline.defs.raw.assets import build_raw_assets
from market_pipeline.defs.raw.checks import build_raw_checks


def build_raw_definitions(partitions_def: dg.PartitionsDefinition) -> dg.Definitions:
    """The raw stage's assets and checks, partitioned by `partitions_def`."""
    return dg.Definitions(assets=build_raw_assets(partitions_def), asset_checks=build_raw_checks(partitions_def))
