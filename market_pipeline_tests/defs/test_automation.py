"""The daily schedule, the new-day sensor, and one smoke test of dagster-daemon ticking it."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from market_pipeline.defs.automation.schedules import DAILY_PIPELINE_JOB, DAILY_PIPELINE_SCHEDULE
from market_pipeline.defs.automation.sensors import format_cursor, parse_cursor
from market_pipeline.defs.raw.assets import RAW_ASSET_TABLES
from market_pipeline_tests.support.project import REPO_ROOT, VENV_BIN, subprocess_env
from market_pipeline_tests.support.vendor_lake import VendorLake

D1, D2, D3 = dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)
SOURCE_TABLES = ("trades", "book", "book_delta_v2")  # what a local vendor lake holds


@pytest.fixture
def local_source(monkeypatch: pytest.MonkeyPatch, vendor_lake: VendorLake, data_dir: Path) -> VendorLake:
    monkeypatch.setenv("PIPELINE_SOURCE", "local")
    monkeypatch.setenv("PIPELINE_LOCAL_DIR", str(vendor_lake.root))
    monkeypatch.setenv("PIPELINE_START_DATE", D2.isoformat())
    return vendor_lake


def evaluate(instance: dg.DagsterInstance, data_dir: Path, cursor: str | None) -> dg.SensorResult:
    """One tick of the code location's new_source_days, for the settings of the environment now."""
    from market_pipeline.definitions import build_definitions
    from market_pipeline.settings import load_settings

    settings = load_settings(data_dir=data_dir)
    sensor = build_definitions(settings).resolve_sensor_def("new_source_days")
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"pipeline": settings})
    return sensor(context)


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from market_pipeline.definitions import build_definitions
    from market_pipeline.settings import load_settings

    return build_definitions(load_settings())


def test_daily_schedule_targets_yesterday_at_the_configured_hour(
    instance: dg.DagsterInstance, defs: dg.Definitions
) -> None:
    schedule = defs.resolve_schedule_def(DAILY_PIPELINE_SCHEDULE)
    assert schedule.cron_schedule == "0 2 * * *"  # schedule.daily_hour_utc default
    assert schedule.execution_timezone == "UTC"
    assert schedule.job_name == DAILY_PIPELINE_JOB
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=dt.datetime(2024, 3, 5, 2, 0, tzinfo=dt.UTC)
    )
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2024-03-04"


def test_daily_job_covers_every_asset(defs: dg.Definitions) -> None:
    job = defs.resolve_job_def(DAILY_PIPELINE_JOB)
    graph = defs.resolve_asset_graph()
    assert set(job.asset_layer.selected_asset_keys) == set(graph.materializable_asset_keys)


def test_new_day_sensor_requests_each_new_day_once(
    instance: dg.DagsterInstance, data_dir: Path, local_source: VendorLake
) -> None:
    # D1 is before PIPELINE_START_DATE; D2 is complete; D3 has only one of the two instruments.
    local_source(tables=SOURCE_TABLES, days=[D1, D2], rows=5)
    local_source(tables=SOURCE_TABLES, instruments=[("BINANCE", "BTC-USDT")], days=[D3], rows=5)

    first = evaluate(instance, data_dir, None)
    assert [(r.partition_key, r.run_key) for r in first.run_requests] == [("2024-03-02", "source-day:2024-03-02")]
    assert parse_cursor(first.cursor) == {D2}

    again = evaluate(instance, data_dir, first.cursor)
    assert again.run_requests == [] and "no new day" in again.skip_reason.skip_message
    assert again.cursor == first.cursor

    # D3 completes, D4 appears already materialized (e.g. by a manual backfill): only D3 is new.
    d4 = D3 + dt.timedelta(days=1)
    local_source(tables=SOURCE_TABLES, instruments=[("BINANCE_FUTURES", "BTC-USDT-PERP")], days=[D3], rows=5)
    local_source(tables=SOURCE_TABLES, days=[d4], rows=5)
    for key in RAW_ASSET_TABLES:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=d4.isoformat()))
    third = evaluate(instance, data_dir, again.cursor)
    assert [r.partition_key for r in third.run_requests] == ["2024-03-03"]
    assert parse_cursor(third.cursor) == {D2, D3}
    assert third.cursor == format_cursor({D2, D3}) == '{"requested": [["2024-03-02", "2024-03-03"]]}'


def test_new_day_sensor_skips_a_source_that_cannot_list_days(
    instance: dg.DagsterInstance, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_SOURCE", "synthetic")
    result = evaluate(instance, data_dir, None)
    assert result.run_requests == []
    assert "PIPELINE_SOURCE=synthetic" in result.skip_reason.skip_message
    assert "available_days" in result.skip_reason.skip_message


def test_bad_cursor_is_named() -> None:
    with pytest.raises(ValueError, match="new_source_days: unreadable sensor cursor"):
        parse_cursor('{"requested": [["2024-03-02"]]}')


DAEMON_DAGSTER_YAML = """\
storage:
  sqlite:
    base_dir:
      env: DAGSTER_HOME
concurrency:
  runs:
    max_concurrent_runs: 0   # the requested run stays queued: this test checks the request only
telemetry:
  enabled: false
"""


@pytest.mark.slow
@pytest.mark.daemon
def test_daemon_ticks_the_new_day_sensor(tmp_path: Path, dagster_home: Path, vendor_lake: VendorLake) -> None:
    """dagster-daemon on a temp instance: one sensor tick finds the new day and queues its run."""
    home = dagster_home
    (home / "dagster.yaml").write_text(DAEMON_DAGSTER_YAML)
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: market_pipeline.definitions\n"
        f"      working_directory: {REPO_ROOT}\n"
        f"      executable_path: {VENV_BIN / 'python'}\n"
        "      location_name: market_pipeline\n"
    )
    vendor_lake(tables=SOURCE_TABLES, days=[D2], rows=5)
    env = subprocess_env(
        DAGSTER_HOME=str(home),
        PIPELINE_SOURCE="local",
        PIPELINE_LOCAL_DIR=str(vendor_lake.root),
        PIPELINE_DATA_DIR=str(tmp_path / "data"),
        PIPELINE_START_DATE=D2.isoformat(),
        PIPELINE_SCHEDULE__DEFAULT_STATUS="running",
    )
    log = tmp_path / "daemon.log"
    # Create the instance's SQLite tables before the daemon starts: two processes creating them at
    # once race ("table jobs already exists") and the daemon dies of it.
    dg.DagsterInstance.get().dispose()
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(workspace)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    runs = []
    try:
        with dg.DagsterInstance.get() as instance:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and daemon.poll() is None:
                runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": "new_source_days"}))
                if runs and runs[0].status != dg.DagsterRunStatus.NOT_STARTED:  # submitted to the queue
                    break
                time.sleep(0.5)
    finally:
        if daemon.poll() is not None:
            raise AssertionError(f"dagster-daemon exited early:\n{log.read_text()[-3000:]}")
        os.killpg(daemon.pid, signal.SIGTERM)  # the daemon and its code server: a clean shutdown
        try:
            code = daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
            raise AssertionError(f"dagster-daemon did not stop on SIGTERM:\n{log.read_text()[-3000:]}") from None
    assert runs, f"no run requested by new_source_days:\n{log.read_text()[-3000:]}"
    (run,) = runs
    assert run.tags["dagster/partition"] == "2024-03-02"
    assert run.job_name == DAILY_PIPELINE_JOB
    assert run.status == dg.DagsterRunStatus.QUEUED
    assert code in (0, -signal.SIGTERM), log.read_text()[-3000:]
