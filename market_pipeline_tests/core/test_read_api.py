"""market_pipeline.lake, the read API (issue 27): every read equals a DuckDB query over the same
files, decimals exact; a read opens only the files of its days (the others are replaced by junk and
the read still succeeds); days that failed a blocking check are left out with their reason unless
include_failed=True; an encrypted lake reads the same."""

from __future__ import annotations

import datetime as dt
import shutil
import warnings
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

import market_pipeline.lake as lake_api
from market_pipeline.core.read.errors import EmptyRange, SkippedDaysWarning, UnknownInstrument
from market_pipeline_tests.support.research_lake import RESEARCH_DAYS, RESEARCH_INSTRUMENT

pytestmark = pytest.mark.graph  # the research lake: `market-pipeline run` over three days

GOOD, BAD = RESEARCH_DAYS[:2], RESEARCH_DAYS[2]
FIVE = ["received_time", "bid_0_price", "bid_0_size", "ask_0_price", "ask_0_size"]
NS = 1_000_000_000


@pytest.fixture(scope="module")
def history(research_lake):
    import dagster as dg

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(research_lake["home"]))
        with dg.DagsterInstance.get() as instance:
            yield instance


@pytest.fixture
def lake(research_lake, history) -> lake_api.Lake:
    return lake_api.open(research_lake["data"], instance=history)


def files(data: Path, table: str, days, root: str = ".") -> list[str]:
    base = data / "lake" / root / table / "exchange=BINANCE" / "symbol=BTC-USDT"
    return [str(base / f"dt={day}" / "data.parquet") for day in days]


def duck(sql: str, *params: object) -> pl.DataFrame:
    with duckdb.connect() as con:
        return con.execute(sql, list(params)).pl()


def parquet(paths: list[str]) -> str:
    listed = ", ".join(f"'{p}'" for p in paths)
    return f"read_parquet([{listed}], hive_partitioning = true, file_row_number = true)"


def test_books_columns_and_days_equal_duckdb(lake, research_lake):
    ours = lake.books(RESEARCH_INSTRUMENT, GOOD[0], GOOD[1], columns=[*FIVE, "dt"]).collect()
    theirs = duck(
        f"SELECT {', '.join(FIVE)}, dt FROM {parquet(files(research_lake['data'], 'books', GOOD))} "
        "ORDER BY dt, file_row_number"
    )
    assert ours.height > 0 and ours.equals(theirs)
    assert ours.schema["bid_0_price"] == pl.Decimal(18, 2) and ours.schema["bid_0_size"] == pl.Decimal(18, 6)
    assert isinstance(ours["bid_0_price"][0], Decimal)


def test_a_datetime_range_selects_on_received_time(lake, research_lake):
    start, end = dt.datetime(2024, 3, 1, 23, 30), dt.datetime(2024, 3, 2, 0, 30)
    ours = lake.books(RESEARCH_INSTRUMENT, start, end, columns=FIVE).collect()
    lo, hi = (int(t.replace(tzinfo=dt.UTC).timestamp()) * NS for t in (start, end))
    theirs = duck(
        f"SELECT {', '.join(FIVE)} FROM {parquet(files(research_lake['data'], 'books', GOOD))} "
        "WHERE received_time >= ? AND received_time < ? ORDER BY dt, file_row_number",
        lo,
        hi,
    )
    assert ours.height > 0 and ours.equals(theirs)
    assert ours["received_time"].min() >= lo and ours["received_time"].max() < hi


def test_raw_prices_are_exact_decimals_on_the_grid(lake, research_lake):
    trades = lake.trades(RESEARCH_INSTRUMENT, GOOD[0], columns=["received_time", "price", "quantity"]).collect()
    theirs = duck(
        "SELECT received_time, CAST(price AS DECIMAL(18, 2)) AS price, "
        "CAST(quantity AS DECIMAL(18, 6)) AS quantity "
        f"FROM {parquet(files(research_lake['data'], 'trades', GOOD[:1], 'raw'))} "
        "ORDER BY file_row_number"
    )
    assert trades.height > 0 and trades.equals(theirs)
    deltas = lake.deltas(RESEARCH_INSTRUMENT, GOOD[0]).collect()
    assert deltas.schema["price"] == pl.Decimal(18, 2) and deltas.schema["size"] == pl.Decimal(18, 6)


def test_a_read_opens_only_its_days_and_columns(lake, research_lake, history, tmp_path):
    """The other days' files are replaced by junk: reading one day still works, so they were never opened."""
    data = tmp_path / "data"
    shutil.copytree(research_lake["data"], data)
    for path in files(data, "books", [GOOD[1]]):
        Path(path).write_bytes(b"not parquet")
    copy = lake_api.open(data, instance=history)
    frame = copy.books(RESEARCH_INSTRUMENT, GOOD[0], columns=FIVE)
    assert "PROJECT 5/" in frame.explain()  # only the 5 columns are read from the file
    assert frame.collect().equals(lake.books(RESEARCH_INSTRUMENT, GOOD[0], columns=FIVE).collect())
    with pytest.raises(Exception, match="parquet|Parquet"):
        copy.books(RESEARCH_INSTRUMENT, GOOD[1], columns=FIVE).collect()


def test_a_day_that_failed_a_blocking_check_is_left_out_with_its_reason(lake, research_lake):
    with pytest.warns(SkippedDaysWarning, match=f"{BAD}: raw_book_deltas price_precision: .*off the grid"):
        deltas = lake.deltas(RESEARCH_INSTRUMENT, GOOD[0], BAD, columns=["dt"]).collect()
    assert set(deltas["dt"]) == set(GOOD)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        everything = lake.deltas(RESEARCH_INSTRUMENT, BAD, columns=["price"], include_failed=True).collect()
    theirs = duck(
        "SELECT CAST(price AS DECIMAL(18, 2)) AS price "
        f"FROM {parquet(files(research_lake['data'], 'book_delta_v2', [BAD], 'raw'))} "
        "ORDER BY file_row_number"
    )
    assert everything.height > 0 and everything.equals(theirs)
    with pytest.raises(EmptyRange, match=f"{BAD}: no file .*raw_book_deltas price_precision"):
        lake.books(RESEARCH_INSTRUMENT, BAD)


def test_unknown_instrument_and_empty_range(lake):
    with pytest.raises(
        UnknownInstrument, match="BINANCE:ETH-USDT: no books files .*instruments there: BINANCE:BTC-USDT"
    ):
        lake.books("BINANCE:ETH-USDT", GOOD[0])
    with pytest.raises(EmptyRange, match="empty"):
        lake.books(RESEARCH_INSTRUMENT, dt.datetime(2024, 3, 1, 12), dt.datetime(2024, 3, 1, 11))
    with pytest.raises(EmptyRange, match="2024-04-01: no file"):
        lake.books(RESEARCH_INSTRUMENT, dt.date(2024, 4, 1))


def _duckdb_book_at(data: Path, times: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """The last synced row at or before each time: of rows sharing a received_time, the last in the files."""
    with duckdb.connect() as con:
        con.register("times", times.to_arrow())
        # DuckDB estimates a registered Arrow table at about one row, below asof_loop_join_threshold,
        # and plans the join as a nested loop (~4e10 comparisons here); the ASOF_JOIN plan gives the
        # same rows a hundred times faster.
        con.execute("SET asof_loop_join_threshold = 0")
        return con.execute(
            f"""
            WITH books AS (
                SELECT received_time, {", ".join(columns)} FROM {parquet(files(data, "books", GOOD))}
                WHERE synced
                QUALIFY row_number() OVER (PARTITION BY received_time ORDER BY dt DESC, file_row_number DESC) = 1
            )
            SELECT t.time, b.received_time AS book_time, {", ".join("b." + c for c in columns)}
            FROM times t ASOF LEFT JOIN books b ON t.time >= b.received_time ORDER BY t.order
            """
        ).pl()


def test_book_at_equals_an_asof_join_in_duckdb(lake, research_lake):
    start = int(dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp()) * NS
    times = pl.DataFrame({"time": pl.int_range(start - 3_600 * NS, start + 2 * 86_400 * NS, 7_777_777_777, eager=True)})
    times = times.sample(fraction=1.0, shuffle=True, seed=1).with_row_index("order")  # any order in, same order out
    columns = ["bid_0_price", "ask_0_price", "ask_0_size"]
    ours = lake.book_at(RESEARCH_INSTRUMENT, times["time"], columns)
    assert ours.equals(_duckdb_book_at(research_lake["data"], times, columns))
    assert ours["book_time"].null_count() > 0  # the hour before the first day has no book
    assert (ours.drop_nulls()["time"] >= ours.drop_nulls()["book_time"]).all()


def test_trades_with_book_equals_book_at_their_receive_times(lake, research_lake):
    joined = lake.trades_with_book(RESEARCH_INSTRUMENT, GOOD[0], GOOD[1])
    trades = lake.trades(RESEARCH_INSTRUMENT, GOOD[0], GOOD[1]).collect()
    assert joined.select(trades.columns).equals(trades)
    theirs = _duckdb_book_at(
        research_lake["data"],
        trades.select(pl.col("received_time").alias("time")).with_row_index("order"),
        ["bid_0_price", "bid_0_size", "ask_0_price", "ask_0_size"],
    )
    assert joined.select(["book_time", "bid_0_price", "bid_0_size", "ask_0_price", "ask_0_size"]).equals(
        theirs.drop("time")
    )


def test_replay_streams_bounded_batches_equal_to_books(lake):
    books = lake.books(RESEARCH_INSTRUMENT, GOOD[0], GOOD[1], columns=FIVE).collect()
    batch_rows = books.height // 5  # the days' rows depend on the cadence: several batches whatever it is
    batches = list(lake.replay(RESEARCH_INSTRUMENT, GOOD[0], GOOD[1], columns=FIVE, batch_rows=batch_rows))
    assert len(batches) > 2 and max(b.height for b in batches) <= batch_rows
    assert pl.concat(batches).equals(books)


def test_bars_and_reports_equal_duckdb(lake, research_lake):
    bars = lake.bars(
        "1m", RESEARCH_INSTRUMENT, GOOD[0], GOOD[1], columns=["bar_start", "open", "close", "volume"]
    ).collect()
    theirs = duck(
        f"SELECT bar_start, open, close, volume FROM {parquet(files(research_lake['data'], 'bars', GOOD))} "
        "WHERE interval = '1m' ORDER BY dt, file_row_number"
    )
    theirs = theirs.with_columns(pl.col("bar_start").dt.cast_time_unit("ns").dt.convert_time_zone("UTC"))  # DuckDB: us
    assert bars.height > 0 and bars.equals(theirs)
    reports = lake.reports(
        RESEARCH_INSTRUMENT, GOOD[0], BAD, columns=["dt", "exchange", "symbol", "book_rows"]
    ).collect()
    with duckdb.connect(str(research_lake["data"] / "warehouse.duckdb"), read_only=True) as con:
        expected = con.execute("SELECT dt, exchange, symbol, book_rows FROM main.validation_reports ORDER BY ALL").pl()
    assert reports.equals(expected) and list(reports["dt"]) == list(GOOD)


def test_without_run_history_every_day_with_a_file_is_read_and_a_warning_says_so(research_lake, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with pytest.warns(SkippedDaysWarning, match="DAGSTER_HOME is not set"):
        lake = lake_api.open(research_lake["data"])
    assert set(lake.deltas(RESEARCH_INSTRUMENT, GOOD[0], BAD, columns=["dt"]).collect()["dt"]) == set(RESEARCH_DAYS)


def test_an_encrypted_lake_reads_the_same_with_the_key(lake, research_lake, history, tmp_path, monkeypatch):
    import base64
    import os

    from market_pipeline.core import context
    from market_pipeline.core.lake import parquet_io
    from market_pipeline.core.security.crypto import MasterKeyError

    times = pl.Series([dt.datetime(2024, 3, 1, 12), dt.datetime(2024, 3, 2, 1)])
    plain_books = lake.books(RESEARCH_INSTRUMENT, GOOD[0], GOOD[1], columns=FIVE).collect()
    plain_book_at = lake.book_at(RESEARCH_INSTRUMENT, times)  # before this process reads encrypted files
    key = base64.b64encode(os.urandom(32)).decode()
    data = tmp_path / "data"
    shutil.copytree(research_lake["data"] / "lake", data / "lake")
    with context.using(context.CoreContext(master_key=key, lake_encrypted=True)):
        for path in (data / "lake").rglob("*.parquet"):
            parquet_io.write_table(pq.read_table(path), path)  # the plaintext file, rewritten encrypted
    assert path.read_bytes()[:4] == b"PARE"
    monkeypatch.delenv("PIPELINE_MASTER_KEY", raising=False)
    with pytest.raises(MasterKeyError, match="PIPELINE_MASTER_KEY"):
        lake_api.open(data, instance=history)
    encrypted = lake_api.open(data, master_key=key, instance=history)
    assert encrypted.books(RESEARCH_INSTRUMENT, GOOD[0], GOOD[1], columns=FIVE).collect().equals(plain_books)
    assert encrypted.book_at(RESEARCH_INSTRUMENT, times).equals(plain_book_at)
