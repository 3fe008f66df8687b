"""Every table of a warehouse (the columns that describe the run left out) and every lake view,
as frames in a fixed row order: two warehouses compared whole."""

from __future__ import annotations

from market_pipeline.core.lake.warehouse import WarehouseTarget

# Columns of pipeline_metrics that describe the run itself (durations, memory, its id), not the data.
RUN_COLUMNS = ("_seconds", "_events_per_s", "_peak_rss_mb", "_run_id")


def warehouse_tables(target: WarehouseTarget, with_views: bool) -> dict[str, object]:
    """Every table of the warehouse (run columns left out) and, read through DuckDB, every lake view."""
    from market_pipeline.core.lake import warehouse

    here = "database_name = current_database()"
    with warehouse.connect(target, read_only=True) as con:
        tables = con.execute(
            f"SELECT schema_name, table_name FROM duckdb_tables() WHERE {here} ORDER BY 1, 2"
        ).fetchall()
        result = {}
        for schema, table in tables:
            frame = con.execute(f'SELECT * FROM "{schema}"."{table}"').pl()
            frame = frame.select([c for c in frame.columns if not c.endswith(RUN_COLUMNS)])
            result[f"{schema}.{table}"] = frame.sort(frame.columns)  # a table's rows have no order
        if with_views:
            views = con.execute(
                f"SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal AND {here}"
            ).fetchall()
            for schema, view in sorted(views):
                frame = con.execute(f'SELECT * FROM "{schema}"."{view}"').pl()
                result[f"{schema}.{view}"] = frame.sort(frame.columns)
    return result
