"""The `market-pipeline` CLI, called in-process through main(argv) -> exit code."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import polars as pl
import pytest

from market_pipeline.cli.main import main
from market_pipeline.cli.validate import writable_dir_problem

SECRET = "s3cr3t-webhook-token-value"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def _table_row(out: str, first_cell: str) -> list[str]:
    """The cells of the summary-table row whose first cell is `first_cell`."""
    rows = [line.split() for line in out.splitlines()]
    return next(r for r in rows if len(r) >= 3 and r[0] == first_cell)


def _runs(home: Path) -> list:
    import dagster as dg

    assert home.is_dir()
    with dg.DagsterInstance.get() as instance:
        return list(instance.get_runs())


# ---------------------------------------------------------------------------------------
# validate-env
# ---------------------------------------------------------------------------------------


def test_validate_env_ok_prints_instruments_and_hides_secrets(env, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_TOKEN", SECRET)

    code = main(["validate-env"])

    out, err = capsys.readouterr()
    assert code == 0
    assert "BINANCE:BTC-USDT" in out
    assert "BINANCE_FUTURES:BTC-USDT-PERP" in out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert lines["BINANCE_FUTURES:BTC-USDT-PERP"][:2] == ["0.1", "0.001"]  # tick, lot from config.yaml
    assert "2024-01-01" in out  # start date
    assert str(env["data"]) in out
    assert "token set" in out
    assert "master key      not set" in out
    assert SECRET not in out + err
    assert err == ""  # DAGSTER_HOME is set: no warning


def test_validate_env_reports_every_bad_variable_and_never_a_secret(env, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_SOURCE", "bogus")
    monkeypatch.setenv("PIPELINE_START_DATE", "2024-13-01")
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", "nocolon")
    monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_TOKEN", SECRET)

    code = main(["validate-env"])

    out, err = capsys.readouterr()
    assert code == 1
    problems = [line for line in err.splitlines() if line.startswith("error: ")]
    named = {line.removeprefix("error: ").split(":", 1)[0] for line in problems}
    assert named == {"PIPELINE_SOURCE", "PIPELINE_START_DATE", "PIPELINE_INSTRUMENTS"}
    assert len(problems) == 3  # one line per problem
    assert SECRET not in out + err


def test_validate_env_names_an_unknown_variable_and_the_closest_setting(env, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_S3_BUCKET", "x")  # the flat spelling that was removed

    code = main(["validate-env"])

    _, err = capsys.readouterr()
    assert code == 1
    assert err.splitlines() == [
        "error: PIPELINE_S3_BUCKET: no such setting, it would be ignored; did you mean PIPELINE_S3__BUCKET? "
        "(docs/configuration.md lists them)"
    ]


def test_validate_env_names_a_variable_that_is_not_valid_json(env, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_INSTRUMENT_SPECS", '{"BINANCE:BTC-USDT": {"tick_size": ' + SECRET)

    code = main(["validate-env"])

    out, err = capsys.readouterr()
    assert code == 1
    assert err.startswith("error: PIPELINE_INSTRUMENT_SPECS: ")
    assert SECRET not in out + err


def test_validate_env_checks_the_local_source_dir(env, monkeypatch, tmp_path, capsys):
    missing = tmp_path / "no-such-vendor-dir"
    monkeypatch.setenv("PIPELINE_SOURCE", "local")
    monkeypatch.setenv("PIPELINE_LOCAL_DIR", str(missing))

    code = main(["validate-env"])

    _, err = capsys.readouterr()
    assert code == 1
    assert f"error: PIPELINE_LOCAL_DIR: {missing} is not an existing directory" in err.splitlines()


def test_validate_env_names_a_per_instrument_primary_missing_its_settings(env, monkeypatch, tmp_path, capsys):
    """PIPELINE_SOURCES gives one instrument the primary tardis: its settings are required, and checked
    for that instrument only (the synthetic one needs no Tardis exchange id)."""
    sources = '{"BINANCE_FUTURES:BTC-USDT-PERP": {"primary": "tardis", "reference": "capture"}}'
    monkeypatch.setenv("PIPELINE_SOURCES", sources)
    monkeypatch.setenv("PIPELINE_TARDIS_EXCHANGES", '{"BINANCE_FUTURES": "binance-futures"}')  # no BINANCE

    code = main(["validate-env"])

    _, err = capsys.readouterr()
    assert code == 1
    assert err.splitlines() == [
        "error: PIPELINE_SOURCES capture (reference of BINANCE_FUTURES:BTC-USDT-PERP): "
        "PIPELINE_SOURCE=capture needs PIPELINE_CAPTURE_DIR",
        "error: PIPELINE_SOURCES tardis (primary of BINANCE_FUTURES:BTC-USDT-PERP): "
        "PIPELINE_SOURCE=tardis needs PIPELINE_TARDIS_DIR",
    ]

    missing = tmp_path / "no-tardis-here"
    monkeypatch.setenv("PIPELINE_TARDIS_DIR", str(missing))
    monkeypatch.setenv("PIPELINE_CAPTURE_DIR", str(tmp_path))
    code = main(["validate-env"])

    out, err = capsys.readouterr()
    assert code == 1
    assert err.splitlines() == [
        f"error: PIPELINE_SOURCES tardis (primary of BINANCE_FUTURES:BTC-USDT-PERP): PIPELINE_TARDIS_DIR: "
        f"{missing} is not an existing directory"
    ]
    missing.mkdir()
    assert main(["validate-env"]) == 0
    assert "BINANCE_FUTURES:BTC-USDT-PERP: primary tardis, reference capture" in capsys.readouterr().out


def test_validate_env_rejects_an_unwritable_data_dir(env, monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(blocker / "data"))

    code = main(["validate-env"])

    _, err = capsys.readouterr()
    assert code == 1
    assert any(line.startswith("error: PIPELINE_DATA_DIR: cannot create") for line in err.splitlines())


def test_a_directory_that_refuses_writes_is_reported_even_to_root(tmp_path):
    """`os.access` says yes to root everywhere; the check creates a file to find out."""
    import os

    sys_dir = Path("/sys/kernel")
    if not sys_dir.is_dir():
        pytest.skip("no /sys here")
    problem = writable_dir_problem(sys_dir / "market_pipeline_data")
    assert problem is not None and problem.startswith(f"cannot create {sys_dir}/market_pipeline_data: /sys")
    assert writable_dir_problem(tmp_path / "data") is None
    if os.geteuid() == 0:
        assert os.access(sys_dir, os.W_OK)  # what a check by os.access alone would have trusted


def test_validate_env_warns_without_dagster_home(env, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME")

    code = main(["validate-env"])

    out, err = capsys.readouterr()
    assert code == 0
    assert err.startswith("warning: DAGSTER_HOME is not set")
    assert "DAGSTER_HOME    not set" in out


# ---------------------------------------------------------------------------------------
# run: argument and environment errors (nothing runs)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2024-03-02", "2024-03-01", "--start-date 2024-03-02 is after --end-date 2024-03-01"),
        ("2024-3-1", "2024-03-02", "--start-date '2024-3-1' is not a date in YYYY-MM-DD form"),
        ("2024-03-01", "2024-02-30", "--end-date '2024-02-30' is not a valid date"),
        ("2023-12-31", "2024-01-02", "--start-date 2023-12-31 is before the first partition 2024-01-01"),
    ],
)
@pytest.mark.nothing_starts("the run is refused before it starts")
def test_run_rejects_a_bad_date_range(env, capsys, start, end, message):
    code = main(["run", "--start-date", start, "--end-date", end])

    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith(f"error: {message}")
    assert _runs(env["home"]) == []
    assert not env["data"].exists()


def test_run_rejects_a_day_that_is_not_over_yet(env, capsys):
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date().isoformat()

    code = main(["run", "--start-date", "2024-03-01", "--end-date", tomorrow, "--select", "raw_trades"])

    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith(f"error: --end-date {tomorrow} is not a partition of raw_trades")
    assert _runs(env["home"]) == []


@pytest.mark.nothing_starts("the run is refused before it starts")
def test_run_refuses_an_ephemeral_instance(env, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME")

    code = main(["run", "--start-date", "2024-03-01", "--end-date", "2024-03-01"])

    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("error: DAGSTER_HOME is not set")
    assert not env["data"].exists()


@pytest.mark.parametrize("selection", ["no_such_asset", "group:no_such_group"])
def test_run_rejects_an_unknown_selection(env, capsys, selection):
    code = main(["run", "--start-date", "2024-03-01", "--end-date", "2024-03-01", "--select", selection])

    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith(f"error: --select {selection!r}")
    assert _runs(env["home"]) == []


@pytest.mark.nothing_starts("the run is refused before it starts")
def test_run_with_invalid_settings_names_the_variable(env, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_SOURCE", "bogus")

    code = main(["run", "--start-date", "2024-03-01", "--end-date", "2024-03-01"])

    _, err = capsys.readouterr()
    assert code == 3  # configuration
    assert err.splitlines()[0].startswith("error: PIPELINE_SOURCE: ")


@pytest.mark.parametrize("kind", ["file", "below a file"])
@pytest.mark.nothing_starts("the run is refused before it starts")
def test_run_names_the_variable_of_a_data_dir_it_cannot_write(env, monkeypatch, tmp_path, capsys, kind):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    data = blocker if kind == "file" else blocker / "data"
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(data))

    code = main(["run", "--start-date", "2024-03-01", "--end-date", "2024-03-01"])

    out, err = capsys.readouterr()
    assert code == 3  # configuration
    assert err.splitlines() == [
        f"error: PIPELINE_DATA_DIR: {writable_dir_problem(data)}; point PIPELINE_DATA_DIR at a directory "
        "this user can write"
    ]
    assert "Traceback" not in out + err
    assert _runs(env["home"]) == []


# ---------------------------------------------------------------------------------------
# run: materializing a range from a local vendor lake
# ---------------------------------------------------------------------------------------


def test_run_materializes_a_range_as_one_run(local_source, capsys, monkeypatch):
    from market_pipeline.defs.common import parallel

    data: Path = local_source["data"]  # type: ignore[assignment]
    rows: dict[dt.date, int] = local_source["rows"]  # type: ignore[assignment]
    early: list[int] = []  # the instrument-days the run told the workers' fork server to expect
    monkeypatch.setattr(parallel, "start_workers_early", lambda settings, tasks: early.append(tasks))

    code = main(["run", "--start-date", "2024-03-01", "--end-date", "2024-03-02", "--select", "raw_book_deltas"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert early == [2]  # two days of one instrument, before the run's first step
    for day, n in rows.items():
        written = data / "lake/raw/book_delta_v2/exchange=BINANCE/symbol=BTC-USDT" / f"dt={day}" / "data.parquet"
        assert written.is_file()
        assert pl.read_parquet(written).height == n
    # Only the selected table was imported.
    assert sorted(p.name for p in (data / "lake" / "raw").iterdir()) == ["book_delta_v2"]

    runs = _runs(local_source["home"])  # type: ignore[arg-type]
    assert len(runs) == 1
    run = runs[0]
    assert run.is_success
    assert run.tags[RANGE_START_TAG] == "2024-03-01"
    assert run.tags[RANGE_END_TAG] == "2024-03-02"
    assert {k.to_user_string() for k in run.asset_selection} == {"raw_book_deltas"}

    lines = out.splitlines()
    assert f"run {run.run_id}: SUCCESS" in lines
    assert _table_row(out, "raw_book_deltas") == ["raw_book_deltas", "ok", "2/2", str(sum(rows.values()))]
    # Rows per day and instrument, read back from the warehouse view raw.book_delta_v2.
    day_rows = [line.split() for line in lines if re.fullmatch(r"\s+2024-03-\d\d\s.*", line)]
    assert day_rows == [["2024-03-01", "BINANCE:BTC-USDT", "30"], ["2024-03-02", "BINANCE:BTC-USDT", "45"]]
    assert f"warehouse   {data / 'warehouse.duckdb'}" in out


def test_a_day_that_cannot_be_imported_is_skipped_and_the_exit_code_says_so(local_source, capsys):
    data: Path = local_source["data"]  # type: ignore[assignment]

    code = main(["run", "--start-date", "2024-03-01", "--end-date", "2024-03-03", "--select", "raw_book_deltas"])

    out, err = capsys.readouterr()
    assert code == 1
    assert "1 day(s) did not complete (2024-03-03;" in err
    skipped = out.split("Skipped days", 1)[1].split("\nOutputs", 1)[0]
    assert "2024-03-03  raw_book_deltas" in skipped
    reason = "book_delta_v2 import: local source has no book_delta_v2 data for BINANCE:BTC-USDT on 2024-03-03"
    assert "".join(reason.split()) in "".join(skipped.split())  # wrapped to the terminal's width
    assert "Stack Trace" not in out + err  # quiet by default
    assert _table_row(out, "raw_book_deltas")[:5] == ["raw_book_deltas", "1", "day(s)", "skipped", "2/3"]
    base = data / "lake/raw/book_delta_v2/exchange=BINANCE/symbol=BTC-USDT"
    assert sorted(p.name for p in base.iterdir()) == ["dt=2024-03-01", "dt=2024-03-02"]
    runs = _runs(local_source["home"])  # type: ignore[arg-type]
    assert [r.is_success for r in runs] == [True]  # the other days completed


def test_a_run_whose_every_day_fails_to_import_fails(local_source, capsys):
    code = main(["run", "--start-date", "2024-03-03", "--end-date", "2024-03-03", "--select", "raw_book_deltas"])

    out, err = capsys.readouterr()
    assert code == 1
    assert "book_delta_v2: 1 instrument-day(s) not imported; no day complete." in err
    assert "no book_delta_v2 data for BINANCE:BTC-USDT on 2024-03-03" in err
    assert _table_row(out, "raw_book_deltas")[:3] == ["raw_book_deltas", "FAILED", "0/1"]
    runs = _runs(local_source["home"])  # type: ignore[arg-type]
    assert [r.is_failure for r in runs] == [True]


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("market-pipeline ")


def test_the_console_script_exits_with_main_s_code_its_heap_frozen():
    """The installed script and `python -m` run `console`: main's exit code, the heap frozen
    before the interpreter's exit collections (seen from an exit hook, which runs after them), and
    the process declared one that exits after its command (a run's startup heap stays frozen)."""
    import subprocess
    import sys
    import tomllib

    scripts = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["market-pipeline"] == "market_pipeline.cli.main:console"
    probe = (
        "import atexit, gc, sys; from market_pipeline.cli import heap; "
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0, heap._exits_after_command)); "
        "sys.argv[1:] = {args!r}; from market_pipeline.cli.main import console; console()"
    )
    for args, code in ((["--version"], 0), (["run", "--start-date", "nonsense"], 2)):
        done = subprocess.run([sys.executable, "-c", probe.format(args=args)], capture_output=True, text=True)
        assert done.returncode == code, done.stderr
        assert done.stdout.splitlines()[-1] == "frozen True True"


def test_the_startup_heap_is_frozen_for_the_block_and_put_back():
    import gc

    from market_pipeline.cli.heap import startup_heap_frozen

    assert gc.get_freeze_count() == 0
    with startup_heap_frozen():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError), startup_heap_frozen():
        raise RuntimeError("a failed run")
    assert gc.get_freeze_count() == 0


def test_a_process_that_exits_after_its_command_keeps_the_startup_heap_frozen(monkeypatch):
    """So that the exit's one collection walks only what the run left."""
    import gc

    from market_pipeline.cli import heap

    monkeypatch.setattr(heap, "_exits_after_command", True)
    try:
        with heap.startup_heap_frozen():
            frozen = gc.get_freeze_count()
        assert frozen > 0 and gc.get_freeze_count() > frozen // 2 and gc.isenabled()  # some were freed since
    finally:
        gc.unfreeze()


def test_collections_pause_outside_the_run_and_are_put_back(monkeypatch):
    """`run_range` collects no garbage but during the run (`startup_heap_frozen` inside
    `collections_paused`), and leaves collection as it found it, also on an error."""
    import datetime as dt
    import gc
    from types import SimpleNamespace

    from market_pipeline.cli import run as run_module
    from market_pipeline.cli.heap import collections_paused, startup_heap_frozen

    assert gc.isenabled()
    with collections_paused():
        assert not gc.isenabled()
        with startup_heap_frozen():
            assert gc.isenabled() and gc.get_freeze_count() > 0
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collections_paused():
        raise RuntimeError("a bad selection")
    assert gc.isenabled()
    gc.disable()
    try:
        with collections_paused(), startup_heap_frozen():
            pass
        assert not gc.isenabled()  # a caller's choice is kept
    finally:
        gc.enable()

    from market_pipeline.cli import dagster_instance

    seen = []

    def stop_at_the_instance() -> None:
        seen.append(gc.isenabled())
        raise RuntimeError("stopped")

    monkeypatch.setattr(dagster_instance, "require_dagster_home", stop_at_the_instance)
    settings = SimpleNamespace(start_date=dt.date(2024, 1, 1))
    day = dt.date(2024, 3, 1)
    with pytest.raises(RuntimeError, match="stopped"):
        run_module.run_range(settings, day, day, None, 0, "test")  # type: ignore[arg-type]
    assert seen == [False] and gc.isenabled()


def test_first_commands_on_a_new_instance_at_once_all_open_it(tmp_path):
    """Four processes opening a fresh SQLite DAGSTER_HOME at the same instant: without the lock two
    or three die creating its schema (`table alembic_version already exists`).

    The processes are forked from this one, which has imported Dagster and the CLI already (the
    race is between the processes opening the instance, not their imports), and a barrier lets them
    open it together."""
    import multiprocessing
    import os
    import traceback

    from market_pipeline.cli.dagster_instance import open_instance
    from market_pipeline_tests.support.project import PROJECT_DAGSTER_YAML

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(PROJECT_DAGSTER_YAML.read_text())
    fork = multiprocessing.get_context("fork")
    together = fork.Barrier(4)

    def first_command(n: int) -> None:
        result = tmp_path / f"result-{n}"
        try:
            os.environ["DAGSTER_HOME"] = str(home)
            together.wait(60)
            with open_instance() as instance:
                result.write_text(f"{len(instance.get_runs())}\n")
        except BaseException:
            result.write_text(traceback.format_exc())
            raise

    procs = [fork.Process(target=first_command, args=(n,)) for n in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    results = [(proc.exitcode, (tmp_path / f"result-{n}").read_text()) for n, proc in enumerate(procs)]
    assert results == [(0, "0\n")] * 4, results


def test_the_run_summary_counts_rows_without_importing_pandas(tmp_path):
    """The summary's warehouse queries name their days in the SQL: a parameter would make DuckDB's
    Python client import pandas, 0.1 s of a light run's summary. Only dates reach the SQL."""
    import subprocess
    import sys

    from market_pipeline.cli.common import days_between

    warehouse = tmp_path / "warehouse.duckdb"
    probe = f"""
import datetime as dt, sys, duckdb
from pathlib import Path
from market_pipeline.cli.agreement_summary import agreement_rows
from market_pipeline.cli.report import bar_counts, raw_row_counts
from market_pipeline.core.lake.warehouse import WarehouseTarget
with duckdb.connect({str(warehouse)!r}) as con:
    con.execute("CREATE SCHEMA raw")
    con.execute(
        "CREATE TABLE raw.trades AS SELECT CAST('2024-03-0' || (i % 3 + 1) AS DATE) AS dt, "
        "'X' AS exchange, 'Y' AS symbol FROM range(7) t(i)"
    )
target, days = WarehouseTarget(Path({str(warehouse)!r})), (dt.date(2024, 3, 2), dt.date(2024, 3, 3))
lines = raw_row_counts(target, *days) + bar_counts(target, *days) + agreement_rows(target, *days)
print("\\n".join(lines)); print("pandas" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    *lines, pandas_imported = done.stdout.strip().splitlines()
    assert pandas_imported == "False"
    assert [line.split() for line in lines if line.strip().startswith(("2024", "total"))] == [
        ["2024-03-02", "X:Y", "2"],
        ["2024-03-03", "X:Y", "2"],
        ["total", "4"],
    ]
    with pytest.raises(TypeError, match="dates"):
        days_between("2024-03-02' OR 1=1 --", dt.date(2024, 3, 3))
