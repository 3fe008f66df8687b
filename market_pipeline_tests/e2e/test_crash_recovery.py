"""A run killed mid-way (kill -9, power loss, OOM killer) does not block later runs.

- Leftover temporary files of a killed write are removed when the file is written again.
- `market-pipeline run` recovers the dead CLI runs of this host before it starts (marks them
  failed, frees their pool slots) and says so; it never waits silently for a pool slot, and gives
  up after `cli.run_wait_timeout_seconds` (exit 9).
- End to end: a multi-day run whose process group is SIGKILLed mid-way, then run again, gives
  byte for byte the output of a clean run.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from market_pipeline.cli.dead_runs import HOST_TAG, LAUNCHED_BY_TAG, PID_TAG
from market_pipeline.cli.main import main
from market_pipeline.core.lake.files import remove_stale_temp_files, write_text_atomic
from market_pipeline.defs.common.partitions import RANGE_END_TAG, RANGE_START_TAG
from market_pipeline_tests.support.cli_env import cli_in_process
from market_pipeline_tests.support.project import PROJECT_DAGSTER_YAML, VENV_BIN, subprocess_env

POOL = "duckdb"


def test_a_duckdb_spill_directory_of_a_gone_process_goes_at_the_next_connection(tmp_path):
    """`scratch_duckdb` spills to `pid-<pid>` of its own; DuckDB leaves the directory, with its
    files when the process was killed. The next connection removes those of gone processes only."""
    from market_pipeline.core.lake.parquet_io import scratch_duckdb

    spill = tmp_path / "duckdb"
    gone = spill / f"pid-{_dead_pid()}"
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        running = spill / f"pid-{sleeper.pid}"
        for directory in (gone, running):
            directory.mkdir(parents=True)
            (directory / "duckdb_temp_storage-0.tmp").write_bytes(b"spilled")
        scratch_duckdb(spill, "64MB").close()
        assert sorted(p.name for p in spill.iterdir()) == sorted([running.name, f"pid-{os.getpid()}"])
    finally:
        sleeper.kill()
        sleeper.wait()


# ---------------------------------------------------------------------------------------
# Temporary files of killed writes
# ---------------------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_rewriting_a_file_removes_the_temp_files_of_killed_writers_only(tmp_path):
    final = tmp_path / "dt=2024-03-01" / "data.parquet"
    final.parent.mkdir()
    dead_old_style = final.parent / f".data.parquet.tmp-{uuid.uuid4().hex}"  # before names carried a pid
    dead = final.parent / f".data.parquet.tmp-{_dead_pid()}-{uuid.uuid4().hex}"
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        alive = final.parent / f".data.parquet.tmp-{sleeper.pid}-{uuid.uuid4().hex}"
        other_file = final.parent / f".book.parquet.tmp-{_dead_pid()}-{uuid.uuid4().hex}"
        for path in (dead_old_style, dead, alive, other_file):
            path.write_bytes(b"half a file")

        write_text_atomic(final, "new")

        assert final.read_text() == "new"
        left = sorted(p.name for p in final.parent.iterdir())
        assert left == sorted([final.name, alive.name, other_file.name])  # a live writer's file is kept
        assert remove_stale_temp_files(final) == []
    finally:
        sleeper.kill()
        sleeper.wait()


# ---------------------------------------------------------------------------------------
# Dead runs and pool slots, in-process
# ---------------------------------------------------------------------------------------


@pytest.fixture
def pool_instance(monkeypatch, tmp_path, dagster_home):
    """The project's dagster.yaml (duckdb pool of one slot, op granularity) in a tmp DAGSTER_HOME."""
    import dagster as dg

    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", "BINANCE:BTC-USDT")
    monkeypatch.setenv("PIPELINE_START_DATE", "2024-03-01")
    with dg.DagsterInstance.get() as instance:
        instance.event_log_storage.set_concurrency_slots(POOL, 1)
        yield instance


def _holder(instance, tags: dict[str, str]):
    """A STARTED run of this instance that holds the duckdb slot (as a killed run leaves it)."""
    import dagster as dg

    run = dg.DagsterRun(
        job_name="__ASSET_JOB",
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.STARTED,
        tags={LAUNCHED_BY_TAG: "cli-run", RANGE_START_TAG: "2024-03-01", RANGE_END_TAG: "2024-03-02", **tags},
    )
    instance.add_run(run)
    instance.event_log_storage.claim_concurrency_slot(POOL, run.run_id, "validation_reports")
    assert [s.run_id for s in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots] == [run.run_id]
    return run


def test_run_recovers_a_dead_run_of_this_host_and_frees_its_slot(pool_instance, monkeypatch, capsys):
    dead = _holder(pool_instance, {HOST_TAG: socket.gethostname(), PID_TAG: str(_dead_pid())})
    monkeypatch.setenv("PIPELINE_CLI__RUN_WAIT_TIMEOUT_SECONDS", "60")

    code = main(["run", "--start-date", "2024-03-01", "--end-date", "2024-03-01", "--select", "lake_views"])

    out, err = capsys.readouterr()
    assert code != 9, err  # it did not wait for the dead run's slot
    (line,) = [x for x in err.splitlines() if x.startswith("recovered dead run")]
    assert dead.run_id in line and "marked it FAILURE and freed 1 slot(s) of pool duckdb" in line
    assert "waiting" not in err
    record = pool_instance.get_run_by_id(dead.run_id)
    assert record.status.value == "FAILURE"
    assert all(
        s.run_id != dead.run_id for s in pool_instance.event_log_storage.get_concurrency_info(POOL).claimed_slots
    )


def test_run_frees_the_slots_a_dead_run_failed_by_hand_still_holds(pool_instance, monkeypatch, capsys):
    import dagster as dg

    dead = _holder(pool_instance, {HOST_TAG: socket.gethostname(), PID_TAG: str(_dead_pid())})
    pool_instance.report_run_failed(dead, message="terminated by hand")  # slots stay claimed
    assert pool_instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    monkeypatch.setenv("PIPELINE_CLI__RUN_WAIT_TIMEOUT_SECONDS", "60")

    code = main(["run", "--start-date", "2024-03-01", "--end-date", "2024-03-01", "--select", "lake_views"])

    err = capsys.readouterr().err
    assert code != 9, err
    assert f"freed 1 slot(s) of pool duckdb still held by run {dead.run_id} (FAILURE)" in err
    assert "recovered dead run" not in err


def test_run_leaves_a_live_or_foreign_run_alone_and_gives_up_waiting_with_exit_9(pool_instance, monkeypatch, capsys):
    holder = _holder(pool_instance, {HOST_TAG: "another-host", PID_TAG: str(_dead_pid())})
    monkeypatch.setenv("PIPELINE_CLI__RUN_WAIT_TIMEOUT_SECONDS", "6")

    started = time.monotonic()
    code = main(["run", "--start-date", "2024-03-01", "--end-date", "2024-03-01", "--select", "lake_views"])
    elapsed = time.monotonic() - started

    out, err = capsys.readouterr()
    assert code == 9, out + err  # blocked
    assert elapsed < 60
    waiting = [x for x in err.splitlines() if x.startswith("waiting ")]
    assert waiting and "step lake_views waits for a slot of pool 'duckdb'" in waiting[0]
    assert f"held by run {holder.run_id} (cli-run, process" in waiting[0]
    (last,) = [x for x in err.splitlines() if x.startswith("error: ")]
    assert last.startswith("error: gave up after ") and "PIPELINE_CLI__RUN_WAIT_TIMEOUT_SECONDS" in last
    assert "recovered" not in err
    assert pool_instance.get_run_by_id(holder.run_id).status.value == "STARTED"  # not ours to judge
    runs = [r for r in pool_instance.get_runs() if r.run_id != holder.run_id]
    assert [r.status.value for r in runs] == ["FAILURE"]
    info = pool_instance.event_log_storage.get_concurrency_info(POOL)
    assert [s.run_id for s in info.claimed_slots] == [holder.run_id]
    assert all(p.run_id == holder.run_id for p in info.pending_steps)  # the given-up claim is gone


# ---------------------------------------------------------------------------------------
# End to end: SIGKILL mid-way, run again, compare with a clean run
# ---------------------------------------------------------------------------------------

# Two days make the run multi-day (the kill comes in the first day's books, the second day is still
# to do); every further day would only add its fixed 864,000 vendor snapshots to all three runs.
DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2))
# The rebuilt books keep a row per vendor snapshot, sampled once a minute instead of every 100 ms
# in between: half the rows to write and to read again, the same code.
SAMPLE_INTERVAL_MS = "60000"


def _setup(root: Path) -> tuple[dict[str, str], Path, Path]:
    home = root / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(PROJECT_DAGSTER_YAML, home / "dagster.yaml")
    data = root / "data"
    env = subprocess_env(
        DAGSTER_HOME=str(home),
        PIPELINE_DATA_DIR=str(data),
        PIPELINE_INSTRUMENTS="BINANCE:BTC-USDT",
        PIPELINE_START_DATE=DAYS[0].isoformat(),
        PIPELINE_SYNTHETIC__SCALE="0.005",
        PIPELINE_BOOK__SAMPLE_INTERVAL_MS=SAMPLE_INTERVAL_MS,
        PIPELINE_CLI__RUN_WAIT_TIMEOUT_SECONDS="300",  # never hang the test suite
    )
    return env, home, data


RUN_ARGS = ["run", "--start-date", str(DAYS[0]), "--end-date", str(DAYS[1])]


def _lake_files(data: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted((data / "lake").rglob("*")) if p.is_file()}


# Measurements of the run itself, not data: durations, rates, memory and the run id differ between
# any two runs, clean or not.
_RUN_MEASURES = re.compile(r".*(_seconds|_events_per_s|_peak_rss_mb|_run_id)$")


def _warehouse(data: Path) -> dict[str, tuple]:
    """Every table and view: its columns, row count and an order-independent hash of its rows."""
    import duckdb

    out = {}
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
        names = con.sql("SELECT table_schema, table_name FROM information_schema.tables ORDER BY ALL").fetchall()
        for schema, name in names:
            columns = list(con.sql(f'SELECT * FROM "{schema}"."{name}" LIMIT 0').columns)
            kept = [c for c in columns if not _RUN_MEASURES.match(c)]
            row_hash = "hash(" + ", ".join(f'"{c}"' for c in kept) + ")::HUGEINT"
            figures = con.sql(f'SELECT count(*), sum({row_hash}) FROM "{schema}"."{name}"').fetchone()
            out[f"{schema}.{name}"] = (columns, figures)
    return out


@pytest.mark.slow
@pytest.mark.graph
def test_a_run_killed_mid_way_is_recovered_and_its_rerun_equals_a_clean_run(tmp_path, monkeypatch):
    import dagster as dg

    # The clean run and the re-run in this process (`main(argv)`, no interpreter importing Dagster and
    # the pipeline again); only the run to kill is a process of its own.
    clean_env, _, clean_data = _setup(tmp_path / "clean")
    code, out, err = cli_in_process(RUN_ARGS, clean_env)
    assert code == 0, out + err

    env, home, data = _setup(tmp_path / "crash")
    # The clean run's generated vendor days (a cache of the synthetic source, deterministic): the
    # killed run imports them instead of generating them again, and is killed after its imports.
    shutil.copytree(clean_data / "sources", data / "sources")
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml's storage follows $DAGSTER_HOME
    log = (tmp_path / "crash" / "killed.log").open("w")
    proc = subprocess.Popen(
        [str(VENV_BIN / "market-pipeline"), *RUN_ARGS],
        env=env,
        cwd=tmp_path / "crash",
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 900
    books = data / "lake" / "books"
    while not (books.exists() and any(books.rglob("data.parquet"))):  # mid-way: the first day's books
        assert proc.poll() is None, (tmp_path / "crash" / "killed.log").read_text()
        assert time.monotonic() < deadline, "no books partition appeared"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and any worker processes, as the OOM killer or a power cut would
    proc.wait()
    log.close()
    with dg.DagsterInstance.get() as instance:
        (killed,) = instance.get_runs()
        assert killed.status == dg.DagsterRunStatus.STARTED  # nobody recorded its end
        storage = instance.event_log_storage
        if not storage.get_concurrency_info(POOL).claimed_slots:
            # The kill came between DuckDB steps; had it come inside one (a few ms at this scale, too
            # short to aim at), the run would still hold the slot, as here.
            storage.set_concurrency_slots(POOL, 1)  # as `dagster instance concurrency set duckdb 1`
            storage.claim_concurrency_slot(POOL, killed.run_id, "lake_views")
        assert [s.run_id for s in storage.get_concurrency_info(POOL).claimed_slots] == [killed.run_id]
    # A write cut short leaves a temporary sibling (one of the killed run may be there too).
    leftover = next(books.rglob("dt=*")) / f".data.parquet.tmp-{_dead_pid()}-{uuid.uuid4().hex}"
    leftover.write_bytes(b"PAR1 half a file")

    code, out, err = cli_in_process(RUN_ARGS, env)

    assert code == 0, out + err
    assert f"recovered dead run {killed.run_id}" in err
    assert "freed 1 slot(s) of pool duckdb" in err
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.event_log_storage.get_concurrency_info(POOL).claimed_slots == []
    assert [p for p in (data / "lake").rglob("*") if ".tmp-" in p.name] == []
    clean_files, files = _lake_files(clean_data), _lake_files(data)
    assert sorted(files) == sorted(clean_files)
    assert [name for name in files if files[name] != clean_files[name]] == []
    clean_tables, tables = _warehouse(clean_data), _warehouse(data)
    assert sorted(tables) == sorted(clean_tables)
    assert [name for name in tables if tables[name] != clean_tables[name]] == []
