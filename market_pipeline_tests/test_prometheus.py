"""Prometheus exposition of the `mdp_` metrics: the exported names, types and labels (pinned), the
/metrics endpoint, the Pushgateway push."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

KEY = "BINANCE:BTC-USDT"

# One recording per documented metric, with the attributes docs/metrics.md lists.
RECORDINGS = (
    ("count", "mdp_source_items_total", 12, {"table": "trades", "instrument": KEY}),
    ("count", "mdp_quarantined_rows_total", 1, {"table": "trades", "instrument": KEY}),
    ("count", "mdp_book_deltas_applied_total", 100, {"instrument": KEY}),
    ("count", "mdp_book_messages_total", 40, {"instrument": KEY}),
    ("count", "mdp_sequence_gaps_total", 2, {"instrument": KEY, "kind": "sequence_gap"}),
    ("count", "mdp_gaps_filled_total", 2, {"instrument": KEY}),
    ("count", "mdp_precision_loss_total", 3, {"instrument": KEY}),
    ("count", "mdp_crossed_books_total", 1, {"instrument": KEY}),
    ("observe", "mdp_clock_skew_seconds", 0.003, {"instrument": KEY}),
    ("observe", "mdp_stage_duration_seconds", 1.5, {"stage": "raw_trades", "instrument": KEY}),
    ("gauge", "mdp_peak_memory_bytes", 2048, {"stage": "raw_trades", "instrument": KEY}),
    ("observe", "mdp_sink_commit_seconds", 0.02, {"stage": "lake_views", "sink": "duckdb_view"}),
    ("gauge", "mdp_events_per_second", 5000.5, {"stage": "raw_trades", "instrument": KEY}),
    ("count", "mdp_alerts_sent_total", 1, {"channel": "webhook", "severity": "ERROR", "outcome": "sent"}),
)

# What Prometheus sees for those recordings: sample name -> (type, label names). Pinned from the
# hand-written exporter before prometheus_client replaced it, so dashboards and alert rules keep working.
EXPORTED_SAMPLES = {
    "mdp_source_items_total": ("counter", ("instrument", "table")),
    "mdp_quarantined_rows_total": ("counter", ("instrument", "table")),
    "mdp_book_deltas_applied_total": ("counter", ("instrument",)),
    "mdp_book_messages_total": ("counter", ("instrument",)),
    "mdp_sequence_gaps_total": ("counter", ("instrument", "kind")),
    "mdp_gaps_filled_total": ("counter", ("instrument",)),
    "mdp_precision_loss_total": ("counter", ("instrument",)),
    "mdp_crossed_books_total": ("counter", ("instrument",)),
    "mdp_clock_skew_seconds_bucket": ("histogram", ("instrument", "le")),
    "mdp_clock_skew_seconds_sum": ("histogram", ("instrument",)),
    "mdp_clock_skew_seconds_count": ("histogram", ("instrument",)),
    "mdp_stage_duration_seconds_bucket": ("histogram", ("instrument", "le", "stage")),
    "mdp_stage_duration_seconds_sum": ("histogram", ("instrument", "stage")),
    "mdp_stage_duration_seconds_count": ("histogram", ("instrument", "stage")),
    "mdp_peak_memory_bytes": ("gauge", ("instrument", "stage")),
    "mdp_sink_commit_seconds_bucket": ("histogram", ("le", "sink", "stage")),
    "mdp_sink_commit_seconds_sum": ("histogram", ("sink", "stage")),
    "mdp_sink_commit_seconds_count": ("histogram", ("sink", "stage")),
    "mdp_events_per_second": ("gauge", ("instrument", "stage")),
    "mdp_alerts_sent_total": ("counter", ("channel", "outcome", "severity")),
}
CLOCK_SKEW_LE = "-1.0 -0.1 -0.01 -0.001 0.0 0.001 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1.0 2.5 5.0 10.0 +Inf".split()


def _use_environment_settings() -> None:
    """What a step's pipeline resource does: hand telemetry the (environment's) metrics settings."""
    from market_pipeline.defs.common.resources import use_settings
    from market_pipeline.settings import load_settings

    use_settings(load_settings())


def _record_all() -> None:
    from market_pipeline.core.telemetry import telemetry

    for kind, name, value, attributes in RECORDINGS:
        getattr(telemetry, kind)(name, value, **attributes)


def _scrape(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, float]]:
    """(sample name, sorted labels) -> (family type, value), parsed by prometheus_client."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): (family.type, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def endpoint(monkeypatch, tmp_path: Path):
    """This process's /metrics endpoint on a free port, with every documented metric recorded once."""
    from market_pipeline.core.telemetry import telemetry

    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PIPELINE_METRICS__PROMETHEUS_PORT", "0")
    _use_environment_settings()
    telemetry.shutdown()
    try:
        _record_all()
        url = telemetry.prometheus_url()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        yield url
    finally:
        telemetry.shutdown()


def test_exported_names_types_and_labels_are_pinned(endpoint):
    _, text = _scrape(endpoint)
    samples = _samples(text)
    exported = {name: (kind, tuple(sorted(k for k, _ in labels))) for (name, labels), (kind, _) in samples.items()}
    assert exported == EXPORTED_SAMPLES
    le = [dict(labels)["le"] for (name, labels) in samples if name == "mdp_clock_skew_seconds_bucket"]
    assert sorted(le, key=float) == CLOCK_SKEW_LE
    types = {"count": "counter", "observe": "histogram", "gauge": "gauge"}
    for kind, name, _, _ in RECORDINGS:  # TYPE lines name the family as the recording does
        assert f"# TYPE {name} {types[kind]}\n" in text


def test_endpoint_serves_cumulative_values(endpoint):
    from market_pipeline.core.telemetry import telemetry

    telemetry.count("mdp_source_items_total", 5, table="trades", instrument=KEY)
    telemetry.observe("mdp_clock_skew_seconds", 0.2, instrument=KEY)
    telemetry.flush()  # cumulative for Prometheus even though the JSON lines are delta
    content_type, text = _scrape(endpoint)
    assert content_type.startswith("text/plain; version=")
    samples = _samples(text)
    labels = (("instrument", KEY),)
    assert samples[("mdp_source_items_total", (*labels, ("table", "trades")))][1] == 17
    assert samples[("mdp_clock_skew_seconds_bucket", (*labels, ("le", "0.005")))][1] == 1
    assert samples[("mdp_clock_skew_seconds_bucket", (*labels, ("le", "+Inf")))][1] == 2
    assert samples[("mdp_clock_skew_seconds_count", labels)][1] == 2
    assert samples[("mdp_clock_skew_seconds_sum", labels)][1] == pytest.approx(0.203)
    assert samples[("mdp_peak_memory_bytes", (*labels, ("stage", "raw_trades")))][1] == 2048
    assert samples[("mdp_events_per_second", (*labels, ("stage", "raw_trades")))][1] == 5000.5
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(endpoint.replace("/metrics", "/other"), timeout=10)
    assert error.value.code == 404


class _Gateway:
    """A stand-in Pushgateway on 127.0.0.1 that records every request."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.append((self.command, self.path, self.rfile.read(length).decode()))
                self.send_response(200)
                self.end_headers()

            do_POST = do_PUT = _record  # noqa: N815 (http.server's naming)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway():
    server = _Gateway()
    yield server
    server.close()


def test_pushgateway_groups_per_run_and_process(monkeypatch, tmp_path: Path, gateway):
    """Each run's process pushes (PUT) to a group of its own, so no push erases another's series."""
    import os
    import socket
    from urllib.parse import unquote

    from market_pipeline.core.telemetry import telemetry
    from market_pipeline.defs.common.resources import use_settings
    from market_pipeline.settings import load_settings

    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PIPELINE_METRICS__PUSHGATEWAY_URL", gateway.url)
    settings = load_settings()
    try:
        for run_id, alerts in (("run-a", 1), ("run-b", 2)):
            use_settings(settings, run_id)  # what the pipeline resource does when a run's step starts
            telemetry.count("mdp_alerts_sent_total", alerts, channel="webhook", outcome="sent")
            telemetry.flush()
    finally:
        telemetry.shutdown()
    instance = f"{socket.gethostname()}:{os.getpid()}"
    pushes = {}  # grouping key -> body
    for _, path, body in gateway.received:
        parts = [unquote(part) for part in path.removeprefix("/metrics/").split("/")]
        pushes[tuple(sorted(zip(parts[::2], parts[1::2], strict=True)))] = body
    assert {method for method, _, _ in gateway.received} == {"PUT"}  # PUT: the group holds one process
    labels = (("channel", "webhook"), ("outcome", "sent"))
    for run_id, alerts in (("run-a", 1), ("run-b", 2)):  # each run's group holds its own figures
        body = pushes[(("instance", instance), ("job", "market_pipeline"), ("run_id", run_id))]
        assert _samples(body)[("mdp_alerts_sent_total", labels)][1] == alerts
