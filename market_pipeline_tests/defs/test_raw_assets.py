"""The raw stage through Dagster: local and synthetic sources, quarantine, idempotence, CLI."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pytest

from market_pipeline_tests.support.dagster_events import materializations
from market_pipeline_tests.support.dagster_instance import assets_named, code_location, range_tags
from market_pipeline_tests.support.files import keep_pristine, restore_pristine, sha256_tree
from market_pipeline_tests.support.project import PROJECT_DAGSTER_YAML, VENV_BIN, subprocess_env
from market_pipeline_tests.support.raw_lake import lake_file
from market_pipeline_tests.support.vendor_lake import DEFAULT_INSTRUMENTS, VendorLake, truncate_file, vendor_frame

DAYS = [dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)]
START, END = DAYS[0].isoformat(), DAYS[-1].isoformat()
ASSET_TABLES = {"raw_trades": "trades", "raw_book_snapshots": "book", "raw_book_deltas": "book_delta_v2"}
KEYS = [f"{e}:{s}" for e, s in DEFAULT_INSTRUMENTS]


def row_count(table: str, index: int, day: dt.date) -> int:
    """Distinct counts per table, instrument and day, so sums prove the right files were read."""
    return {"trades": 11, "book": 5, "book_delta_v2": 23}[table] + 4 * index + day.day


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def run(instance, names, start=START, end=END, raise_on_error=True):
    """Materialize raw assets of the code location built from the environment's settings now."""
    import dagster as dg

    defs = code_location()
    return dg.materialize(
        assets_named(defs, *names),
        instance=instance,
        resources=defs.resources,
        tags=range_tags(start, end),
        raise_on_error=raise_on_error,
    )


def view_counts(data_dir: Path, table: str) -> dict[str, int]:
    """Rows per day as the warehouse's raw.<table> view shows them: the view's own SQL, in memory
    (runs of raw assets alone do not create the warehouse; `lake_views` does)."""
    from market_pipeline.core.lake.catalog import view_sql

    with duckdb.connect() as con:
        con.execute("CREATE SCHEMA raw")
        con.execute(view_sql("raw", table, data_dir / "lake" / "raw" / table))
        rows = con.execute(f"SELECT CAST(dt AS VARCHAR), count(*) FROM raw.{table} GROUP BY 1 ORDER BY 1").fetchall()
    return {d: n for d, n in rows}


@pytest.fixture
def local_source(vendor_lake: VendorLake, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> VendorLake:
    vendor_lake(days=DAYS, rows=row_count)
    monkeypatch.setenv("PIPELINE_SOURCE", "local")
    monkeypatch.setenv("PIPELINE_LOCAL_DIR", str(vendor_lake.root))
    return vendor_lake


@dataclass
class Imported:
    """The local source's vendor lake after one run of the raw assets and `lake_views` over DAYS."""

    instance: object  # dg.DagsterInstance
    data_dir: Path
    source: VendorLake
    run_id: str


@pytest.fixture(scope="module")
def _imported_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """One import of the vendor lake, made once and kept pristine: (world dir, vendor rows, run id).

    The tests that start from it get the world restored from the pristine copy, at the same
    paths, so each starts from exactly what one run left (its own runs included, nothing else)."""
    import dagster as dg

    root = tmp_path_factory.mktemp("raw_world")
    world = root / "world"
    home, data, vendor = world / "dagster_home", world / "data", world / "vendor"
    for path in (home, data, vendor):
        path.mkdir(parents=True)
    shutil.copy(PROJECT_DAGSTER_YAML, home / "dagster.yaml")
    source = VendorLake(vendor)
    source(days=DAYS, rows=row_count)
    with pytest.MonkeyPatch.context() as monkeypatch:
        _world_env(monkeypatch, world)
        instance = dg.DagsterInstance.get()
        try:
            result = run(instance, [*ASSET_TABLES, "lake_views"])
            assert result.success
            run_id = result.run_id
        finally:
            instance.dispose()
    keep_pristine(world)
    return world, dict(source.rows), run_id


def _world_env(monkeypatch: pytest.MonkeyPatch, world: Path) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(world / "dagster_home"))
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(world / "data"))
    monkeypatch.setenv("PIPELINE_SOURCE", "local")
    monkeypatch.setenv("PIPELINE_LOCAL_DIR", str(world / "vendor"))


@pytest.fixture
def imported(_imported_world, monkeypatch: pytest.MonkeyPatch) -> Iterator[Imported]:
    """The world after the first run, as that run left it (restored for each test)."""
    import dagster as dg

    world, rows, run_id = _imported_world
    restore_pristine(world)
    _world_env(monkeypatch, world)
    source = VendorLake(world / "vendor")
    source.rows = dict(rows)
    instance = dg.DagsterInstance.get()
    try:
        yield Imported(instance, world / "data", source, run_id)
    finally:
        instance.dispose()


# ---------------------------------------------------------------------------------------
# 1-2. Local source, one run over a partition range; idempotent re-run
# ---------------------------------------------------------------------------------------


def test_local_source_one_run_all_raw_assets(imported: Imported):
    # The world's run: the raw assets and lake_views, which creates the warehouse's raw.* views
    # over the lake (the raw steps write Parquet only).
    instance, local_source, data_dir = imported.instance, imported.source, imported.data_dir
    assert len(instance.get_runs()) == 1  # one run for the whole range and all three assets

    for asset_name, table in ASSET_TABLES.items():
        files = sorted((data_dir / "lake" / "raw" / table).rglob("*"))
        files = [p for p in files if p.is_file()]
        assert len(files) == len(DAYS) * len(DEFAULT_INSTRUMENTS), files
        for index, (exchange, symbol) in enumerate(DEFAULT_INSTRUMENTS):
            for day in DAYS:
                path = lake_file(data_dir, table, exchange, symbol, day)
                assert path in files
                stored = pl.read_parquet(path)
                # Crypto Lake (client) column names whatever spelling the vendor file used.
                expected = vendor_frame(table, day, row_count(table, index, day), "client", seed=index)
                assert stored.columns == expected.columns
                assert stored.equals(expected)

        mats = materializations(instance, asset_name, imported.run_id)
        assert sorted(mats) == [d.isoformat() for d in DAYS]
        for day in DAYS:
            meta = mats[day.isoformat()]
            assert meta["rows"] == local_source.rows_for_day(table, day)
            assert meta["rows"] == sum(row_count(table, i, day) for i in range(len(DEFAULT_INSTRUMENTS)))
            assert meta["quarantined_rows"] == 0
            for index, key in enumerate(KEYS):
                assert meta[f"{key} rows"] == row_count(table, index, day)

        counts = view_counts(data_dir, table)
        assert counts == {d.isoformat(): local_source.rows_for_day(table, d) for d in DAYS}

    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        per_symbol = con.execute(
            "SELECT exchange, symbol, count(*) FROM raw.book_delta_v2 GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        cols = [r[0] for r in con.execute("DESCRIBE raw.trades").fetchall()]
    assert per_symbol == [
        (e, s, sum(row_count("book_delta_v2", i, d) for d in DAYS)) for i, (e, s) in enumerate(DEFAULT_INSTRUMENTS)
    ]
    assert cols[:6] == ["origin_time", "received_time", "side", "price", "quantity", "trade_id"]
    assert not (data_dir / "lake" / "quarantine").exists() or not any(
        p.suffix == ".json" for p in (data_dir / "lake" / "quarantine").rglob("*")
    )


def test_rerun_is_idempotent(imported: Imported):
    # After the world's first run of the raw assets and lake_views, the same run again.
    instance, local_source, data_dir = imported.instance, imported.source, imported.data_dir
    lake = data_dir / "lake"
    before = sha256_tree(lake)
    counts_before = {t: view_counts(data_dir, t) for t in ASSET_TABLES.values()}
    assert len([p for p in before if p.startswith("raw/")]) == 3 * len(DAYS) * len(DEFAULT_INSTRUMENTS)
    # Beside each raw day, its day statistics (summary.json and seven small tables).
    assert len([p for p in before if p.startswith("stats/")]) == 8 * 3 * len(DAYS) * len(DEFAULT_INSTRUMENTS)

    second = run(instance, [*ASSET_TABLES, "lake_views"])
    assert second.success
    assert sha256_tree(lake) == before
    assert {t: view_counts(data_dir, t) for t in ASSET_TABLES.values()} == counts_before
    for asset_name, table in ASSET_TABLES.items():
        mats = materializations(instance, asset_name, second.run_id)
        assert {p: m["rows"] for p, m in mats.items()} == {
            d.isoformat(): local_source.rows_for_day(table, d) for d in DAYS
        }


# ---------------------------------------------------------------------------------------
# 3. Quarantine of an unreadable file
# ---------------------------------------------------------------------------------------


def test_corrupt_file_is_quarantined_and_other_partitions_land(imported: Imported):
    # After the world's first good import of every partition:
    instance, local_source, data_dir = imported.instance, imported.source, imported.data_dir
    bad_day = DAYS[1]
    exchange, symbol = DEFAULT_INSTRUMENTS[1]
    kept = lake_file(data_dir, "book_delta_v2", exchange, symbol, bad_day)
    kept_bytes = kept.read_bytes()

    # New vendor data everywhere (so we can see what the second run wrote), then corrupt one file.
    def new_count(table: str, index: int, day: dt.date) -> int:
        return row_count(table, index, day) + 100

    local_source(days=DAYS, rows=new_count)
    corrupt = local_source.path("book_delta_v2", exchange, symbol, bad_day)
    truncate_file(corrupt)

    # The run completes the other instrument-days; the bad one is recorded as skipped, with the reason.
    result = run(instance, list(ASSET_TABLES), raise_on_error=False)
    assert result.success
    mats = materializations(instance, "raw_book_deltas", result.run_id)
    assert "skipped" not in mats[bad_day.isoformat()]  # the day's other instrument goes on
    text = mats[bad_day.isoformat()]["skipped_instruments"][f"{exchange}:{symbol}"]
    assert str(corrupt) in text
    assert "unreadable" in text
    assert mats[bad_day.isoformat()]["failed"][0]["instrument"] == f"{exchange}:{symbol}"

    # The corrupt file, copied to the quarantine with its reason.
    qdir = (
        data_dir
        / "lake"
        / "quarantine"
        / "book_delta_v2"
        / f"exchange={exchange}"
        / f"symbol={symbol}"
        / f"dt={bad_day.isoformat()}"
    )
    assert (qdir / corrupt.name).read_bytes() == corrupt.read_bytes()
    reason = json.loads((qdir / f"{corrupt.name}.reason.json").read_text())
    assert reason["source_file"] == str(corrupt)
    assert "unreadable" in reason["reason"]
    assert reason["dt"] == bad_day.isoformat()
    assert reason["run_id"] == result.run_id

    # The previous good import of that partition is untouched.
    assert kept.read_bytes() == kept_bytes

    # Every other instrument-day was written from the new vendor data.
    for index, (ex, sym) in enumerate(DEFAULT_INSTRUMENTS):
        for day in DAYS:
            if (ex, sym, day) == (exchange, symbol, bad_day):
                continue
            stored = pl.read_parquet(lake_file(data_dir, "book_delta_v2", ex, sym, day))
            assert stored.height == new_count("book_delta_v2", index, day)

    # The complete days carry no `skipped`; the other assets of the run were unaffected.
    assert sorted(mats) == [d.isoformat() for d in DAYS]
    for day in (DAYS[0], DAYS[2]):
        assert "skipped" not in mats[day.isoformat()]
        assert mats[day.isoformat()]["rows"] == sum(new_count("book_delta_v2", i, day) for i in range(2))
    for other in ("raw_trades", "raw_book_snapshots"):
        assert sorted(materializations(instance, other, result.run_id)) == [d.isoformat() for d in DAYS]

    # The view shows what is in the lake: new data, and the old partition for the bad instrument-day.
    counts = view_counts(data_dir, "book_delta_v2")
    assert counts[bad_day.isoformat()] == new_count("book_delta_v2", 0, bad_day) + row_count(
        "book_delta_v2", 1, bad_day
    )


def test_corrupt_file_without_previous_import_leaves_no_partition(instance, local_source: VendorLake, data_dir: Path):
    exchange, symbol = DEFAULT_INSTRUMENTS[0]
    corrupt = local_source.path("trades", exchange, symbol, DAYS[0])
    truncate_file(corrupt)
    result = run(instance, ["raw_trades"], raise_on_error=False)
    assert result.success  # the other days completed
    mats = materializations(instance, "raw_trades", result.run_id)
    assert str(corrupt) in mats[DAYS[0].isoformat()]["skipped_instruments"][f"{exchange}:{symbol}"]
    assert not lake_file(data_dir, "trades", exchange, symbol, DAYS[0]).parent.exists()
    assert lake_file(data_dir, "trades", *DEFAULT_INSTRUMENTS[1], DAYS[0]).is_file()
    assert sorted(d for d, m in mats.items() if "skipped_instruments" not in m) == [
        DAYS[1].isoformat(),
        DAYS[2].isoformat(),
    ]


def test_bad_rows_are_quarantined_and_good_rows_land(instance, local_source: VendorLake, data_dir: Path):
    exchange, symbol = DEFAULT_INSTRUMENTS[0]
    path = local_source.path("trades", exchange, symbol, DAYS[0])
    df = pl.read_parquet(path)
    df = df.with_columns(
        pl.when(pl.int_range(pl.len()).is_in([2, 5])).then(-1.0).otherwise(pl.col("price")).alias("price")
    )
    df.write_parquet(path)
    result = run(instance, ["raw_trades"], start=DAYS[0].isoformat(), end=DAYS[0].isoformat())
    assert result.success
    stored = pl.read_parquet(lake_file(data_dir, "trades", exchange, symbol, DAYS[0]))
    assert stored.height == df.height - 2
    rejected = pl.read_parquet(
        data_dir
        / "lake"
        / "quarantine"
        / "trades"
        / f"exchange={exchange}"
        / f"symbol={symbol}"
        / f"dt={DAYS[0].isoformat()}"
        / "rejected_rows.parquet"
    )
    assert rejected["_row"].to_list() == [2, 5]
    meta = materializations(instance, "raw_trades", result.run_id)[DAYS[0].isoformat()]
    assert meta["quarantined_rows"] == 2
    assert meta["rows"] == local_source.rows_for_day("trades", DAYS[0]) - 2


# ---------------------------------------------------------------------------------------
# 4. A day missing at the source
# ---------------------------------------------------------------------------------------


def test_missing_day_at_source_is_skipped_naming_instrument_and_day(instance, local_source: VendorLake, data_dir: Path):
    exchange, symbol = DEFAULT_INSTRUMENTS[0]
    missing_day = DAYS[1]
    local_source.path("trades", exchange, symbol, missing_day).unlink()

    result = run(instance, ["raw_trades"], raise_on_error=False)
    assert result.success  # the other days completed
    mats = materializations(instance, "raw_trades", result.run_id)
    text = mats[missing_day.isoformat()]["skipped_instruments"][f"{exchange}:{symbol}"]
    assert f"{exchange}:{symbol}" in text
    assert missing_day.isoformat() in text

    assert not lake_file(data_dir, "trades", exchange, symbol, missing_day).exists()
    for ex, sym in DEFAULT_INSTRUMENTS:
        for day in DAYS:
            if (ex, sym, day) != (exchange, symbol, missing_day):
                assert lake_file(data_dir, "trades", ex, sym, day).is_file()
    assert sorted(d for d, m in mats.items() if "skipped_instruments" not in m) == [
        DAYS[0].isoformat(),
        DAYS[2].isoformat(),
    ]
    assert view_counts(data_dir, "trades")[DAYS[0].isoformat()] == local_source.rows_for_day("trades", DAYS[0])


# ---------------------------------------------------------------------------------------
# 5-6. The dagster CLI
# ---------------------------------------------------------------------------------------


# Run config choosing the in-process side of Dagster's default executor (multi_or_in_process_executor).
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def _dagster(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "dagster"), *args],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow  # Dagster's CLI twice, a process per step the first time
def test_cli_materialize_partition_range(
    instance, local_source: VendorLake, data_dir: Path, dagster_home: Path, _hermetic_env: Path
):
    # raw_book_snapshots: every raw asset is materialized by the same code (materialize_raw_table);
    # its step, its checks' step and the freshness checks' step are the step processes.
    args = [
        "asset",
        "materialize",
        "-m",
        "market_pipeline.definitions",
        "--select",
        "raw_book_snapshots",
        "--partition-range",
        f"{START}...{END}",
    ]
    first = _dagster(args, _hermetic_env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    files = [p for p in (data_dir / "lake" / "raw" / "book").rglob("*") if p.is_file()]
    assert len(files) == len(DAYS) * len(DEFAULT_INSTRUMENTS)
    for exchange, symbol in DEFAULT_INSTRUMENTS:
        for day in DAYS:
            assert lake_file(data_dir, "book", exchange, symbol, day).is_file()
    before = sha256_tree(data_dir / "lake")

    # The re-run in one process: the first run already showed every step in a process of its own
    # (Dagster's default executor), and a process per step costs seconds each.
    second = _dagster([*args, "--config-json", json.dumps(IN_PROCESS)], _hermetic_env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert sha256_tree(data_dir / "lake") == before
    assert view_counts(data_dir, "book") == {d.isoformat(): local_source.rows_for_day("book", d) for d in DAYS}
    # Both runs went to the test's DAGSTER_HOME, as one run each.
    import dagster as dg

    runs = instance.get_runs()  # newest first
    assert len(runs) == 2
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    # The first run's steps (the asset and each of its checks) each in a process of its own, the
    # re-run's all in the one process of the CLI.
    pids = [
        [e.dagster_event.pid for e in instance.all_logs(r.run_id, of_type=dg.DagsterEventType.STEP_START)]
        for r in reversed(runs)
    ]
    assert len(pids[0]) == len(pids[1]) > 1
    assert len(set(pids[0])) == len(pids[0])
    assert len(set(pids[1])) == 1
    mats = materializations(instance, "raw_book_snapshots", runs[0].run_id)
    assert {p: m["rows"] for p, m in mats.items()} == {
        d.isoformat(): local_source.rows_for_day("book", d) for d in DAYS
    }


def test_cli_definitions_validate(dagster_home: Path, _hermetic_env: Path):
    result = _dagster(["definitions", "validate", "-m", "market_pipeline.definitions"], _hermetic_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


# ---------------------------------------------------------------------------------------
# 7. The synthetic source (default settings, at a tiny scale)
# ---------------------------------------------------------------------------------------

SYNTH_DAYS = [dt.date(2024, 3, 1), dt.date(2024, 3, 2)]


@pytest.mark.slow  # synthetic days generated and imported through Dagster
def test_synthetic_source_generates_each_day_once(instance, data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    try:
        import market_pipeline.vendors.synthetic.generate  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"market_pipeline.vendors.synthetic.generate is not importable yet: {exc}")
    import market_pipeline.vendors.synthetic.source as synthetic_source

    # Count generations (pass-through: the real generator still runs).
    calls: list[tuple[str, dt.date]] = []
    real_generate = synthetic_source.generate_day

    def counting_generate(instrument, day, *args, **kwargs):
        calls.append((instrument.key, day))
        return real_generate(instrument, day, *args, **kwargs)

    monkeypatch.setattr(synthetic_source, "generate_day", counting_generate)
    # What is counted is generations per instrument-day, whatever their size: scale 1 (a million
    # deltas per instrument-day) would only make it slower.
    monkeypatch.setenv("PIPELINE_SYNTHETIC__SCALE", "0.005")

    start, end = SYNTH_DAYS[0].isoformat(), SYNTH_DAYS[-1].isoformat()
    first = run(instance, list(ASSET_TABLES), start=start, end=end)
    assert first.success
    assert sorted(calls) == sorted((k, d) for k in KEYS for d in SYNTH_DAYS)  # each day once, not per table

    for asset_name, table in ASSET_TABLES.items():
        mats = materializations(instance, asset_name, first.run_id)
        assert sorted(mats) == [d.isoformat() for d in SYNTH_DAYS]
        for day in SYNTH_DAYS:
            for key in KEYS:
                assert mats[day.isoformat()][f"{key} rows"] > 0, (asset_name, key, day)
        counts = view_counts(data_dir, table)
        assert sorted(counts) == [d.isoformat() for d in SYNTH_DAYS]
        assert all(n > 0 for n in counts.values())

    stamps = sorted((data_dir / "sources" / "synthetic" / "_ground_truth").rglob("params.sha256"))
    assert len(stamps) == len(KEYS) * len(SYNTH_DAYS)
    mtimes = {p: p.stat().st_mtime_ns for p in stamps}
    trades_before = sha256_tree(data_dir / "lake" / "raw" / "trades")

    # A second run asks the source for every instrument-day again (raw_trades alone keeps it
    # quick): the cached generation is served, nothing is regenerated.
    calls.clear()
    second = run(instance, ["raw_trades"], start=start, end=end)
    assert second.success
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in stamps} == mtimes
    assert sha256_tree(data_dir / "lake" / "raw" / "trades") == trades_before
