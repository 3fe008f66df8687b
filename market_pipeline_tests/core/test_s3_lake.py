"""The lake on S3 (issue 26, item 1): `PIPELINE_LAKE_URL=s3://bucket/prefix` runs the whole graph on
the loopback S3 server with the same lake objects and warehouse tables as the local lake; writes are
whole-object PUTs (a failed write leaves no object); encryption works as on disk; credentials never
appear in the output.

The remote run's warehouse is also the DuckLake of item 2 (`PIPELINE_CATALOG_URL`, catalog on a
throwaway PostgreSQL, data files in the bucket) when PostgreSQL's binaries are there, else the file:
one local reference run serves both comparisons (the whole graph runs twice, not three times)."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from market_pipeline.core.lake.warehouse import WarehouseTarget
from market_pipeline_tests.support.files import sha256_tree
from market_pipeline_tests.support.postgres_server import pg_bin, running_postgres
from market_pipeline_tests.support.project import REPO_ROOT
from market_pipeline_tests.support.s3_server import REGION, LoopbackS3
from market_pipeline_tests.support.warehouse_tables import warehouse_tables

PREFIX = "team/lake"
DAYS = [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]  # the second day continues from the first's checkpoint
SECRET = "lake-secret-never-printed"


class Bucket:
    """The loopback server and this test's bucket (moto keeps buckets for the whole process)."""

    def __init__(self, server: LoopbackS3) -> None:
        self.server, self.s3, self.name = server, server.s3, f"lake-{uuid.uuid4().hex[:12]}"
        server.create_bucket(self.name)
        self.url = f"s3://{self.name}/{PREFIX}"


@pytest.fixture
def remote_env(s3: LoopbackS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bucket]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "lake-writer",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": s3.url,
    }.items():
        monkeypatch.setenv(name, value)
    from market_pipeline.core.lake import storage

    storage.s3_filesystem.cache_clear()  # the endpoint of this test's server
    storage._s3_client.cache_clear()
    yield Bucket(s3)
    storage.s3_filesystem.cache_clear()
    storage._s3_client.cache_clear()


@pytest.fixture
def remote_writes(tmp_path: Path) -> Iterator[Path]:
    """This test's process writes a remote lake, filling its objects under `tmp_path/uploads` (yielded)."""
    from market_pipeline.core import context

    uploads = tmp_path / "uploads"
    with context.using(context.CoreContext(remote_lake=True, upload_dir=uploads)):
        yield uploads


def bucket_tree(bucket: Bucket) -> dict[str, str]:
    """sha256 of every object under the lake prefix, keyed like `sha256_tree` (relative path)."""
    tree = {}
    for page in bucket.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=PREFIX + "/"):
        for item in page.get("Contents", []):
            body = bucket.s3.get_object(Bucket=bucket.name, Key=item["Key"])["Body"].read()
            tree[item["Key"][len(PREFIX) + 1 :]] = hashlib.sha256(body).hexdigest()
    return tree


@pytest.fixture
def catalog_url() -> Iterator[str | None]:
    """A DuckLake catalog in a throwaway PostgreSQL, or None (the warehouse file) without its binaries."""
    if pg_bin() is None:
        yield None
        return
    with running_postgres("market") as server:
        server.create_database("catalog")
        yield f"ducklake:postgres:{server.libpq('catalog')}"


def run_graph(
    tmp_path: Path, name: str, monkeypatch, lake_url: str | None, capsys, catalog_url: str | None = None
) -> Path:
    """The whole graph (`market-pipeline run`) over DAYS; returns the data dir."""
    from market_pipeline.cli.main import main

    data = tmp_path / f"{name}-data"
    home = tmp_path / f"{name}-home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    env = {
        "DAGSTER_HOME": str(home),
        "PIPELINE_SOURCE": "synthetic",  # its days pass every check, so every stage runs
        "PIPELINE_SYNTHETIC__SCALE": "0.01",
        "PIPELINE_INSTRUMENTS": "BINANCE:BTC-USDT",
        "PIPELINE_START_DATE": "2024-01-01",
        "PIPELINE_DATA_DIR": str(data),
        "PIPELINE_BOOK__SAMPLE_INTERVAL_MS": "60000",  # a book row a minute: the test is about storage
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if lake_url:
        monkeypatch.setenv("PIPELINE_LAKE_URL", lake_url)
        # No copies kept for the run's later steps: every step fetches what it reads, once, which is
        # what this run checks (the kept copies: test_the_later_steps_of_a_run_read_its_kept_copies...).
        monkeypatch.setenv("PIPELINE_LAKE_COPIES_MAX_GB", "0")
    else:
        monkeypatch.delenv("PIPELINE_LAKE_URL", raising=False)
    if catalog_url:
        monkeypatch.setenv("PIPELINE_CATALOG_URL", catalog_url)
    else:
        monkeypatch.delenv("PIPELINE_CATALOG_URL", raising=False)
    code = main(["run", "--start-date", DAYS[0].isoformat(), "--end-date", DAYS[-1].isoformat()])
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert code == 0, out.out[-3000:] + out.err[-3000:]
    return data


@pytest.mark.slow
@pytest.mark.graph
def test_the_whole_graph_on_s3_and_ducklake_equals_the_local_lake(
    tmp_path, remote_env, catalog_url, monkeypatch, capsys
):
    local = run_graph(tmp_path, "local", monkeypatch, None, capsys)
    local_tables = warehouse_tables(WarehouseTarget(local / "warehouse.duckdb"), with_views=True)

    remote = run_graph(tmp_path, "remote", monkeypatch, remote_env.url, capsys, catalog_url)
    assert not (remote / "lake").exists()  # nothing of the lake on local disk
    assert not any((remote / "tmp" / "uploads").iterdir())  # every upload's local file removed
    assert_each_step_fetched_each_object_once(remote_env, remote)
    assert_step_figures_in_metadata(local, remote)
    from market_pipeline.core.lake.scratch import kept_scratch

    assert kept_scratch(remote) == [] and not any((remote / "tmp" / "lake-copies").iterdir())  # scratch empty
    objects = bucket_tree(remote_env)
    warehouse_files = {key for key in objects if key.startswith("warehouse/")}  # the DuckLake's data files
    assert bool(warehouse_files) == bool(catalog_url)
    assert (remote / "warehouse.duckdb").exists() != bool(catalog_url)
    reports = {key for key in objects if key.startswith("reports/")}  # beside a remote lake, not in the data dir
    assert {k[len("reports/") :]: objects[k] for k in reports} == sha256_tree(local / "reports")
    assert not (remote / "reports").exists()
    assert {k: v for k, v in objects.items() if k not in warehouse_files | reports} == sha256_tree(local / "lake")
    assert any(key.startswith("books/") for key in objects) and any(key.startswith("bars/") for key in objects)
    from market_pipeline.core import context
    from market_pipeline.core.lake import storage

    with context.using(context.CoreContext(remote_lake=True)):  # this process reads the remote views too
        remote_target = WarehouseTarget.build(remote, catalog_url, storage.lake_root(remote_env.url, remote))
        remote_tables = warehouse_tables(remote_target, with_views=True)
    assert remote_tables.keys() == local_tables.keys()
    assert {"books.reconstructed_books", "raw.trades", "bars.ohlcv", "main.validation_reports"} <= remote_tables.keys()
    for name, frame in local_tables.items():
        other = remote_tables[name]
        assert other.schema == frame.schema, name
        differing = [c for c in frame.columns if not other[c].equals(frame[c])]
        assert not differing, (name, differing)  # decimals exact: equals compares the Decimal columns


def fetched_per_stage(data: Path, part: str | None = None) -> dict[str, float]:
    """The GetObjects of each stage (a step's op) of the run on `data` (of whole objects or of footers
    only, or all), from its metrics files."""
    from market_pipeline.core.telemetry.otlp_json import read_points

    fetched: dict[str, float] = {}
    for point in read_points(data / "metrics"):
        if point["name"] == "mdp_lake_get_requests_total" and part in (None, point["attributes"]["part"]):
            stage = str(point["attributes"]["stage"])
            fetched[stage] = fetched.get(stage, 0) + float(point["value"])  # type: ignore[arg-type]
    return fetched


def assert_each_step_fetched_each_object_once(bucket: Bucket, remote: Path) -> None:
    """Issue 36: every lake object a step reads is fetched once, whole, and read locally after that.
    Before, the steps read objects in place with thousands of ranged GETs (7,136 in this run, 2,621 of
    one books file: the metrics' rank pass read it once per hour)."""
    whole = bucket.server.object_gets(bucket.name, PREFIX + "/", ranged=False)
    ranged = bucket.server.object_gets(bucket.name, PREFIX + "/", ranged=True)
    fetched = fetched_per_stage(remote, "object")
    steps = [stage for stage, gets in fetched_per_stage(remote).items() if gets]
    assert {"pipeline_metrics", "validation_reports", "ohlcv_bars", "reconstructed_books"} <= set(steps)
    # The whole-object GETs are exactly those the steps counted, and no object more often than there are steps.
    assert sum(whole.values()) == sum(fetched.values())
    assert max(whole.values()) <= len(steps)
    # Ranged GETs: a footer once per step that reads nothing else of the object, and the warehouse's
    # views over the lake (DuckDB reads footers), outside the steps.
    footers = sum(fetched_per_stage(remote, "footer").values())
    assert 0 < footers <= sum(ranged.values()) and max(ranged.values()) <= len(steps) + 4, ranged.most_common()


def assert_step_figures_in_metadata(local: Path, remote: Path) -> None:
    """Each day's materialization carries its step's GET figures: the metrics' counts on the bucket, 0 locally."""
    import dagster as dg

    fetched = fetched_per_stage(remote)
    for data, expected in ((remote, fetched["pipeline_metrics"]), (local, 0)):
        with dg.DagsterInstance.from_config(str(data.parent / data.name.replace("-data", "-home"))) as instance:
            records = instance.fetch_materializations(dg.AssetKey("pipeline_metrics"), limit=10).records
            values = {r.asset_materialization.metadata["lake_get_requests"].value for r in records}  # type: ignore[union-attr]
        assert len(records) == len(DAYS) and values == {expected}
    assert fetched["pipeline_metrics"] > 0


def test_a_step_reads_each_remote_object_once_from_its_local_copy(tmp_path, remote_env, remote_writes):
    """Inside a step's local copies, every way of reading one object (pyarrow, polars, DuckDB, footer)
    costs one GetObject, counted; what the step writes is read back without a GET; the copies go at the end."""
    import duckdb
    import polars as pl

    from market_pipeline.core.lake import local_copies, parquet_io, storage

    root = storage.lake_root(remote_env.url, tmp_path)
    read = root / "books" / "exchange=X" / "symbol=Y" / "dt=2024-03-01" / "data.parquet"
    frame = pl.DataFrame({"price": [1.5, 2.5, 4.0], "size": [1, 2, 3]})
    body = tmp_path / "body.parquet"
    frame.write_parquet(body)
    remote_env.s3.put_object(
        Bucket=remote_env.name,
        Key=f"{PREFIX}/books/exchange=X/symbol=Y/dt=2024-03-01/data.parquet",
        Body=body.read_bytes(),
    )
    written = root / "bars" / "data.parquet"
    # No room in the run's copies: every copy is the step's own.
    copies = local_copies.Copies(kept=tmp_path / "run", step=tmp_path / "step", budget=0)
    before = local_copies.request_counts()
    with local_copies.local_copies(copies):
        for _ in range(3):
            assert parquet_io.read_frame(read).equals(frame)
            assert parquet_io.scan(read).collect().equals(frame)
            assert parquet_io.num_rows(read) == 3 and parquet_io.read_schema(read).names == ["price", "size"]
            assert parquet_io.open_file(read).read().num_rows == 3
            with duckdb.connect() as con:
                assert con.execute(f"SELECT sum(size) FROM {parquet_io.duckdb_read_parquet(read)}").fetchone() == (6,)
        parquet_io.write_lake_parquet_atomic(frame, written)
        assert parquet_io.read_frame(written).equals(frame)
        counts = local_copies.request_counts() - before
        assert (counts.gets, counts.ranged_gets, counts.get_bytes) == (1, 0, body.stat().st_size)
        key = f"{PREFIX}/books/exchange=X/symbol=Y/dt=2024-03-01/data.parquet"
        assert remote_env.server.object_gets(remote_env.name, key, ranged=False) == {key: 1}
        assert not remote_env.server.object_gets(remote_env.name, PREFIX, ranged=True)
        # An object of which the step reads only the footer: its tail, once; then whole when read whole.
        other = f"{PREFIX}/books/exchange=X/symbol=Z/dt=2024-03-01/data.parquet"
        remote_env.s3.put_object(Bucket=remote_env.name, Key=other, Body=body.read_bytes())
        footer_only = root / "books" / "exchange=X" / "symbol=Z" / "dt=2024-03-01" / "data.parquet"
        for _ in range(3):
            assert parquet_io.num_rows(footer_only) == 3 and parquet_io.read_schema(footer_only).names == [
                "price",
                "size",
            ]
        assert remote_env.server.object_gets(remote_env.name, other, ranged=True) == {other: 1}
        assert not remote_env.server.object_gets(remote_env.name, other, ranged=False)
        assert parquet_io.read_frame(footer_only).equals(frame) and parquet_io.num_rows(footer_only) == 3
        assert remote_env.server.object_gets(remote_env.name, other, ranged=False) == {other: 1}
    counts = local_copies.request_counts() - before
    assert (counts.gets, counts.ranged_gets) == (3, 1)
    assert not copies.step.exists() and not copies.kept.exists()


def test_the_later_steps_of_a_run_read_its_kept_copies_without_a_get(tmp_path, remote_env, remote_writes):
    """While the run's copies fit the budget, what one step fetched or wrote is read by the run's
    next steps from local disk, without a GET; past the budget a step's copies are its own again;
    the run's copies go when the run ends."""
    import polars as pl

    from market_pipeline.core.lake import local_copies, parquet_io, storage
    from market_pipeline.core.lake.scratch import remove_run_copies

    root = storage.lake_root(remote_env.url, tmp_path)
    frame = pl.DataFrame({"price": [1.5, 2.5, 4.0], "size": [1, 2, 3]})
    body = tmp_path / "body.parquet"
    frame.write_parquet(body)
    key = f"{PREFIX}/raw/data.parquet"
    remote_env.s3.put_object(Bucket=remote_env.name, Key=key, Body=body.read_bytes())
    raw, books = root / "raw" / "data.parquet", root / "books" / "data.parquet"
    data_dir = tmp_path / "data"

    def step(name: str, budget: int) -> local_copies.Copies:
        copies_dir = data_dir / "tmp" / "lake-copies"
        return local_copies.Copies(kept=copies_dir / "run-r1", step=copies_dir / name, budget=budget)

    before = local_copies.request_counts()
    with local_copies.local_copies(step("first", 1 << 30)):
        assert parquet_io.read_frame(raw).equals(frame)  # one GET, kept for the run
        parquet_io.write_lake_parquet_atomic(frame, books)  # kept as written
    with local_copies.local_copies(step("second", 1 << 30)):
        assert parquet_io.read_frame(raw).equals(frame) and parquet_io.read_frame(books).equals(frame)
    counts = local_copies.request_counts() - before
    assert counts.gets == 1 and remote_env.server.object_gets(remote_env.name, key, ranged=False) == {key: 1}
    other = f"{PREFIX}/raw/other.parquet"
    remote_env.s3.put_object(Bucket=remote_env.name, Key=other, Body=body.read_bytes())
    full = step("third", 1)  # the run's copies already hold more than the budget
    with local_copies.local_copies(full):
        assert parquet_io.read_frame(root / "raw" / "other.parquet").equals(frame)
        assert (full.step / local_copies.copy_name(f"{remote_env.name}/{other}")).is_file()
    assert not full.step.exists()
    assert [entry.run_id for entry in remove_run_copies(data_dir, "r1")] == ["r1"]
    assert not (data_dir / "tmp" / "lake-copies" / "run-r1").exists()


def test_a_failed_write_leaves_no_object_and_a_good_one_is_one_put(tmp_path, remote_env, remote_writes):
    import polars as pl

    from market_pipeline.core.lake import files, parquet_io, storage

    uploads = remote_writes
    root = storage.lake_root(remote_env.url, tmp_path)
    final = root / "raw" / "trades" / "exchange=X" / "symbol=Y" / "dt=2024-03-01" / "data.parquet"
    with pytest.raises(RuntimeError), files.atomic_path(final) as tmp:
        tmp.write_bytes(b"PAR1 half a file")
        raise RuntimeError("the writer died")
    assert not final.exists() and bucket_tree(remote_env) == {}
    frame = pl.DataFrame({"price": [1.5, 2.5], "size": [1, 2]})
    parquet_io.write_lake_parquet_atomic(frame, final)
    assert final.is_file() and list(bucket_tree(remote_env)) == [
        "raw/trades/exchange=X/symbol=Y/dt=2024-03-01/data.parquet"
    ]
    assert parquet_io.read_frame(final).equals(frame) and parquet_io.scan(final).collect().equals(frame)
    assert parquet_io.num_rows(final) == 2
    assert list(uploads.iterdir()) == []
    assert storage.remote_tree_size(root) == (final.stat().st_size, 1)  # what `health` reports
    assert list(storage.iter_files(root)) == [final]


def test_an_encrypted_remote_lake_is_unreadable_without_the_key(tmp_path, remote_env, remote_writes):
    import base64

    import duckdb
    import polars as pl

    from market_pipeline.core import context
    from market_pipeline.core.lake import parquet_io, storage

    root = storage.lake_root(remote_env.url, tmp_path)
    final = root / "bars" / "exchange=X" / "symbol=Y" / "dt=2024-03-01" / "data.parquet"
    frame = pl.DataFrame({"close": [1.5, 2.5]})
    key = f"{PREFIX}/bars/exchange=X/symbol=Y/dt=2024-03-01/data.parquet"
    with context.using_changes(master_key=base64.b64encode(bytes(range(32))).decode(), lake_encrypted=True):
        parquet_io.write_lake_parquet_atomic(frame, final)
        assert remote_env.s3.get_object(Bucket=remote_env.name, Key=key)["Body"].read()[-4:] == b"PARE"  # as on disk
        assert parquet_io.read_frame(final).equals(frame)
        with parquet_io.register_duckdb_key(duckdb.connect()) as con:
            glob = str(root / "bars" / "**" / "*.parquet")
            assert con.execute(f"SELECT sum(close) FROM {parquet_io.duckdb_read_parquet(glob)}").fetchone() == (4.0,)
    with pytest.raises(OSError, match="encrypted"):  # encryption off
        parquet_io.read_frame(final)


def test_a_lake_url_must_be_an_s3_prefix(monkeypatch):
    from market_pipeline.settings import load_settings

    monkeypatch.setenv("PIPELINE_LAKE_URL", "https://example.invalid/lake")
    with pytest.raises(Exception, match="s3://bucket"):
        load_settings()


WRITER = """
import sys
from pathlib import Path
from market_pipeline.core import context
from market_pipeline.core.lake import files, storage
final = storage.lake_root(sys.argv[1], Path()) / "books" / "data.parquet"
body = Path(sys.argv[3]).read_bytes()
print("writing", flush=True)
with context.using(context.CoreContext(remote_lake=True, upload_dir=Path(sys.argv[2]))):
    files.write_atomic(final, lambda tmp: tmp.write_bytes(body))
print("written", flush=True)
"""


def test_a_writer_killed_mid_upload_leaves_the_old_object_or_the_new_one(tmp_path, remote_env):
    """kill -9 at some point of a 24 MB multipart upload: the key holds the old bytes or the whole new
    ones, never a part (whenever the kill lands, so the test does not depend on timing)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    key = f"{PREFIX}/books/data.parquet"
    old = b"old object"
    remote_env.s3.put_object(Bucket=remote_env.name, Key=key, Body=old)
    new = tmp_path / "new"
    new.write_bytes(os.urandom(24 << 20))  # past boto3's 8 MB multipart threshold: three parts
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    outcomes = set()
    for delay in (0.0, 0.5, 1.5):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, remote_env.url, str(tmp_path / "uploads"), str(new)],
            env=env,
            stdout=subprocess.PIPE,
        )
        assert writer.stdout is not None and writer.stdout.readline() == b"writing\n"
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        body = remote_env.s3.get_object(Bucket=remote_env.name, Key=key)["Body"].read()
        assert body in (old, new.read_bytes())
        outcomes.add(body == old)
        remote_env.s3.put_object(Bucket=remote_env.name, Key=key, Body=old)
    assert True in outcomes  # at least one kill landed before the upload completed
