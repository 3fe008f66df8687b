"""Instrument-days on PIPELINE_WORKERS processes give exactly what a serial run gives.

The same small synthetic range is materialized with workers=1 (serial, in-process) and workers=2
(its tasks in a worker process) into two data dirs: every lake file is compared byte for byte, the warehouse
views row for row, the per-day metadata key for key (timings excepted) and the counters the
workers recorded must reach the step's metrics.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import duckdb
import pytest

from market_pipeline_tests.support.dagster_instance import assets_named, code_location, range_tags
from market_pipeline_tests.support.files import sha256_tree

START, END = "2024-03-01", "2024-03-01"  # two instrument-days
ASSETS = [
    "raw_trades",
    "raw_book_snapshots",
    "raw_book_deltas",
    "reconstructed_books",
    "validation_reports",
    "pipeline_metrics",
    "ohlcv_bars",
    "lake_views",
]
# Warehouse tables the stages write through the IO manager (their timing columns aside).
TABLES = ["validation_reports", "validation_reports_hourly", "pipeline_metrics", "pipeline_metrics_hourly"]
TIMING_SUFFIXES = ("seconds", "_per_second", "_per_s", "peak_rss_mb")  # wall time, throughput, memory: not data


def plain(value):
    """A metadata value json can take (a table schema, a tuple-like record, as its text)."""
    import dagster as dg

    return str(value) if isinstance(value, dg.TableSchema) else value


def without_timings(value):
    """A metadata value with the timing entries of nested dicts left out."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not str(k).endswith(TIMING_SUFFIXES)}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def materialize(instance, data_dir: Path, workers: int):
    import dagster as dg

    from market_pipeline.core.telemetry import telemetry
    from market_pipeline.settings import load_settings

    settings = load_settings(data_dir=data_dir, workers=workers, start_date=dt.date(2024, 1, 1))
    defs = code_location(settings)
    result = dg.materialize(
        assets_named(defs, *ASSETS), instance=instance, resources=defs.resources, tags=range_tags(START, END)
    )
    assert result.success
    telemetry.shutdown()  # export this data dir's metrics now
    metadata = {}
    for name in ASSETS[:-1]:
        for record in instance.fetch_materializations(dg.AssetKey(name), limit=100).records:
            if record.event_log_entry.run_id == result.run_id:
                mat = record.asset_materialization
                metadata[(name, mat.partition)] = {
                    k: json.dumps(without_timings(plain(v.value)), sort_keys=True, default=str).replace(
                        str(data_dir), "<data>"
                    )
                    for k, v in mat.metadata.items()
                    if not k.endswith(TIMING_SUFFIXES)
                }
    return result, metadata


def counters(metrics_dir: Path) -> dict[tuple[str, str], float]:
    """Counter totals (name, attributes) over the JSON lines: counters are exported with delta
    temporality, one point per export that saw an increase, so the points add up."""
    values: dict[tuple[str, str], float] = {}
    for path in sorted(metrics_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            for rm in json.loads(line).get("resourceMetrics", []):
                for sm in rm.get("scopeMetrics", []):
                    for metric in sm.get("metrics", []):
                        if "sum" not in metric:
                            continue
                        for point in metric["sum"].get("dataPoints", []):
                            attrs = json.dumps(point.get("attributes", []), sort_keys=True)
                            value = point.get("asInt", point.get("asDouble"))
                            key = (metric["name"], attrs)
                            values[key] = values.get(key, 0.0) + float(value)
    return values


def table_digests(warehouse: Path) -> dict[str, tuple]:
    """Per table of TABLES: its row count and per column (timings aside) the XOR of the values' hashes."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        digests = {}
        for table in TABLES:
            columns = [
                name
                for (name,) in con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                    [table],
                ).fetchall()
                if not name.endswith(TIMING_SUFFIXES + ("_mb", "_s"))
            ]
            select = ", ".join(f'bit_xor(hash("{c}"))' for c in columns)
            digests[table] = con.execute(f"SELECT count(*), {select} FROM main.{table}").fetchone()
        return digests


def view_digests(warehouse: Path) -> dict[str, tuple]:
    """Per view: its row count and, per column, the XOR of the values' hashes (order-free, small)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        names = con.execute(
            "SELECT schema_name || '.' || view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1"
        ).fetchall()
        return {
            name: con.execute(f"SELECT count(*), bit_xor(hash(COLUMNS(*))) FROM {name}").fetchone() for (name,) in names
        }


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_two_workers_write_what_one_writes(instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_SOURCE", "synthetic")
    monkeypatch.setenv("PIPELINE_SYNTHETIC__SCALE", "0.005")
    serial_dir, parallel_dir = tmp_path / "serial", tmp_path / "parallel"
    _, serial_meta = materialize(instance, serial_dir, 1)
    # The step's own process takes no task here: at this scale it would run them all before the
    # fork server is up, and this test is about the tasks run in worker processes (those run in
    # the step's process are the serial code; `test_the_steps_own_process_is_one_of_the_workers`).
    from market_pipeline.defs.common import parallel

    take = parallel._TaskQueue.take
    monkeypatch.setattr(
        parallel._TaskQueue,
        "take",
        lambda queue: take(queue) if threading.current_thread().name.startswith("worker-lane") else None,
    )
    _, parallel_meta = materialize(instance, parallel_dir, 2)

    serial_lake, parallel_lake = sha256_tree(serial_dir / "lake"), sha256_tree(parallel_dir / "lake")
    assert len(serial_lake) >= 2 * 4  # raw tables, books and bars of 2 instruments
    assert serial_lake == parallel_lake

    serial_views = view_digests(serial_dir / "warehouse.duckdb")
    assert {"raw.book", "raw.book_delta_v2", "books.reconstructed_books"} <= set(serial_views)
    assert all(digest[0] > 0 for digest in serial_views.values())
    assert serial_views == view_digests(parallel_dir / "warehouse.duckdb")
    serial_tables = table_digests(serial_dir / "warehouse.duckdb")
    assert all(digest[0] > 0 for digest in serial_tables.values())
    assert serial_tables == table_digests(parallel_dir / "warehouse.duckdb")

    assert serial_meta and serial_meta.keys() == parallel_meta.keys()
    differing = {
        (key, name): (value, parallel_meta[key].get(name))
        for key, meta in serial_meta.items()
        for name, value in meta.items()
        if parallel_meta[key].get(name) != value
    }
    assert not differing and serial_meta == parallel_meta  # per-day metadata, timings aside
    for (name, _), meta in parallel_meta.items():  # the timings are there too, from the workers
        assert meta, name

    serial_counts = counters(serial_dir / "metrics")
    parallel_counts = counters(parallel_dir / "metrics")
    names = {name for name, _ in serial_counts}
    assert {"mdp_source_items_total", "mdp_book_deltas_applied_total", "mdp_book_messages_total"} <= names
    assert serial_counts == parallel_counts


def test_worker_count(monkeypatch: pytest.MonkeyPatch):
    import os

    from market_pipeline.core import cpu_limit
    from market_pipeline.defs.common.parallel import worker_count
    from market_pipeline.settings import load_settings

    assert worker_count(load_settings(workers=1), 10) == 1
    assert worker_count(load_settings(workers=4), 3) == 3
    monkeypatch.delenv("PIPELINE_WORKERS")  # the test environment's one worker
    # By default one worker per two usable cores: an instrument-day keeps about 1.5 busy.
    monkeypatch.setattr(cpu_limit, "cgroup_cpu_quota", lambda root: None)  # whatever this host's cgroups say
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert worker_count(load_settings(), 100) == 4
    assert worker_count(load_settings(), 3) == 3
    # A container's CPU quota (`docker run --cpus 3`) narrows them; the affinity still shows 8.
    monkeypatch.setattr(cpu_limit, "cgroup_cpu_quota", lambda root: 3.0)
    assert worker_count(load_settings(), 100) == 1
    monkeypatch.setattr(cpu_limit, "cgroup_cpu_quota", lambda root: None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert worker_count(load_settings(), 100) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert worker_count(load_settings(), 100) == 1
    monkeypatch.setenv("PIPELINE_WORKERS", "2")
    assert load_settings().workers == 2


def _day_task(source, settings, day: int) -> int:
    if day < 0:
        raise ValueError(f"day {day} is bad")
    return day * 10


def test_memory_is_released_after_every_instrument_day(monkeypatch: pytest.MonkeyPatch):
    """Each task in the step's own process hands its freed memory back (also when it fails), so
    a range's peak does not grow with its days."""
    from market_pipeline.defs.common import parallel
    from market_pipeline.settings import load_settings

    released = []
    monkeypatch.setattr(parallel, "release_free_memory", lambda: released.append(True))
    settings = load_settings(workers=1)
    outcomes = parallel.run_tasks(settings, _day_task, [(1,), (2,), (3,)], source=object())
    assert [o.value for o in outcomes] == [10, 20, 30] and len(released) == 3
    with pytest.raises(ValueError, match="day -1 is bad"):
        parallel.run_tasks(settings, _day_task, [(-1,)], source=object())
    assert len(released) == 4


def _found_loaded(source, settings, index: int) -> tuple[bool, bool, bool]:
    """What a worker process holds before its task runs anything: the warm-up module, the
    warm-up's kernel compiled (numba's code generator loaded), and pandas when it is installed."""
    import importlib.util
    import sys

    warmup = sys.modules.get("market_pipeline.defs.common.worker_warmup")
    return (
        warmup is not None,
        warmup is not None and bool(warmup._load_code_generator.signatures),
        "pandas" in sys.modules or importlib.util.find_spec("pandas") is None,
    )


def _where_run(source, settings, index: int, step_pid: int, handed: str) -> tuple[int, int, tuple[bool, bool, bool]]:
    """(the task's index, the process it ran in, what that process held before: `_found_loaded`).
    A task in the step's own process waits until a worker process has taken one (the file
    `handed`), so that two tasks on two workers are certain to run one in each."""
    import os
    import time

    from market_pipeline.core.telemetry import telemetry

    loaded = _found_loaded(source, settings, index)
    if os.getpid() == step_pid:
        deadline = time.monotonic() + 120
        while not Path(handed).exists():
            assert time.monotonic() < deadline, "no worker process took a task"
            time.sleep(0.01)
    else:
        Path(handed).touch()
    telemetry.count("mdp_source_items_total", index + 1, table=f"task {index}")
    return index, os.getpid(), loaded


def test_the_steps_own_process_is_one_of_the_workers_and_workers_fork_warm(tmp_path: Path):
    """With two workers one task runs in the step's own process (at once, while the fork server
    starts) and one in a worker process; results and their metrics come back in task order. The
    fork server loads numba's code generator and pyarrow's pandas once (`worker_warmup`): each
    worker of each step would otherwise load them at its first kernel and first array."""
    import os
    import sys

    from market_pipeline.defs.common import parallel
    from market_pipeline.settings import load_settings

    step = os.getpid()
    tasks = [(i, step, str(tmp_path / "handed")) for i in range(2)]
    outcomes = parallel.run_tasks(load_settings(workers=2), _where_run, tasks, source=object())
    assert [o.value[0] for o in outcomes] == [0, 1]
    ran_in = {o.value[1] == step: o.value for o in outcomes}
    assert set(ran_in) == {True, False}  # one task here, one in a worker process
    assert ran_in[False][2] == (True, True, True)  # the worker forked warm
    assert "market_pipeline.defs.common.worker_warmup" not in sys.modules  # the server's, not this process's
    # Every task's metrics are kept for the caller to record in task order, wherever it ran.
    assert [[(name, value) for _, name, value, _ in o.recorded] for o in outcomes] == [
        [("mdp_source_items_total", 1)],
        [("mdp_source_items_total", 2)],
    ]


_EARLY_SERVER = """
import multiprocessing as mp
import sys

from market_pipeline.defs.common import parallel
from market_pipeline.settings import load_settings

assert parallel.start_workers_early(load_settings(workers=1), 4) is None  # one worker: no server
assert parallel.start_workers_early(load_settings(workers=2), 1) is None  # one task: no server
assert "market_pipeline.vendors.synthetic.source" not in sys.modules
parallel.start_workers_early(load_settings(workers=2), 2).join(300)
# A process forked from the server now holds the vendor's module before building anything.
check = "import sys; sys.exit(0 if 'market_pipeline.vendors.synthetic.source' in sys.modules else 3)"
process = mp.get_context("forkserver").Process(target=exec, args=(check,))
process.start()
process.join(300)
sys.exit(process.exitcode)
"""


def test_the_fork_server_starts_before_the_run_with_the_vendors_modules(tmp_path: Path):
    """`market-pipeline run` starts the workers' fork server before its first step when a step
    would use more than one worker, so its imports overlap the run's start; it preloads the
    vendor's modules, which a source loads only when it is first built."""
    import os
    import subprocess
    import sys

    if "forkserver" not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip("no forkserver start method on this platform")
    env = {**os.environ, "PIPELINE_SOURCE": "synthetic", "PIPELINE_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _EARLY_SERVER], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def test_a_source_that_cannot_be_built_starts_no_server_before_the_run(monkeypatch: pytest.MonkeyPatch):
    """Its error is the run's steps' to report, each naming it, not the command's before the run."""
    from market_pipeline.defs.common import parallel
    from market_pipeline.settings import load_settings

    def unbuildable(settings):
        raise OSError("the source's directory cannot be read")

    monkeypatch.setattr(parallel, "build_source", unbuildable)
    assert parallel.start_workers_early(load_settings(workers=2), 2) is None


def test_after_a_failure_no_task_is_handed_out_and_the_earliest_failure_is_raised():
    from market_pipeline.defs.common import parallel
    from market_pipeline.settings import load_settings

    queue = parallel._TaskQueue(5)
    assert [queue.take(), queue.take(), queue.take()] == [0, 1, 2]
    queue.failed(2, ValueError("task 2"))
    assert queue.take() is None  # tasks 3 and 4 never start
    queue.failed(1, ValueError("task 1"))  # a task running meanwhile fails too
    with pytest.raises(ValueError, match="task 1"):
        queue.raise_first_failure()
    with pytest.raises(ValueError, match="day -1 is bad"):
        parallel.run_tasks(load_settings(workers=2), _day_task, [(-1,), (2,)], source=object())


def test_release_free_memory_returns_arrow_and_heap_memory():
    import sys

    import pyarrow as pa

    from market_pipeline.core.telemetry.memory import _libc_function, fix_mmap_threshold, release_free_memory

    held = pa.total_allocated_bytes()  # what other tests of this worker process still hold
    buffer = pa.allocate_buffer(64 * 2**20)
    del buffer
    release_free_memory()
    assert pa.total_allocated_bytes() == held
    if sys.platform.startswith("linux"):  # glibc: the C heap is trimmed, large blocks mapped on their own
        assert _libc_function("malloc_trim") is not None
        assert fix_mmap_threshold()


def test_arrow_allocates_with_jemalloc_unless_the_user_chose():
    """Importing the package makes jemalloc Arrow's pool (mimalloc kept the pages of freed batches:
    the bench day's graph peaked ~70 MB higher); a pool the user names is kept."""
    import os
    import subprocess
    import sys

    code = "import market_pipeline, pyarrow; print(pyarrow.default_memory_pool().backend_name)"
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    chosen = {**env, "ARROW_DEFAULT_MEMORY_POOL": "system"}
    backends = [
        subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, check=True).stdout.strip()
        for e in (env, chosen)
    ]
    assert backends == ["jemalloc", "system"]
