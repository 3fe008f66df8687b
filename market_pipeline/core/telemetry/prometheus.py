"""The process's `mdp_` metrics for Prometheus, with `prometheus_client`: a collector over the
OpenTelemetry SDK's cumulative metrics, an HTTP server for `/metrics` (and `/health` where the
process has a health check), and the Pushgateway push.

Why a collector of our own instead of `opentelemetry-exporter-prometheus`: that exporter renames
metrics (it appends unit suffixes such as `_bytes` or `_ratio` and `_total` by its own rules), adds
`otel_scope_*` labels to every series and a `target_info` family. The collector keeps the names,
types and labels the stages record, which dashboards and alert rules query (test_prometheus.py
pins them).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry.sdk.metrics.export import Gauge, Histogram, InMemoryMetricReader, Metric, Sum
from prometheus_client import CollectorRegistry, make_wsgi_app, push_to_gateway
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

PUSH_JOB = "market_pipeline"
# The health JSON and whether everything is fine (200) or something needs attention (503).
HealthCheck = Callable[[], tuple[dict[str, Any], bool]]


def _label_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _family(metric: Metric) -> CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily | None:
    """One OpenTelemetry metric as a Prometheus metric family with the same name.

    A family has one set of label names: a point without one of them gets it empty, which
    Prometheus treats as the label being absent.
    """
    data = metric.data
    points = list(data.data_points)
    names = sorted({key for point in points for key in (point.attributes or {})})
    documentation = (metric.description or metric.name).replace("\n", " ")

    def values(point) -> list[str]:
        attributes = point.attributes or {}
        return [_label_value(attributes[n]) if n in attributes else "" for n in names]

    if isinstance(data, Histogram):
        family = HistogramMetricFamily(metric.name, documentation, labels=names)
        for point in points:
            cumulative, buckets = 0, []
            for bound, n in zip([*point.explicit_bounds, math.inf], point.bucket_counts, strict=True):
                cumulative += n
                buckets.append((_le(bound), cumulative))
            family.add_metric(values(point), buckets, point.sum)
        return family
    if isinstance(data, Sum) and data.is_monotonic:
        family = CounterMetricFamily(metric.name, documentation, labels=names)
    elif isinstance(data, (Sum, Gauge)):
        family = GaugeMetricFamily(metric.name, documentation, labels=names)
    else:
        return None
    for point in points:
        family.add_metric(values(point), point.value)
    return family


class OpenTelemetryCollector(Collector):
    """A `prometheus_client` collector reading a cumulative in-memory OpenTelemetry reader."""

    def __init__(self) -> None:
        # Cumulative temporality (the reader's default): Prometheus expects counters that only
        # grow within a process, whatever the JSON-lines exporter does.
        self.reader = InMemoryMetricReader()

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        data = self.reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    family = _family(metric)
                    if family is not None:
                        yield family


def registry_of(collector: OpenTelemetryCollector) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one, which holds process and
    platform collectors) serving exactly the `mdp_` families."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def http_app(registry: CollectorRegistry, health: HealthCheck | None = None):
    """WSGI app: `GET /metrics` (prometheus_client's exposition, content negotiated) and, with a
    health check, `GET /health` (its JSON, 200 when fine, 503 when something needs attention)."""
    metrics = make_wsgi_app(registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/health" and health is not None:
            report, healthy = health()
            status = "200 OK" if healthy else "503 Service Unavailable"
            body = (json.dumps(report, indent=2) + "\n").encode("utf-8")
            content_type = "application/json"
        else:
            status = "404 Not Found"
            served = "/metrics and /health" if health is not None else "/metrics"
            body = f"only {served} are served here\n".encode()
            content_type = "text/plain; charset=utf-8"
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    return app


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scrape never holds up the process's exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
        return None


class MetricsServer:
    """`/metrics` (and `/health` with a health check) on host:port in a daemon thread; port 0
    picks a free port."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, health: HealthCheck | None = None):
        self.server = make_server(
            host, port, http_app(registry, health), server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.thread = threading.Thread(target=self.server.serve_forever, name="mdp-metrics-http", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def push(registry: CollectorRegistry, gateway_url: str, grouping_key: dict[str, str], timeout: float = 5.0) -> bool:
    """PUT the process's metrics to the Pushgateway group job=market_pipeline plus `grouping_key`.

    PUT replaces the whole group, which holds only this process's cumulative metrics, so a push
    never erases another process's series. Failures are logged, never raised: a monitoring
    outage must not fail the pipeline.
    """
    if not any(True for _ in registry.collect()):
        return True  # nothing recorded yet: no empty group
    try:
        push_to_gateway(gateway_url, job=PUSH_JOB, registry=registry, grouping_key=grouping_key, timeout=timeout)
    except OSError as exc:  # URLError, HTTPError, timeouts
        log.warning("metrics push to the Pushgateway %s failed: %s", gateway_url, exc)
        return False
    return True
