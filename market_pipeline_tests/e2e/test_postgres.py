"""The Dagster instance on PostgreSQL (dagster_home/dagster.postgres.yaml) with a real server.

A throwaway PostgreSQL cluster is started on 127.0.0.1 (initdb refuses to run as root, so as root
the cluster belongs to `nobody`), `market-pipeline run` executes small synthetic ranges with
DAGSTER_HOME holding the postgres instance config, and the run and check history are read back
from the instance. With PIPELINE_BACKFILL_DAYS_PER_RUN=1, two runs on different days execute at
once: both succeed, their warehouse writers (the `duckdb` pool, whose slots live in the
PostgreSQL event-log tables) overlap only when they claimed the slot at the same instant (a Dagster
race; DuckDB's file lock then keeps the writes apart), and the warehouse holds both days.
Skipped when no PostgreSQL binaries are found, and failed in CI (`.ci/run` installs the Debian
`postgresql` package).
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest

from market_pipeline_tests.support.cadence import TEST_CADENCE
from market_pipeline_tests.support.cli_env import cli_in_process
from market_pipeline_tests.support.dagster_events import step_windows as _step_windows
from market_pipeline_tests.support.postgres_server import running_postgres
from market_pipeline_tests.support.project import REPO_ROOT, VENV_BIN, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.graph]

POSTGRES_YAML = REPO_ROOT / "dagster_home" / "dagster.postgres.yaml"
# Two steps of different runs that start this close together claimed the one `duckdb` slot at the
# same instant (a Dagster race on PostgreSQL, see the concurrent-runs test and docs/operations.md).
SIMULTANEOUS_CLAIM_SECONDS = 0.25


@pytest.fixture(scope="module")
def postgres() -> Iterator[SimpleNamespace]:
    with running_postgres("dagster") as server:
        server.create_database("dagster")
        yield SimpleNamespace(
            env={
                "DAGSTER_PG_HOST": server.host,
                "DAGSTER_PG_PORT": str(server.port),
                "DAGSTER_PG_USER": server.user,
                "DAGSTER_PG_PASSWORD": "",
                "DAGSTER_PG_DB": "dagster",
            },
            root=server.root,
        )


@pytest.fixture
def pg_home(postgres, tmp_path, monkeypatch) -> SimpleNamespace:
    """A DAGSTER_HOME with the postgres instance config, a fresh database schema and data dir."""
    import psycopg2

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(POSTGRES_YAML, home / "dagster.yaml")
    for name, value in postgres.env.items():
        monkeypatch.setenv(name, value)
    env = postgres.env
    # Each test starts from an empty instance: drop what the previous test's runs created.
    connection = psycopg2.connect(
        host=env["DAGSTER_PG_HOST"], port=int(env["DAGSTER_PG_PORT"]), user=env["DAGSTER_PG_USER"], dbname="dagster"
    )
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    connection.close()
    return SimpleNamespace(home=home, data=tmp_path / "data", env=env)


def _run_env(pg_home: SimpleNamespace, **extra: str) -> dict[str, str]:
    env = subprocess_env(
        DAGSTER_HOME=str(pg_home.home),
        PIPELINE_DATA_DIR=str(pg_home.data),
        PIPELINE_INSTRUMENTS="BINANCE:BTC-USDT",
        PIPELINE_START_DATE="2024-01-01",
        PIPELINE_WORKERS="1",
        PIPELINE_SYNTHETIC__SCALE="0.005",
        **pg_home.env,
        **extra,
    )
    for name in [n for n in env if n.startswith("PIPELINE_")]:
        if name not in extra and name not in _BASE:
            del env[name]
    return env


_BASE = {
    "PIPELINE_DATA_DIR",
    "PIPELINE_INSTRUMENTS",
    "PIPELINE_START_DATE",
    "PIPELINE_WORKERS",
    "PIPELINE_SYNTHETIC__SCALE",
    *TEST_CADENCE,  # a vendor snapshot and a book row a minute: the tests are about the instance
}


def _cli(start: dt.date, end: dt.date, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """`market-pipeline run` for [start, end] in the background; its output goes to files in cwd."""
    argv = [str(VENV_BIN / "market-pipeline"), "run", "--start-date", start.isoformat(), "--end-date", end.isoformat()]
    name = f"run-{start}-{end}"
    with open(cwd / f"{name}.out", "w") as out, open(cwd / f"{name}.err", "w") as err:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err, text=True)
    proc.output_files = (cwd / f"{name}.out", cwd / f"{name}.err")  # type: ignore[attr-defined]
    return proc


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    code = proc.wait(timeout=900)
    out, err = (path.read_text() for path in proc.output_files)  # type: ignore[attr-defined]
    return code, out, err


def _instance(home: Path):
    import dagster as dg

    return dg.DagsterInstance.from_config(str(home))


def test_a_range_run_is_recorded_in_the_postgres_instance(pg_home):
    import dagster as dg

    first, last = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
    # In this process (it reads the instance anyway); the two concurrent runs below are processes.
    argv = ["run", "--start-date", first.isoformat(), "--end-date", last.isoformat(), "--no-progress"]
    code, out, err = cli_in_process(argv, _run_env(pg_home))
    assert code == 0, out + err

    instance = _instance(pg_home.home)
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        (run,) = instance.get_runs()
        assert run.is_success and f"run {run.run_id}: SUCCESS" in out
        assert run.tags["dagster/asset_partition_range_start"] == first.isoformat()
        evaluations = [
            e.asset_check_evaluation
            for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        ]
        checked = {(e.asset_key.to_user_string(), e.check_name, e.partition) for e in evaluations}
        for day in (first, last):
            assert ("raw_book_deltas", "price_precision", day.isoformat()) in checked
            assert ("reconstructed_books", "no_crossed_books", day.isoformat()) in checked
        # The per-day check history is queryable per partition, as the UI shows it.
        key = dg.AssetCheckKey(dg.AssetKey("raw_book_deltas"), "price_precision")
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
        assert history and all(record.run_id == run.run_id for record in history)
        materialized = instance.get_materialized_partitions(dg.AssetKey("pipeline_metrics"))
        assert materialized == {first.isoformat(), last.isoformat()}
    finally:
        instance.dispose()


def test_two_runs_on_different_days_at_once_share_the_duckdb_slot(pg_home, tmp_path, monkeypatch):
    from market_pipeline.settings import load_settings
    from market_pipeline_tests.support.dagster_instance import code_location

    days = [dt.date(2024, 3, 4), dt.date(2024, 3, 5)]
    env = _run_env(pg_home, PIPELINE_BACKFILL_DAYS_PER_RUN="1")
    procs = [_cli(day, day, env, tmp_path) for day in days]  # both at once
    for code, out, err in [_finish(proc) for proc in procs]:
        assert code == 0, out + err

    # Which steps write the warehouse: the ones in the `duckdb` pool, as the code location declares them.
    for name, value in env.items():
        if name.startswith("PIPELINE_"):
            monkeypatch.setenv(name, value)
    defs = code_location(load_settings())
    policies = {str(a.backfill_policy) for a in defs.assets if a.partitions_def is not None}
    assert policies == {"BackfillPolicy.multi_run(max_partitions_per_run=1)"}
    duckdb_steps = {a.node_def.name for a in defs.assets if getattr(a.op, "pool", None) == "duckdb"}
    assert duckdb_steps

    instance = _instance(pg_home.home)
    try:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.is_success for r in runs)
        assert {r.tags["dagster/asset_partition_range_start"] for r in runs} == {d.isoformat() for d in days}
        assert instance.event_log_storage.get_concurrency_info("duckdb").slot_count == 1
        windows = [
            (run.run_id, step, window)
            for run in runs
            for step, window in _step_windows(instance, run.run_id).items()
            if step in duckdb_steps
        ]
        assert {run_id for run_id, _, _ in windows} == {r.run_id for r in runs}
        # Serialized: no two warehouse writers of the two runs held the slot at once, except two
        # steps that claimed it at the same instant. Dagster 1.13 claims a slot on PostgreSQL in
        # autocommit statements, so simultaneous claims can both win (seen here: two `lake_views`
        # steps started 3 ms apart). DuckDB's file lock still admits one writer, and every
        # warehouse connection waits for it, so both days' rows are whole (below).
        for i, (run_a, step_a, (start_a, end_a)) in enumerate(windows):
            for run_b, step_b, (start_b, end_b) in windows[i + 1 :]:
                if run_a != run_b and not (end_a <= start_b or end_b <= start_a):
                    assert abs(start_a - start_b) < SIMULTANEOUS_CLAIM_SECONDS, (step_a, step_b)
        # The runs themselves did overlap in time (both processes were started at once).
        spans = [(r.start_time, r.end_time) for r in (instance.get_run_record_by_id(r.run_id) for r in runs)]
        assert max(s for s, _ in spans) < min(e for _, e in spans)
    finally:
        instance.dispose()
    with duckdb.connect(str(pg_home.data / "warehouse.duckdb"), read_only=True) as con:
        written = con.execute("SELECT dt, count(*) FROM main.pipeline_metrics GROUP BY dt ORDER BY dt").fetchall()
    instruments = len(load_settings().universe)
    assert written == [(day, instruments) for day in days]
