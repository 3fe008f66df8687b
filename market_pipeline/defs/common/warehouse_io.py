"""The warehouse IO manager: dagster-duckdb-polars, plus columns added by a newer release, and a
damaged `warehouse.duckdb` named at once (`catalog.check_warehouse`) instead of retried as if locked.

`DuckDBPolarsTypeHandler` creates a table from the first output and later appends with a
positional `INSERT ... SELECT *`: once a release adds a column to a warehouse table (a new
`validation_reports` figure), every write into a warehouse made before it would fail on the
column count, or put values under the wrong names if the count happened to match. This handler
first adds the output's new columns to the table (`ALTER TABLE ... ADD COLUMN`, null for the rows
already there) and orders the output like the table, so the inherited append lines up by name.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from dagster import OutputContext
from dagster_duckdb_polars import DuckDBPolarsIOManager, DuckDBPolarsTypeHandler

from market_pipeline.core.lake.catalog import check_warehouse


class EvolvingPolarsTypeHandler(DuckDBPolarsTypeHandler):
    # table_slice is Dagster's TableSlice, which only a private module exports.
    def handle_output(self, context: OutputContext, table_slice, obj: pl.DataFrame, connection) -> None:
        if not obj.is_empty():
            obj = align_to_table(connection, f"{table_slice.schema}.{table_slice.table}", obj)
        super().handle_output(context, table_slice, obj, connection)


def align_to_table(connection, table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with the table's columns in the table's order, after adding its new ones to the table."""
    exists = connection.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name || '.' || table_name = ?", [table]
    ).fetchone()[0]
    if not exists:
        return frame
    frame_arrow = frame.to_arrow()  # noqa: F841 - DuckDB reads the local variable by name
    types = dict(
        connection.execute("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM frame_arrow)").fetchall()
    )
    present = [row[0] for row in connection.execute(f"SELECT column_name FROM (DESCRIBE {table})").fetchall()]
    for name in frame.columns:
        if name not in present:
            connection.execute(f'ALTER TABLE {table} ADD COLUMN "{name}" {types[name]}')
            present.append(name)
    return frame.select([pl.col(c) if c in frame.columns else pl.lit(None).alias(c) for c in present])


class WarehouseIOManager(DuckDBPolarsIOManager):
    def create_io_manager(self, context):
        # A damaged file fails the step at once, naming it, instead of dagster-duckdb retrying it.
        check_warehouse(Path(self.database))
        return super().create_io_manager(context)

    @staticmethod
    def type_handlers() -> list[DuckDBPolarsTypeHandler]:
        return [EvolvingPolarsTypeHandler()]
