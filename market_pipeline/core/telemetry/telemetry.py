"""Metric recording API used by every stage, backed by the OpenTelemetry SDK.

    count("mdp_alerts_sent_total", 1, channel="webhook")
    observe("mdp_stage_duration_seconds", 3.2, stage="raw_trades")
    gauge("mdp_peak_memory_bytes", rss, stage="reconstructed_books")

A `MeterProvider` is created lazily, once per process and configuration, from the core context's
`TelemetryConfig` (`core/context.py`: the code location's pipeline resource builds it from the
`metrics` settings for each step and sensor; outside one nothing is exported):
- JSON lines (`metrics_dir`, `$PIPELINE_DATA_DIR/metrics` unless `metrics.jsonl` is off):
  OTLP-JSON records appended to `<metrics_dir>/mdp-YYYY-MM-DD.jsonl` every
  `export_interval_seconds`, at every `flush()` (the assets call it at the end of each step) and
  when the process exits;
- Prometheus (`prometheus_port`, off by default): `/metrics` on `prometheus_host` (plus `/health`
  when the configuration carries a health check: `market-pipeline serve`);
- Pushgateway (`pushgateway_url`, off by default): pushed at every `flush()` and at exit, to a
  group of its own per run and process (job, `run_id`, `instance=<host>:<pid>`).

Metric names carry the `mdp_` prefix; METRICS lists the documented ones (docs/metrics.md).

A worker process of a parallel step has no exporter of its own: its context's `metrics_sink` (a
list) takes the `Recorded` tuples the recording calls make, and the parent process `replay`s them.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from market_pipeline.core import context
from market_pipeline.core.telemetry.memory import peak_rss_bytes, reset_peak_rss

if TYPE_CHECKING:
    from market_pipeline.core.telemetry.prometheus import HealthCheck

log = logging.getLogger(__name__)

PREFIX = "mdp_"
Kind = Literal["counter", "histogram", "gauge"]


@dataclass(frozen=True)
class MetricSpec:
    kind: Kind
    unit: str
    description: str
    buckets: tuple[float, ...] | None = None  # histogram bucket bounds, in `unit`


_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
METRICS: dict[str, MetricSpec] = {
    "mdp_source_items_total": MetricSpec(
        "counter", "{row}", "Rows imported into the raw lake, per table and instrument."
    ),
    "mdp_quarantined_rows_total": MetricSpec(
        "counter", "{row}", "Vendor rows rejected into the quarantine, per table and instrument."
    ),
    "mdp_book_deltas_applied_total": MetricSpec("counter", "{delta}", "Book delta rows applied by the book rebuild."),
    "mdp_book_messages_total": MetricSpec("counter", "{message}", "Exchange messages replayed by the book rebuild."),
    "mdp_sequence_gaps_total": MetricSpec(
        "counter",
        "{gap}",
        "Sequence gaps, divergences from vendor snapshots and out-of-order messages found by the book rebuild.",
    ),
    "mdp_gaps_filled_total": MetricSpec(
        "counter", "{fill}", "Book repairs from a vendor snapshot after a gap or divergence."
    ),
    "mdp_precision_loss_total": MetricSpec(
        "counter", "{value}", "Vendor prices and sizes more than 1e-4 steps off the tick or lot grid."
    ),
    "mdp_crossed_books_total": MetricSpec(
        "counter", "{event}", "Crossed or locked books resolved by the book rebuild."
    ),
    # OpenTelemetry histograms take no negative value (the SDK drops it with a warning), and a
    # capture host's clock can run behind the exchange's: the size of the skew is recorded, and
    # `direction` says which way (`clock_skew_attributes`).
    "mdp_clock_skew_seconds": MetricSpec(
        "histogram",
        "s",
        "|received_time - origin_time| of book delta messages (a sample of at most 10,000 per instrument-day); "
        "direction late: received at or after the exchange's time, early: before it.",
        (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    ),
    "mdp_stage_duration_seconds": MetricSpec(
        "histogram", "s", "Wall time of one stage for one instrument-day.", _SECONDS_BUCKETS
    ),
    "mdp_peak_memory_bytes": MetricSpec(
        "gauge", "By", "Peak resident memory of the process during one stage for one instrument-day."
    ),
    "mdp_sink_commit_seconds": MetricSpec(
        "histogram",
        "s",
        "Time to commit a stage's output to its sink (DuckDB views or tables).",
        (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    ),
    "mdp_events_per_second": MetricSpec("gauge", "{event}/s", "Throughput of one stage for one instrument-day."),
    "mdp_lake_requests_total": MetricSpec(
        "counter", "{request}", "Requests of a step to the remote lake's bucket through its boto3 client, per stage."
    ),
    "mdp_lake_get_requests_total": MetricSpec(
        "counter",
        "{request}",
        "GetObject requests of a step to the remote lake's bucket, per stage and part (object: whole, footer).",
    ),
    "mdp_lake_get_bytes_total": MetricSpec(
        "counter", "By", "Bytes the GetObject requests of a step returned from the remote lake's bucket, per stage."
    ),
    "mdp_alerts_sent_total": MetricSpec(
        "counter", "{alert}", "Alerts delivered (or attempted), per channel and outcome."
    ),
}


@dataclass(frozen=True)
class TelemetryConfig:
    """Where this process's metrics go (the `metrics` settings, as plain values)."""

    metrics_dir: Path | None = None  # JSON lines directory; None: no JSON lines
    export_interval_seconds: float = 60.0
    prometheus_port: int | None = None  # None: no /metrics endpoint; 0 picks a free port
    prometheus_host: str = "127.0.0.1"
    pushgateway_url: str | None = None  # None: no pushes
    run_id: str | None = None  # the Dagster run this process works for (the Pushgateway group); None: none
    health: HealthCheck | None = None  # serves /health beside /metrics when set


NO_EXPORT = TelemetryConfig()  # instruments record, nothing leaves the process


class _Telemetry:
    """The process's MeterProvider, its readers and instruments, for one configuration."""

    def __init__(self, config: TelemetryConfig) -> None:
        self.pid = os.getpid()
        self.instruments: dict[str, tuple[Kind, object]] = {}
        self.server = None
        self.registry = None  # prometheus_client registry of this process's metrics
        self.pushgateway_url: str | None = None
        self.push_group = {"run_id": config.run_id or "none", "instance": f"{socket.gethostname()}:{self.pid}"}
        self.metrics_dir = config.metrics_dir
        readers = []
        if config.metrics_dir is not None:
            from market_pipeline.core.telemetry.otlp_json import JsonLinesMetricExporter

            readers.append(
                PeriodicExportingMetricReader(
                    JsonLinesMetricExporter(config.metrics_dir),
                    export_interval_millis=config.export_interval_seconds * 1000,
                )
            )
        if config.prometheus_port is not None or config.pushgateway_url:
            from market_pipeline.core.telemetry.prometheus import MetricsServer, OpenTelemetryCollector, registry_of

            collector = OpenTelemetryCollector()
            readers.append(collector.reader)
            self.registry = registry_of(collector)
            self.pushgateway_url = config.pushgateway_url
            if config.prometheus_port is not None:
                try:
                    self.server = MetricsServer(
                        self.registry, config.prometheus_host, config.prometheus_port, config.health
                    )
                except OSError as exc:  # e.g. another step process of the run holds the port
                    log.warning(
                        "PIPELINE_METRICS__PROMETHEUS_PORT: cannot serve /metrics on %s:%s: %s",
                        config.prometheus_host,
                        config.prometheus_port,
                        exc,
                    )
        views = [
            View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(spec.buckets))
            for name, spec in METRICS.items()
            if spec.buckets
        ]
        resource = Resource.create(
            {"service.name": "market_pipeline", "host.name": socket.gethostname(), "process.pid": self.pid}
        )
        self.provider = MeterProvider(metric_readers=readers, resource=resource, views=views, shutdown_on_exit=False)
        self.meter = self.provider.get_meter("market_pipeline")
        # A step process that exits without flush() still exports (and pushes) what it recorded.
        atexit.register(self.shutdown)

    def instrument(self, name: str, kind: Kind):
        spec = METRICS.get(_checked(name, kind))
        known = self.instruments.get(name)
        if known is not None:
            return known[1]
        unit = spec.unit if spec else ""
        description = spec.description if spec else ""
        create = {
            "counter": self.meter.create_counter,
            "histogram": self.meter.create_histogram,
            "gauge": self.meter.create_gauge,
        }[kind]
        created = create(name, unit=unit, description=description)
        self.instruments[name] = (kind, created)
        return created

    def flush(self) -> None:
        self.provider.force_flush()
        self.push()

    def push(self) -> None:
        if self.pushgateway_url and self.registry is not None:
            from market_pipeline.core.telemetry.prometheus import push

            push(self.registry, self.pushgateway_url, self.push_group)

    def shutdown(self) -> None:
        atexit.unregister(self.shutdown)
        self.push()
        if self.server is not None:
            self.server.close()
        self.provider.shutdown()  # the readers' final export


_lock = threading.Lock()
_state: _Telemetry | None = None
_state_key: tuple | None = None
Recorded = tuple[Kind, str, float, dict[str, object]]  # kind, metric name, value, attributes


def _checked(name: str, kind: Kind) -> str:
    """`name`, when it is a valid name for a metric of `kind`."""
    if not name.startswith(PREFIX):
        raise ValueError(f"metric {name!r} must start with {PREFIX!r}")
    spec = METRICS.get(name)
    if spec is not None and spec.kind != kind:
        raise ValueError(f"metric {name!r} is a {spec.kind}, not a {kind}")
    if kind == "counter" and not name.endswith("_total"):  # else Prometheus would see another name
        raise ValueError(f"counter {name!r} must end with '_total'")
    return name


def replay(records: list[Recorded]) -> None:
    """Record what another process appended to its `metrics_sink` as if recorded here."""
    record = {"counter": count, "histogram": observe, "gauge": gauge}
    for kind, name, value, attributes in records:
        record[kind](name, value, **attributes)


def _telemetry() -> _Telemetry:
    """The exporters of the context's configuration: another configuration (another data dir, a
    test) replaces the provider; a fork gets its own."""
    global _state, _state_key
    config = context.current().telemetry or NO_EXPORT
    key = (os.getpid(), config)
    with _lock:
        if _state is None or _state_key != key:
            if _state is not None and _state.pid == os.getpid():
                _state.shutdown()
            _state, _state_key = _Telemetry(config), key
        return _state


def _sink() -> list[Recorded] | None:
    return context.current().metrics_sink


def _attributes(attributes: dict[str, object]) -> dict[str, str | int | float | bool]:
    return {k: v if isinstance(v, (str, int, float, bool)) else str(v) for k, v in attributes.items() if v is not None}


def clock_skew_attributes(skew_seconds: float) -> tuple[float, dict[str, str]]:
    """The value and attributes `mdp_clock_skew_seconds` records for a signed skew."""
    return abs(skew_seconds), {"direction": "early" if skew_seconds < 0 else "late"}


def count(name: str, value: float = 1, **attributes: object) -> None:
    """Add to a counter, e.g. count("mdp_alerts_sent_total", 1, channel="webhook")."""
    if value < 0:
        raise ValueError(f"counter {name} cannot decrease (value {value})")
    sink = _sink()
    if sink is not None:
        sink.append(("counter", _checked(name, "counter"), value, attributes))
        return
    _telemetry().instrument(name, "counter").add(value, _attributes(attributes))


def observe(name: str, value: float, **attributes: object) -> None:
    """Record one value of a histogram, e.g. observe("mdp_stage_duration_seconds", 3.2, stage="raw")."""
    sink = _sink()
    if sink is not None:
        sink.append(("histogram", _checked(name, "histogram"), value, attributes))
        return
    _telemetry().instrument(name, "histogram").record(value, _attributes(attributes))


def gauge(name: str, value: float, **attributes: object) -> None:
    """Set a gauge, e.g. gauge("mdp_peak_memory_bytes", rss, stage="books")."""
    sink = _sink()
    if sink is not None:
        sink.append(("gauge", _checked(name, "gauge"), value, attributes))
        return
    _telemetry().instrument(name, "gauge").set(value, _attributes(attributes))


def flush() -> None:
    """Export now: the JSON-lines record, and the Pushgateway push when configured."""
    if _sink() is not None:  # the process that replays the records exports them
        return
    _telemetry().flush()


def shutdown() -> None:
    """Flush and stop this process's provider and /metrics server; the next call starts anew."""
    global _state, _state_key
    with _lock:
        if _state is not None and _state.pid == os.getpid():
            _state.shutdown()
        _state, _state_key = None, None


def prometheus_url() -> str | None:
    """The URL of this process's /metrics endpoint, when it is serving one."""
    server = _telemetry().server
    return server.url if server is not None else None


@dataclass
class StageUsage:
    seconds: float = 0.0
    peak_rss_bytes: int = 0

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_bytes / 2**20


@contextmanager
def measure_stage(stage: str, **attributes: object) -> Iterator[StageUsage]:
    """Time a block and its peak memory; records mdp_stage_duration_seconds and mdp_peak_memory_bytes.

    The usage is filled in when the block ends (also when it raises), for the stage's metadata.
    """
    usage = StageUsage()
    reset_peak_rss()
    started = time.perf_counter()
    try:
        yield usage
    finally:
        usage.seconds = time.perf_counter() - started
        usage.peak_rss_bytes = peak_rss_bytes()
        observe("mdp_stage_duration_seconds", usage.seconds, stage=stage, **attributes)
        gauge("mdp_peak_memory_bytes", usage.peak_rss_bytes, stage=stage, **attributes)


@contextmanager
def timed(name: str, **attributes: object) -> Iterator[None]:
    """Record the wall time of a block into the histogram `name` (e.g. mdp_sink_commit_seconds)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        observe(name, time.perf_counter() - started, **attributes)
