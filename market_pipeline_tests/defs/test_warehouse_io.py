"""The warehouse IO manager appends to a table made by an older release that lacked some columns."""

from __future__ import annotations

import dagster as dg
import duckdb
import polars as pl

from market_pipeline_tests.support.warehouse_io import table_asset as _table_asset
from market_pipeline_tests.support.warehouse_io import warehouse_io_manager


def test_new_columns_are_added_and_values_land_under_their_names(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    resources = warehouse_io_manager(warehouse)
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


def test_a_day_written_by_an_older_release_is_replaced_with_the_new_columns(tmp_path):
    """Rerunning a day after a release added a column: its old rows are deleted and the new ones
    appended in one transaction (the column is added before the delete: DuckDB refuses the other order)."""
    warehouse = tmp_path / "warehouse.duckdb"
    resources = warehouse_io_manager(warehouse)
    old = pl.DataFrame({"dt": ["2024-03-01", "2024-03-01"], "gaps": [1, 2]})
    new = pl.DataFrame({"dt": ["2024-03-01"], "gaps": [3], "checked": [61]})
    assert dg.materialize([_table_asset(old)], resources=resources, partition_key="2024-03-01").success
    assert dg.materialize([_table_asset(new)], resources=resources, partition_key="2024-03-01").success
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT * FROM main.reports ORDER BY dt").fetchall() == [("2024-03-01", 3, 61)]


def _damaged(path):
    """A warehouse that is no DuckDB file, and one whose catalog block fails its checksum."""
    path.write_bytes(b"not a database at all\n" * 100)
    good = path.with_name("good.duckdb")
    with duckdb.connect(str(good)) as con:
        con.execute("CREATE TABLE t AS SELECT range AS i FROM range(1000)")
    corrupt = bytearray(good.read_bytes())
    corrupt[8192:12288] = b"\x00" * 4096  # the first block after the headers
    bad_block = path.with_name("bad_block.duckdb")
    bad_block.write_bytes(bytes(corrupt))
    return [path, bad_block]


def test_a_damaged_warehouse_is_named_at_once_and_a_locked_one_is_not_damage(tmp_path):
    import subprocess
    import sys

    import pytest

    from market_pipeline.core.lake.warehouse import (
        WarehouseDamaged,
        WarehouseTarget,
        check_warehouse,
        connect_when_free,
    )

    for damaged in _damaged(tmp_path / "warehouse.duckdb"):
        with pytest.raises(WarehouseDamaged, match="Damaged warehouse") as info:
            check_warehouse(WarehouseTarget(damaged))
        assert str(damaged) in str(info.value)
        with pytest.raises(WarehouseDamaged):  # not waited on as if it were locked
            connect_when_free(damaged, timeout_seconds=3600)
    check_warehouse(WarehouseTarget(tmp_path / "absent.duckdb"))  # nothing materialized yet: no damage

    held = tmp_path / "held.duckdb"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,sys; c=duckdb.connect({str(held)!r}); print('ok', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ok"
        check_warehouse(WarehouseTarget(held))  # another process's lock: not damage
    finally:
        writer.communicate("")


def test_a_warehouse_step_fails_naming_a_damaged_warehouse(tmp_path):
    from market_pipeline.core.lake.warehouse import WarehouseDamaged

    warehouse = tmp_path / "warehouse.duckdb"
    _damaged(warehouse)
    resources = warehouse_io_manager(warehouse)
    frame = pl.DataFrame({"dt": ["2024-03-01"], "gaps": [1]})
    result = dg.materialize(
        [_table_asset(frame)], resources=resources, partition_key="2024-03-01", raise_on_error=False
    )
    assert not result.success
    errors = [  # the warehouse resource fails to initialise, naming the file
        e.event_specific_data.error for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"
    ]
    causes = [c for error in errors for c in (error, error.cause) if c is not None]
    assert any(c.cls_name == WarehouseDamaged.__name__ and str(warehouse) in c.message for c in causes), causes
