"""Per-day truth in the Dagster UI, through the webserver's GraphQL API (no browser): two days
materialized as ONE run (the single-run backfill policy) show each day's check result and each
day's metadata per partition, with the queries the UI's check Partitions tab, its plots by
partition and its backfill dialog use. test_ui.py asserts the same on the demo in a browser.

The days are the last two complete UTC days: the UI plots per partition only the latest 120
partitions, and its backfill dialog shows the last 90 days.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from types import SimpleNamespace

import polars as pl
import pytest

from market_pipeline_tests.support.dagster_instance import assets_named, code_location, range_tags
from market_pipeline_tests.support.dagster_ui import free_port, noise_lines, stop, wait_for_asset
from market_pipeline_tests.support.project import PROJECT_DAGSTER_YAML, REPO_ROOT, VENV_BIN, subprocess_env
from market_pipeline_tests.support.ui_queries import (
    assert_evaluations_follow_their_materializations,
    check_executions,
    check_statuses,
    dialog_window,
    latest_by_partition,
)

pytestmark = pytest.mark.webserver  # dagster-webserver over the module's instance

_YESTERDAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
DAYS = [_YESTERDAY - dt.timedelta(days=1), _YESTERDAY]
CLEAN, FAULTED = DAYS
INSTRUMENT = "BINANCE:BTC-USDT"
ASSET = "raw_book_deltas"
ENV = {
    "PIPELINE_INSTRUMENTS": INSTRUMENT,
    "PIPELINE_START_DATE": "2024-01-01",  # more than 90 partitions: the dialog offers "Show all partitions"
    "PIPELINE_WORKERS": "1",
    "PIPELINE_SYNTHETIC__SCALE": "0.005",
    "PIPELINE_SYNTHETIC__FAULTS__OFF_GRID_PRICES": "3",  # price_precision fails with ERROR that day
    "PIPELINE_SYNTHETIC__FAULTS__DAYS": json.dumps([FAULTED.isoformat()]),
}
# Every check on raw_book_deltas that judges a day, and its expected status per day.
EXPECTED = {
    name: {CLEAN.isoformat(): "SUCCEEDED", FAULTED.isoformat(): "SUCCEEDED"}
    for name in ("clock_skew", "duplicate_rows", "origin_time", "schema_and_row_counts", "sequence_gaps")
}
EXPECTED["price_precision"] = {CLEAN.isoformat(): "SUCCEEDED", FAULTED.isoformat(): "FAILED"}


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A range of two days materialized in one run (raw_book_snapshots, raw_book_deltas and their
    checks), and dagster-webserver on a free 127.0.0.1 port over that instance."""
    import dagster as dg

    from market_pipeline.settings import load_settings

    root = tmp_path_factory.mktemp("ui")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_DAGSTER_YAML, home / "dagster.yaml")
    env = {**ENV, "PIPELINE_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(home)}
    mp = pytest.MonkeyPatch()
    for name, value in env.items():
        mp.setenv(name, value)
    try:
        settings = load_settings()
        defs = code_location(settings)
        assets = {"raw_book_snapshots", ASSET}
        checks = [  # the per-day checks on these assets (freshness is judged in its own job)
            c
            for c in defs.asset_checks
            if all(key.asset_key.to_user_string() in assets and key.name != "freshness" for key in c.check_keys)
        ]
        instance = dg.DagsterInstance.get()
        try:
            result = dg.materialize(
                [*assets_named(defs, *sorted(assets)), *checks],
                instance=instance,
                resources=defs.resources,
                tags=range_tags(CLEAN.isoformat(), FAULTED.isoformat()),
            )
            assert result.success
        finally:
            instance.dispose()

        workspace = root / "workspace.yaml"
        workspace.write_text(
            "load_from:\n  - python_module:\n      module_name: market_pipeline.definitions\n"
            f"      working_directory: {REPO_ROOT}\n      location_name: market_pipeline\n"
        )
        port = free_port()
        log = root / "webserver.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [str(VENV_BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", str(workspace)],
                env=subprocess_env(**env),
                cwd=root,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its code server is stopped with it
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_asset(url, ASSET, proc, log)
            yield SimpleNamespace(url=url, settings=settings, run_id=result.run_id, log=log)
        finally:
            stop(proc)
    finally:
        mp.undo()


def test_each_check_shows_each_days_result_in_the_check_partitions_tab(ui):
    """`AssetCheck.partitionStatuses` is what the check's Partitions tab draws; before the checks
    named their target materialization, every day of a range run came back empty (Missing)."""
    statuses = check_statuses(ui.url, ASSET)
    assert {name: s for name, s in statuses.items() if name in EXPECTED} == EXPECTED


def test_each_day_has_its_own_materialization_with_that_days_figures(ui):
    """`latestMaterializationByPartition` is what the asset's plots by partition draw: one
    materialization per day of the one run, each with the rows that day's lake file holds."""
    events = latest_by_partition(ui.url, ASSET, DAYS)
    assert [e["partition"] for e in events] == [d.isoformat() for d in DAYS]
    assert {e["runId"] for e in events} == {ui.run_id}
    exchange, symbol = INSTRUMENT.split(":")
    for day, event in zip(DAYS, events, strict=True):
        figures = {m["label"]: m.get("intValue") for m in event["metadataEntries"]}
        path = ui.settings.lake_dir / f"raw/book_delta_v2/exchange={exchange}/symbol={symbol}/dt={day}/data.parquet"
        assert (
            figures["rows"] == figures[f"{INSTRUMENT} rows"] == pl.scan_parquet(path).select(pl.len()).collect().item()
        )


def test_each_evaluation_follows_the_materialization_it_judged(ui):
    assert_evaluations_follow_their_materializations(
        check_executions(ui.url, ASSET, "price_precision"), latest_by_partition(ui.url, ASSET, DAYS)
    )


def test_the_backfill_dialogs_default_window_holds_the_days(ui):
    window = dialog_window(ui.url, ASSET)
    assert window[-1] == FAULTED.isoformat() and {d.isoformat() for d in DAYS} <= set(window)


def test_the_webserver_prints_no_api_stability_warnings(ui):
    assert noise_lines(ui.log) == []
