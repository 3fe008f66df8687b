"""The warehouse IO manager on a warehouse of the test's, and a daily-partitioned table asset
(`reports`) that writes through it."""

from __future__ import annotations

from types import SimpleNamespace

import dagster as dg
import polars as pl

DAYS = dg.StaticPartitionsDefinition(["2024-03-01", "2024-03-02"])


def warehouse_io_manager(warehouse) -> dict[str, object]:
    """The IO manager on the warehouse `warehouse` (a file path or a WarehouseTarget), as resource `warehouse`."""
    from market_pipeline.core.lake.warehouse import WarehouseTarget
    from market_pipeline.defs.common.warehouse_io import WarehouseIOManager

    target = warehouse if isinstance(warehouse, WarehouseTarget) else WarehouseTarget(warehouse)
    # `pipeline`: anything with the settings' `warehouse` attribute
    pipeline = dg.ResourceDefinition.hardcoded_resource(SimpleNamespace(warehouse=target))
    manager = WarehouseIOManager(pipeline=pipeline, database=target.describe(), schema="main")
    return {"warehouse": manager}


def table_asset(frame: pl.DataFrame) -> dg.AssetsDefinition:
    @dg.asset(name="reports", io_manager_key="warehouse", partitions_def=DAYS, metadata={"partition_expr": "dt"})
    def reports() -> pl.DataFrame:
        return frame

    return reports
