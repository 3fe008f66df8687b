"""Resources shared by every stage, built in one place (`build_resources`) from the settings
`market_pipeline.definitions` was given.

The `pipeline` resource is the `PipelineSettings` object itself: assets, checks and sensors take
it as `pipeline: dg.ResourceParam[PipelineSettings]`. While it is in use (a run's steps, a sensor's
evaluation) the work runs inside the core context built from those settings (`core_context`: metric
exporters, master key, lake encryption, remote lake), so `core/` never reads the settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import dagster as dg

from market_pipeline.core import context
from market_pipeline.core.lake.lake_guard import check_lake_key
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


def lake_context(settings: PipelineSettings) -> context.CoreContext:
    """The current core context with the settings' master key, whether the lake is encrypted and
    whether it is remote (what every reader or writer of the lake needs: steps, sensors, worker
    processes, the CLI); the watchers of the current one (progress, metric sinks) kept."""
    return replace(
        context.current(),
        master_key=settings.master_key.get_secret_value() if settings.master_key else None,
        lake_encrypted=settings.lake_encryption == "on",
        remote_lake=settings.lake_url is not None,
        upload_dir=settings.data_dir / "tmp" / "uploads",
    )


def core_context(settings: PipelineSettings, run_id: str | None = None) -> context.CoreContext:
    """`lake_context` plus the metric exporters; `run_id` names the Pushgateway group of the run's
    metrics (each run's recording starts from zero)."""
    return replace(lake_context(settings), telemetry=telemetry_config(settings, run_id))


def pipeline_resource(settings: PipelineSettings) -> dg.ResourceDefinition:
    """The `pipeline` resource: `settings` itself, the work that uses it inside their core context."""

    @contextmanager  # a context manager, not a bare generator: Dagster enters those as nested resources too
    def _settings(init: dg.InitResourceContext) -> Iterator[PipelineSettings]:
        run_id = init.run.run_id if init.run is not None else None  # None: a sensor
        used = settings.run_scratch(run_id) if run_id is not None else settings
        with context.using(core_context(used, run_id)):
            check_lake_key(used.lake_dir)  # before the step writes anything
            yield used

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
