"""Runs spread by Dagster (issue 26, items 3 and 4), for real on one box.

PostgreSQL on 127.0.0.1 holds the Dagster instance and the DuckLake catalog (two databases), moto's
S3 server holds the lake and the DuckLake's data files, and dagster-daemon drains the run queue of
the instance in docs/examples/dagster.distributed.yaml (at most 2 runs at once). An asset backfill of
the whole graph over 3 days with PIPELINE_BACKFILL_DAYS_PER_RUN=1, launched through Dagster's
GraphQL API (`dagster_graphql`'s schema, the mutation the UI's backfill dialog sends), becomes 3
runs, each a process of its own with its own data dir (PIPELINE_SCRATCH_PER_RUN). The last day's
run is killed (SIGKILL of its run worker and any child, as when a container dies) while its book
step writes; the code server that started the worker fails the run (else the test force-terminates
it, as the UI's "Terminate" does), and the day is backfilled again.

Then: at most 2 runs at once and at least once 2 (the runs' start and end times), nothing partial in
the bucket, every DuckLake data file the catalog names is in the bucket, and the lake objects, the
reports and every catalog table equal a single-box run of the same 3 days (`market-pipeline run`,
local lake, warehouse file). Without PostgreSQL binaries: skipped, and failed in CI (support/tools.py).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import pytest

from market_pipeline.cli.ui import code_server_argv, grpc_workspace
from market_pipeline.core.lake.warehouse import WarehouseTarget
from market_pipeline_tests.support.cadence import TEST_CADENCE
from market_pipeline_tests.support.dagster_events import step_windows
from market_pipeline_tests.support.files import sha256_tree
from market_pipeline_tests.support.postgres_server import Postgres, free_port, running_postgres
from market_pipeline_tests.support.project import REPO_ROOT, VENV_BIN
from market_pipeline_tests.support.s3_server import REGION, LoopbackS3
from market_pipeline_tests.support.warehouse_tables import warehouse_tables

INSTANCE_YAML = REPO_ROOT / "docs" / "examples" / "dagster.distributed.yaml"
# Three days: two runs at once, the third queued behind them (the one killed), as few as show it.
DAYS = [dt.date(2024, 1, 2) + dt.timedelta(days=i) for i in range(3)]
KILLED_DAY = DAYS[-1]
MAX_RUNS_AT_ONCE = 2  # concurrency.runs.max_concurrent_runs of INSTANCE_YAML
PREFIX = "lake"
CATALOG_DB = "market_catalog"
SECRET = "distributed-secret-never-printed"
WAIT_SECONDS = 1200  # for each backfill on two busy cores
KILLED_RUN_FAILED_SECONDS = 60  # the code server checks its run workers every few seconds
# Lake prefixes that are not the lake tables a local lake holds under data/lake.
WAREHOUSE_FILES, REPORTS = "warehouse/", "reports/"
SETTINGS = {  # tiny days: the test is about where runs write, not about the data
    "PIPELINE_SOURCE": "synthetic",
    "PIPELINE_SYNTHETIC__SCALE": "0.005",
    "PIPELINE_INSTRUMENTS": "BINANCE:BTC-USDT",
    "PIPELINE_START_DATE": "2024-01-01",
    **TEST_CADENCE,
    # A vendor snapshot a second (86,400 a day): the killed day's books object stays in the making
    # long enough to be caught (a second's worth of work), where a minute's cadence is over in ms.
    "PIPELINE_SYNTHETIC__SNAPSHOT_INTERVAL_MS": "1000",
    "PIPELINE_WORKERS": "1",
}
# The steps that write the warehouse (serialized by the `duckdb` pool on a warehouse file, not on DuckLake).
WAREHOUSE_STEPS = {"lake_views", "validation_reports", "pipeline_metrics", "ohlcv_bars_summary"}

LAUNCH_BACKFILL = """
mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}"""
ASSET_KEYS = "{ assetNodes { assetKey { path } isPartitioned } }"
FORCE_TERMINATE = """
mutation ($runId: String!) {
  terminateRuns(runIds: [$runId], terminatePolicy: MARK_AS_CANCELED_IMMEDIATELY) {
    __typename
    ... on TerminateRunsResult { terminateRunResults { __typename ... on TerminateRunFailure { message } } }
  }
}"""


def base_env(**extra: str) -> dict[str, str]:
    """This environment without any PIPELINE_* variable, plus the source tree, SETTINGS and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return {**env, **SETTINGS, **extra}


def single_box_run(root: Path) -> Path:
    """The days in one `market-pipeline run` on the default local lake and warehouse file."""
    home, data = root / "single-home", root / "single-data"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    argv = [str(VENV_BIN / "market-pipeline"), "run", "--start-date", str(DAYS[0]), "--end-date", str(DAYS[-1])]
    done = subprocess.run(
        argv,
        env=base_env(DAGSTER_HOME=str(home), PIPELINE_DATA_DIR=str(data)),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return data


class Service:
    """A long-running Dagster process (code server, daemon) in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.log = cwd / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.proc.args[:4]} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # Dagster's processes shut down cleanly on an interrupt
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def wait_until_listening(service: Service, port: int) -> None:
    import socket

    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        service.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the code server did not listen on {port} within {WAIT_SECONDS} s:\n{service.tail()}")


def graphql(context, query: str, **variables: object) -> dict:
    """One query through Dagster's GraphQL schema (what the webserver serves the UI) in this process,
    on the workspace of the code server: `dagster_graphql`'s own entry point for it. A `dagster-graphql`
    process a query would import Dagster and load the workspace each time (~4 CPU-s)."""
    from dagster_graphql.test.utils import execute_dagster_graphql

    answer = execute_dagster_graphql(context, query, variables)
    assert not answer.errors, answer.errors
    return answer.data


def launch_backfill(context, assets: list[list[str]], days: list[dt.date]) -> str:
    params = {"partitionNames": [str(d) for d in days], "assetSelection": [{"path": p} for p in assets]}
    launched = graphql(context, LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def backfill_runs(instance, backfill_id: str) -> list:
    import dagster as dg

    return instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))


def wait_for_backfill(instance, backfill_id: str, daemon: Service, runs: int | None = None) -> list:
    """Until the backfill has ended, or (`runs` given) until it has that many runs and all have ended
    (the daemon marks a backfill ended up to 30 s after its last run: a constant of Dagster's); its runs."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        daemon.check_alive()
        status = instance.get_backfill(backfill_id).status.value
        launched = backfill_runs(instance, backfill_id)
        ended = status not in ("REQUESTED", "CANCELING", "FAILING") if runs is None else len(launched) == runs
        if ended and all(r.is_finished for r in launched):
            return launched
        time.sleep(0.5)
    raise AssertionError(f"backfill {backfill_id} still {status} after {WAIT_SECONDS} s:\n{daemon.tail()}")


def run_worker_tree(instance, run_id: str) -> list:
    """The run's worker and its children: the processes whose pid the run's engine events recorded
    ("Started process for run (pid: N)")."""
    import dagster as dg
    import psutil

    processes = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        pid = entry.dagster_event.engine_event_data.metadata.get("pid")
        if pid is not None:
            try:
                worker = psutil.Process(int(pid.value))
                processes += [worker, *worker.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
    return processes


def kill_while_the_book_step_writes(instance, backfill_id: str, scratch: Path, daemon: Service) -> SimpleNamespace:
    """SIGKILL every process of KILLED_DAY's run once its book step has a lake object in the making
    (a file in the run's upload directory, PIPELINE_SCRATCH_PER_RUN)."""
    import dagster as dg

    deadline = time.monotonic() + WAIT_SECONDS
    run_id, books_started = None, False
    while time.monotonic() < deadline:
        daemon.check_alive()
        if run_id is None:
            runs = [r for r in backfill_runs(instance, backfill_id) if str(KILLED_DAY) in r.tags.values()]
            run_id = runs[0].run_id if runs else None
        elif not books_started:
            starts = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
            books_started = any(e.step_key == "reconstructed_books" for e in starts)
        else:
            uploads = scratch / "runs" / run_id / "tmp" / "uploads"
            writing = [p.name for p in uploads.iterdir()] if uploads.is_dir() else []
            if writing:
                processes = run_worker_tree(instance, run_id)
                assert processes, f"no run worker process of {run_id}"
                for proc in processes:
                    proc.send_signal(signal.SIGKILL)
                return SimpleNamespace(run_id=run_id, writing=writing, processes=len(processes))
            time.sleep(0.005)
            continue
        time.sleep(0.2)
    raise AssertionError(f"the run of {KILLED_DAY} never wrote in its book step:\n{daemon.tail()}")


def end_the_killed_run(instance, run_id: str, context) -> None:
    """The code server that started the run worker fails the run once it sees the worker gone; were the
    code server gone too (its host), the run would stay STARTED: then force-terminate it, as in the UI."""
    deadline = time.monotonic() + KILLED_RUN_FAILED_SECONDS
    while time.monotonic() < deadline:
        if instance.get_run_by_id(run_id).is_finished:
            return
        time.sleep(0.5)
    terminated = graphql(context, FORCE_TERMINATE, runId=run_id)["terminateRuns"]
    assert terminated["terminateRunResults"] == [{"__typename": "TerminateRunSuccess"}], terminated


def bucket_objects(s3: LoopbackS3, bucket: str) -> dict[str, bytes]:
    objects = {}
    for page in s3.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX + "/"):
        for item in page.get("Contents", []):
            objects[item["Key"][len(PREFIX) + 1 :]] = s3.s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return objects


def most_runs_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) spans open at one instant."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])  # an end before a start
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Postgres, LoopbackS3]]:
    with running_postgres() as postgres:
        s3 = LoopbackS3()
        try:
            yield postgres, s3
        finally:
            s3.stop()


@pytest.fixture(scope="module")
def distributed(servers, tmp_path_factory) -> Iterator[SimpleNamespace]:
    """The backfill on the daemon, one run killed and its day backfilled again, then the single-box run."""
    import dagster as dg

    postgres, s3 = servers
    root = tmp_path_factory.mktemp("distributed")
    postgres.create_database("dagster")
    postgres.create_database(CATALOG_DB)
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(bucket)
    home, scratch = root / "dagster_home", root / "data"
    home.mkdir()
    shutil.copy(INSTANCE_YAML, home / "dagster.yaml")
    instance_env = {
        "DAGSTER_PG_HOST": postgres.host,
        "DAGSTER_PG_PORT": str(postgres.port),
        "DAGSTER_PG_USER": postgres.user,
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": "dagster",
    }
    aws_env = {
        "AWS_ACCESS_KEY_ID": "lake-writer",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": s3.url,
    }
    env = base_env(
        **instance_env,
        **aws_env,
        DAGSTER_HOME=str(home),
        PIPELINE_DATA_DIR=str(scratch),
        PIPELINE_LAKE_URL=f"s3://{bucket}/{PREFIX}",
        PIPELINE_CATALOG_URL=f"ducklake:postgres:{postgres.libpq(CATALOG_DB)}",
        PIPELINE_SCRATCH_PER_RUN="true",
        # The successful runs' scratch kept (the finished_run_scratch sensor would remove it whenever
        # it next ticks): the test reads each run's directory afterwards.
        PIPELINE_KEEP_SCRATCH="true",
        PIPELINE_BACKFILL_DAYS_PER_RUN="1",
        PIPELINE_RUN_EXECUTOR="in_process",  # one process a run (a container's), no process start-up per step
    )
    patch = pytest.MonkeyPatch()  # this process reads the instance, the bucket and the catalog too
    for name, value in {**instance_env, **aws_env}.items():
        patch.setenv(name, value)
    # The instance's tables exist before the daemon starts (two processes creating them race).
    instance = dg.DagsterInstance.from_config(str(home))
    port = free_port()
    workspace = root / "workspace.yaml"
    workspace.write_text(grpc_workspace(port))
    code_server = Service("code-server", code_server_argv(port, REPO_ROOT), env, root)
    daemon = None
    workspace_context = ExitStack()
    try:
        wait_until_listening(code_server, port)
        from dagster_graphql.test.utils import define_out_of_process_context

        gql = workspace_context.enter_context(define_out_of_process_context(str(workspace), None, instance))
        nodes = graphql(gql, ASSET_KEYS)["assetNodes"]
        assets = sorted(n["assetKey"]["path"] for n in nodes if n["isPartitioned"])
        # The daemon looks at backfills every 30 s (a constant of Dagster's), first as it starts:
        # launched before it, the backfill is not left waiting for the second look.
        backfill = launch_backfill(gql, assets, DAYS)
        daemon = Service("daemon", [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, root)
        killed = kill_while_the_book_step_writes(instance, backfill, scratch, daemon)
        end_the_killed_run(instance, killed.run_id, gql)
        wait_for_backfill(instance, backfill, daemon, runs=len(DAYS))
        after_kill = bucket_objects(s3, bucket)
        # Launched as soon as every run has ended, so that one look of the daemon both ends the
        # first backfill and submits this one's run.
        again = launch_backfill(gql, assets, [KILLED_DAY])
        first_runs = wait_for_backfill(instance, backfill, daemon)
        again_runs = wait_for_backfill(instance, again, daemon, runs=1)
        records = [instance.get_run_record_by_id(r.run_id) for r in first_runs + again_runs]
        spans = [(r.start_time, r.end_time) for r in records]
        windows = [  # (run, step, (start, end)) of the steps that write the warehouse
            (run.run_id, step, window)
            for run in first_runs + again_runs
            for step, window in step_windows(instance, run.run_id).items()
            if step in WAREHOUSE_STEPS
        ]
        logs = {"daemon": daemon.tail(), "code server": code_server.tail()}
    finally:
        workspace_context.close()
        for service in (daemon, code_server):
            if service is not None:
                service.stop()
        instance.dispose()
    try:
        single = single_box_run(root)
        from market_pipeline.core import context
        from market_pipeline.core.lake import storage

        storage.s3_filesystem.cache_clear()  # this test's endpoint
        storage._s3_client.cache_clear()
        # this process reads the remote views and files
        with context.using(context.CoreContext(remote_lake=True, upload_dir=root / "uploads")):
            lake = storage.lake_root(env["PIPELINE_LAKE_URL"], root)
            target = WarehouseTarget.build(scratch, env["PIPELINE_CATALOG_URL"], lake)
            yield SimpleNamespace(
                first_runs=first_runs,
                again_runs=again_runs,
                spans=spans,
                windows=windows,
                killed=killed,
                after_kill=after_kill,
                objects=bucket_objects(s3, bucket),
                single=single,
                scratch=scratch,
                target=target,
                logs=logs,
            )
    finally:
        storage.s3_filesystem.cache_clear()
        storage._s3_client.cache_clear()
        patch.undo()


@pytest.mark.slow
@pytest.mark.graph
@pytest.mark.daemon
def test_the_backfill_ran_as_one_run_a_day_at_most_two_at_once(distributed):
    first = distributed.first_runs
    assert len(first) == len(DAYS)
    assert sorted(r.tags["dagster/asset_partition_range_start"] for r in first) == [str(d) for d in DAYS]
    assert [r.run_id for r in first if not r.is_success] == [distributed.killed.run_id]
    assert {r.status.value for r in first if not r.is_success} <= {"FAILURE", "CANCELED"}
    assert all(r.is_success for r in distributed.again_runs), distributed.logs
    assert most_runs_at_once(distributed.spans) == MAX_RUNS_AT_ONCE  # never more, and at least once that many
    windows = distributed.windows
    overlapping = [
        (step_a, step_b)
        for i, (run_a, step_a, (start_a, end_a)) in enumerate(windows)
        for run_b, step_b, (start_b, end_b) in windows[i + 1 :]
        if run_a != run_b and start_a < end_b and start_b < end_a
    ]
    print(f"warehouse steps of different runs that overlapped (no pool with DuckLake): {overlapping}")
    # Each run had its own data dir, and no run wrote the lake or the warehouse under it.
    run_dirs = {p.name for p in (distributed.scratch / "runs").iterdir()}
    assert {r.run_id for r in first + distributed.again_runs} <= run_dirs
    assert not list(distributed.scratch.rglob("lake")) and not list(distributed.scratch.rglob("warehouse.duckdb"))


@pytest.mark.slow
@pytest.mark.graph
@pytest.mark.daemon
def test_a_killed_run_leaves_no_partial_object(distributed):
    killed = distributed.killed
    assert killed.writing and killed.processes >= 1  # killed mid-write (the run worker and any child)
    books = f"books/exchange=BINANCE/symbol=BTC-USDT/dt={KILLED_DAY}/data.parquet"
    assert books not in distributed.after_kill  # the object in the making never appeared
    for key, body in distributed.after_kill.items():
        if key.endswith(".parquet"):
            assert body[:4] == body[-4:] == b"PAR1", key  # every object whole
    assert not [key for key in distributed.objects if ".upload-" in key or "/." in key]


@pytest.mark.slow
@pytest.mark.graph
@pytest.mark.daemon
def test_the_lake_equals_a_single_box_run(distributed):
    import hashlib

    objects = {
        key: hashlib.sha256(body).hexdigest()
        for key, body in distributed.objects.items()
        if not key.startswith((WAREHOUSE_FILES, REPORTS))
    }
    assert objects == sha256_tree(distributed.single / "lake")
    reports = {
        key[len(REPORTS) :]: hashlib.sha256(body).hexdigest()
        for key, body in distributed.objects.items()
        if key.startswith(REPORTS)
    }
    assert reports == sha256_tree(distributed.single / "reports")


@pytest.mark.slow
@pytest.mark.graph
@pytest.mark.daemon
def test_every_catalog_table_equals_a_single_box_run(distributed):
    single = warehouse_tables(WarehouseTarget(distributed.single / "warehouse.duckdb"), with_views=True)
    spread = warehouse_tables(distributed.target, with_views=True)
    assert spread.keys() == single.keys()
    assert {"main.validation_reports", "books.reconstructed_books", "bars.ohlcv"} <= set(spread)
    for name, frame in single.items():
        assert spread[name].equals(frame), name  # exact decimals: equals compares the Decimal columns


@pytest.mark.slow
@pytest.mark.graph
@pytest.mark.daemon
def test_every_file_the_catalog_names_is_a_whole_object(distributed):
    """No catalog row points at a missing or partial object, also after the kill (DuckLake commits the
    files it wrote in one PostgreSQL transaction, after their PUTs)."""
    from market_pipeline.core.lake import warehouse

    prefix = distributed.target.data_path  # s3://bucket/lake/warehouse/
    with warehouse.connect(distributed.target, read_only=True) as con:
        tables = con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchall()
        named = set()
        for schema, table in tables:
            listed = con.execute(
                f"SELECT data_file, delete_file FROM ducklake_list_files('{warehouse.ATTACHED_NAME}', ?, schema => ?)",
                [table, schema],
            ).fetchall()
            named |= {path for row in listed for path in row if path}
    assert named, "the catalog names no data file"
    keys = {key[len(WAREHOUSE_FILES) :] for key in distributed.objects if key.startswith(WAREHOUSE_FILES)}
    for path in named:
        assert path.startswith(prefix), path
        key = path[len(prefix) :]
        assert key in keys, f"{path}: named by the catalog, not in the bucket"
        body = distributed.objects[WAREHOUSE_FILES + key]
        assert body[:4] == body[-4:] == b"PAR1", path
    orphans = keys - {path[len(prefix) :] for path in named}  # written by a commit that lost or never came
    print(f"DuckLake data files: {len(named)} named by the catalog, {len(orphans)} not named (orphans)")


def test_a_run_gets_its_own_data_dir_only_beside_a_remote_lake_and_catalog(tmp_path, monkeypatch):
    from market_pipeline.settings import SettingsError, load_settings

    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PIPELINE_SCRATCH_PER_RUN", "true")
    monkeypatch.setenv("PIPELINE_LAKE_URL", "s3://bucket/lake")
    with pytest.raises(
        SettingsError, match="PIPELINE_SCRATCH_PER_RUN=true needs PIPELINE_LAKE_URL and PIPELINE_CATALOG_URL"
    ):
        load_settings()
    monkeypatch.setenv("PIPELINE_CATALOG_URL", "ducklake:postgres:host=127.0.0.1 dbname=catalog user=market")
    settings = load_settings()
    run = settings.run_scratch("run-1")
    assert run.data_dir == tmp_path / "runs" / "run-1" and run.lake_dir == settings.lake_dir
    assert str(run.shared_dir) == "s3://bucket/lake"  # the reports go beside the lake, for every run
    assert run.warehouse.data_path == settings.warehouse.data_path == "s3://bucket/lake/warehouse/"
    monkeypatch.delenv("PIPELINE_SCRATCH_PER_RUN")
    assert load_settings().run_scratch("run-1").data_dir == tmp_path  # off: the data dir itself
