"""DuckDB views over the Parquet lake, so analysts can query it with plain `duckdb`."""

from __future__ import annotations

from pathlib import Path

import duckdb

from market_pipeline.core.lake.paths import table_glob


def create_parquet_view(warehouse: Path, schema: str, view: str, root: Path, table: str) -> bool:
    """(Re)create `schema.view` over every partition of `table` under `root`.

    Returns False (and leaves any existing view alone) while the table has no files yet,
    because DuckDB binds a view's file list when the view is created.
    """
    pattern = table_glob(root.resolve(), table)
    if not any(root.glob(f"{table}/*/*/*/*.parquet")):
        return False
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        con.execute(
            f'CREATE OR REPLACE VIEW "{schema}"."{view}" AS '
            f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = true, union_by_name = true)"
        )
    return True
