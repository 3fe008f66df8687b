"""Deliver alerts once: webhook POST (when configured), then a line in alerts.jsonl with the outcome."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from market_pipeline.core.alerts.jsonl import AlertLog
from market_pipeline.core.alerts.model import TEST, Alert
from market_pipeline.core.alerts.webhook import post_json
from market_pipeline.core.security.scrub import register_secret, scrub
from market_pipeline.core.telemetry import telemetry

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertDelivery:
    """Where alerts go and how hard the webhook is tried (the alert settings, as plain values)."""

    log_path: Path  # alerts.jsonl (core.alerts.jsonl.alerts_path of the data dir)
    webhook_url: str | None = None  # None: alerts.jsonl only
    webhook_token: str | None = field(default=None, repr=False)  # bearer token; never logged
    timeout_seconds: float = 5.0
    retries: int = 3
    backoff_seconds: float = 1.0  # backoff factor and jitter of the retries (core.alerts.webhook.webhook_retry)


def deliver_alerts(alerts: Sequence[Alert], delivery: AlertDelivery, log: logging.Logger | None = None) -> list[dict]:
    """Send every alert whose key is not in alerts.jsonl yet; returns the lines written.

    The line is written after the webhook attempt so that it records the outcome; a webhook that
    never succeeds still leaves the alert in alerts.jsonl (status "failed"), and it is not resent.
    Once the webhook has failed in a batch, the rest of the batch gets one attempt each, so a
    dead receiver cannot stretch a sensor tick past Dagster's evaluation timeout.
    """
    log = log or _log
    token = delivery.webhook_token
    # The token goes in the Authorization header only; any echo of it elsewhere is scrubbed.
    register_secret(token)
    url = delivery.webhook_url
    retries = delivery.retries
    alert_log = AlertLog(delivery.log_path)
    written: list[dict] = []
    with alert_log.locked():
        records, problems = alert_log.read()
        for problem in problems:
            log.warning(problem)
        sent = {record.get("key") for record in records}
        for alert in alerts:
            if alert.key in sent:
                continue
            payload = scrub(alert.payload())
            if url:
                outcome = post_json(
                    url,
                    json.dumps(payload, sort_keys=True).encode("utf-8"),
                    token,
                    timeout=delivery.timeout_seconds,
                    retries=retries,
                    backoff=delivery.backoff_seconds,
                    idempotency_key=alert.key,
                )
                webhook = {
                    "status": outcome.status,
                    "attempts": outcome.attempts,
                    "http_status": outcome.http_status,
                    "error": outcome.error,
                    "target": outcome.target,
                }
                telemetry.count(
                    "mdp_alerts_sent_total", 1, channel="webhook", severity=alert.severity, outcome=outcome.status
                )
                if not outcome.delivered:
                    retries = 0
            else:
                webhook = {"status": "not_configured"}
            record = scrub({**payload, "delivery": {"webhook": webhook}, "logged_at": _now_iso()})
            alert_log.append(record)
            telemetry.count("mdp_alerts_sent_total", 1, channel="jsonl", severity=alert.severity, outcome="delivered")
            sent.add(alert.key)
            written.append(record)
            message = scrub(_summary(alert, webhook))
            if webhook["status"] == "failed":
                log.warning(message)
            else:
                log.info(message)
    return written


def _summary(alert: Alert, webhook: dict) -> str:
    if alert.kind == TEST:
        what = "test alert"
    elif alert.check:
        what = f"check {alert.check} on {alert.asset}"
    else:
        what = f"run {alert.run_id} failed"
    partitions = ",".join(alert.partitions[:3]) + ("..." if len(alert.partitions) > 3 else "")
    outcome = webhook["status"]
    if webhook.get("error"):
        outcome += f" after {webhook['attempts']} attempt(s): {webhook['error']}"
    return f"alert {alert.severity} {what} [{partitions}] -> alerts.jsonl; webhook {outcome}"


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
