"""The books stage: `reconstructed_books` and its per-day checks."""

import dagster as dg

from market_pipeline.defs.books.assets import build_book_assets
from market_pipeline.defs.books.checks import build_book_checks
from market_pipeline.defs.common.backfill import SINGLE_RUN
from market_pipeline.defs.common.resources import DUCKDB_POOL


def build_book_definitions(
    partitions_def: dg.PartitionsDefinition,
    backfill_policy: dg.BackfillPolicy = SINGLE_RUN,
    warehouse_pool: str | None = DUCKDB_POOL,
) -> dg.Definitions:
    """The books stage's asset and checks, partitioned by `partitions_def` and split into runs by `backfill_policy`."""
    return dg.Definitions(
        assets=build_book_assets(partitions_def, backfill_policy, warehouse_pool),
        asset_checks=build_book_checks(partitions_def),
    )
