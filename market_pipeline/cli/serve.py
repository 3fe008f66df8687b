"""`market-pipeline serve`: the long-running HTTP endpoint for Docker and monitors.

`GET /health` answers with the JSON of `market-pipeline health`, status 200 when nothing needs
attention and 503 otherwise; `GET /metrics` is this process's Prometheus endpoint (it runs no
steps, so it has no `mdp_` series: pipeline processes push theirs to the Pushgateway, or serve
them on `PIPELINE_METRICS__PROMETHEUS_PORT`). One server, `core/telemetry/prometheus.py`.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from market_pipeline.cli.common import EXIT_OK, CliError
from market_pipeline.cli.health import health_check
from market_pipeline.core import context
from market_pipeline.core.telemetry import telemetry

_one_report_at_a_time = threading.Lock()  # each report opens the instance and the warehouse


def _serialized_health_check() -> tuple[dict[str, Any], bool]:
    with _one_report_at_a_time:
        return health_check()


def start_health_server(host: str, port: int) -> str:
    """Serve /health and /metrics on host:port in a daemon thread, until `telemetry.shutdown()`;
    the /health URL. (This process records no metrics: its exporters need no binding after this.)"""
    config = telemetry.TelemetryConfig(prometheus_host=host, prometheus_port=port, health=_serialized_health_check)
    with context.using_changes(telemetry=config):
        url = telemetry.prometheus_url()
    if url is None:
        raise CliError(f"cannot serve on {host}:{port} (see the warning above); choose another --host or --port")
    return url.removesuffix("/metrics") + "/health"


def serve_command(host: str, port: int) -> int:
    url = start_health_server(host, port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # `docker stop`, systemd
    print(f"serving {url} and /metrics; waiting for SIGTERM or Ctrl-C to stop", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        telemetry.shutdown()
    return EXIT_OK
