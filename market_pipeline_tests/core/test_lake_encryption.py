"""PIPELINE_LAKE_ENCRYPTION=on: every lake file is encrypted Parquet that the pipeline, pyarrow with
the key and the DuckDB views read, that nothing reads without the key, and that gives the same
figures as an unencrypted lake."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from market_pipeline.core import context
from market_pipeline.core.lake import parquet_io
from market_pipeline_tests.support.dagster_instance import code_location, range_tags

MASTER_KEY = base64.b64encode(bytes(range(32))).decode()
OTHER_KEY = base64.b64encode(bytes(range(1, 33))).decode()
DAY = dt.date(2024, 3, 1)
SYMBOL = "BTC-USDT"
ENV = {
    "PIPELINE_INSTRUMENTS": f"BINANCE:{SYMBOL}",
    "PIPELINE_START_DATE": "2024-01-01",
    "PIPELINE_SYNTHETIC__SCALE": "0.01",
    "PIPELINE_MASTER_KEY": MASTER_KEY,
}
# Figures that describe the files or the run rather than the data: sizes differ once encrypted,
# timings and run ids differ between any two runs.
VOLATILE = (
    "bytes",
    "seconds",
    "duration",
    "size",
    "path",
    "uri",
    "rss",
    "memory",
    "peak",
    "cpu",
    "_at",
    "_ms",
    "events_per_s",
    "deltas_per_second",
    "run_id",
)


@pytest.fixture
def encrypted():
    with context.using(context.CoreContext(master_key=MASTER_KEY, lake_encrypted=True)):
        yield


def _sample() -> pa.Table:
    return pa.table({"symbol": [SYMBOL] * 3, "price": pa.array(["65000.125", "1.5", "2.5"]).cast(pa.decimal128(18, 3))})


def test_off_is_plain_parquet(tmp_path):
    path = tmp_path / "plain.parquet"
    parquet_io.write_frame(pl.DataFrame({"symbol": [SYMBOL]}), path)
    assert pl.read_parquet(path)["symbol"].to_list() == [SYMBOL]
    assert parquet_io.duckdb_read_parquet("/x/*.parquet", union_by_name="true") == (
        "read_parquet('/x/*.parquet', union_by_name = true)"
    )


def test_encrypted_file_round_trips_and_hides_values(tmp_path, encrypted):
    path = tmp_path / "data.parquet"
    parquet_io.write_table(_sample(), path)
    assert parquet_io.read_table(path).equals(_sample())
    assert parquet_io.read_frame(path, ["symbol"])["symbol"].to_list() == [SYMBOL] * 3
    assert parquet_io.scan([path]).filter(pl.col("price") > 2).collect()["price"].to_list() == [
        pl.DataFrame(_sample())["price"][0],
        pl.DataFrame(_sample())["price"][2],
    ]
    assert parquet_io.num_rows(path) == 3
    data = path.read_bytes()
    assert SYMBOL.encode() not in data and b"symbol" not in data and b"price" not in data
    assert (65000125).to_bytes(8, "little") not in data  # the decimal's unscaled value


def test_encrypted_file_unreadable_without_key(tmp_path, encrypted):
    path = tmp_path / "data.parquet"
    parquet_io.write_frame(pl.DataFrame({"symbol": [SYMBOL] * 100}), path)
    with pytest.raises(OSError, match="encrypted|decryption"):
        pq.read_table(path)
    with pytest.raises(pl.exceptions.ComputeError, match="[Ee]ncrypt"):
        pl.read_parquet(path)
    with pytest.raises(duckdb.InvalidInputException, match="encrypted"):
        duckdb.connect().execute(f"SELECT * FROM read_parquet('{path}')").fetchall()


def test_wrong_key_fails_naming_the_file(tmp_path, encrypted):
    path = tmp_path / "data.parquet"
    parquet_io.write_table(_sample(), path)
    with context.using_changes(master_key=OTHER_KEY):
        for read in (parquet_io.read_table, parquet_io.open_file, parquet_io.num_rows, parquet_io.read_frame):
            with pytest.raises(parquet_io.LakeDecryptionError, match=f"{path}: cannot read this lake file"):
                read(path)
        con = parquet_io.register_duckdb_key(duckdb.connect())
        with pytest.raises(duckdb.InvalidInputException, match="AES tag"):
            con.execute(f"SELECT count(*) FROM {parquet_io.duckdb_read_parquet(str(path))}").fetchall()


def test_a_process_whose_key_or_setting_does_not_fit_the_lake_is_refused_before_writing(tmp_path, encrypted):
    """Issue 29, item 1: a run with another key rewrote the day's files under it, and one with
    encryption off wrote plaintext into the encrypted lake; now each is refused, naming a lake file."""
    from market_pipeline.core.lake.lake_guard import LakeKeyMismatch, check_lake_key

    lake = tmp_path / "lake"
    (lake / "quarantine/trades").mkdir(parents=True)
    (lake / "quarantine/trades/vendor.parquet").write_bytes(b"PAR1 a vendor's plain file")  # never sampled
    check_lake_key(lake)  # nothing written yet: either setting fits
    written = lake / "raw/trades/exchange=BINANCE/symbol=BTC-USDT/dt=2024-03-01/data.parquet"
    written.parent.mkdir(parents=True)
    parquet_io.write_table(_sample(), written)
    check_lake_key(lake)  # its own key and setting
    with context.using_changes(master_key=OTHER_KEY):
        with pytest.raises(LakeKeyMismatch, match=f"PIPELINE_MASTER_KEY does not open the lake: {written}"):
            check_lake_key(lake)
    plain = tmp_path / "plain"
    pq.write_table(_sample(), (plain / "books").mkdir(parents=True) or plain / "books" / "data.parquet")
    with context.using_changes(master_key=OTHER_KEY, lake_encrypted=False):
        with pytest.raises(LakeKeyMismatch, match=f"{written} is encrypted but PIPELINE_LAKE_ENCRYPTION is off"):
            check_lake_key(lake)
        check_lake_key(plain)
    with pytest.raises(LakeKeyMismatch, match="is not encrypted but PIPELINE_LAKE_ENCRYPTION is on"):
        check_lake_key(plain)


def test_a_run_with_another_key_or_encryption_off_changes_no_lake_file(tmp_path):
    """The issue's case end to end: an encrypted lake, then the same day with another key, then with
    encryption off; both runs fail naming a lake file, and every lake file is as it was."""
    import dagster as dg

    from market_pipeline.settings import load_settings
    from market_pipeline_tests.support.dagster_instance import assets_named
    from market_pipeline_tests.support.files import sha256_tree

    def run(**env: str) -> bool:
        mp = pytest.MonkeyPatch()
        for name, value in {**ENV, "PIPELINE_DATA_DIR": str(tmp_path / "data"), **env}.items():
            mp.setenv(name, value)
        try:
            defs = code_location(load_settings())
            result = dg.materialize(
                assets_named(defs, "raw_trades", "raw_book_snapshots"),
                resources=defs.resources,
                tags=range_tags(DAY.isoformat(), DAY.isoformat()),
                raise_on_error=False,
            )
            errors = [str(e.event_specific_data.error) for e in result.all_events if e.is_failure]
            return result.success, errors
        finally:
            mp.undo()

    assert run(PIPELINE_LAKE_ENCRYPTION="on")[0]
    lake = tmp_path / "data" / "lake"
    before = sha256_tree(lake)
    assert len(before) >= 4
    for env, message in (
        ({"PIPELINE_LAKE_ENCRYPTION": "on", "PIPELINE_MASTER_KEY": OTHER_KEY}, "does not open the lake"),
        ({"PIPELINE_LAKE_ENCRYPTION": "off"}, "is encrypted but PIPELINE_LAKE_ENCRYPTION is off"),
    ):
        ok, errors = run(**env)
        assert not ok and any(message in e and str(lake) in e for e in errors), errors
        assert sha256_tree(lake) == before


def test_duckdb_reads_multi_page_files_with_filters(tmp_path, encrypted):
    """Large row groups and filters: the two DuckDB 1.5 gaps parquet_io works around."""
    rows = 200_000
    table = pa.table({"n": pa.array(range(rows), pa.int64()), "kind": pa.array(["snapshot", "delta"] * (rows // 2))})
    path = tmp_path / "big.parquet"
    parquet_io.write_table(table, path, row_group_size=rows, compression="zstd")
    con = parquet_io.register_duckdb_key(duckdb.connect())
    source = parquet_io.duckdb_read_parquet(str(path))
    assert con.execute(f"SELECT count(*), sum(n) FROM {source} WHERE kind = 'snapshot'").fetchone() == (
        rows // 2,
        sum(range(0, rows, 2)),
    )


def test_settings_need_master_key_when_on(monkeypatch):
    from market_pipeline.settings import SettingsError, load_settings

    monkeypatch.setenv("PIPELINE_LAKE_ENCRYPTION", "on")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "PIPELINE_LAKE_ENCRYPTION=on needs a valid PIPELINE_MASTER_KEY" in str(raised.value)
    assert "PIPELINE_MASTER_KEY is not set" in str(raised.value)
    monkeypatch.setenv("PIPELINE_MASTER_KEY", MASTER_KEY)
    assert load_settings().lake_encryption == "on"


# --- the whole graph, encrypted and not ---------------------------------------------------------


def _figures(value: object, root: Path) -> object:
    """Metadata values without the file-describing entries, paths relative to the run's `root`."""
    if isinstance(value, dict):
        return {k: _figures(v, root) for k, v in value.items() if not any(word in k.lower() for word in VOLATILE)}
    return value.replace(str(root), "<root>") if isinstance(value, str) else value


def _fingerprint(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> tuple:
    """Rows and, per column, the sum of the values' hashes (order-free; the views hold ~10^6 rows)."""
    columns = [
        column
        for (column,) in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchall()
        if not any(word in column.lower() for word in VOLATILE)
    ]
    hashes = ", ".join(f'sum(hash("{column}"))' for column in columns)
    return (columns, con.execute(f'SELECT count(*), {hashes} FROM "{schema}"."{name}"').fetchone())


def _run(root: Path, mode: str) -> dict:
    import dagster as dg

    from market_pipeline.defs.common.resources import lake_context
    from market_pipeline.settings import load_settings

    mp = pytest.MonkeyPatch()
    (root / "dh").mkdir(parents=True)
    env = {**ENV, "PIPELINE_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "dh"), "PIPELINE_WORKERS": "1"}
    for name, value in {**env, "PIPELINE_LAKE_ENCRYPTION": mode}.items():
        mp.setenv(name, value)
    try:
        settings = load_settings()
        defs = code_location(settings)
        checks = [c for c in defs.asset_checks if all(key.name != "freshness" for key in c.check_keys)]
        with dg.DagsterInstance.get() as instance:
            result = dg.materialize(
                [*defs.assets, *checks],
                instance=instance,
                resources=defs.resources,
                tags=range_tags(DAY.isoformat(), DAY.isoformat()),
                raise_on_error=False,
            )
        assert result.success, mode
        materializations = {}
        for event in result.all_events:
            if event.event_type_value == "ASSET_MATERIALIZATION":
                m = event.event_specific_data.materialization
                key = (m.asset_key.to_user_string(), m.partition)
                materializations[key] = _figures({k: v.value for k, v in m.metadata.items()}, root)
        evaluations = {}
        for event in result.all_events:
            if event.event_type_value == "ASSET_CHECK_EVALUATION":
                e = event.event_specific_data
                evaluations[(e.asset_key.to_user_string(), e.check_name, e.partition)] = (
                    e.passed,
                    e.severity,
                    _figures({k: v.value for k, v in e.metadata.items()}, root),
                )
        with (
            context.using(lake_context(settings)),  # this process reads what the run wrote, with its key
            parquet_io.register_duckdb_key(duckdb.connect(str(settings.warehouse_path), read_only=True)) as con,
        ):
            relations = con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables ORDER BY ALL"
            ).fetchall()
            contents = {f"{schema}.{name}": _fingerprint(con, schema, name) for schema, name in relations}
        lake_files = sorted((settings.lake_dir).rglob("*.parquet"))
        return {
            "materializations": materializations,
            "evaluations": evaluations,
            "contents": contents,
            "files": lake_files,
        }
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake_encryption")
    plain = _run(root / "plain", "off")
    secret = _run(root / "encrypted", "on")
    return plain, secret


def _differences(plain: object, secret: object, where: tuple = ()) -> list:
    """(where, plain value, encrypted value) of every figure that differs."""
    if isinstance(plain, dict) and isinstance(secret, dict):
        return [
            diff
            for key in sorted(set(plain) | set(secret), key=str)
            for diff in _differences(plain.get(key), secret.get(key), (*where, key))
        ]
    if type(plain) is tuple and type(secret) is tuple and len(plain) == len(secret):
        return [
            diff for i, (a, b) in enumerate(zip(plain, secret, strict=True)) for diff in _differences(a, b, (*where, i))
        ]
    return [] if plain == secret else [(where, plain, secret)]


@pytest.mark.slow
def test_encrypted_run_has_the_same_figures(runs):
    plain, secret = runs
    differences = _differences(plain["materializations"], secret["materializations"])
    differences += _differences(plain["evaluations"], secret["evaluations"])
    assert not differences, "\n".join(map(repr, differences))
    assert set(secret["contents"]) == set(plain["contents"])
    assert {"raw.trades", "raw.book", "raw.book_delta_v2", "books.reconstructed_books"} <= set(secret["contents"])
    for name, rows in plain["contents"].items():
        assert secret["contents"][name] == rows, name


@pytest.mark.slow
def test_encrypted_lake_hides_values_and_needs_the_key(runs):
    _, secret = runs
    files = secret["files"]
    assert any("/raw/" in str(f) for f in files) and any("/books/" in str(f) for f in files)
    assert any("/stats/" in str(f) for f in files) and any("/checkpoints/" in str(f) for f in files)
    for path in files:
        data = path.read_bytes()
        assert data[:4] == b"PARE", path  # Parquet with an encrypted footer
        assert SYMBOL.encode() not in data and b"received_time" not in data, path
        with pytest.raises(OSError):
            pq.read_metadata(path)


def test_views_and_run_summary_read_an_encrypted_lake(tmp_path, encrypted):
    from market_pipeline.cli.report import raw_row_counts
    from market_pipeline.core.lake.catalog import ensure_lake_views
    from market_pipeline.core.lake.parquet_io import write_lake_parquet_atomic
    from market_pipeline.core.lake.paths import raw_partition_dir
    from market_pipeline.core.lake.warehouse import WarehouseTarget

    lake, warehouse = tmp_path / "lake", tmp_path / "warehouse.duckdb"
    for day in (DAY, DAY + dt.timedelta(days=1)):
        frame = pl.DataFrame({"received_time": [1, 2, 3], "price": [1.5, 2.5, 3.5]})
        write_lake_parquet_atomic(frame, raw_partition_dir(lake, "trades", "BINANCE", SYMBOL, day) / "data.parquet")
    target = WarehouseTarget(warehouse)
    assert ensure_lake_views(target, lake) == ["raw.trades"]
    lines = "\n".join(raw_row_counts(target, DAY, DAY))
    assert f"BINANCE:{SYMBOL}" in lines and "cannot read" not in lines
    with parquet_io.register_duckdb_key(duckdb.connect(str(warehouse), read_only=True)) as con:
        query = (
            "SELECT CAST(dt AS VARCHAR), count(*), sum(price) FROM raw.trades WHERE price > 2 GROUP BY ALL ORDER BY 1"
        )
        assert con.execute(query).fetchall() == [("2024-03-01", 2, 6.0), ("2024-03-02", 2, 6.0)]
    with duckdb.connect(str(warehouse), read_only=True) as con, pytest.raises(duckdb.Error):
        con.execute("SELECT count(*) FROM raw.trades").fetchall()
