"""Resources shared by every stage, built in one place (`build_resources`) from the settings
`market_pipeline.definitions` was given.

The `pipeline` resource is the `PipelineSettings` object itself: assets, checks and sensors take
it as `pipeline: dg.ResourceParam[PipelineSettings]`. Initializing it (once per step or sensor
process) also hands core the settings' metric exporters, master key and lake encryption, so `core/` never reads
the settings.
"""

from __future__ import annotations

import dagster as dg

from market_pipeline.core.lake import parquet_io, storage
from market_pipeline.core.lake.lake_guard import check_lake_key
from market_pipeline.core.security import crypto
from market_pipeline.core.telemetry import telemetry
from market_pipeline.defs.common.warehouse_io import WarehouseIOManager
from market_pipeline.settings import PipelineSettings

DUCKDB_POOL = "duckdb"  # one writer at a time: DuckDB allows one writer per database file (no pool with DuckLake)
PIPELINE = "pipeline"  # the resource key of the settings
WAREHOUSE_IO_MANAGER = "warehouse_io_manager"  # tables in the warehouse (settings.warehouse)
# The warehouse IO manager records the rows of the whole output (every day of a range run) under
# this metadata key, and Dagster copies it into each day's materialization; the warehouse assets
# give each day its own count under the same key, so the UI plots the day's rows per partition.
IO_MANAGER_ROW_COUNT = "row_count"


def telemetry_config(settings: PipelineSettings, run_id: str | None = None) -> telemetry.TelemetryConfig:
    """The `metrics` settings as core's telemetry configuration, for a process working for `run_id`."""
    metrics = settings.metrics
    return telemetry.TelemetryConfig(
        metrics_dir=(settings.data_dir / "metrics").resolve() if metrics.jsonl else None,
        export_interval_seconds=metrics.export_interval_seconds,
        prometheus_port=metrics.prometheus_port,
        prometheus_host=metrics.prometheus_host,
        pushgateway_url=metrics.pushgateway_url,
        run_id=run_id,
    )


def use_settings(settings: PipelineSettings, run_id: str | None = None) -> PipelineSettings:
    """Hand core what this process needs from the settings (metric exporters, master key, lake
    encryption); `run_id` names the Pushgateway group of the run's metrics (each run's recording
    starts from zero)."""
    telemetry.configure(telemetry_config(settings, run_id))
    hand_over_keys(settings)
    check_lake_key(settings.lake_dir)  # before the step writes anything
    return settings


def hand_over_keys(settings: PipelineSettings) -> None:
    """Hand core the settings' master key, whether the lake is encrypted and whether it is remote
    (every process that reads or writes the lake: steps, sensors, worker processes, the CLI)."""
    crypto.use_master_key(settings.master_key.get_secret_value() if settings.master_key else None)
    parquet_io.use_lake_encryption(settings.lake_encryption == "on")
    storage.use_lake(settings.lake_url is not None, settings.data_dir / "tmp" / "uploads")


def pipeline_resource(settings: PipelineSettings) -> dg.ResourceDefinition:
    """The `pipeline` resource: `settings` itself, handed to core when a step or sensor starts."""

    def _settings(context: dg.InitResourceContext) -> PipelineSettings:
        if context.run is None:  # a sensor
            return use_settings(settings)
        return use_settings(settings.run_scratch(context.run.run_id), context.run.run_id)

    return dg.ResourceDefinition(
        resource_fn=_settings,
        description="The pipeline settings (config.yaml, .env, PIPELINE_* variables) the code location was built with.",
    )


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


def build_resources(settings: PipelineSettings) -> dict[str, object]:
    """Every resource of the code location, from `settings`."""
    pipeline = pipeline_resource(settings)
    return {
        PIPELINE: pipeline,
        WAREHOUSE_IO_MANAGER: WarehouseIOManager(
            pipeline=pipeline, database=settings.warehouse.describe(), schema="main"
        ),
    }
