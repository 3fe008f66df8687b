"""The asset checks part of `market-pipeline health`: every check's latest evaluation, and each
day whose latest evaluation failed, as an error (ERROR severity) or a warning (WARN).

A check judges one day per evaluation, and a range run evaluates its days in any order, so the
check's single latest evaluation can be a passing day while an earlier day of the same run
failed: the failures are looked up per day, among the check's recent evaluations.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dagster as dg

RECENT_EVALUATIONS = 500  # per check: every day of the last year or so, newest evaluation of each day wins
FRESHNESS_NOT_JUDGED = (
    "not judged yet: freshness depends on the time, so only the freshness_checks job judges it "
    "(hourly schedule freshness_checks_schedule: start it in the UI, or set "
    "PIPELINE_SCHEDULE__DEFAULT_STATUS=running); "
    "run {run_id} included the check without judging it"
)


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def _value(enum_or_text: object) -> str:
    """An enum's value (Dagster does not export the record status enum), or the text itself."""
    return str(getattr(enum_or_text, "value", enum_or_text))


def _not_evaluated(instance: dg.DagsterInstance, check_name: str, run_id: str) -> str:
    """Why a planned evaluation has no result, in words."""
    from market_pipeline.defs.automation.definitions import FRESHNESS_CHECKS

    if check_name == FRESHNESS_CHECKS:
        return FRESHNESS_NOT_JUDGED.format(run_id=run_id)
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        return f"being evaluated: run {run_id} is {run.status.value.lower()}"
    status = run.status.value.lower() if run is not None else "gone"
    return f"not evaluated: run {run_id} planned it and ended ({status}) before the check reported"


def _failed_days(instance: dg.DagsterInstance, key: dg.AssetCheckKey) -> list[tuple[str | None, Any]]:
    """(partition, evaluation) of every day whose newest evaluation failed, oldest day first."""
    newest: dict[str | None, Any] = {}
    for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=RECENT_EVALUATIONS):
        evaluation = record.event.asset_check_evaluation if record.event is not None else None
        if evaluation is not None and record.partition not in newest:  # newest first
            newest[record.partition] = evaluation
    return sorted(((day, e) for day, e in newest.items() if not e.passed), key=lambda item: str(item[0]))


def check_report(
    instance: dg.DagsterInstance, defs: dg.Definitions, problems: list[str], warnings: list[str]
) -> dict[str, Any]:
    """Per check `asset:check`, its latest evaluation; failing days go to `problems` (ERROR) or `warnings`."""
    graph = defs.resolve_asset_graph()
    checks: dict[str, Any] = {}
    for key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        name = f"{key.asset_key.to_user_string()}:{key.name}"
        record = instance.get_latest_asset_check_evaluation_record(key)
        if record is None:
            checks[name] = {"result": "never_run"}
            continue
        evaluation = record.event.asset_check_evaluation if record.event is not None else None
        entry: dict[str, Any] = {"partition": record.partition, "at": _iso(record.create_timestamp)}
        entry["run_id"] = record.run_id
        if _value(record.status) == "PLANNED" or evaluation is None:
            entry.update(result="not_evaluated", explanation=_not_evaluated(instance, key.name, record.run_id))
        else:
            entry.update(
                result="passed" if evaluation.passed else "failed",
                severity=_value(evaluation.severity),
                description=evaluation.description,
            )
        failed = _failed_days(instance, key)
        if any(day is not None for day, _ in failed):
            entry["failed_partitions"] = [day for day, _ in failed]
        for day, failure in failed:
            severity = _value(failure.severity)
            where = f" (partition {day})" if day else ""
            message = f"check {name} failed with {severity} severity{where}: {failure.description or ''}".rstrip(": ")
            (problems if severity == "ERROR" else warnings).append(message)
        checks[name] = entry
    return checks
