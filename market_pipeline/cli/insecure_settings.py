"""Settings a production deployment must not run with.

`validate-env` reports each of them: as an error in the `prod` profile (PIPELINE_ENV=prod), as a
warning otherwise. `market-pipeline webserver` refuses to start the UI on the same terms.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from market_pipeline.settings import PipelineSettings

STRICT_PROFILE = "prod"


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, as a listener or URL takes it) is this machine only.

    Only `localhost` counts among names: another name is not resolved (its address may change).
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def ui_exposure_problem(settings: PipelineSettings) -> str | None:
    """Why the UI's listening address is insecure (None when it is not)."""
    if is_loopback(settings.ui.host) or settings.ui.exposed_reason:
        return None
    return (
        f"PIPELINE_UI__HOST={settings.ui.host} exposes the Dagster UI, which has no authentication, "
        "beyond loopback: bind 127.0.0.1 (reach it by an SSH tunnel or an authenticating proxy), or "
        "say why in PIPELINE_UI__EXPOSED_REASON"
    )


def insecure_settings(settings: PipelineSettings) -> list[str]:
    """Every insecure setting, each message naming its variable and never a secret's value."""
    problems = []
    url = settings.alert_webhook_url
    if url:
        parts = urlsplit(url)
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            # Only the host: the path or query of a webhook URL often is the secret.
            problems.append(
                f"PIPELINE_ALERT_WEBHOOK_URL: plain http to {parts.hostname} sends alerts and the bearer "
                "token unencrypted over the network: use https"
            )
    if settings.capture_encrypt and settings.master_key is None:
        problems.append(
            "PIPELINE_CAPTURE_ENCRYPT is on but PIPELINE_MASTER_KEY is not set: captures could not be encrypted"
        )
    problem = ui_exposure_problem(settings)
    if problem:
        problems.append(problem)
    metrics = settings.metrics
    if metrics.prometheus_port is not None and not is_loopback(metrics.prometheus_host):
        if not metrics.prometheus_exposed_reason:
            problems.append(
                f"PIPELINE_METRICS__PROMETHEUS_HOST={metrics.prometheus_host} serves /metrics beyond loopback: "
                "bind 127.0.0.1, or say why in PIPELINE_METRICS__PROMETHEUS_EXPOSED_REASON"
            )
    return problems
