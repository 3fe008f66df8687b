"""The warehouse IO manager appends to a table made by an older release that lacked some columns."""

from __future__ import annotations

import dagster as dg
import duckdb
import polars as pl

DAYS = dg.StaticPartitionsDefinition(["2024-03-01", "2024-03-02"])


def _table_asset(frame: pl.DataFrame) -> dg.AssetsDefinition:
    @dg.asset(name="reports", io_manager_key="warehouse", partitions_def=DAYS, metadata={"partition_expr": "dt"})
    def reports() -> pl.DataFrame:
        return frame

    return reports


def test_new_columns_are_added_and_values_land_under_their_names(tmp_path):
    from market_pipeline.defs.common.warehouse_io import WarehouseIOManager

    warehouse = tmp_path / "warehouse.duckdb"
    resources = {"warehouse": WarehouseIOManager(database=str(warehouse), schema="main")}
    old = pl.DataFrame({"dt": ["2024-03-01"], "gaps": [1], "share": [0.5]})
    # A newer release: a column in the middle, and the old ones reordered.
    new = pl.DataFrame({"dt": ["2024-03-02"], "share": [0.25], "unsynced": [7], "gaps": [3]})
    assert dg.materialize([_table_asset(old)], resources=resources, partition_key="2024-03-01").success
    assert dg.materialize([_table_asset(new)], resources=resources, partition_key="2024-03-02").success
    with duckdb.connect(str(warehouse), read_only=True) as con:
        columns = [r[0] for r in con.execute("DESCRIBE main.reports").fetchall()]
        rows = con.execute("SELECT * FROM main.reports ORDER BY dt").fetchall()
    assert columns == ["dt", "gaps", "share", "unsynced"]
    assert rows == [("2024-03-01", 1, 0.5, None), ("2024-03-02", 3, 0.25, 7)]
