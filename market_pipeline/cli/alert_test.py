"""`market-pipeline alert-test`: deliver one synthetic alert through the configured webhook and say
what the webhook answered (after a token rotation, before relying on it)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid

from market_pipeline.cli.common import EXIT_CONFIGURATION, EXIT_FAILED, EXIT_OK, CliError


def alert_test_command() -> int:
    from market_pipeline.core.alerts.delivery import deliver_alerts
    from market_pipeline.core.alerts.model import TEST, Alert
    from market_pipeline.defs.alerts.sensors import alert_delivery
    from market_pipeline.settings import load_settings

    settings = load_settings()
    delivery = alert_delivery(settings)
    if not delivery.webhook_url:
        raise CliError(
            "PIPELINE_ALERT_WEBHOOK_URL is not set: there is no webhook to test (alerts go to alerts.jsonl only)",
            EXIT_CONFIGURATION,
        )
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    alert = Alert(
        key=f"test:{uuid.uuid4()}",  # a new key each time: a test alert is never taken for a resend
        kind=TEST,
        severity="INFO",
        asset=None,
        partitions=[],
        check=None,
        blocking=None,
        description="market-pipeline alert-test: a synthetic alert to check the webhook and its token",
        figures={},
        run_id="",
        job="alert-test",
        run_url=settings.alerts.webserver_url,
        occurred_at=now,
    )
    (record,) = deliver_alerts([alert], delivery, log=_delivery_log)  # the outcome is printed here, once
    webhook = record["delivery"]["webhook"]
    print(json.dumps({"key": alert.key, "log": str(delivery.log_path), "webhook": webhook}, sort_keys=True))
    if webhook["status"] != "delivered":
        raise CliError(
            f"the webhook (PIPELINE_ALERT_WEBHOOK_URL) at {webhook['target']} did not accept the test alert after "
            f"{webhook['attempts']} attempt(s): {webhook['error']}; check that the receiver is up at that URL and "
            "accepts the bearer token of PIPELINE_ALERT_WEBHOOK_TOKEN",
            EXIT_FAILED,
        )
    return EXIT_OK


# The delivery's log line, under the delivery's logger (its level, its handlers), but never through
# Python's last-resort handler: on a console without logging set up the outcome is printed here, once.
_delivery_log = logging.getLogger("market_pipeline.core.alerts.delivery.alert_test")
_delivery_log.addHandler(logging.NullHandler())
