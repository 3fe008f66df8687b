"""Per-day truth in the Dagster UI: two days materialized as ONE run (the single-run backfill policy)
show each day's check result and each day's metadata per partition. Asserted through the
webserver's GraphQL API, with the queries the UI's check Partitions tab and per-partition plots
use, and, when Chromium and Playwright are installed, in a real headless browser.

The days are the last two complete UTC days: the UI plots per partition only the latest 120
partitions, and its backfill dialog shows the last 90 days.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from conftest import PROJECT_DAGSTER_YAML, REPO_ROOT, VENV_BIN, assets_named, code_location, range_tags, subprocess_env

pytestmark = pytest.mark.slow  # starts dagster-webserver (and its code server) as subprocesses

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
SERVER_START_TIMEOUT_S = 240  # two shared cores: loading the code location can take a while

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS_FOR_THE_LEAD = Path("/tmp/ui-shots")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(url: str, query: str, **variables: object) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(f"{url}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)
    assert "errors" not in answer, answer["errors"]
    return answer["data"]


ASSET_NODE = """
query ($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) { __typename }
}"""


def _wait_for_code_location(url: str, proc: subprocess.Popen, log: Path) -> None:
    """Wait until the webserver answers and has loaded the code location with the asset."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if graphql(url, ASSET_NODE, key={"path": [ASSET]})["assetNodeOrError"]["__typename"] == "AssetNode":
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise RuntimeError(
        f"dagster-webserver at {url} did not load the code location with {ASSET} within "
        f"{SERVER_START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
    )


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
        port = _free_port()
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
            _wait_for_code_location(url, proc, log)
            graphql(url, "mutation { setNuxSeen }")  # no "Join the Dagster community" dialog over the pages
            yield SimpleNamespace(url=url, settings=settings, run_id=result.run_id)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    finally:
        mp.undo()


CHECK_PARTITION_STATUSES = """
query ($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) { ... on AssetNode {
    assetChecksOrError { ... on AssetChecks { checks { name partitionStatuses {
      __typename
      ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } }
    } } } }
  } }
}"""


def _per_day(ranges: list[dict]) -> dict[str, str]:
    """Time-partition status ranges expanded to one status per day."""
    statuses = {}
    for r in ranges:
        day, end = dt.date.fromisoformat(r["startKey"]), dt.date.fromisoformat(r["endKey"])
        while day <= end:
            statuses[day.isoformat()] = r["status"]
            day += dt.timedelta(days=1)
    return statuses


def test_each_check_shows_each_days_result_in_the_check_partitions_tab(ui):
    """`AssetCheck.partitionStatuses` is what the check's Partitions tab draws; before the checks
    named their target materialization, every day of a range run came back empty (Missing)."""
    data = graphql(ui.url, CHECK_PARTITION_STATUSES, key={"path": [ASSET]})
    checks = data["assetNodeOrError"]["assetChecksOrError"]["checks"]
    statuses = {c["name"]: _per_day(c["partitionStatuses"]["ranges"]) for c in checks if c["name"] in EXPECTED}
    assert statuses == EXPECTED


LATEST_BY_PARTITION = """
query ($key: AssetKeyInput!, $partitions: [String!]!) {
  assetNodeOrError(assetKey: $key) { ... on AssetNode {
    latestMaterializationByPartition(partitions: $partitions) {
      partition runId
      metadataEntries { label ... on IntMetadataEntry { intValue } }
    }
  } }
}"""


def test_each_day_has_its_own_materialization_with_that_days_figures(ui):
    """`latestMaterializationByPartition` is what the asset's plots by partition draw: one
    materialization per day of the one run, each with the rows that day's lake file holds."""
    days = [d.isoformat() for d in DAYS]
    data = graphql(ui.url, LATEST_BY_PARTITION, key={"path": [ASSET]}, partitions=days)
    events = data["assetNodeOrError"]["latestMaterializationByPartition"]
    assert [e["partition"] for e in events] == days
    assert {e["runId"] for e in events} == {ui.run_id}
    exchange, symbol = INSTRUMENT.split(":")
    for day, event in zip(DAYS, events, strict=True):
        figures = {m["label"]: m.get("intValue") for m in event["metadataEntries"]}
        path = ui.settings.lake_dir / f"raw/book_delta_v2/exchange={exchange}/symbol={symbol}/dt={day}/data.parquet"
        assert (
            figures["rows"] == figures[f"{INSTRUMENT} rows"] == pl.scan_parquet(path).select(pl.len()).collect().item()
        )


@pytest.fixture
def page(ui, tmp_path):
    """A headless Debian Chromium page driven by Playwright (which cannot download its own browser here)."""
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(90_000)  # two shared cores: the UI's first queries can be slow
            yield page
        finally:
            browser.close()


def _screenshot(page, tmp_path: Path, name: str) -> None:
    """Into the test's tmp dir, and a copy for whoever reviews the UI."""
    page.screenshot(path=tmp_path / name, full_page=True)
    SHOTS_FOR_THE_LEAD.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / name, SHOTS_FOR_THE_LEAD / f"test_ui-{name}")


def test_a_browser_shows_each_days_check_result_plots_per_day_and_the_backfill_window(ui, page, tmp_path):
    days = f"[{CLEAN.isoformat()}...{FAULTED.isoformat()}]"
    # The check's Partitions tab, narrowed to the run's two days: one Failed, one Passed, none Missing.
    page.goto(f"{ui.url}/assets/{ASSET}?view=checks&checkDetail=price_precision")
    page.get_by_text("Execution history", exact=True).wait_for()
    page.get_by_text("Partitions", exact=True).last.click()  # the check's tab, after the asset's own
    selection = page.locator("input[value^='[']").first
    selection.fill(days)
    selection.press("Enter")
    page.get_by_text("2 Partitions Selected").wait_for()
    for label in ("Failed (1)", "Passed (1)", "Missing (0)", "In Progress (0)"):
        page.get_by_text(label).wait_for()
    _screenshot(page, tmp_path, "check-partitions.png")
    for day, status in ((FAULTED, "Failed"), (CLEAN, "Passed")):
        # The list row, not the bar's end label (the last day is both).
        page.get_by_text(day.isoformat(), exact=True).filter(visible=True).last.click()
        page.get_by_text("Target materialization").wait_for()
        head = page.inner_text("body").split("Latest execution")[0]  # the detail pane starts with day and status
        detail = head[head.rindex(day.isoformat()) :]
        assert status in detail, detail
        _screenshot(page, tmp_path, f"check-partition-{day}.png")

    # The asset's metadata plotted by partition: one point per day, not all days at one time.
    page.goto(f"{ui.url}/assets/{ASSET}?view=overview")
    page.get_by_text("Plots", exact=True).click()
    page.get_by_text("Partitions", exact=True).last.click()  # x axis: partitions (vs events)
    page.get_by_text("When graphing values by partition").wait_for()
    for label in ("rows", f"{INSTRUMENT} rows", "bytes"):
        assert page.get_by_text(label, exact=True).filter(visible=True).count() >= 1, label
    _screenshot(page, tmp_path, "plots-by-partition.png")

    # The backfill dialog shows the last 90 days; "Show all partitions" opens every day since the start.
    page.goto(f"{ui.url}/assets/{ASSET}")
    page.get_by_text("Materialize…", exact=True).first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Showing the last 90 days").wait_for()
    _screenshot(page, tmp_path, "backfill-dialog.png")
    dialog.get_by_text("Show all partitions").click()
    dialog.get_by_text("All time", exact=True).wait_for()
    dialog.get_by_text(ENV["PIPELINE_START_DATE"], exact=True).wait_for()
    _screenshot(page, tmp_path, "backfill-dialog-all-partitions.png")
