"""The new-day sensor: requests the daily pipeline for each day that appears at the source.

A day is ready when the source lists it for every configured instrument and every raw table the
source provides (the raw stage imports an instrument-day all or nothing). It is requested once:
only days from PIPELINE_START_DATE to the last complete UTC day, not yet materialized by all raw
assets, and not requested before (the cursor keeps the requested days; the run key
`source-day:<day>` makes Dagster drop a repeat as well).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping

import dagster as dg

from market_pipeline.defs.common.resources import PipelineSettings
from market_pipeline.vendors.base import VendorSource
from market_pipeline.vendors.registry import build_source, source_of

LAKE_TABLE = "lake_table"  # the raw assets' metadata entry naming the vendor table they import


def raw_tables(assets: Iterable[dg.AssetsDefinition]) -> dict[dg.AssetKey, str]:
    """asset key -> vendor table, for every asset whose metadata names a `lake_table` (the raw ones)."""
    return {
        key: str(asset.metadata_by_key[key][LAKE_TABLE])
        for asset in assets
        for key in asset.keys
        if LAKE_TABLE in asset.metadata_by_key.get(key, {})
    }


def ready_days(
    source: VendorSource, settings: PipelineSettings, tables: Mapping[dg.AssetKey, str]
) -> set[dt.date] | None:
    """Days the source has for every instrument and every raw table its primary source provides
    (each instrument's own, PIPELINE_SOURCES); None when a primary cannot list its days
    (available_days returns None, e.g. synthetic data)."""
    days: set[dt.date] | None = None
    for table in tables.values():
        for instrument in settings.universe:
            if table not in source_of(source, instrument).tables:
                continue
            listed = source.available_days(table, instrument)
            if listed is None:
                return None
            days = set(listed) if days is None else days & set(listed)
    return days or set()


def materialized_days(
    instance: dg.DagsterInstance, source: VendorSource, tables: Mapping[dg.AssetKey, str]
) -> set[dt.date]:
    """Days every raw asset of a table the source provides has materialized."""
    days: set[dt.date] | None = None
    for key, table in tables.items():
        if table not in source.tables:
            continue
        keys = {dt.date.fromisoformat(k) for k in instance.get_materialized_partitions(key)}
        days = keys if days is None else days & keys
    return days or set()


def parse_cursor(text: str | None) -> set[dt.date]:
    """Requested days, stored as inclusive [first, last] ranges so the cursor stays small."""
    if not text:
        return set()
    try:
        ranges = json.loads(text)["requested"]
        days = set()
        for first, last in ranges:
            start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
            days.update(start + dt.timedelta(days=i) for i in range((end - start).days + 1))
        return days
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"new_source_days: unreadable sensor cursor {text!r}: {exc}") from exc


def format_cursor(days: set[dt.date]) -> str:
    ranges: list[list[dt.date]] = []
    for day in sorted(days):
        if ranges and day - ranges[-1][1] == dt.timedelta(days=1):
            ranges[-1][1] = day
        else:
            ranges.append([day, day])
    return json.dumps({"requested": [[a.isoformat(), b.isoformat()] for a, b in ranges]})


def build_new_source_days_sensor(
    job: dg.UnresolvedAssetJobDefinition,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    tables: Mapping[dg.AssetKey, str],
    *,
    interval_seconds: int,
    default_status: dg.DefaultSensorStatus,
) -> dg.SensorDefinition:
    """The new-day sensor for `job`: watches the raw `tables` (asset key -> vendor table)."""

    @dg.sensor(
        name="new_source_days",
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=default_status,
        description="Requests the daily pipeline for each new day the source lists "
        "(local directory, S3 prefix or capture directory), once per day.",
    )
    def new_source_days(
        context: dg.SensorEvaluationContext, pipeline: dg.ResourceParam[PipelineSettings]
    ) -> dg.SensorResult:
        settings = pipeline
        source = build_source(settings)
        ready = ready_days(source, settings, tables)
        if ready is None:
            which = (
                f"PIPELINE_SOURCE={settings.source}: the {source.name} source"
                if source.name == settings.source
                else f"PIPELINE_SOURCES: a primary source of {source.name}"
            )
            return dg.SensorResult(
                skip_reason=f"{which} cannot list the days it holds (available_days gives none), so there "
                "are no new days to notice; "
                "use the daily_pipeline_schedule instead",
                cursor=context.cursor,
            )
        requested = parse_cursor(context.cursor)
        last_key = partitions_def.get_last_partition_key()
        if last_key is None:
            return dg.SensorResult(
                skip_reason=f"no complete UTC day since {settings.start_date} yet", cursor=context.cursor
            )
        last = dt.date.fromisoformat(last_key)
        candidates = {d for d in ready if settings.start_date <= d <= last}
        new = sorted(candidates - requested - materialized_days(context.instance, source, tables))
        if not new:
            return dg.SensorResult(
                skip_reason=f"no new day at the {source.name} source ({len(candidates)} day(s) there, "
                "all requested or materialized already)",
                cursor=context.cursor,
            )
        context.log.info(f"new day(s) at the {source.name} source: {', '.join(d.isoformat() for d in new)}")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(run_key=f"source-day:{day.isoformat()}", partition_key=day.isoformat()) for day in new
            ],
            cursor=format_cursor(requested | set(new)),
        )

    return new_source_days
