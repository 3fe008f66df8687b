"""One bad day does not stop the others: a 3-day range run through `market-pipeline run` where the
middle day fails a blocking check (off-grid prices: price_precision ERROR). The other two days get
books, validation and metrics; the bad day is reported as skipped with the check's reason, in the
CLI summary and in the downstream assets' partition metadata; the exit code says a check failed."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from market_pipeline_tests.support.cadence import TEST_CADENCE
from market_pipeline_tests.support.project import PROJECT_DAGSTER_YAML, VENV_BIN, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.graph]

DAYS = [dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)]
BAD = DAYS[1]
GOOD = [DAYS[0], DAYS[2]]
INSTRUMENT = "BINANCE:BTC-USDT"
DOWNSTREAM = ("reconstructed_books", "validation_reports", "validation_reports_hourly", "pipeline_metrics")


@pytest.fixture(scope="module")
def bad_day_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_day")
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(PROJECT_DAGSTER_YAML.read_text())
    data = root / "data"
    env = subprocess_env(
        DAGSTER_HOME=str(home),
        PIPELINE_DATA_DIR=str(data),
        PIPELINE_INSTRUMENTS=INSTRUMENT,
        PIPELINE_START_DATE="2024-01-01",
        PIPELINE_WORKERS="1",
        PIPELINE_SYNTHETIC__SCALE="0.005",
        PIPELINE_SYNTHETIC__FAULTS__OFF_GRID_PRICES="3",
        PIPELINE_SYNTHETIC__FAULTS__DAYS=json.dumps([BAD.isoformat()]),
    )
    for name in [n for n in env if n.startswith("PIPELINE_") and n not in _OURS]:
        del env[name]
    proc = subprocess.run(
        [
            str(VENV_BIN / "market-pipeline"),
            "run",
            "--start-date",
            DAYS[0].isoformat(),
            "--end-date",
            DAYS[-1].isoformat(),
        ],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return SimpleNamespace(proc=proc, home=home, data=data)


_OURS = {
    "PIPELINE_DATA_DIR",
    "PIPELINE_INSTRUMENTS",
    "PIPELINE_START_DATE",
    "PIPELINE_WORKERS",
    "PIPELINE_SYNTHETIC__SCALE",
    *TEST_CADENCE,  # a vendor snapshot and a book row a minute: the test is about the skipped day
    "PIPELINE_SYNTHETIC__FAULTS__OFF_GRID_PRICES",
    "PIPELINE_SYNTHETIC__FAULTS__DAYS",
}


def _instance(home: Path, monkeypatch: pytest.MonkeyPatch):
    import dagster as dg

    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml locates its SQLite files from it
    return dg.DagsterInstance.get()


def test_exit_code_and_summary_name_the_skipped_day_and_its_reason(bad_day_run):
    proc = bad_day_run.proc
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out, err = proc.stdout, proc.stderr
    assert ": SUCCESS" in out  # the run itself completed: the good days are done
    assert "Skipped days" in out
    section = out.split("Skipped days", 1)[1].split("\nOutputs", 1)[0]
    assert BAD.isoformat() in section and "reconstructed_books" in section and "pipeline_metrics" in section
    assert "raw_book_deltas price_precision" in section and "off the grid" in section
    assert GOOD[0].isoformat() not in section and GOOD[1].isoformat() not in section
    assert f"1 day(s) did not complete ({BAD.isoformat()};" in err
    # The Assets table counts only the days the asset really processed.
    assets = out.split("\nAssets\n", 1)[1].split("\n\n", 1)[0]  # the checks' counts come first
    row = next(line.split() for line in assets.splitlines() if line.strip().startswith("reconstructed_books "))
    assert "2/3" in row and "skipped" in row


def test_the_good_days_have_books_validation_and_metrics(bad_day_run):
    import duckdb

    lake = bad_day_run.data / "lake"
    books = sorted(p.name for p in lake.rglob("dt=*") if "books" in p.parts and p.is_dir())
    assert {f"dt={d}" for d in GOOD} <= set(books) and f"dt={BAD}" not in books
    reports = bad_day_run.data / "reports"
    assert all((reports / f"dt={d}" / "validation.html").is_file() for d in GOOD)
    assert not (reports / f"dt={BAD}").exists()
    with duckdb.connect(str(bad_day_run.data / "warehouse.duckdb"), read_only=True) as con:
        for table in ("validation_reports", "pipeline_metrics"):
            days = {r[0] for r in con.execute(f"SELECT DISTINCT CAST(dt AS VARCHAR) FROM main.{table}").fetchall()}
            assert days == {d.isoformat() for d in GOOD}, table


def test_the_instance_records_the_failed_check_and_the_skipped_partition(bad_day_run, monkeypatch):
    import dagster as dg

    instance = _instance(bad_day_run.home, monkeypatch)
    try:
        (run,) = instance.get_runs()
        assert run.is_success
        evaluations = [
            e.asset_check_evaluation
            for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        ]
        bad = [e for e in evaluations if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
        assert [(e.check_name, e.partition) for e in bad] == [("price_precision", BAD.isoformat())]
        assert bad[0].metadata["blocks_downstream"].value is True
        assert not bad[0].blocking  # Dagster's gate would fail the check step (every day) otherwise
        for name in DOWNSTREAM:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(name), asset_partitions=[BAD.isoformat()]), limit=1
            ).records
            reason = records[0].asset_materialization.metadata["skipped"].value
            assert reason.startswith("raw_book_deltas price_precision: ") and "off the grid" in reason, name
            good = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(name), asset_partitions=[GOOD[0].isoformat()]), limit=1
            ).records
            assert "skipped" not in good[0].asset_materialization.metadata, name
    finally:
        instance.dispose()
