"""Resources shared by every domain, configured in one place from the pipeline settings."""

from __future__ import annotations

import dagster as dg
from dagster_duckdb_polars import DuckDBPolarsIOManager

from market_pipeline.settings import PipelineSettings, load_settings

DUCKDB_POOL = "duckdb"  # one writer at a time: DuckDB allows one writer per database file
WAREHOUSE_IO_MANAGER = "warehouse_io_manager"  # tables in $PIPELINE_DATA_DIR/warehouse.duckdb


class PipelineResource(dg.ConfigurableResource):
    """The pipeline settings (config.yaml, .env, PIPELINE_* variables), read when a run starts.

    `data_dir` overrides PIPELINE_DATA_DIR, e.g. for tests and one-off runs.
    """

    data_dir: str | None = None

    def settings(self) -> PipelineSettings:
        overrides = {"data_dir": self.data_dir} if self.data_dir else {}
        return load_settings(**overrides)


def warehouse_table(key: dg.AssetKey, description: str, **kwargs: object) -> dg.AssetOut:
    """An output stored as a warehouse table with a `dt` DATE column.

    The DuckDB IO manager first deletes `dt >= 'start 00:00:00' AND dt < 'end 00:00:00'`; DuckDB
    casts those literals to DATE, so a range run replaces exactly its days' rows.
    """
    return dg.AssetOut(
        key=key,
        io_manager_key=WAREHOUSE_IO_MANAGER,
        metadata={"partition_expr": "dt"},
        description=description,
        **kwargs,
    )


def build_resources(settings: PipelineSettings | None = None) -> dict[str, object]:
    """Every resource of the code location, from the settings (loaded now when not given)."""
    settings = settings or load_settings()
    return {
        "pipeline": PipelineResource(data_dir=str(settings.data_dir.resolve())),
        WAREHOUSE_IO_MANAGER: DuckDBPolarsIOManager(
            database=str(settings.warehouse_path.resolve()), schema="main"
        ),
    }
