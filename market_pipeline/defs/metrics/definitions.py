"""The metrics stage: `pipeline_metrics` and `pipeline_metrics_hourly` in the warehouse."""

import dagster as dg

from market_pipeline.defs.metrics.assets import build_metrics_assets


def build_metrics_definitions(partitions_def: dg.PartitionsDefinition) -> dg.Definitions:
    """The metrics stage's assets, partitioned by `partitions_def`."""
    return dg.Definitions(assets=build_metrics_assets(partitions_def))
