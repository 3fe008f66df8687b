"""The agreement stage: `source_agreement` (daily and hourly warehouse tables) and its checks."""

import dagster as dg

from market_pipeline.defs.agreement.assets import build_agreement_assets
from market_pipeline.defs.agreement.checks import build_agreement_checks
from market_pipeline.defs.common.backfill import SINGLE_RUN


def build_agreement_definitions(
    partitions_def: dg.PartitionsDefinition, backfill_policy: dg.BackfillPolicy = SINGLE_RUN, blocking: bool = False
) -> dg.Definitions:
    """The agreement stage's asset and checks (blocking when `agreement.blocking` says so)."""
    return dg.Definitions(
        assets=build_agreement_assets(partitions_def, backfill_policy),
        asset_checks=build_agreement_checks(partitions_def, blocking),
    )
