"""The new-day sensor: requests the daily pipeline for each day that appears at the source.

A day is ready when the source lists it for every configured instrument and every raw table the
source provides (the raw stage imports an instrument-day all or nothing). It is requested once:
only days from PIPELINE_START_DATE to the last complete UTC day, not yet materialized by all raw
assets, and not requested before (the cursor keeps the requested days; the run key
`source-day:<day>` makes Dagster drop a repeat as well).
"""

import datetime as dt
import json

import dagster as dg

from market_pipeline.defs.common.partitions import daily_partitions
from market_pipeline.defs.raw.assets import raw_assets
from market_pipeline.defs.automation.schedules import AUTOMATION_DEFAULT_STATUS, daily_pipeline_job
from market_pipeline.defs.common.resources import PipelineResource
from market_pipeline.settings import PipelineSettings, load_settings
from market_pipeline.vendors.registry import build_source, provides

RAW_TABLES = {asset.key: asset.metadata_by_key[asset.key]["lake_table"] for asset in raw_assets}


def ready_days(source: object, settings: PipelineSettings) -> set[dt.date]:
    """Days the source has for every instrument and every raw table it provides."""
    days: set[dt.date] | None = None
    for table in RAW_TABLES.values():
        if not provides(source, table):
            continue
        for instrument in settings.universe:
            listed = set(source.available_days(table, instrument))
            days = listed if days is None else days & listed
    return days or set()


def materialized_days(instance: dg.DagsterInstance, source: object) -> set[dt.date]:
    """Days every raw asset of a table the source provides has materialized."""
    days: set[dt.date] | None = None
    for key, table in RAW_TABLES.items():
        if not provides(source, table):
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


_settings = load_settings()


@dg.sensor(
    name="new_source_days",
    job=daily_pipeline_job,
    minimum_interval_seconds=_settings.schedule.source_sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus(AUTOMATION_DEFAULT_STATUS.upper()),
    description="Requests the daily pipeline for each new day the source lists "
    "(local directory, S3 prefix or capture directory), once per day.",
)
def new_source_days(context: dg.SensorEvaluationContext, pipeline: PipelineResource) -> dg.SensorResult:
    settings = pipeline.settings()
    source = build_source(settings)
    if not callable(getattr(source, "available_days", None)):
        return dg.SensorResult(
            skip_reason=f"PIPELINE_SOURCE={settings.source}: the {source.name} source cannot list "
            "the days it holds (no available_days), so there are no new days to notice; use the "
            "daily_pipeline_schedule instead",
            cursor=context.cursor,
        )
    requested = parse_cursor(context.cursor)
    last_key = daily_partitions.get_last_partition_key()
    if last_key is None:
        return dg.SensorResult(skip_reason=f"no complete UTC day since {settings.start_date} yet", cursor=context.cursor)
    last = dt.date.fromisoformat(last_key)
    candidates = {d for d in ready_days(source, settings) if settings.start_date <= d <= last}
    new = sorted(candidates - requested - materialized_days(context.instance, source))
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


raw_sensors: list = [new_source_days]
