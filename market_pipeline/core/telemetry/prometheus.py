"""Prometheus text exposition (format 0.0.4) of the process's metrics: a `/metrics` endpoint on
the standard library's HTTP server, and a push to a Pushgateway. No extra dependency.

Both read a cumulative `MetricReader`, which Prometheus expects: counters only ever grow
within a process.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

from opentelemetry.sdk.metrics.export import Gauge, Histogram, MetricReader, MetricsData, Sum

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PUSH_JOB = "market_pipeline"
_LABEL_RE = re.compile(r"[^a-zA-Z0-9_]")


def _label_name(key: str) -> str:
    name = _LABEL_RE.sub("_", key)
    return f"_{name}" if name[:1].isdigit() else name


def _label_value(value: object) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(attributes, extra: dict[str, str] | None = None) -> str:
    pairs = [(_label_name(k), _label_value(v)) for k, v in sorted((attributes or {}).items())]
    pairs += list((extra or {}).items())
    return "{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def render(metrics_data: MetricsData | None) -> str:
    """The text exposition of cumulative metrics data."""
    lines: list[str] = []
    for rm in metrics_data.resource_metrics if metrics_data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                data = metric.data
                if isinstance(data, Sum):
                    kind = "counter" if data.is_monotonic else "gauge"
                elif isinstance(data, Gauge):
                    kind = "gauge"
                elif isinstance(data, Histogram):
                    kind = "histogram"
                else:
                    continue
                name = metric.name
                lines.append(f"# HELP {name} {(metric.description or name).replace(chr(10), ' ')}")
                lines.append(f"# TYPE {name} {kind}")
                for point in data.data_points:
                    if kind != "histogram":
                        lines.append(f"{name}{_labels(point.attributes)} {_number(point.value)}")
                        continue
                    running = 0
                    for bound, n in zip([*point.explicit_bounds, math.inf], point.bucket_counts, strict=True):
                        running += n
                        le = _number(bound) if math.isinf(bound) else repr(float(bound))
                        lines.append(f"{name}_bucket{_labels(point.attributes, {'le': le})} {running}")
                    lines.append(f"{name}_sum{_labels(point.attributes)} {_number(point.sum)}")
                    lines.append(f"{name}_count{_labels(point.attributes)} {point.count}")
    return "\n".join(lines) + "\n" if lines else ""


class PrometheusReader(MetricReader):
    """Collects cumulative metrics on demand (a scrape or a push) and renders them as text."""

    def __init__(self) -> None:
        super().__init__()
        self._latest: MetricsData | None = None
        self._lock = threading.Lock()

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> None:
        self._latest = metrics_data

    def text(self) -> str:
        with self._lock:
            self.collect()
            return render(self._latest)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        return None


class MetricsServer:
    """`GET /metrics` on host:port in a daemon thread (port 0 picks a free port)."""

    def __init__(self, reader: PrometheusReader, host: str, port: int):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                body = reader.text().encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
                return None

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="mdp-metrics-http", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def push(reader: PrometheusReader, gateway_url: str, timeout: float = 5.0) -> bool:
    """POST the current metrics to a Pushgateway group job=market_pipeline/instance=<host>.

    POST replaces only the metric families pushed, in that group. Failures are logged, never raised:
    a monitoring outage must not fail the pipeline.
    """
    body = reader.text().encode("utf-8")
    if not body:
        return True
    url = f"{gateway_url.rstrip('/')}/metrics/job/{PUSH_JOB}/instance/{quote(socket.gethostname(), safe='')}"
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": CONTENT_TYPE})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except OSError as exc:  # URLError, HTTPError, timeouts
        log.warning("metrics push to the Pushgateway failed: %s", exc)
        return False
    return True
