"""`market-pipeline backup` and `restore` (core/backup/): a backup taken while a writer holds the
warehouse restores to identical tables and files; tampering, non-empty targets, encryption and
retention."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from market_pipeline.core.backup.manifest import MANIFEST_FILE, BackupManifestError, read_manifest
from market_pipeline.core.backup.restore import RestoreTargets, SnapshotTampered, restore_backup
from market_pipeline.core.backup.snapshot import BackupSources, copy_complete_lines, create_backup, prune_snapshots
from market_pipeline.core.backup.warehouse import LockWait
from market_pipeline.core.errors import BlockedError, ConfigurationError, CryptoError, UsageError
from market_pipeline.core.lake.catalog import ensure_lake_views
from market_pipeline.core.lake.warehouse import WarehouseTarget
from market_pipeline_tests.support.files import sha256_tree
from market_pipeline_tests.support.project import subprocess_env

KEY = base64.b64decode(base64.b64encode(bytes(range(32))))
CHECKPOINT = Path("lake/checkpoints/exchange=BINANCE/symbol=BTC-USDT/dt=2024-03-01")

# Inserts row n into both tables in one transaction, holding the warehouse like a pipeline step.
# With hold_at (argv 3) = n it keeps the lock after row n until the file `release` exists (the test's cue).
WRITER = r"""
import pathlib, sys, time
import duckdb

warehouse, work, hold_at = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
n = 0
while not (work / "stop").exists():
    try:
        con = duckdb.connect(warehouse)
    except duckdb.IOException:  # the backup holds it: retry, as the DuckDB IO manager does
        time.sleep(0.005)
        continue
    n += 1
    con.execute("BEGIN")
    con.execute("INSERT INTO main.fills VALUES (?, ?)", [n, f"fill {n}"])
    con.execute("INSERT INTO quality.totals VALUES (?, ?)", [n, n * n])
    con.execute("COMMIT")
    if n == hold_at:
        (work / "holding").write_text(str(n))
        while not (work / "release").exists():
            time.sleep(0.005)
    con.close()
    (work / "progress").write_text(str(n))
    time.sleep(0.002)
"""


def _quick_wait(messages: list[str] | None = None, timeout: float = 60.0) -> LockWait:
    notify = messages.append if messages is not None else (lambda _message: None)
    return LockWait(timeout_seconds=timeout, notify=notify, poll_seconds=0.01)


def _make_warehouse(data_dir: Path) -> Path:
    warehouse = data_dir / "warehouse.duckdb"
    lake_file = data_dir / "lake/raw/trades/exchange=BINANCE/symbol=BTC-USDT/dt=2024-03-01/data.parquet"
    lake_file.parent.mkdir(parents=True)
    pl.DataFrame({"price": [1.5, 2.5]}).write_parquet(lake_file)
    ensure_lake_views(WarehouseTarget(warehouse), data_dir / "lake")  # raw.trades: a lake view, not copied
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA quality")
        con.execute("CREATE TABLE main.fills (n INTEGER PRIMARY KEY, label VARCHAR NOT NULL DEFAULT 'x')")
        con.execute("CREATE TABLE quality.totals (n INTEGER, square BIGINT)")
        con.execute("CREATE VIEW quality.last_total AS SELECT max(n) AS n FROM quality.totals")
    return warehouse


def _make_files(data_dir: Path, capture_dir: Path) -> None:
    checkpoint = data_dir / CHECKPOINT
    checkpoint.mkdir(parents=True)
    (checkpoint / "book.parquet").write_bytes(b"checkpoint book")
    (checkpoint / "pending_tickers.parquet").write_bytes(b"pending tickers")
    (checkpoint / ".book.parquet.tmp-1-abc").write_bytes(b"a write in progress")
    (data_dir / "audit").mkdir()
    (data_dir / "audit/audit.jsonl").write_text('{"action":"write"}\n{"action":"read"}\n')
    (data_dir / "alerts").mkdir()
    (data_dir / "alerts/alerts.jsonl").write_text('{"key":"check:1"}\n')
    hour = capture_dir / "20240301T00"
    hour.mkdir(parents=True)
    (hour / "binance_spot_btcusdt_20240301.gz").write_bytes(b"\x1f\x8b capture bytes")
    (capture_dir / "manifest.json").write_text('{"files": []}\n')
    (capture_dir / "20240301T01").mkdir()
    (capture_dir / "20240301T01/binance_spot_btcusdt_20240301.gz.partial").write_bytes(b"recording")


def _make_instance(dagster_home: Path) -> None:
    """The SQLite files of Dagster's storage, in WAL mode as Dagster keeps them."""
    for rel in ("history/runs.db", "history/runs/index.db", "history/runs/0a1b.db", "schedules/schedules.db"):
        path = dagster_home / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT)")
            con.executemany("INSERT INTO events (body) VALUES (?)", [(f"{rel} {i}",) for i in range(3)])
        con.close()


def _sqlite_dump(path: Path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def _rows(warehouse: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture
def sources(tmp_path: Path, data_dir: Path, dagster_home: Path) -> BackupSources:
    capture_dir = tmp_path / "captures"
    _make_warehouse(data_dir)
    _make_files(data_dir, capture_dir)
    _make_instance(dagster_home)
    return BackupSources(data_dir, dagster_home, capture_dir)


def _targets(tmp_path: Path, name: str = "restored") -> RestoreTargets:
    home = tmp_path / f"{name}_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return RestoreTargets(tmp_path / name / "data", home)


def test_backup_while_a_writer_holds_the_warehouse_restores_identical_tables_and_files(
    tmp_path: Path, sources: BackupSources
) -> None:
    warehouse = sources.data_dir / "warehouse.duckdb"
    work = tmp_path / "writer"
    work.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(warehouse), str(work), "3"], env=subprocess_env())
    messages: list[str] = []
    result: dict[str, object] = {}
    try:
        deadline = time.monotonic() + 60
        while not (work / "holding").exists():  # 3 rows written, the lock held
            assert writer.poll() is None and time.monotonic() < deadline, "the writer did not start"
            time.sleep(0.01)

        # With a short --wait-timeout it gives up, naming the holder, and leaves nothing behind.
        with pytest.raises(BlockedError, match=rf"waiting for warehouse.duckdb .* held by PID {writer.pid}"):
            create_backup(sources, tmp_path / "backups", _quick_wait(timeout=0.1))
        assert list((tmp_path / "backups").iterdir()) == []

        def backup() -> None:
            result["snapshot"] = create_backup(sources, tmp_path / "backups", _quick_wait(messages))

        thread = threading.Thread(target=backup)
        thread.start()
        while not messages and thread.is_alive():  # the backup waits for the writer, saying so
            time.sleep(0.01)
        (work / "release").write_text("")
        thread.join(60)
        backed_up = result["snapshot"][1].parts["warehouse"]["tables"]["main.fills"]  # type: ignore[index]
        while int((work / "progress").read_text() or 0) < backed_up + 3:  # the writer goes on after the backup
            assert writer.poll() is None and time.monotonic() < deadline, "the writer stopped"
            time.sleep(0.01)
    finally:
        (work / "stop").write_text("")
        (work / "release").write_text("")
        writer.wait(30)
    assert writer.returncode == 0
    assert messages and messages[0].startswith(f"waiting for warehouse.duckdb, held by PID {writer.pid} (")
    snapshot, manifest = result["snapshot"]  # type: ignore[misc]

    targets = _targets(tmp_path)
    restore_backup(snapshot, targets)
    restored = targets.data_dir / "warehouse.duckdb"

    # One consistent state: both tables end at the same row, which the writer had committed.
    fills = _rows(restored, "SELECT n, label FROM main.fills ORDER BY n")
    totals = _rows(restored, "SELECT n, square FROM quality.totals ORDER BY n")
    last = fills[-1][0]
    assert last >= 3 and totals[-1][0] == last
    assert fills == _rows(warehouse, f"SELECT n, label FROM main.fills WHERE n <= {last} ORDER BY n")
    assert totals == _rows(warehouse, f"SELECT n, square FROM quality.totals WHERE n <= {last} ORDER BY n")
    assert _rows(warehouse, "SELECT max(n) FROM main.fills")[0][0] >= last + 3
    assert manifest.parts["warehouse"]["tables"] == {"main.fills": last, "quality.totals": last}
    # Column definitions survive (constraints, defaults); views over tables are copied, lake views are not.
    assert _rows(restored, "SELECT sql FROM duckdb_tables() WHERE table_name = 'fills'") == _rows(
        warehouse, "SELECT sql FROM duckdb_tables() WHERE table_name = 'fills'"
    )
    assert _rows(restored, "SELECT n FROM quality.last_total") == [(last,)]
    assert manifest.parts["warehouse"]["lake_views_not_copied"] == ["raw.trades"]
    assert _rows(restored, "SELECT view_name FROM duckdb_views() WHERE NOT internal") == [("last_total",)]

    # Files: byte for byte, captures under the data dir, writes in progress left out and named.
    data = sha256_tree(sources.data_dir)
    expected = {rel: sha for rel, sha in data.items() if rel.startswith(("lake/checkpoints", "audit", "alerts"))}
    del expected[str(CHECKPOINT / ".book.parquet.tmp-1-abc")]
    expected |= {f"captures/{rel}": sha for rel, sha in sha256_tree(sources.capture_dir).items()}
    del expected["captures/20240301T01/binance_spot_btcusdt_20240301.gz.partial"]
    assert {rel: sha for rel, sha in sha256_tree(targets.data_dir).items() if rel != "warehouse.duckdb"} == expected
    assert manifest.parts["checkpoints"]["skipped_in_progress"] == [
        str(sources.data_dir / CHECKPOINT / ".book.parquet.tmp-1-abc")
    ]
    assert len(manifest.parts["captures"]["skipped_in_progress"]) == 1

    # The instance: every SQLite database with the same content, beside the target's dagster.yaml.
    home_dbs = sorted(p.relative_to(sources.dagster_home) for p in sources.dagster_home.rglob("*.db"))
    assert sorted(p.relative_to(targets.dagster_home) for p in targets.dagster_home.rglob("*.db")) == home_dbs
    for rel in home_dbs:
        assert _sqlite_dump(targets.dagster_home / rel) == _sqlite_dump(sources.dagster_home / rel)
    assert oct(os.stat(restored).st_mode & 0o777) == "0o600"


def test_backup_refuses_warehouse_objects_it_cannot_copy(tmp_path: Path, sources: BackupSources) -> None:
    with duckdb.connect(str(sources.data_dir / "warehouse.duckdb")) as con:
        con.execute("CREATE SEQUENCE quality.ids")
    with pytest.raises(ConfigurationError, match="not sequence quality.ids"):
        create_backup(sources, tmp_path / "backups", _quick_wait())
    assert list((tmp_path / "backups").iterdir()) == []


def test_restore_refuses_a_tampered_or_unlisted_file_before_writing_anything(
    tmp_path: Path, sources: BackupSources
) -> None:
    snapshot, _manifest = create_backup(sources, tmp_path / "backups", _quick_wait())
    checkpoint = snapshot / "data" / CHECKPOINT / "book.parquet"
    checkpoint.write_bytes(b"checkpoint bool")  # same size, one byte changed
    targets = _targets(tmp_path)
    with pytest.raises(SnapshotTampered, match=rf"{checkpoint}: does not match the manifest \(checkpoints"):
        restore_backup(snapshot, targets)
    assert not targets.data_dir.exists()
    assert sorted(p.name for p in targets.dagster_home.iterdir()) == ["dagster.yaml"]

    checkpoint.write_bytes(b"checkpoint book")
    (snapshot / "data" / "extra.txt").write_text("smuggled")
    with pytest.raises(SnapshotTampered, match="extra.txt: not listed in the manifest"):
        restore_backup(snapshot, targets)
    (snapshot / "data" / "extra.txt").unlink()
    (snapshot / MANIFEST_FILE).write_text(
        (snapshot / MANIFEST_FILE).read_text().replace('"target": "', '"target": "../')
    )
    with pytest.raises(BackupManifestError, match="unsafe target"):
        restore_backup(snapshot, targets)


def test_restore_refuses_non_empty_targets(tmp_path: Path, sources: BackupSources) -> None:
    snapshot, _manifest = create_backup(sources, tmp_path / "backups", _quick_wait())
    targets = _targets(tmp_path)
    targets.data_dir.mkdir(parents=True)
    (targets.data_dir / "warehouse.duckdb").write_text("someone's data")
    with pytest.raises(
        UsageError, match=rf"{targets.data_dir} \(PIPELINE_DATA_DIR\) is not empty: .* warehouse.duckdb"
    ):
        restore_backup(snapshot, targets)
    assert (targets.data_dir / "warehouse.duckdb").read_text() == "someone's data"

    targets = _targets(tmp_path, "second")
    (targets.dagster_home / "history").mkdir()
    with pytest.raises(UsageError, match=r"holds more than dagster.yaml \(history\)"):
        restore_backup(snapshot, targets)
    assert not targets.data_dir.exists()
    (targets.dagster_home / "history/runs.db").write_text("another instance")
    allowed = RestoreTargets(targets.data_dir, targets.dagster_home, allow_nonempty_dagster_home=True)
    with pytest.raises(UsageError, match="history/runs.db; restore never replaces a file"):
        restore_backup(snapshot, allowed)
    (targets.dagster_home / "history/runs.db").unlink()
    restore_backup(snapshot, allowed)
    assert (targets.dagster_home / "history/runs.db").is_file()


def test_encrypted_backup_round_trip(tmp_path: Path, sources: BackupSources) -> None:
    snapshot, manifest = create_backup(sources, tmp_path / "backups", _quick_wait(), master_key=KEY)
    assert manifest.encrypted and all(entry.path.endswith(".enc") for entry in manifest.files)
    stored = b"".join(p.read_bytes() for p in snapshot.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
    assert b'{"action":"write"}' not in stored and b"checkpoint book" not in stored

    wrong = _targets(tmp_path, "wrong")
    with pytest.raises(CryptoError, match="failed authentication"):
        restore_backup(snapshot, wrong, master_key=bytes(32))
    assert list(wrong.data_dir.iterdir()) == []

    targets = _targets(tmp_path)
    restore_backup(snapshot, targets, master_key=KEY)
    assert (targets.data_dir / "audit/audit.jsonl").read_bytes() == (
        sources.data_dir / "audit/audit.jsonl"
    ).read_bytes()
    assert (targets.data_dir / CHECKPOINT / "book.parquet").read_bytes() == b"checkpoint book"
    assert _rows(targets.data_dir / "warehouse.duckdb", "SELECT count(*) FROM main.fills") == [(0,)]


def test_keep_deletes_only_older_snapshots_of_this_tool(tmp_path: Path, sources: BackupSources) -> None:
    backups = tmp_path / "backups"
    made = [
        create_backup(sources, backups, _quick_wait(), now=dt.datetime(2024, 3, day, 2, tzinfo=dt.UTC))[0]
        for day in (1, 2, 3)
    ]
    foreign = backups / "market_pipeline-notes"
    foreign.mkdir()
    (foreign / MANIFEST_FILE).write_text(json.dumps({"tool": "something else"}))
    assert [p.name for p in made] == [f"market_pipeline-2024030{day}T020000Z" for day in (1, 2, 3)]
    assert prune_snapshots(backups, keep=2) == [made[0]]
    assert sorted(p.name for p in backups.iterdir()) == sorted([made[1].name, made[2].name, foreign.name])


def test_postgres_instance_is_recorded_as_not_copied(tmp_path: Path, sources: BackupSources) -> None:
    (sources.dagster_home / "dagster.yaml").write_text("storage:\n  postgres:\n    postgres_db: {}\n")
    snapshot, manifest = create_backup(sources, tmp_path / "backups", _quick_wait())
    part = manifest.parts["dagster_instance"]
    assert part["included"] is False and part["storage"] == "postgres" and "pg_dump" in part["reason"]
    assert not (snapshot / "dagster_home").exists()
    assert read_manifest(snapshot).parts["dagster_instance"] == part


def test_a_remote_lake_is_recorded_as_left_to_its_bucket(tmp_path: Path, sources: BackupSources) -> None:
    """With PIPELINE_LAKE_URL the checkpoints are objects in the bucket: the manifest says so instead of
    'no directory', and nothing of the local (stale) lake directory is copied."""
    remote = dataclasses.replace(sources, remote_lake="s3://team-bucket/lake")
    snapshot, manifest = create_backup(remote, tmp_path / "backups", _quick_wait())
    part = manifest.parts["checkpoints"]
    assert part["included"] is False and "s3://team-bucket/lake" in part["reason"] and "bucket" in part["reason"]
    assert not [entry for entry in manifest.files if entry.part == "checkpoints"]
    assert manifest.parts["warehouse"]["included"] is True


def test_concurrent_backups_of_the_same_second_all_succeed_under_names_of_their_own(
    tmp_path: Path, sources: BackupSources
) -> None:
    """Four backups started together once crashed (`Directory not empty`: the same second's name)."""
    from concurrent.futures import ThreadPoolExecutor

    from market_pipeline.core.backup.restore import verify_snapshot

    backups, now = tmp_path / "backups", dt.datetime(2024, 3, 4, 2, tzinfo=dt.UTC)
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda _: create_backup(sources, backups, _quick_wait(), now=now)[0], range(4)))
    name = "market_pipeline-20240304T020000Z"
    assert sorted(p.name for p in made) == [name, f"{name}-2", f"{name}-3", f"{name}-4"]
    assert sorted(backups.iterdir()) == sorted(made)  # no partial directory left behind
    for snapshot in made:
        verify_snapshot(snapshot)  # every file of every snapshot matches its manifest
    assert prune_snapshots(backups, keep=1) and len(list(backups.iterdir())) == 1


def test_copy_complete_lines_leaves_a_line_being_appended(tmp_path: Path) -> None:
    source = tmp_path / "audit.jsonl"
    source.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    copy_complete_lines(source, tmp_path / "copy.jsonl")
    assert (tmp_path / "copy.jsonl").read_bytes() == b'{"a":1}\n{"b":2}\n'


def test_cli_backup_and_restore(
    tmp_path: Path, sources: BackupSources, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from market_pipeline.cli.main import main

    monkeypatch.setenv("PIPELINE_CAPTURE_DIR", str(sources.capture_dir))
    monkeypatch.setenv("PIPELINE_MASTER_KEY", base64.b64encode(KEY).decode())
    backups = tmp_path / "backups"
    assert main(["backup", "--to", str(backups), "--encrypt", "--keep", "1"]) == 0
    assert main(["backup", "--to", str(backups), "--keep", "1"]) == 0
    out = capsys.readouterr().out
    (snapshot,) = backups.iterdir()
    assert f"backup {snapshot} (" in out and "removed older backup" in out
    assert "dagster_instance  4 file(s)" in out and "warehouse         1 file(s)" in out

    targets = _targets(tmp_path)
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(targets.data_dir))
    monkeypatch.setenv("DAGSTER_HOME", str(targets.dagster_home))
    (snapshot / "data/alerts/alerts.jsonl").write_text("tampered\n")
    assert main(["restore", str(snapshot)]) == 6
    assert "alerts.jsonl: does not match the manifest" in capsys.readouterr().err
    (snapshot / "data/alerts/alerts.jsonl").write_bytes((sources.data_dir / "alerts/alerts.jsonl").read_bytes())
    assert main(["restore", str(snapshot)]) == 0
    assert "every sha256 matched" in capsys.readouterr().out
    assert main(["restore", str(snapshot)]) == 2  # now the data dir is not empty
    assert "is not empty" in capsys.readouterr().err
    assert sha256_tree(targets.data_dir / "captures") == {
        rel: sha for rel, sha in sha256_tree(sources.capture_dir).items() if not rel.endswith(".partial")
    }


def _table_contents(warehouse: Path) -> dict[str, list[tuple]]:
    """Every base table (not the lake views) with its rows in a fixed order."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE NOT internal ORDER BY ALL"
        ).fetchall()
        return {
            f"{schema}.{table}": con.execute(f'SELECT * FROM "{schema}"."{table}" ORDER BY ALL').fetchall()
            for schema, table in tables
        }


@pytest.mark.slow
@pytest.mark.graph
def test_backups_taken_during_a_real_run_restore_the_runs_tables(
    tmp_path: Path, data_dir: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backups in a loop while `market-pipeline run` materializes a day: the run succeeds, and every
    table a mid-run backup holds, once restored, equals the table the run finally left (a one-day
    run writes each table once, so a torn or half-written copy would differ)."""
    from market_pipeline_tests.support.project import VENV_BIN

    env = subprocess_env(
        PIPELINE_INSTRUMENTS="BINANCE:BTC-USDT",  # one instrument-day: every table is still written once
        PIPELINE_SYNTHETIC__SCALE="0.005",
        PIPELINE_START_DATE="2024-01-01",
        PIPELINE_WORKERS="1",
    )
    run = subprocess.Popen(
        [
            str(VENV_BIN / "market-pipeline"),
            "run",
            "--start-date",
            "2024-03-01",
            "--end-date",
            "2024-03-01",
            "--no-progress",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    warehouse = data_dir / "warehouse.duckdb"
    mid_run: list[Path] = []
    try:
        while run.poll() is None:
            if warehouse.is_file():
                snapshot, _ = create_backup(BackupSources(data_dir, dagster_home), tmp_path / "backups", _quick_wait())
                if run.poll() is None:  # the run was still writing when this backup ended
                    mid_run.append(snapshot)
            time.sleep(0.2)
        output = run.stdout.read() if run.stdout else ""
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, output
    final = _table_contents(warehouse)
    assert {"main.validation_reports", "main.pipeline_metrics"} <= final.keys()

    held = 0
    for n, snapshot in enumerate(mid_run):
        targets = _targets(tmp_path, f"restored{n}")
        restore_backup(snapshot, targets)
        restored = _table_contents(targets.data_dir / "warehouse.duckdb")
        assert {name: final[name] for name in restored} == restored, snapshot
        held += len(restored)
    assert held > 0, f"none of the {len(mid_run)} backups taken during the run held a table yet"
