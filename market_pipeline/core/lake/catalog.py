"""DuckDB views over the Parquet lake, so analysts can query it with plain `duckdb`.

Each view reads a hive glob (`<table>/**/*.parquet`), which DuckDB expands when the view is
queried, so a view is created once and sees every partition written later: the steps that write
Parquet never touch the warehouse (and need no `duckdb` pool). A glob that matches no file fails
when the view is created, so a view is created only once its table has a file
(`ensure_lake_views`, called by the warehouse writer `lake_views` and by the CLI after a run).

With lake encryption on, the views name the lake key (`parquet_io.duckdb_read_parquet`): a
connection reads them only after `parquet_io.register_duckdb_key` (or the same PRAGMA by hand);
`warehouse.connect` registers it. The views are the same SQL in a DuckLake catalog (`warehouse.py`),
which stores them as text and binds them when they are queried.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from market_pipeline.core.lake import parquet_io, storage, warehouse
from market_pipeline.core.lake.warehouse import WarehouseTarget

if TYPE_CHECKING:
    import duckdb


@dataclass(frozen=True)
class LakeView:
    schema: str
    view: str
    root: str  # under the lake directory
    table: str

    def files_root(self, lake_dir: Path) -> Path:
        # "." left out: a remote lake's path keeps it (s3://b/p/./books names no object)
        return (lake_dir if self.root == "." else lake_dir / self.root) / self.table


RAW_TABLES = ("trades", "book", "book_delta_v2", "book_ticker", "depth_snapshot")
LAKE_VIEWS: tuple[LakeView, ...] = (
    *(LakeView("raw", table, "raw", table) for table in RAW_TABLES),
    LakeView("books", "reconstructed_books", ".", "books"),
    LakeView("books", "vendor_agreement", ".", "book_agreement"),
)
# Created by the bars stage's warehouse step (`ohlcv_bars_summary`), not by `lake_views`.
BARS_VIEWS: tuple[LakeView, ...] = (LakeView("bars", "ohlcv", ".", "bars"),)


def hive_glob(table_dir: Path) -> str:
    """Every Parquet file under a hive-partitioned table directory, for a DuckDB view."""
    return str(table_dir.resolve() / "**" / "*.parquet")


def has_files(table_dir: Path) -> bool:
    return any(p.name.endswith(".parquet") for p in storage.iter_files(table_dir))


def view_sql(schema: str, view: str, table_dir: Path) -> str:
    source = parquet_io.duckdb_read_parquet(hive_glob(table_dir), hive_partitioning="true", union_by_name="true")
    return f'CREATE VIEW IF NOT EXISTS "{schema}"."{view}" AS SELECT * FROM {source}'


def missing_views(target: WarehouseTarget, lake_dir: Path, views: tuple[LakeView, ...] = LAKE_VIEWS) -> list[LakeView]:
    """The views whose table has files but which the warehouse does not have yet (read-only)."""
    candidates = [v for v in views if has_files(v.files_root(lake_dir))]
    if not candidates or not target.exists():
        return candidates
    with warehouse.connect(target, read_only=True) as con:
        existing = set(
            con.execute(
                "SELECT schema_name, view_name FROM duckdb_views() "
                "WHERE NOT internal AND database_name = current_database()"
            ).fetchall()
        )
    return [v for v in candidates if (v.schema, v.view) not in existing]


def ensure_lake_views(target: WarehouseTarget, lake_dir: Path, views: tuple[LakeView, ...] = LAKE_VIEWS) -> list[str]:
    """Create the lake views that are missing and whose table has a file; returns their names.

    Existing views are left alone (their glob already covers new partitions). Writes the
    warehouse only when a view is missing: callers in Dagster hold the `duckdb` pool.
    """
    todo = missing_views(target, lake_dir, views)
    if not todo:
        return []
    with warehouse.connect(target) as con:
        warehouse.write_transaction(con, lambda c: _create_views(c, [(v, v.files_root(lake_dir)) for v in todo]))
    return [f"{v.schema}.{v.view}" for v in todo]


def _create_views(con: duckdb.DuckDBPyConnection, views: list[tuple[LakeView, Path]]) -> None:
    """Create each view over its table directory (one transaction: another writer of a DuckLake
    catalog creating the same view at once makes it run again, then finding the views there)."""
    for v, table_dir in views:
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{v.schema}"')
        con.execute(view_sql(v.schema, v.view, table_dir))
