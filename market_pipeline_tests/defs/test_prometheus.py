"""Prometheus exposition of the `mdp_` metrics: the exported names, types and labels (pinned), the
/metrics endpoint, the Pushgateway push."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from market_pipeline_tests.support.tools import missing_tool

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
    ("observe", "mdp_clock_skew_seconds", 0.003, {"instrument": KEY, "direction": "late"}),
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
    "mdp_clock_skew_seconds_bucket": ("histogram", ("direction", "instrument", "le")),
    "mdp_clock_skew_seconds_sum": ("histogram", ("direction", "instrument")),
    "mdp_clock_skew_seconds_count": ("histogram", ("direction", "instrument")),
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
CLOCK_SKEW_LE = "0.001 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1.0 2.5 5.0 10.0 +Inf".split()


def _environment_settings():
    """What a step's pipeline resource does: run in the core context of the (environment's) settings."""
    from market_pipeline.core import context
    from market_pipeline.defs.common.resources import core_context
    from market_pipeline.settings import load_settings

    return context.using(core_context(load_settings()))


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
    with _environment_settings():
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
    telemetry.observe("mdp_clock_skew_seconds", 0.2, instrument=KEY, direction="late")
    telemetry.flush()  # cumulative for Prometheus even though the JSON lines are delta
    content_type, text = _scrape(endpoint)
    assert content_type.startswith("text/plain; version=")
    samples = _samples(text)
    labels = (("instrument", KEY),)
    assert samples[("mdp_source_items_total", (*labels, ("table", "trades")))][1] == 17
    skew = (("direction", "late"), *labels)
    assert samples[("mdp_clock_skew_seconds_bucket", (*skew, ("le", "0.005")))][1] == 1
    assert samples[("mdp_clock_skew_seconds_bucket", (*skew, ("le", "+Inf")))][1] == 2
    assert samples[("mdp_clock_skew_seconds_count", skew)][1] == 2
    assert samples[("mdp_clock_skew_seconds_sum", skew)][1] == pytest.approx(0.203)
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

    from market_pipeline.core import context
    from market_pipeline.core.telemetry import telemetry
    from market_pipeline.defs.common.resources import core_context
    from market_pipeline.settings import load_settings

    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PIPELINE_METRICS__PUSHGATEWAY_URL", gateway.url)
    settings = load_settings()
    try:
        for run_id, alerts in (("run-a", 1), ("run-b", 2)):
            with context.using(core_context(settings, run_id)):  # what the pipeline resource does for a run's step
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


# ---------------------------------------------------------------------------------------
# The Grafana dashboard and the Docker Compose stack
# ---------------------------------------------------------------------------------------


def _dashboard_exprs() -> list[str]:
    """The PromQL of every panel of the Grafana dashboard."""
    import json

    from market_pipeline_tests.support.project import REPO_ROOT

    dashboard = json.loads((REPO_ROOT / "docs" / "grafana" / "market_pipeline.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_grafana_queries_use_only_exported_names(endpoint):
    """Every `mdp_` name in the dashboard's PromQL is a series the exporter emits (the real
    Prometheus test below also evaluates them)."""
    import re

    exported = {name for name, _ in _samples(_scrape(endpoint)[1])}
    exprs = _dashboard_exprs()
    assert exprs
    for expr in exprs:
        names = set(re.findall(r"\bmdp_[a-zA-Z0-9_]+", expr))
        assert names, f"no mdp_ metric in {expr!r}"
        assert names <= exported, f"{expr!r} queries {sorted(names - exported)}, which nothing exports"


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_compose_stack_is_loopback_only_and_provisioned_from_the_repo():
    from market_pipeline.cli.main import build_parser
    from market_pipeline_tests.support.project import REPO_ROOT

    compose = _yaml(REPO_ROOT / "docker-compose.yml")
    services = compose["services"]
    assert {"webserver", "daemon", "health", "pushgateway", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        for port in service.get("ports", []):  # no authentication anywhere: published on loopback only
            assert str(port).startswith("127.0.0.1:"), f"service {name} publishes {port} beyond loopback"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):  # a file of this repository, mounted into the container
                assert (REPO_ROOT / source).exists(), f"service {name} mounts {source}, which does not exist"
    # The image's HEALTHCHECK asks /health on the port the health service serves it on.
    health = services["health"]["command"]
    args = build_parser().parse_args(health[1:])
    assert health[0] == "market-pipeline" and args.command == "serve"
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert f"http://127.0.0.1:{args.port}/health" in dockerfile.split("HEALTHCHECK", 1)[1]
    assert '"/opt/dagster/dagster_home"' in dockerfile.split("VOLUME", 1)[1].splitlines()[0]
    # Prometheus scrapes services of the stack; Grafana reads that Prometheus and the repo's dashboard.
    prometheus = _yaml(REPO_ROOT / "docker" / "prometheus.yml")
    targets = [t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert {target.split(":")[0] for target in targets} <= set(services)
    assert any(job.get("honor_labels") for job in prometheus["scrape_configs"])  # the Pushgateway's pushed labels
    provisioning = REPO_ROOT / "docker" / "grafana" / "provisioning"
    (datasource,) = _yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"].split("//")[1].split(":")[0] == "prometheus"
    (provider,) = _yaml(provisioning / "dashboards" / "market_pipeline.yml")["providers"]
    mounts = dict(v.split(":")[:2][::-1] for v in services["grafana"]["volumes"] if v.startswith("."))
    dashboard = REPO_ROOT / mounts[provider["options"]["path"]] / "market_pipeline.json"
    # File provisioning does not fill the import-time `${DS_...}` inputs: panels name the variable.
    assert "${DS_" not in dashboard.read_text()


# ---------------------------------------------------------------------------------------
# A real Prometheus server scraping a materialization
# ---------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str) -> dict:
    import json

    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _wait_for(what: str, condition, timeout: float = 20.0):
    """condition() until it returns something truthy; fails naming what it waited for."""
    import time

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except OSError as exc:  # not listening yet
            result, last_error = None, exc
        if result:
            return result
        time.sleep(0.25)
    pytest.fail(f"waited {timeout:.0f} s for {what}; last error: {last_error}")


@pytest.fixture
def prometheus_server(tmp_path: Path):
    """A Prometheus server (Debian package `prometheus`) on 127.0.0.1 scraping 127.0.0.1:<port>
    every second; yields (exporter port, Prometheus base URL)."""
    import shutil
    import subprocess

    binary = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if binary is None:
        missing_tool("prometheus", "no prometheus binary on PATH or at /usr/bin/prometheus")
    exporter_port, web_port = _free_port(), _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: market_pipeline\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n"
    )
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    url = f"http://127.0.0.1:{web_port}"
    try:
        _wait_for("Prometheus to be ready", lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200)
        yield exporter_port, url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_real_prometheus_scrapes_a_materialization(prometheus_server, monkeypatch, instance, data_dir, vendor_lake):
    import datetime as dt
    from urllib.parse import quote

    import dagster as dg

    from market_pipeline.core.telemetry import telemetry
    from market_pipeline_tests.support.dagster_instance import assets_named, code_location, range_tags

    exporter_port, prometheus = prometheus_server
    day = dt.date(2024, 3, 1)
    monkeypatch.setenv("PIPELINE_SOURCE", "local")
    monkeypatch.setenv("PIPELINE_LOCAL_DIR", str(vendor_lake(tables=["trades"], days=[day], rows=20)))
    monkeypatch.setenv("PIPELINE_METRICS__PROMETHEUS_PORT", str(exporter_port))
    defs = code_location()
    try:
        result = dg.materialize(
            assets_named(defs, "raw_trades", "lake_views"),
            instance=instance,
            resources=defs.resources,
            tags=range_tags(day.isoformat(), day.isoformat()),
        )
        assert result.success

        def series(query: str) -> dict[tuple, float] | None:
            answer = _get_json(f"{prometheus}/api/v1/query?query={quote(query)}")
            found = {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in answer["data"]["result"]}
            return found or None

        # lake_views records last: once a scrape has it, the scraped values are the run's final ones.
        commits = 'mdp_sink_commit_seconds_count{stage="lake_views"}'
        assert list(_wait_for(f"Prometheus to scrape {commits}", lambda: series(commits)).values()) == [1.0]
        rows = series("mdp_source_items_total")
        scraped = {
            "__name__": "mdp_source_items_total",
            "instance": f"127.0.0.1:{exporter_port}",
            "job": "market_pipeline",
        }
        assert rows == {  # 20 vendor rows per instrument (vendor_lake), with the labels recorded
            tuple(sorted({**scraped, "instrument": instrument, "table": "trades"}.items())): 20.0
            for instrument in ("BINANCE:BTC-USDT", "BINANCE_FUTURES:BTC-USDT-PERP")
        }
        durations = series('mdp_stage_duration_seconds_count{stage="raw_trades"}')
        assert sorted(durations.values()) == [1.0, 1.0]  # one import per instrument-day
        for expr in _dashboard_exprs():  # Prometheus parses and evaluates every dashboard query
            query = expr.replace("$__rate_interval", "10s").replace("$__range", "1m")
            assert _get_json(f"{prometheus}/api/v1/query?query={quote(query)}")["status"] == "success", expr
    finally:
        telemetry.shutdown()
