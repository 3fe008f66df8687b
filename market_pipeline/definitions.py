"""The Dagster code location: merges the per-domain modules."""

from __future__ import annotations

import dagster as dg

from market_pipeline.defs.alerts.sensors import alert_sensors
from market_pipeline.defs.books.assets import book_assets
from market_pipeline.defs.books.checks import book_checks
from market_pipeline.defs.metrics.assets import observability_assets
from market_pipeline.defs.quality.assets import quality_assets
from market_pipeline.defs.raw.assets import raw_assets
from market_pipeline.defs.raw.checks import raw_checks
from market_pipeline.defs.automation.schedules import raw_jobs, raw_schedules
from market_pipeline.defs.automation.sensors import raw_sensors
from market_pipeline.defs.common.resources import build_resources
from market_pipeline.core.security.hardening import harden_process
from market_pipeline.settings import PipelineSettings, load_settings


def build_definitions(settings: PipelineSettings | None = None) -> dg.Definitions:
    """The code location for the given settings (loaded from the environment when not given)."""
    settings = settings or load_settings()
    # Every Dagster process running pipeline code (code server, run and step workers) loads this:
    # umask 077 and secret scrubbing of every log record, Dagster's event log included.
    harden_process(settings)
    return dg.Definitions(
        assets=[*raw_assets, *book_assets, *quality_assets, *observability_assets],
        asset_checks=[*raw_checks, *book_checks],
        jobs=raw_jobs,
        schedules=raw_schedules,
        sensors=[*raw_sensors, *alert_sensors],
        resources=build_resources(settings),
    )


defs = build_definitions()
