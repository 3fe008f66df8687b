"""The Dagster code location: merges the per-domain modules."""

from __future__ import annotations

import dagster as dg

from market_pipeline.book.assets import book_assets
from market_pipeline.raw.assets import raw_assets
from market_pipeline.resources import PipelineResource

defs = dg.Definitions(
    assets=[*raw_assets, *book_assets],
    resources={"pipeline": PipelineResource()},
)
