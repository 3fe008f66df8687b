"""The agreement stage: `source_agreement` (daily and hourly warehouse tables) and its checks."""

import dagster as dg

from market_pipeline.defs.agreement.assets import build_agreement_assets
from market_pipeline.defs.agreement.checks import build_agreement_checks
from market_pipeline.defs.common.backfill import SINGLE_RUN
from market_pipeline.defs.common.resources import DUCKDB_POOL


def build_agreement_definitions(
    partitions_def: dg.PartitionsDefinition,
    backfill_policy: dg.BackfillPolicy = SINGLE_RUN,
    blocking: bool = False,
    warehouse_pool: str | None = DUCKDB_POOL,
) -> dg.Definitions:
    """The agreement stage's asset and checks (blocking when `agreement.blocking` says so)."""
    return dg.Definitions(
        assets=build_agreement_assets(partitions_def, backfill_policy, warehouse_pool),
        asset_checks=build_agreement_checks(partitions_def, blocking),
    )
