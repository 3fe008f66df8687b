"""`market-pipeline health`: one JSON object, exit 0 only when nothing needs attention."""

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from market_pipeline_tests.support.dagster_instance import assets_named, code_location, range_tags
from market_pipeline_tests.support.files import keep_pristine, restore_pristine
from market_pipeline_tests.support.project import VENV_BIN, subprocess_env

DAY = dt.date(2024, 3, 1)


RAW = ("raw_trades", "raw_book_snapshots", "raw_book_deltas", "raw_book_ticker", "raw_depth_snapshots")


def _code_location(settings=None):
    """Raw assets plus a tiny asset with an ERROR-severity and a WARN-severity check."""
    import dagster as dg

    from market_pipeline.defs.common.resources import build_resources
    from market_pipeline.settings import load_settings

    settings = settings if settings is not None else load_settings()
    raw_assets = assets_named(code_location(settings), *RAW)

    @dg.asset
    def probe() -> None:
        return None

    @dg.asset_check(asset=probe, name="must_hold")
    def must_hold() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, description="it did not hold")

    @dg.asset_check(asset=probe, name="nice_to_have")
    def nice_to_have() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, description="only a warning")

    return dg.Definitions(
        assets=[*raw_assets, probe], asset_checks=[must_hold, nice_to_have], resources=build_resources(settings)
    )


@pytest.fixture
def health(monkeypatch, dagster_home, data_dir):
    """Runs the health report in-process against the test code location."""
    from market_pipeline.cli import health as health_module

    monkeypatch.setenv("PIPELINE_METRICS__MIN_FREE_DISK_GB", "0")  # CI disks vary
    monkeypatch.setattr(health_module, "load_code_location", _code_location)

    def run() -> tuple[dict, int]:
        report, code = health_module.health_report()
        json.dumps(report)  # printable as one JSON object
        return report, code

    return run


@pytest.fixture(scope="module")
def _materialized_world(tmp_path_factory):
    """raw_trades for one day from a small local vendor lake, materialized once for the module into
    a Dagster home and a data dir of its own; kept as pristine copies the tests restore."""
    import shutil

    import dagster as dg

    from market_pipeline.core.telemetry import telemetry
    from market_pipeline_tests.support.project import PROJECT_DAGSTER_YAML
    from market_pipeline_tests.support.vendor_lake import VendorLake

    root = tmp_path_factory.mktemp("health_world")
    home, data, vendor = root / "dagster_home", root / "data", root / "vendor"
    for path in (home, data, vendor):
        path.mkdir()
    shutil.copy(PROJECT_DAGSTER_YAML, home / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        "PIPELINE_DATA_DIR": str(data),
        "PIPELINE_SOURCE": "local",
        "PIPELINE_LOCAL_DIR": str(VendorLake(vendor)(tables=["trades"], days=[DAY], rows=20)),
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        defs = code_location()
        with dg.DagsterInstance.get() as instance:
            result = dg.materialize(
                assets_named(defs, "raw_trades", "lake_views"),
                instance=instance,
                resources=defs.resources,
                tags=range_tags(DAY.isoformat(), DAY.isoformat()),
            )
        assert result.success
        telemetry.shutdown()
    for path in (home, data):
        keep_pristine(path)
    return env


@pytest.fixture
def materialized(monkeypatch, _materialized_world, health):
    """The module's materialized world, restored to how its one run left it (a test may corrupt the
    warehouse or record more runs), as this test's DAGSTER_HOME and data dir: the data dir."""
    for name, value in _materialized_world.items():
        monkeypatch.setenv(name, value)
    for name in ("DAGSTER_HOME", "PIPELINE_DATA_DIR"):
        restore_pristine(Path(_materialized_world[name]))
    return Path(_materialized_world["PIPELINE_DATA_DIR"])


@pytest.fixture
def materialized_instance(materialized):
    """The Dagster instance of the materialized world."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        yield instance


def test_fresh_data_dir_needs_attention(health, data_dir):
    report, code = health()
    assert code == 1 and report["status"] == "attention"
    assert report["warehouse"]["status"] == "missing"
    assert any("nothing has been materialized" in p for p in report["problems"])
    assert report["assets"]["raw_trades"] == {
        "last_partition": None,
        "partitions_materialized": 0,
        "last_materialized_at": None,
    }
    assert report["checks"]["probe:must_hold"] == {"result": "never_run"}
    assert report["lake"]["bytes"] == 0 and report["disk"]["free_bytes"] > 0


def test_healthy_after_a_materialization(health, materialized):
    report, code = health()
    assert report["problems"] == [] and code == 0 and report["status"] == "ok"
    assert report["assets"]["raw_trades"]["last_partition"] == DAY.isoformat()
    assert report["assets"]["raw_trades"]["partitions_materialized"] == 1
    assert report["assets"]["raw_book_deltas"]["last_partition"] is None
    assert report["warehouse"]["status"] == "ok" and "raw.trades" in report["warehouse"]["tables"]
    assert report["lake"]["files"] >= 2 and report["lake"]["bytes"] > 0
    assert report["metrics_files"]["files"] == 1  # mdp_* JSON lines of the import


def test_warehouse_locked_by_a_writer_is_busy_not_broken(health, materialized):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('locked', flush=True); sys.stdin.read()",
            str(materialized / "warehouse.duckdb"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        report, code = health()
    finally:
        holder.communicate("", timeout=30)
    assert report["warehouse"]["status"] == "busy"
    assert code == 0 and any("locked by a running writer" in w for w in report["warnings"])


def test_corrupt_warehouse_needs_attention(health, materialized):
    (materialized / "warehouse.duckdb").write_bytes(b"this is not a duckdb file" * 1000)
    report, code = health()
    assert code == 1
    assert report["warehouse"]["status"] in {"corrupt", "unreadable"}
    assert any("warehouse" in p for p in report["problems"])


def test_failed_error_check_needs_attention(health, materialized_instance):
    instance = materialized_instance
    import dagster as dg

    defs = _code_location()
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        instance=instance,
        resources=defs.resources,
        selection=dg.AssetSelection.assets("probe"),
    )
    assert result.success  # failed checks do not fail the run (not blocking): only health notices
    report, code = health()
    assert code == 1
    assert report["checks"]["probe:must_hold"]["result"] == "failed"
    assert report["checks"]["probe:must_hold"]["severity"] == "ERROR"
    assert report["checks"]["probe:nice_to_have"]["severity"] == "WARN"
    assert [p for p in report["problems"] if "check" in p] == [
        "check probe:must_hold failed with ERROR severity: it did not hold"
    ]


def test_a_failed_warn_check_is_a_warning_with_its_own_exit_code(health, materialized_instance):
    instance = materialized_instance
    import dagster as dg

    defs = _code_location()
    probe = [a for a in defs.assets if a.key == dg.AssetKey("probe")]
    warn_only = [c for c in defs.asset_checks if c.check_key.name == "nice_to_have"]
    assert dg.materialize([*probe, *warn_only], instance=instance, resources=defs.resources).success
    report, code = health()
    assert code == 10 and report["status"] == "warnings" and report["problems"] == []
    assert report["warnings"] == ["check probe:nice_to_have failed with WARN severity: only a warning"]
    assert report["checks"]["probe:must_hold"] == {"result": "never_run"}


def test_a_failed_day_is_named_after_a_later_passing_day(health, materialized_instance, monkeypatch):
    """A check's single latest evaluation may be a day that passed: each day's latest counts."""
    instance = materialized_instance
    import dagster as dg

    days = dg.DailyPartitionsDefinition(start_date="2024-03-01", end_date="2024-03-03")

    @dg.asset(partitions_def=days)
    def daily_probe() -> None:
        return None

    @dg.asset_check(asset=daily_probe, name="first_day_only", partitions_def=days)
    def first_day_only(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        first = context.partition_key == "2024-03-01"
        return dg.AssetCheckResult(
            passed=not first, severity=dg.AssetCheckSeverity.ERROR, description=f"{context.partition_key} broke"
        )

    def code_location_with_daily_probe(settings=None):
        return dg.Definitions.merge(
            _code_location(settings), dg.Definitions(assets=[daily_probe], asset_checks=[first_day_only])
        )

    for day in ("2024-03-01", "2024-03-02"):
        assert dg.materialize([daily_probe, first_day_only], instance=instance, partition_key=day).success
    from market_pipeline.cli import health as health_module

    monkeypatch.setattr(health_module, "load_code_location", code_location_with_daily_probe)
    report, code = health()
    entry = report["checks"]["daily_probe:first_day_only"]
    assert (entry["partition"], entry["result"]) == ("2024-03-02", "passed")
    assert entry["failed_partitions"] == ["2024-03-01"]
    assert code == 1
    assert (
        "check daily_probe:first_day_only failed with ERROR severity (partition 2024-03-01): 2024-03-01 broke"
        in (report["problems"])
    )


def test_low_free_disk_needs_attention(health, materialized, monkeypatch):
    monkeypatch.setenv("PIPELINE_METRICS__MIN_FREE_DISK_GB", "1000000000")
    report, code = health()
    assert code == 1 and any("PIPELINE_METRICS__MIN_FREE_DISK_GB" in p for p in report["problems"])


def test_cli_without_dagster_home_and_data_dir(tmp_path: Path):
    """The console script on a broken setup: still one JSON object, exit 1, every problem named."""
    env = subprocess_env(PIPELINE_DATA_DIR=str(tmp_path / "missing"))
    env.pop("DAGSTER_HOME", None)
    proc = subprocess.run(
        [str(VENV_BIN / "market-pipeline"), "health"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "attention"
    assert any("DAGSTER_HOME is not set" in p for p in report["problems"])
    assert any("does not exist" in p and "missing" in p for p in report["problems"])


def _get_health(url: str) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def health_server(health):
    """`market-pipeline serve` in this process on a free port: its /health URL."""
    from market_pipeline.cli.serve import start_health_server
    from market_pipeline.core.telemetry import telemetry

    try:
        yield start_health_server("127.0.0.1", 0)
    finally:
        telemetry.shutdown()


def test_http_health_is_200_when_healthy(materialized, health_server):
    status, body = _get_health(health_server)
    assert status == 200 and body["status"] == "ok" and body["problems"] == []
    assert body["assets"]["raw_trades"]["last_partition"] == DAY.isoformat()
    metrics_url = health_server.removesuffix("/health") + "/metrics"
    import urllib.request

    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        assert response.status == 200  # the same server serves /metrics


@pytest.mark.slow
def test_serve_command_answers_until_sigterm(dagster_home, data_dir, tmp_path: Path):
    """`market-pipeline serve` as a process: says what it waits for, answers /health, stops on SIGTERM."""
    import signal
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = subprocess_env(PIPELINE_METRICS__MIN_FREE_DISK_GB="0")
    server = subprocess.Popen(
        [str(VENV_BIN / "market-pipeline"), "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()  # printed once the server listens
        assert line.startswith(f"serving http://127.0.0.1:{port}/health") and "SIGTERM" in line, server.stderr.read()
        status, body = _get_health(f"http://127.0.0.1:{port}/health")
        assert status == 503 and body["warehouse"]["status"] == "missing"  # nothing materialized yet
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
