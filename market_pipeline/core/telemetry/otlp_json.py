"""An OpenTelemetry metric exporter that appends OTLP-JSON records to daily JSON-lines files.

Each export is one line holding an `ExportMetricsServiceRequest` in the OTLP/JSON encoding
(camelCase keys, 64-bit integers as strings, temporality 1 = delta, 2 = cumulative), so any OTLP
tooling can replay it. Counters and histograms are exported with **delta** temporality: every
line carries only what happened since the previous export of that process, so totals are plain
sums over the lines of every process, and a short-lived step process loses nothing. A gauge
appears in the export after it was set.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from opentelemetry.sdk.metrics import Counter, Histogram, _Gauge
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData

log = logging.getLogger(__name__)

FILE_PREFIX = "mdp-"  # metrics/mdp-YYYY-MM-DD.jsonl, one file per UTC day of export


def _any_value(value: object) -> dict[str, object]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": str(value)}


def _attributes(attributes: Mapping[str, object] | None) -> list[dict[str, object]]:
    return [{"key": key, "value": _any_value(value)} for key, value in sorted((attributes or {}).items())]


def _times(point: NumberDataPoint | HistogramDataPoint) -> dict[str, str]:
    # A gauge point has no start time (None in the SDK): OTLP leaves the field out, never "None".
    start = point.start_time_unix_nano
    return {
        **({"startTimeUnixNano": str(start)} if start is not None else {}),
        "timeUnixNano": str(point.time_unix_nano),
    }


def _number_point(point: NumberDataPoint) -> dict[str, object]:
    value = {"asInt": str(point.value)} if isinstance(point.value, int) else {"asDouble": point.value}
    return {"attributes": _attributes(point.attributes), **_times(point), **value}


def _histogram_point(point: HistogramDataPoint) -> dict[str, object]:
    return {
        "attributes": _attributes(point.attributes),
        **_times(point),
        "count": str(point.count),
        "sum": point.sum,
        "bucketCounts": [str(n) for n in point.bucket_counts],
        "explicitBounds": list(point.explicit_bounds),
        "min": point.min,
        "max": point.max,
    }


def _metric(metric) -> dict[str, object] | None:
    data = metric.data
    body: dict[str, object] = {"name": metric.name, "description": metric.description or "", "unit": metric.unit or ""}
    if isinstance(data, Sum):
        points = [_number_point(p) for p in data.data_points]
        body["sum"] = {
            "dataPoints": points,
            "aggregationTemporality": int(data.aggregation_temporality),
            "isMonotonic": data.is_monotonic,
        }
    elif isinstance(data, Gauge):
        points = [_number_point(p) for p in data.data_points]
        body["gauge"] = {"dataPoints": points}
    elif isinstance(data, HistogramData):
        points = [_histogram_point(p) for p in data.data_points]
        body["histogram"] = {"dataPoints": points, "aggregationTemporality": int(data.aggregation_temporality)}
    else:  # no instrument of ours produces other kinds (exponential histograms)
        return None
    return body if points else None


def otlp_json(metrics_data: MetricsData) -> dict[str, object] | None:
    """The OTLP/JSON `ExportMetricsServiceRequest` for one export (None when it has no points)."""
    resource_metrics = []
    for rm in metrics_data.resource_metrics:
        scopes = []
        for sm in rm.scope_metrics:
            metrics = [m for m in (_metric(metric) for metric in sm.metrics) if m is not None]
            if metrics:
                scopes.append({"scope": {"name": sm.scope.name, "version": sm.scope.version or ""}, "metrics": metrics})
        if scopes:
            resource_metrics.append(
                {"resource": {"attributes": _attributes(rm.resource.attributes)}, "scopeMetrics": scopes}
            )
    return {"resourceMetrics": resource_metrics} if resource_metrics else None


def metrics_file(directory: Path, when: dt.datetime) -> Path:
    return directory / f"{FILE_PREFIX}{when.date().isoformat()}.jsonl"


def append_line(path: Path, line: str) -> None:
    """Append one line with a single write under an exclusive lock: step processes share the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (line + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, data)
    finally:
        os.close(fd)  # closing releases the lock


class JsonLinesMetricExporter(MetricExporter):
    """Writes every export as one OTLP-JSON line to `directory/mdp-YYYY-MM-DD.jsonl`."""

    def __init__(self, directory: Path):
        super().__init__(
            # Delta for gauges too: a gauge is written when it was set, not again at every export.
            preferred_temporality={
                Counter: AggregationTemporality.DELTA,
                Histogram: AggregationTemporality.DELTA,
                _Gauge: AggregationTemporality.DELTA,
            }
        )
        self.directory = directory

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        record = otlp_json(metrics_data)
        if record is None:
            return MetricExportResult.SUCCESS
        path = metrics_file(self.directory, dt.datetime.now(dt.UTC))
        try:
            append_line(path, json.dumps(record, separators=(",", ":")))
        except OSError as exc:  # metrics must never fail a pipeline step
            log.warning("cannot write metrics to %s: %s", path, exc)
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        return None


def read_points(directory: Path) -> list[dict[str, object]]:
    """Every data point in the JSON-lines files, flattened: name, kind, attributes, value(s)."""
    points: list[dict[str, object]] = []
    for path in sorted(directory.glob(f"{FILE_PREFIX}*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON line: {exc}") from None
            for rm in record["resourceMetrics"]:
                for sm in rm["scopeMetrics"]:
                    for metric in sm["metrics"]:
                        kind = next(k for k in ("sum", "gauge", "histogram") if k in metric)
                        for point in metric[kind]["dataPoints"]:
                            attrs = {a["key"]: next(iter(a["value"].values())) for a in point["attributes"]}
                            value = point.get("asDouble", point.get("asInt"))
                            points.append(
                                {
                                    "name": metric["name"],
                                    "kind": kind,
                                    "unit": metric["unit"],
                                    "attributes": attrs,
                                    "value": float(value) if value is not None else None,
                                    "count": int(point["count"]) if "count" in point else None,
                                    "sum": point.get("sum"),
                                    "time_unix_nano": int(point["timeUnixNano"]),
                                }
                            )
    return points
