"""What an alert says: one failed check evaluation or one failed run, as a JSON-ready payload."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

CHECK_FAILED = "asset_check_failed"
RUN_FAILED = "run_failed"
TEST = "test"  # `market-pipeline alert-test`: proves the webhook and its token work


@dataclass(frozen=True)
class Alert:
    # Idempotency key: the same check evaluation or failed run always gets the same key, so a
    # restarted sensor (or the demo and the daemon both) can tell it was already sent.
    key: str
    kind: str  # CHECK_FAILED, RUN_FAILED or TEST
    severity: str  # WARN or ERROR (a failed run is always ERROR); INFO for a TEST alert
    asset: str | None  # the checked asset; for a failed run the failed steps' assets
    partitions: list[str]
    check: str | None
    blocking: bool | None
    description: str
    figures: dict  # the check's metadata, or the failed steps of a run
    run_id: str
    job: str
    run_url: str
    occurred_at: str  # ISO 8601 UTC time of the evaluation or failure event
    source: str = field(default="market_pipeline")

    def payload(self) -> dict:
        return asdict(self)


def iso_utc(epoch_seconds: float) -> str:
    return dt.datetime.fromtimestamp(epoch_seconds, dt.UTC).isoformat(timespec="milliseconds")


def run_url(webserver_url: str, run_id: str) -> str:
    return f"{webserver_url.rstrip('/')}/runs/{run_id}"
