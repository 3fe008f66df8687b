"""Sensors that turn failed checks and failed runs into alerts (alerts.jsonl and the webhook).

A non-blocking check that fails (e.g. WARN) does not fail its run, so a run-failure sensor alone
would miss it: `failed_check_alerts` reads the ASSET_CHECK_EVALUATION events of recent runs,
`failed_run_alerts` reacts to every failed run. Both are on by default.

Why `failed_check_alerts` reads per run instead of one instance-wide event query after a
storage id: the SQLite event log (dagster_home/dagster.yaml) is sharded per run, so storage ids
are per-run counters and `get_event_records` refuses a plain storage-id cursor there. The cursor
is therefore the update time of the runs already read plus, for runs still in progress, the
last storage id read in each. Duplicates across ticks (the overlap window, a restarted daemon,
the demo having sent an alert already) are dropped by the idempotency key in alerts.jsonl.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import dagster as dg

from market_pipeline.core.alerts.delivery import AlertDelivery, deliver_alerts
from market_pipeline.core.alerts.jsonl import alerts_path
from market_pipeline.core.alerts.model import Alert
from market_pipeline.defs.alerts.events import check_alerts_for_run, run_failure_alert
from market_pipeline.defs.common.resources import PipelineSettings

# A newly enabled sensor alerts on runs updated this long ago at most, not on all history.
FIRST_TICK_LOOKBACK = dt.timedelta(hours=24)
# Runs updated this long before the cursor are read again: a run whose update committed late
# (two processes writing the run storage) is not skipped; its alerts are deduplicated by key.
OVERLAP = dt.timedelta(seconds=60)
RUNS_PER_TICK = 200


@dataclass
class CheckAlertCursor:
    updated_after: float | None = None  # epoch seconds: runs updated later are read next tick
    open_runs: dict[str, int] = field(default_factory=dict)  # unfinished run -> last storage id read

    @classmethod
    def parse(cls, text: str | None) -> CheckAlertCursor:
        if not text:
            return cls()
        try:
            data = json.loads(text)
            return cls(data.get("updated_after"), {str(k): int(v) for k, v in data.get("open_runs", {}).items()})
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"failed_check_alerts: unreadable sensor cursor {text!r}: {exc}") from exc

    def serialize(self) -> str:
        return json.dumps({"updated_after": self.updated_after, "open_runs": self.open_runs}, sort_keys=True)


def scan_failed_checks(
    instance: dg.DagsterInstance, cursor: CheckAlertCursor, settings: PipelineSettings, now: dt.datetime
) -> tuple[list[Alert], CheckAlertCursor]:
    """Alerts for the failed check evaluations logged since `cursor`, and the next cursor."""
    since = (
        dt.datetime.fromtimestamp(cursor.updated_after, dt.UTC)
        if cursor.updated_after is not None
        else now - FIRST_TICK_LOOKBACK
    )
    records = list(
        instance.get_run_records(
            filters=dg.RunsFilter(updated_after=since - OVERLAP),
            order_by="update_timestamp",
            ascending=True,
            limit=RUNS_PER_TICK,
        )
    )
    newest = max((r.update_timestamp for r in records), default=since)
    seen = {r.dagster_run.run_id for r in records}
    still_open = [run_id for run_id in cursor.open_runs if run_id not in seen]
    if still_open:  # in progress and not updated since: their events are read all the same
        records += instance.get_run_records(filters=dg.RunsFilter(run_ids=still_open))

    alerts: list[Alert] = []
    open_runs: dict[str, int] = {}
    for record in records:
        run = record.dagster_run
        found, last = check_alerts_for_run(instance, run, settings, cursor.open_runs.get(run.run_id, -1))
        alerts.extend(found)
        if not run.is_finished:
            open_runs[run.run_id] = last
    return alerts, CheckAlertCursor(_epoch(newest), open_runs)


def _epoch(moment: dt.datetime) -> float:
    if moment.tzinfo is None:  # the run storage keeps naive UTC times
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def alert_delivery(settings: PipelineSettings) -> AlertDelivery:
    """Where the settings send alerts: alerts.jsonl under the data dir, and the webhook if set."""
    token = settings.alert_webhook_token
    return AlertDelivery(
        log_path=alerts_path(settings.data_dir),
        webhook_url=settings.alert_webhook_url,
        webhook_token=token.get_secret_value() if token else None,
        timeout_seconds=settings.alerts.webhook_timeout_seconds,
        retries=settings.alerts.webhook_retries,
        backoff_seconds=settings.alerts.webhook_backoff_seconds,
    )


def deliver_run_alerts(instance: dg.DagsterInstance, run_id: str, settings: PipelineSettings) -> list[dict]:
    """Deliver the alerts of one finished run now (the demo's in-process stand-in for the sensors)."""
    record = instance.get_run_by_id(run_id)
    if record is None:
        raise ValueError(f"run {run_id} is not in the instance")
    alerts, _ = check_alerts_for_run(instance, record, settings)
    if record.is_failure:
        alerts.append(run_failure_alert(instance, record, settings))
    return deliver_alerts(alerts, alert_delivery(settings))


def _failed_check_alerts(
    context: dg.SensorEvaluationContext, pipeline: dg.ResourceParam[PipelineSettings]
) -> dg.SensorResult:
    settings = pipeline
    cursor = CheckAlertCursor.parse(context.cursor)
    alerts, cursor = scan_failed_checks(context.instance, cursor, settings, dt.datetime.now(dt.UTC))
    written = deliver_alerts(alerts, alert_delivery(settings), context.log)
    reason = (
        f"{len(written)} new alert(s) written to alerts.jsonl; "
        f"{len(alerts) - len(written)} failed evaluation(s) read again were alerted before"
    )
    return dg.SensorResult(skip_reason=reason, cursor=cursor.serialize())


def _failed_run_alerts(context: dg.RunFailureSensorContext, pipeline: dg.ResourceParam[PipelineSettings]) -> None:
    settings = pipeline
    alert = run_failure_alert(context.instance, context.dagster_run, settings)
    deliver_alerts([alert], alert_delivery(settings), context.log)


def build_alert_sensors(interval_seconds: int) -> list[dg.SensorDefinition]:
    """`failed_check_alerts` and `failed_run_alerts`, each evaluated every `interval_seconds`."""
    failed_check_alerts = dg.sensor(
        name="failed_check_alerts",
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="One alert (alerts.jsonl and the webhook) per failed asset check evaluation, "
        "WARN or ERROR, blocking or not.",
    )(_failed_check_alerts)
    failed_run_alerts = dg.run_failure_sensor(
        name="failed_run_alerts",
        monitor_all_code_locations=True,  # also runs launched in-process (market-pipeline run, demo)
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="One alert (alerts.jsonl and the webhook) per failed run, whatever its job.",
    )(_failed_run_alerts)
    return [failed_check_alerts, failed_run_alerts]
