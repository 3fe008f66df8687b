"""DuckDB views over the Parquet lake, so analysts can query it with plain `duckdb`.

Each view reads a hive glob (`<table>/**/*.parquet`), which DuckDB expands when the view is
queried, so a view is created once and sees every partition written later: the steps that write
Parquet never touch the warehouse (and need no `duckdb` pool). A glob that matches no file fails
when the view is created, so a view is created only once its table has a file
(`ensure_lake_views`, called by the warehouse writer `lake_views` and by the CLI after a run).

With lake encryption on, the views name the lake key (`parquet_io.duckdb_read_parquet`): a
connection reads them only after `parquet_io.register_duckdb_key` (or the same PRAGMA by hand).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from market_pipeline.core.errors import IntegrityError
from market_pipeline.core.lake import parquet_io, storage

LOCK_WAIT_SECONDS = 120.0  # how long view creation waits for another process's lock on the warehouse
LOCK_POLL_SECONDS = 0.1


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


def missing_views(warehouse: Path, lake_dir: Path, views: tuple[LakeView, ...] = LAKE_VIEWS) -> list[LakeView]:
    """The views whose table has files but which the warehouse does not have yet (read-only)."""
    candidates = [v for v in views if has_files(v.files_root(lake_dir))]
    if not candidates or not warehouse.is_file():
        return candidates
    with connect_when_free(warehouse, read_only=True) as con:
        existing = set(con.execute("SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal").fetchall())
    return [v for v in candidates if (v.schema, v.view) not in existing]


class WarehouseDamaged(IntegrityError):
    """warehouse.duckdb exists but DuckDB cannot read it: not a database file, or a corrupt block."""

    def __init__(self, path: Path, error: Exception) -> None:
        self.path = path
        super().__init__(
            f"{path} is damaged ({str(error).splitlines()[0]}): move it aside and rebuild it from the lake "
            "(docs/runbook.md, Damaged warehouse)"
        )


def is_lock_conflict(exc: Exception) -> bool:
    """Whether a DuckDB error is another process's lock on the file (worth waiting for), not damage."""
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text)


def check_warehouse(warehouse: Path) -> None:
    """Raise WarehouseDamaged at once when the warehouse exists and DuckDB cannot open and read its
    catalog. A lock another process holds is no damage: that process opened the file.

    dagster-duckdb's IO manager retries every failed connection (about two minutes of backoff),
    so without this a damaged file looks like a held lock to each warehouse step in turn.
    """
    if not warehouse.is_file():
        return
    try:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()
    except duckdb.Error as exc:
        if not is_lock_conflict(exc):
            raise WarehouseDamaged(warehouse, exc) from None


def connect_when_free(
    warehouse: Path, read_only: bool = False, timeout_seconds: float = LOCK_WAIT_SECONDS
) -> duckdb.DuckDBPyConnection:
    """A connection to the warehouse, retried while another process holds its file lock.

    DuckDB lets one process write a database file, or several read it, never both: a backup
    (`market-pipeline backup` reads it for a fraction of a second) or an analyst's read-only
    session would otherwise fail the step that creates views. The IO manager retries the same way.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            return duckdb.connect(str(warehouse), read_only=read_only)
        except duckdb.Error as exc:
            if not is_lock_conflict(exc):
                raise WarehouseDamaged(warehouse, exc) from None
            if time.monotonic() >= deadline:
                raise
            time.sleep(LOCK_POLL_SECONDS)


def ensure_lake_views(warehouse: Path, lake_dir: Path, views: tuple[LakeView, ...] = LAKE_VIEWS) -> list[str]:
    """Create the lake views that are missing and whose table has a file; returns their names.

    Existing views are left alone (their glob already covers new partitions). Writes the
    warehouse only when a view is missing: callers in Dagster hold the `duckdb` pool.
    """
    todo = missing_views(warehouse, lake_dir, views)
    if not todo:
        return []
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    with parquet_io.register_duckdb_key(connect_when_free(warehouse)) as con:
        for v in todo:
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{v.schema}"')
            con.execute(view_sql(v.schema, v.view, v.files_root(lake_dir)))
    return [f"{v.schema}.{v.view}" for v in todo]


def create_parquet_view(warehouse: Path, schema: str, view: str, root: Path, table: str) -> bool:
    """Create `schema.view` over every partition of `table` under `root` unless it exists.

    Returns False while the table has no files yet (a glob without a match cannot be bound).
    """
    if not has_files(root / table):
        return False
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    with parquet_io.register_duckdb_key(connect_when_free(warehouse)) as con:
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        con.execute(view_sql(schema, view, root / table))
    return True
