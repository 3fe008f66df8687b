"""The newcomer's first hour (issue 28), in a browser: `market-pipeline demo` with its default
days (the three complete UTC days up to yesterday), Dagster's own CLI re-materializing the
demo's faulted day afterwards, then `market-pipeline ui` (what `make ui` runs: one code server,
dagster-daemon and the webserver) on a free 127.0.0.1 port. Asserted through the page with
Playwright driving the Debian chromium package headless, and through the same GraphQL queries:
the plots by partition show one point per demo day, the check's Partitions tab Passed/Failed per
day, the backfill dialog's default window holds the demo's days; `health` names the demo's
failing check; the session prints no Preview/Beta warning and no code-server heartbeat warning.

test_ui_graphql.py asserts the GraphQL side on a smaller world in the fast suite.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path
from types import SimpleNamespace

import pytest

from market_pipeline_tests.support.dagster_ui import free_port, noise_lines, stop, wait_for_asset
from market_pipeline_tests.support.project import PROJECT_DAGSTER_YAML, VENV_BIN, subprocess_env
from market_pipeline_tests.support.tools import missing_tool
from market_pipeline_tests.support.ui_queries import (
    assert_evaluations_follow_their_materializations,
    check_executions,
    check_statuses,
    dialog_window,
    latest_by_partition,
)

# The demo, Dagster's CLI and the UI's three processes.
pytestmark = [pytest.mark.slow, pytest.mark.graph, pytest.mark.daemon, pytest.mark.webserver]

_YESTERDAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
DAYS = [_YESTERDAY - dt.timedelta(days=2), _YESTERDAY - dt.timedelta(days=1), _YESTERDAY]  # the demo's defaults
FAULTED = DAYS[-1]  # the demo's clock-skew episode: clock_skew fails with WARN that day
ASSET = "raw_book_deltas"
# The demo at a small size; the scale is given to the demo only: every later command reads it
# (and the fault) from the settings the demo saved in the data dir.
DEMO_ONLY = {"PIPELINE_SYNTHETIC__SCALE": "0.005"}
ENV = {"PIPELINE_BOOK__SAMPLE_INTERVAL_MS": "60000", "PIPELINE_WORKERS": "1"}
DAEMON_RELOAD_S = 60  # dagster-daemon reloads its workspace this often (cli/ui.py)
HEARTBEAT_TIMEOUT_S = 20  # a code server no longer heartbeaten says so after this long

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


def _run(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=1800)
    log.write_text(result.stdout + result.stderr)
    return result


@pytest.fixture(scope="module")
def demo_ui(tmp_path_factory):
    root = tmp_path_factory.mktemp("first_hour")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_DAGSTER_YAML, home / "dagster.yaml")
    env = subprocess_env(**ENV, PIPELINE_DATA_DIR=str(root / "data"), DAGSTER_HOME=str(home))

    demo_argv = [str(VENV_BIN / "market-pipeline"), "demo", "--no-progress"]
    demo = _run(demo_argv, {**env, **DEMO_ONLY}, root, root / "demo.log")
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert f"days          {DAYS[0]}..{FAULTED} (3 days)" in demo.stdout
    # The README's Dagster CLI line, on the faulted day: the same data and the same fault.
    materialize = _run(
        [
            *(str(VENV_BIN / "dagster"), "asset", "materialize", "-m", "market_pipeline.definitions"),
            *("--select", ASSET, "--partition-range", f"{FAULTED}...{FAULTED}"),
            # In one process: the fault and the saved settings are what is asserted, and a process
            # per step costs seconds each (test_raw_assets.py runs the default executor).
            *("--config-json", json.dumps({"execution": {"config": {"in_process": {}}}})),
        ],
        env,
        root,
        root / "materialize.log",
    )
    assert materialize.returncode == 0, materialize.stdout[-3000:] + materialize.stderr[-3000:]
    health = _run([str(VENV_BIN / "market-pipeline"), "health"], env, root, root / "health.json")

    port = free_port()
    log = root / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "market-pipeline"), "ui"],
            env={**env, "PIPELINE_UI__PORT": str(port)},
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_asset(url, ASSET, proc, log)
        yield SimpleNamespace(
            url=url, log=log, started=time.monotonic(), health=health, demo=demo, materialize=materialize
        )
    finally:
        stop(proc, signal.SIGTERM)  # the ui command stops its code server, daemon and webserver


def test_health_names_the_demos_failing_check(demo_ui):
    report = json.loads(demo_ui.health.stdout)
    assert demo_ui.health.returncode == 10 and report["status"] == "warnings", report
    assert report["problems"] == []
    (warning,) = report["warnings"]
    assert warning.startswith(f"check raw_book_deltas:clock_skew failed with WARN severity (partition {FAULTED})")
    freshness = report["checks"]["raw_book_deltas:freshness"]
    assert freshness["result"] == "not_evaluated" and "only the freshness_checks job" in freshness["explanation"]


def test_the_demo_summary_shows_failures_first_and_passes_as_counts(demo_ui):
    out = demo_ui.demo.stdout
    checks = out.split("Asset checks: ")[1].split("\nAssets\n")[0]
    failed, passed = (int(n) for n in checks.split(" passed")[0].split(" failed, "))
    assert failed == 1 and passed > 20
    assert f"clock_skew  {FAULTED}  FAILED  WARN" in checks
    assert "passed  " not in checks and "passed per asset: " in checks  # no passed rows, counts instead


def test_every_command_after_the_demo_sees_its_fault(demo_ui):
    """Dagster's CLI regenerated the faulted day with the demo's saved settings: clock_skew still fails there."""
    assert "raw_book_deltas clock_skew " + FAULTED.isoformat() + " WARN" in demo_ui.materialize.stderr
    statuses = check_statuses(demo_ui.url, ASSET)["clock_skew"]
    assert {d: statuses.get(d.isoformat()) for d in DAYS} == {
        DAYS[0]: "SUCCEEDED",
        DAYS[1]: "SUCCEEDED",
        FAULTED: "FAILED",
    }


def test_graphql_one_point_per_demo_day_and_evaluations_after_materializations(demo_ui):
    events = latest_by_partition(demo_ui.url, ASSET, DAYS)
    assert [e["partition"] for e in events] == [d.isoformat() for d in DAYS]
    assert_evaluations_follow_their_materializations(check_executions(demo_ui.url, ASSET, "clock_skew"), events)
    window = dialog_window(demo_ui.url, ASSET)
    assert window[-1] == FAULTED.isoformat() and {d.isoformat() for d in DAYS} <= set(window)


@pytest.fixture
def page(demo_ui):
    """A headless Debian Chromium page driven by Playwright (which cannot download its own browser here)."""
    if not CHROMIUM.is_file():
        missing_tool("chromium", f"no Chromium at {CHROMIUM}")
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


def _graphql_answer(response, operation: str) -> dict | None:
    """The data of a GraphQL response to `operation` the page asked for, else None."""
    request = response.request
    if urllib.parse.urlparse(response.url).path != "/graphql" or request.method != "POST":
        return None
    if (request.post_data_json or {}).get("operationName") != operation:
        return None
    return response.json()["data"]


@pytest.mark.browser
def test_a_browser_shows_the_demo_days_plotted_checked_and_in_the_backfill_window(demo_ui, page, tmp_path):
    url = demo_ui.url
    # The asset's metadata plotted by partition: the page asks for the latest materialization of
    # each partition in its window (when it opens) and draws one point per materialized day.
    answers: list[dict] = []
    page.on("response", lambda r: answers.append(a) if (a := _graphql_answer(r, "AssetPartitionEventsQuery")) else None)
    page.goto(f"{url}/assets/{ASSET}?view=overview")
    page.get_by_text("Plots", exact=True).click()
    page.get_by_text("Partitions", exact=True).last.click()  # x axis: partitions (vs events)
    page.get_by_text("rows", exact=True).first.wait_for()
    page.wait_for_timeout(2000)  # the charts draw after the answer
    points = [
        e["partition"]
        for a in answers
        for e in a["assetNodeOrError"]["latestMaterializationByPartition"]
        if e is not None
    ]
    assert sorted(set(points)) == [d.isoformat() for d in DAYS] and len(points) == len(set(points)), points
    _screenshot(page, tmp_path, "plots-by-partition.png")

    # The check's Partitions tab over the demo's days: Passed, Passed, Failed.
    page.goto(f"{url}/assets/{ASSET}?view=checks&checkDetail=clock_skew")
    page.get_by_text("Execution history", exact=True).wait_for()
    _screenshot(page, tmp_path, "check-overview.png")
    page.get_by_text("Partitions", exact=True).last.click()  # the check's tab, after the asset's own
    selection = page.locator("input[value^='[']").first
    selection.fill(f"[{DAYS[0]}...{FAULTED}]")
    selection.press("Enter")
    page.get_by_text("3 Partitions Selected").wait_for()
    for label in ("Failed (1)", "Passed (2)", "Missing (0)"):
        page.get_by_text(label).wait_for()
    _screenshot(page, tmp_path, "check-partitions.png")
    for day in DAYS:
        status = "Failed" if day == FAULTED else "Passed"
        page.get_by_text(day.isoformat(), exact=True).filter(visible=True).last.click()
        page.get_by_text("Target materialization").wait_for()
        head = page.inner_text("body").split("Latest execution")[0]  # the detail pane starts with day and status
        assert status in head[head.rindex(day.isoformat()) :], head
    _screenshot(page, tmp_path, f"check-partition-{FAULTED}.png")

    # The backfill dialog opens on the last 90 days, which end with the demo's last day.
    page.goto(f"{url}/assets/{ASSET}")
    page.get_by_text("Materialize…", exact=True).first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Showing the last 90 days").wait_for()
    first_shown = FAULTED - dt.timedelta(days=89)
    dialog.get_by_text(first_shown.isoformat(), exact=True).wait_for()
    dialog.get_by_text(FAULTED.isoformat(), exact=True).wait_for()
    assert first_shown <= DAYS[0]
    _screenshot(page, tmp_path, "backfill-dialog.png")


def test_the_ui_session_prints_no_preview_beta_or_heartbeat_warnings(demo_ui):
    """After the daemon reloaded its workspace at least once (each reload used to replace its code
    server, the old one logging the heartbeat warning 20 s later)."""
    time.sleep(max(0.0, demo_ui.started + DAEMON_RELOAD_S + HEARTBEAT_TIMEOUT_S + 10 - time.monotonic()))
    assert noise_lines(demo_ui.log) == []
    for log in ("demo.log", "materialize.log"):
        assert noise_lines(demo_ui.log.with_name(log)) == [], log
