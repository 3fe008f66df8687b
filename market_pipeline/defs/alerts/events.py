"""Alerts from the Dagster instance: failed check evaluations in a run's event log, failed runs.

Shared by the sensors (alerts/sensors.py) and the demo, so both produce the same alert, with the
same idempotency key, for the same event.
"""

from __future__ import annotations

import datetime as dt
import math

import dagster as dg

from market_pipeline.core.alerts.model import CHECK_FAILED, RUN_FAILED, Alert, iso_utc, run_url
from market_pipeline.defs.common.blocked import BLOCKS_DOWNSTREAM
from market_pipeline.defs.common.partitions import PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG
from market_pipeline.defs.common.resources import PipelineSettings

ERROR_TEXT_LIMIT = 2000  # characters of a step's error kept in a run-failure alert


def check_alert_key(run_id: str, storage_id: int) -> str:
    # The storage id alone is not unique on SQLite (the event log is sharded per run): pair it.
    return f"check:{run_id}:{storage_id}"


def run_alert_key(run_id: str) -> str:
    return f"run:{run_id}"


def run_partitions(run: dg.DagsterRun) -> list[str]:
    """The partition keys a run covered: its partition tag, or every day of its range tags."""
    tags = run.tags
    if PARTITION_TAG in tags:
        return [tags[PARTITION_TAG]]
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if not (start and end):
        return []
    try:
        first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    except ValueError:  # not a daily range: report the ends as they are
        return [start, end] if start != end else [start]
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def plain_metadata(metadata: dict) -> dict:
    """A check's metadata as plain JSON values (tables become lists of row dicts)."""
    return {str(name): _plain(value) for name, value in metadata.items()}


def _plain(value: object) -> object:
    if isinstance(value, dg.TableMetadataValue):
        return [_plain(dict(record.data)) for record in value.records]
    if isinstance(value, dg.MetadataValue):
        value = value.value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def check_alerts_for_run(
    instance: dg.DagsterInstance, run: dg.DagsterRun, settings: PipelineSettings, after_storage_id: int = -1
) -> tuple[list[Alert], int]:
    """An alert per failed check evaluation of `run` stored after `after_storage_id`.

    Returns the alerts and the largest storage id read (`after_storage_id` when none).
    """
    connection = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    alerts: list[Alert] = []
    last = after_storage_id
    for record in connection.records:
        if record.storage_id <= after_storage_id:
            continue
        last = max(last, record.storage_id)
        evaluation = record.event_log_entry.asset_check_evaluation
        if evaluation is None or evaluation.passed:
            continue
        severity = getattr(evaluation.severity, "value", str(evaluation.severity))
        asset = evaluation.asset_key.to_user_string()
        partitions = [evaluation.partition] if evaluation.partition else run_partitions(run)
        figures = plain_metadata(dict(evaluation.metadata))
        alerts.append(
            Alert(
                key=check_alert_key(run.run_id, record.storage_id),
                kind=CHECK_FAILED,
                severity=severity,
                asset=asset,
                partitions=partitions,
                check=evaluation.check_name,
                # Our blocking checks go to Dagster as non-blocking (a bad day must not fail the
                # step) and say in their metadata whether they hold that day's downstream back.
                blocking=bool(figures.get(BLOCKS_DOWNSTREAM, evaluation.blocking)),
                description=evaluation.description or f"check {evaluation.check_name} on {asset} failed",
                figures=figures,
                run_id=run.run_id,
                job=run.job_name,
                run_url=run_url(settings.alerts.webserver_url, run.run_id),
                occurred_at=iso_utc(record.event_log_entry.timestamp),
            )
        )
    return alerts, last


def _error_messages(error: object) -> str:
    """The messages of an error and its causes (Dagster wraps the user's exception)."""
    messages: list[str] = []
    while error is not None:
        message = error.message.strip()
        if message and message not in messages:
            messages.append(message)
        error = error.cause
    return "\n".join(messages)


def run_failure_alert(instance: dg.DagsterInstance, run: dg.DagsterRun, settings: PipelineSettings) -> Alert:
    """The alert for a failed run: its failed steps and their errors, from the run's event log."""
    steps = []
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            error = data.user_failure_data.description
        elif data.error is not None:
            error = _error_messages(data.error)
        else:
            error = entry.message or ""
        steps.append({"step": event.step_key, "error": error.strip()[:ERROR_TEXT_LIMIT]})
    failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    failed_at = failures[-1].timestamp if failures else None
    message = (failures[-1].message if failures else "") or f"run {run.run_id} of {run.job_name} failed"
    if steps:
        description = f"{len(steps)} step(s) failed: " + ", ".join(s["step"] for s in steps)
    else:
        description = message.strip()[:ERROR_TEXT_LIMIT]
    return Alert(
        key=run_alert_key(run.run_id),
        kind=RUN_FAILED,
        severity="ERROR",
        asset=", ".join(s["step"] for s in steps) or None,
        partitions=run_partitions(run),
        check=None,
        blocking=None,
        description=description,
        figures={"failed_steps": steps, "run_status": run.status.value},
        run_id=run.run_id,
        job=run.job_name,
        run_url=run_url(settings.alerts.webserver_url, run.run_id),
        occurred_at=iso_utc(failed_at) if failed_at else iso_utc(dt.datetime.now(dt.UTC).timestamp()),
    )
