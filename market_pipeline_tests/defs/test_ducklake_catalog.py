"""The warehouse as a DuckLake with a PostgreSQL catalog (issue 26, item 2; PIPELINE_CATALOG_URL).

The IO manager writes DuckLake tables as it writes the DuckDB file (a day's rows replaced, new
columns added, exact decimals); two processes committing to one table at once both land (a commit
that conflicts is run again); a bad URL or an unreachable server is named without its password.
The whole graph on S3 and DuckLake against the local lake is in test_s3_lake.py (one local run for
both). PostgreSQL runs on 127.0.0.1 (postgres_server.py); without its binaries the tests skip, and fail in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from market_pipeline.core.lake import warehouse
from market_pipeline.core.lake.warehouse import CatalogUnavailable, WarehouseTarget
from market_pipeline_tests.support.postgres_server import Postgres, free_port, running_postgres
from market_pipeline_tests.support.project import REPO_ROOT
from market_pipeline_tests.support.warehouse_io import table_asset as _table_asset
from market_pipeline_tests.support.warehouse_io import warehouse_io_manager

PASSWORD = "catalog-password-never-printed"


@pytest.fixture(scope="module")
def catalog_server() -> Iterator[Postgres]:
    with running_postgres("market") as server:
        yield server


def new_ducklake(server: Postgres, tmp_path: Path) -> WarehouseTarget:
    """A DuckLake in a database of its own, its data files under tmp_path (a local lake)."""
    name = f"catalog_{uuid.uuid4().hex[:12]}"
    server.create_database(name)
    return WarehouseTarget.build(tmp_path, f"ducklake:postgres:{server.libpq(name)}", tmp_path / "lake")


def test_the_io_manager_replaces_days_adds_columns_and_keeps_decimals(catalog_server, tmp_path):
    target = new_ducklake(catalog_server, tmp_path)
    resources = warehouse_io_manager(target)
    price = pl.Decimal(38, 18)
    old = pl.DataFrame({"dt": ["2024-03-01"], "gaps": [1], "price": [Decimal("0.000000000000000001")]})
    new = pl.DataFrame(
        {"dt": ["2024-03-02"], "price": [Decimal("12345678901234567890.5")], "unsynced": [7], "gaps": [3]}
    )
    for frame, day in ((old, "2024-03-01"), (new, "2024-03-02"), (old.with_columns(gaps=pl.lit(2)), "2024-03-01")):
        frame = frame.with_columns(pl.col("price").cast(price))
        assert dg.materialize([_table_asset(frame)], resources=resources, partition_key=day).success
    with warehouse.connect(target, read_only=True) as con:
        columns = con.execute("DESCRIBE main.reports").fetchall()
        rows = con.execute("SELECT * FROM main.reports ORDER BY dt").fetchall()
    assert [(c[0], c[1]) for c in columns] == [
        ("dt", "VARCHAR"),
        ("gaps", "BIGINT"),
        ("price", "DECIMAL(38,18)"),
        ("unsynced", "BIGINT"),
    ]
    assert rows == [  # day 1 written twice: the second write replaced its row
        ("2024-03-01", 2, Decimal("0.000000000000000001"), None),
        ("2024-03-02", 3, Decimal("12345678901234567890.500000000000000000"), 7),
    ]


def test_with_lake_encryption_the_data_files_are_encrypted_and_nothing_is_inlined(catalog_server, tmp_path):
    """PIPELINE_LAKE_ENCRYPTION=on: every DuckLake data file is encrypted Parquet (PARE), even a one-row
    write (no rows inlined into PostgreSQL in plain text), and reads back exactly through the catalog."""
    import base64

    from market_pipeline.core import context

    encrypted = context.CoreContext(master_key=base64.b64encode(bytes(range(32))).decode(), lake_encrypted=True)
    with context.using(encrypted):
        target = new_ducklake(catalog_server, tmp_path)
        frame = pl.DataFrame({"dt": ["2024-03-01"], "price": [Decimal("0.000000000000000001")]})
        frame = frame.with_columns(pl.col("price").cast(pl.Decimal(38, 18)))
        resources = warehouse_io_manager(target)
        assert dg.materialize([_table_asset(frame)], resources=resources, partition_key="2024-03-01").success
        with warehouse.connect(target, read_only=True) as con:
            assert con.execute("SELECT * FROM main.reports").fetchall() == [("2024-03-01", Decimal("1E-18"))]
            listed = con.execute("SELECT data_file FROM ducklake_list_files('warehouse', 'reports')").fetchall()
        files = sorted(Path(target.data_path).rglob("*.parquet"))
        assert len(listed) == 1 and files and all(path.read_bytes()[-4:] == b"PARE" for path in files)
        from market_pipeline.core.lake.lake_guard import check_lake_key

        check_lake_key(tmp_path / "lake")  # the DuckLake's files (keys of their own) are not the lake key's to judge


WRITER = """
import sys, time
from pathlib import Path
import dagster as dg
import polars as pl
from dagster_duckdb.io_manager import TablePartitionDimension, TableSlice
from market_pipeline.core.lake import warehouse
from market_pipeline.core.lake.warehouse import WarehouseTarget
from market_pipeline.defs.common.warehouse_io import replace_slice

catalog, data_path, day, barrier = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
start = dt = __import__("datetime").datetime.fromisoformat(day)
window = dg.TimeWindow(start, start + __import__("datetime").timedelta(days=1))
table_slice = TableSlice("shared", "main", partition_dimensions=[TablePartitionDimension("dt", window)])
frame = pl.DataFrame({"dt": [start.date()], "writer": [day]})
attempts = 0

def write(con):
    global attempts
    attempts += 1
    replace_slice(con, table_slice, frame)
    if attempts == 1:  # both writers hold their uncommitted change before either commits
        (barrier / day).touch()
        deadline = time.monotonic() + 60
        while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)

with warehouse.connect(WarehouseTarget(Path("unused"), catalog, data_path)) as con:
    warehouse.write_transaction(con, write)
print(attempts)
"""


def test_two_processes_commit_different_days_of_one_table_at_once(catalog_server, tmp_path):
    """Both rewrite their day of a table whose days share one data file: DuckLake refuses the second
    commit (a delete from the file the first changed), and the write runs again and lands."""
    target = new_ducklake(catalog_server, tmp_path)
    days = ["2024-03-01", "2024-03-02"]
    with warehouse.connect(target) as con:  # both days in one write: one data file (or inlined block)
        con.execute("CREATE TABLE main.shared AS SELECT CAST(unnest(?) AS DATE) AS dt, 'first' AS writer", [days])
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, target.catalog, target.data_path, day, str(barrier)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for day in days
    ]
    attempts = []
    for writer in writers:
        out, err = writer.communicate(timeout=180)
        assert writer.returncode == 0, err[-3000:]
        attempts.append(int(out.split()[-1]))
    with warehouse.connect(target, read_only=True) as con:
        rows = con.execute("SELECT CAST(dt AS VARCHAR), writer FROM main.shared ORDER BY dt").fetchall()
    assert rows == [(day, day) for day in days]  # each day once, written by its own process
    assert sorted(attempts) == [1, 2]  # one commit conflicted and was run again


def test_a_catalog_url_of_another_form_names_the_setting_and_the_form(monkeypatch):
    from market_pipeline.settings import SettingsError, load_settings

    monkeypatch.setenv("PIPELINE_CATALOG_URL", f"postgresql://market:{PASSWORD}@127.0.0.1/catalog")
    with pytest.raises(SettingsError) as info:
        load_settings()
    text = str(info.value)
    assert "PIPELINE_CATALOG_URL" in text and "ducklake:postgres:host=" in text and PASSWORD not in text


def test_an_unreachable_catalog_is_named_without_its_password(tmp_path, monkeypatch, capsys):
    url = f"ducklake:postgres:host=127.0.0.1 port={free_port()} dbname=catalog user=market password={PASSWORD}"
    target = WarehouseTarget.build(tmp_path, url, tmp_path / "lake")
    assert PASSWORD not in repr(target) + target.describe()
    with pytest.raises(CatalogUnavailable) as info:
        warehouse.connect(target)
    text = str(info.value)
    assert text.startswith("PIPELINE_CATALOG_URL: cannot attach") and "password=***" in text
    assert PASSWORD not in text

    from market_pipeline.cli.main import main

    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PIPELINE_CATALOG_URL", url)
    main(["health"])
    out = capsys.readouterr()
    assert "PIPELINE_CATALOG_URL: cannot attach" in out.out and PASSWORD not in out.out + out.err
    assert main(["backup", "--to", str(tmp_path / "backups")]) != 0
    out = capsys.readouterr()
    assert "pg_dump" in out.out + out.err and PASSWORD not in out.out + out.err


def test_the_file_warehouse_stays_the_default(tmp_path):
    target = WarehouseTarget.build(tmp_path, None, tmp_path / "lake")
    assert not target.is_ducklake and target.describe() == str((tmp_path / "warehouse.duckdb").resolve())
