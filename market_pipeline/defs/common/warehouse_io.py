"""The warehouse IO manager: dagster-duckdb-polars on `warehouse.connect` (the DuckDB file or a
DuckLake, core/lake/warehouse.py), each output written in one retried transaction, plus columns
added by a newer release, and a damaged `warehouse.duckdb` named at once (`warehouse.check_warehouse`)
instead of retried as if locked.

dagster-duckdb opens `duckdb.connect(database)` itself and deletes the partition's rows in one
statement before the type handler appends in others. Here the client connects through
`warehouse.connect` and leaves the delete to the handler, which deletes the run's days (`dt`),
adds new columns and appends in ONE transaction (`warehouse.write_transaction`): readers never see
a day half replaced, and a DuckLake commit that conflicts with another process's (both deleting from
one data file, both creating the table) runs again instead of failing the step.

`DuckDBPolarsTypeHandler` creates a table from the first output and later appends with a
positional `INSERT ... SELECT *`: once a release adds a column to a warehouse table (a new
`validation_reports` figure), every write into a warehouse made before it would fail on the
column count, or put values under the wrong names if the count happened to match. This handler
first adds the output's new columns to the table (`ALTER TABLE ... ADD COLUMN`, null for the rows
already there) and orders the output like the table, so the append lines up by name.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import polars as pl

# DbIOManager is the class dagster-duckdb's own factory returns; its public module re-exports it.
from dagster_duckdb.io_manager import DbIOManager, DuckDbClient
from dagster_duckdb_polars import DuckDBPolarsIOManager, DuckDBPolarsTypeHandler

from market_pipeline.core.lake import warehouse
from market_pipeline.core.lake.warehouse import WarehouseTarget
from market_pipeline.settings import PipelineSettings


class WarehouseClient(DuckDbClient):
    """dagster-duckdb's client on `warehouse.connect`; the partition's delete is the handler's."""

    def __init__(self, target: WarehouseTarget) -> None:
        self.target = target

    @contextmanager
    def connect(self, context, table_slice) -> Iterator:  # an instance method: DbIOManager calls it on the client
        with warehouse.connect(self.target) as con:
            yield con

    @staticmethod
    def delete_table_slice(context, table_slice, connection) -> None:
        """Nothing here: EvolvingPolarsTypeHandler deletes in the same transaction as its append."""


class EvolvingPolarsTypeHandler(DuckDBPolarsTypeHandler):
    # table_slice is Dagster's TableSlice, which only a private module exports.
    def handle_output(self, context: dg.OutputContext, table_slice, obj: pl.DataFrame, connection) -> None:
        warehouse.write_transaction(connection, lambda con: replace_slice(con, table_slice, obj))
        if obj.is_empty():
            context.log.warning(f"no rows for {table_slice.schema}.{table_slice.table}: its days' rows were deleted")
        context.add_output_metadata(
            {
                "row_count": obj.height,
                "dataframe_columns": dg.MetadataValue.table_schema(
                    dg.TableSchema(columns=[dg.TableColumn(name=n, type=str(t)) for n, t in obj.schema.items()])
                ),
            }
        )


def replace_slice(connection, table_slice, frame: pl.DataFrame) -> None:
    """Delete the slice's days from its table (when the table exists) and append `frame` (creating
    the table from it the first time), its columns aligned to the table's (new ones added first)."""
    table = f"{table_slice.schema}.{table_slice.table}"
    connection.execute(f"CREATE SCHEMA IF NOT EXISTS {table_slice.schema}")
    exists = table_exists(connection, table)
    if exists and not frame.is_empty():
        # Columns first: DuckDB refuses to commit an ALTER TABLE that follows a DELETE from the
        # same table in one transaction ("another transaction has altered this table"), which
        # failed every rerun of a day after a release added a column.
        frame = align_to_table(connection, table, frame)
    if exists:
        DuckDbClient.delete_table_slice(None, table_slice, connection)  # uses neither context nor more
    if frame.is_empty():
        return
    frame_arrow = frame.to_arrow()  # noqa: F841 - DuckDB reads the local variable by name
    verb = f"INSERT INTO {table}" if exists else f"CREATE TABLE {table} AS"
    connection.execute(f"{verb} SELECT * FROM frame_arrow")


def table_exists(connection, table: str) -> bool:
    return bool(
        connection.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name || '.' || table_name = ?",
            [table],
        ).fetchone()[0]
    )


def align_to_table(connection, table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with the table's columns in the table's order, after adding its new ones to the table."""
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
    """`database` only describes the warehouse (the UI shows it; no password); the connection comes
    from the `pipeline` resource's `settings.warehouse`, so the catalog's credentials never enter
    the resource config Dagster records and displays."""

    pipeline: dg.ResourceDependency[PipelineSettings]

    def create_io_manager(self, context) -> DbIOManager:
        target = self.pipeline.warehouse
        # A damaged file (or an unreachable catalog) fails the step at once, naming it.
        warehouse.check_warehouse(target)
        return DbIOManager(
            db_client=WarehouseClient(target),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="WarehouseIOManager",
        )

    @staticmethod
    def type_handlers() -> list[DuckDBPolarsTypeHandler]:
        return [EvolvingPolarsTypeHandler()]
