"""JSON console logs of Dagster runs (`PIPELINE_LOG_FORMAT=json`): the run logger and the fields
a stage's log call adds.

A run's `context.log` records reach the run's `@dg.logger`s carrying Dagster's per-record metadata
(`dagster_meta`: run id, job tags, the original message, the event). `json_console_logger` writes
them through `core.structured_logs.JsonLineFormatter`, taking `run_id`, `asset` (an event's asset
key) and `partition` (an event's partition, else the run's partition or partition range) from
that metadata, and `message` as the stage wrote it (not Dagster's "job - run - step - ..." line).
A stage adds what only it knows with `extra=stage_log_fields(...)` (the asset, the day, the
instrument), which wins over the run-level values.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from market_pipeline.core.structured_logs import json_handler
from market_pipeline.defs.common.log_scrubbing import DAGSTER_META_ATTRIBUTE
from market_pipeline.defs.common.partitions import PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG


def dagster_record_fields(record: logging.LogRecord) -> Mapping[str, Any]:
    """The line fields Dagster's metadata on `record` gives (nothing for a plain record)."""
    meta = getattr(record, DAGSTER_META_ATTRIBUTE, None)
    if not isinstance(meta, dict):
        return {}
    tags = meta.get("job_tags") or {}
    partition = tags.get(PARTITION_TAG)
    if partition is None and RANGE_START_TAG in tags:
        partition = f"{tags[RANGE_START_TAG]}...{tags.get(RANGE_END_TAG, tags[RANGE_START_TAG])}"
    fields: dict[str, Any] = {"run_id": meta.get("run_id"), "partition": partition}
    event = meta.get("dagster_event")
    if event is not None:
        if event.asset_key is not None:
            fields["asset"] = event.asset_key.to_user_string()
        fields["partition"] = event.partition or partition
    message = record.getMessage()
    if isinstance(meta.get("orig_message"), str):
        # Dagster's line is "job - run id - step - message", then the error of a failure event.
        _, _, error = message.partition("\n\n")
        fields["message"] = meta["orig_message"]
        if error:
            fields["exc_info"] = error
    return fields


def stage_log_fields(
    assets: dg.AssetKey | Iterable[dg.AssetKey] | str | None = None,
    day: dt.date | str | None = None,
    instrument: str | None = None,
) -> dict[str, str]:
    """`extra=` for a stage's `context.log` call: the asset(s), the day (partition) and the instrument
    it is about; omitted ones stay as the run gives them."""
    fields = {}
    if isinstance(assets, dg.AssetKey):
        fields["asset"] = assets.to_user_string()
    elif isinstance(assets, str):
        fields["asset"] = assets
    elif assets is not None:
        fields["asset"] = ", ".join(sorted(key.to_user_string() for key in assets))
    if day is not None:
        fields["partition"] = day.isoformat() if isinstance(day, dt.date) else day
    if instrument is not None:
        fields["instrument"] = instrument
    return fields


@dg.logger(
    {
        "log_level": dg.Field(str, is_required=False, default_value="INFO", description="The logger's threshold."),
        "name": dg.Field(str, is_required=False, default_value="dagster", description="The logger's name."),
    },
    description="Run logs as one JSON object per line on stderr (PIPELINE_LOG_FORMAT=json).",
)
def json_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    config = init_context.logger_config
    log = logging.Logger(config["name"], level=config["log_level"].upper())
    log.addHandler(json_handler(sys.stderr, context_from=dagster_record_fields))
    return log


def run_loggers(log_format: str) -> dict[str, dg.LoggerDefinition]:
    """The code location's run loggers: Dagster's default colored console for `text`, JSON lines for `json`."""
    return {"console": json_console_logger} if log_format == "json" else {}


def run_logger_config(log_format: str) -> dict | None:
    """Default run config that selects the `json` run logger. Dagster uses a job's own loggers only
    when the run config names them; without it a run gets the colored console logger."""
    return {"loggers": {"console": {}}} if log_format == "json" else None
