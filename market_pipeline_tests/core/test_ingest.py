"""Unit tests of the raw-stage file checks (lake/ingest.py) and atomic writes (lake/files.py)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from market_pipeline.core.day_clock import day_start_ns
from market_pipeline.core.lake.files import write_atomic, write_parquet_atomic, write_text_atomic
from market_pipeline.core.lake.ingest import (
    NS_PER_DAY,
    FileRejected,
    PartitionWriter,
    check_file,
    quarantine_file,
    record_rejected_rows,
)
from market_pipeline.core.lake.schemas import (
    BOOK_DELTA_SCHEMA,
    BOOK_SCHEMA,
    TABLE_SCHEMAS,
    TRADES_SCHEMA,
)
from market_pipeline_tests.support.vendor_lake import truncate_file, vendor_frame

DAY = dt.date(2024, 3, 1)
T0 = day_start_ns(DAY)
HOUR = 3_600 * 1_000_000_000
TOL = HOUR


def write(path: Path, df: pl.DataFrame | pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(df, pa.Table):
        pq.write_table(df, path)
    else:
        df.write_parquet(path)
    return path


def trades(rows: list[tuple]) -> pl.DataFrame:
    """rows of (received_time offset ns, side, price, quantity)."""
    return pl.DataFrame(
        {
            "origin_time": [T0 + r[0] - 1 for r in rows],
            "received_time": [T0 + r[0] for r in rows],
            "side": [r[1] for r in rows],
            "price": [r[2] for r in rows],
            "quantity": [r[3] for r in rows],
            "trade_id": [str(i) for i in range(len(rows))],
        },
        schema=TRADES_SCHEMA,
    )


# ---------------------------------------------------------------------------------------
# Column names and types
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["trades", "book", "book_delta_v2"])
def test_both_spellings_normalised_to_the_same_frame(tmp_path: Path, table: str):
    client = write(tmp_path / "client.parquet", vendor_frame(table, DAY, 30, "client"))
    stored = write(tmp_path / "stored.parquet", vendor_frame(table, DAY, 30, "stored"))
    a = check_file(client, table, DAY, TOL)
    b = check_file(stored, table, DAY, TOL)
    expected = TABLE_SCHEMAS[table]
    assert a.good.schema == pl.Schema(expected)
    assert b.good.schema == pl.Schema(expected)
    assert a.good.equals(b.good)
    assert a.good.height == 30
    assert a.bad.is_empty() and b.bad.is_empty()


def test_stored_spelling_renames(tmp_path: Path):
    path = write(tmp_path / "t.parquet", vendor_frame("trades", DAY, 3, "stored"))
    assert set(pq.read_schema(path).names) >= {"timestamp", "receipt_timestamp", "amount", "id"}
    good = check_file(path, "trades", DAY, TOL).good
    assert good.columns == list(TRADES_SCHEMA)


def test_extra_vendor_columns_are_dropped(tmp_path: Path):
    df = vendor_frame("trades", DAY, 3).with_columns(pl.lit("x").alias("vendor_extra"))
    good = check_file(write(tmp_path / "t.parquet", df), "trades", DAY, TOL).good
    assert good.columns == list(TRADES_SCHEMA)


def test_both_spellings_in_one_file_rejected(tmp_path: Path):
    df = vendor_frame("trades", DAY, 3, "client").with_columns(pl.col("received_time").alias("receipt_timestamp"))
    path = write(tmp_path / "t.parquet", df)
    with pytest.raises(FileRejected) as info:
        check_file(path, "trades", DAY, TOL)
    assert "received_time" in info.value.reason
    assert info.value.path == path


def test_integer_trade_id_becomes_text(tmp_path: Path):
    df = vendor_frame("trades", DAY, 3, "stored").with_columns(pl.col("id").cast(pl.Int64))
    good = check_file(write(tmp_path / "t.parquet", df), "trades", DAY, TOL).good
    assert good["trade_id"].dtype == pl.String
    assert good["trade_id"].to_list() == ["1000000", "1000001", "1000002"]


@pytest.mark.parametrize(
    ("unit", "tz", "scale"),
    [("ns", None, 1), ("ns", "UTC", 1), ("us", None, 1_000), ("us", "UTC", 1_000), ("ms", "Asia/Tokyo", 1_000_000)],
)
def test_timestamp_typed_time_columns_become_int64_ns(tmp_path: Path, unit: str, tz: str | None, scale: int):
    # Values representable in the unit, with sub-millisecond digits where the unit has them.
    offsets = [0, 123_456_789_000, 86_399_999_999_000]
    ns_values = [T0 + (o // scale) * scale for o in offsets]
    ts_type = pa.timestamp(unit, tz=tz)
    table = pa.table(
        {
            "timestamp": pa.array([v // scale for v in ns_values], pa.int64()).cast(ts_type),
            "receipt_timestamp": pa.array([v // scale for v in ns_values], pa.int64()).cast(ts_type),
            "side": ["buy", "sell", "buy"],
            "price": [1.0, 2.0, 3.0],
            "amount": [0.1, 0.2, 0.3],
            "id": ["a", "b", "c"],
        }
    )
    path = write(tmp_path / "t.parquet", table)
    checked = check_file(path, "trades", DAY, TOL)
    assert checked.bad.is_empty()
    assert checked.good["origin_time"].dtype == pl.Int64
    assert checked.good["received_time"].dtype == pl.Int64
    assert checked.good["origin_time"].to_list() == ns_values
    assert checked.good["received_time"].to_list() == ns_values


def test_nanosecond_precision_is_exact(tmp_path: Path):
    # 2**53 < these values: a float round trip would lose the last digits.
    values = [T0 + 1, T0 + 999_999_999, T0 + 86_399_999_999_999]
    table = pa.table(
        {
            "origin_time": pa.array(values, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
            "received_time": pa.array(values, pa.int64()),
            "sequence_number": pa.array([1, 2, 3], pa.int64()),
            "side_is_bid": [True, False, True],
            "price": [1.0, 1.5, 2.0],
            "size": [1.0, 0.0, 2.0],
        }
    )
    good = check_file(write(tmp_path / "d.parquet", table), "book_delta_v2", DAY, TOL).good
    assert good["origin_time"].to_list() == values
    assert good["received_time"].to_list() == values


def test_narrower_numeric_types_are_widened(tmp_path: Path):
    df = vendor_frame("book_delta_v2", DAY, 5).with_columns(
        pl.col("sequence_number").cast(pl.Int32), pl.col("price").cast(pl.Float32), pl.col("size").cast(pl.Int16)
    )
    good = check_file(write(tmp_path / "d.parquet", df), "book_delta_v2", DAY, TOL).good
    assert good.schema == pl.Schema(BOOK_DELTA_SCHEMA)


@pytest.mark.parametrize("table", ["trades", "book", "book_delta_v2"])
def test_missing_column_rejects_the_file(tmp_path: Path, table: str):
    df = vendor_frame(table, DAY, 5, "client").drop("received_time")
    path = write(tmp_path / f"{table}.parquet", df)
    with pytest.raises(FileRejected) as info:
        check_file(path, table, DAY, TOL)
    assert "received_time" in info.value.reason
    assert "missing" in info.value.reason
    assert str(path) in str(info.value)


def test_missing_book_level_column_rejects_the_file(tmp_path: Path):
    path = write(tmp_path / "b.parquet", vendor_frame("book", DAY, 5).drop("ask_19_size"))
    with pytest.raises(FileRejected, match="ask_19_size"):
        check_file(path, "book", DAY, TOL)


def test_wrong_type_rejects_the_file(tmp_path: Path):
    df = vendor_frame("trades", DAY, 3).with_columns(pl.col("price").cast(pl.String))
    path = write(tmp_path / "t.parquet", df)
    with pytest.raises(FileRejected) as info:
        check_file(path, "trades", DAY, TOL)
    assert "price" in info.value.reason
    assert str(path) in str(info.value)


def test_truncated_parquet_rejected_as_unreadable(tmp_path: Path):
    path = write(tmp_path / "t.parquet", vendor_frame("book_delta_v2", DAY, 2_000))
    truncate_file(path)
    with pytest.raises(FileRejected) as info:
        check_file(path, "book_delta_v2", DAY, TOL)
    assert "unreadable" in info.value.reason
    assert info.value.path == path
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"not parquet at all", b"PAR1" + b"\0" * 100])
def test_garbage_file_rejected_as_unreadable(tmp_path: Path, content: bytes):
    path = tmp_path / "x.parquet"
    path.write_bytes(content)
    with pytest.raises(FileRejected, match="unreadable"):
        check_file(path, "trades", DAY, TOL)


# ---------------------------------------------------------------------------------------
# Row checks
# ---------------------------------------------------------------------------------------


def test_bad_price_rows_split_off_with_row_and_reason(tmp_path: Path):
    rows = [
        (1_000, "buy", 100.0, 1.0),  # 0 good
        (2_000, "sell", float("nan"), 1.0),  # 1 NaN price
        (3_000, "buy", 101.0, 2.0),  # 2 good
        (4_000, "buy", -5.0, 1.0),  # 3 negative price
        (5_000, "sell", 0.0, 1.0),  # 4 zero price
        (6_000, "sell", 102.0, -1.0),  # 5 negative quantity
        (7_000, "buy", float("inf"), 1.0),  # 6 infinite price
        (8_000, "sell", 103.0, 3.0),  # 7 good
        (9_000, "hold", 104.0, 3.0),  # 8 bad side
    ]
    path = write(tmp_path / "t.parquet", trades(rows))
    checked = check_file(path, "trades", DAY, TOL)
    assert checked.good.schema == pl.Schema(TRADES_SCHEMA)
    assert checked.good["price"].to_list() == [100.0, 101.0, 103.0]  # kept, in order
    assert checked.good["received_time"].to_list() == [T0 + 1_000, T0 + 3_000, T0 + 8_000]
    bad = checked.bad
    assert bad["_row"].to_list() == [1, 3, 4, 5, 6, 8]
    reasons = dict(zip(bad["_row"].to_list(), bad["_reason"].to_list(), strict=True))
    for row in (1, 3, 4, 6):
        assert "price" in reasons[row]
    assert "quantity" in reasons[5]
    assert "side" in reasons[8]
    assert set(bad["_source_file"].to_list()) == {str(path)}
    # The rejected rows keep their values for inspection.
    assert bad.filter(pl.col("_row") == 3)["price"].item() == -5.0


def test_zero_size_delta_is_a_removal_not_a_problem(tmp_path: Path):
    df = vendor_frame("book_delta_v2", DAY, 20)
    assert (df["size"] == 0).any()
    checked = check_file(write(tmp_path / "d.parquet", df), "book_delta_v2", DAY, TOL)
    assert checked.bad.is_empty()
    assert checked.good.equals(df)


def test_bad_delta_rows(tmp_path: Path):
    df = vendor_frame("book_delta_v2", DAY, 6).with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(float("nan")).otherwise(pl.col("price")).alias("price"),
        pl.when(pl.int_range(pl.len()) == 2).then(-0.5).otherwise(pl.col("size")).alias("size"),
        pl.when(pl.int_range(pl.len()) == 4).then(None).otherwise(pl.col("sequence_number")).alias("sequence_number"),
    )
    checked = check_file(write(tmp_path / "d.parquet", df), "book_delta_v2", DAY, TOL)
    assert checked.bad["_row"].to_list() == [1, 2, 4]
    assert checked.good.height == 3
    assert checked.good["sequence_number"].to_list() == df["sequence_number"].gather([0, 3, 5]).to_list()


def test_rows_outside_the_day_beyond_tolerance(tmp_path: Path):
    offsets = [
        -TOL - 1,  # 0 too early
        -TOL,  # 1 earliest accepted
        0,  # 2
        NS_PER_DAY - 1,  # 3
        NS_PER_DAY + TOL - 1,  # 4 latest accepted
        NS_PER_DAY + TOL,  # 5 too late
        -10 * NS_PER_DAY,  # 6 another day entirely
    ]
    rows = [(o, "buy", 100.0 + i, 1.0) for i, o in enumerate(offsets)]
    frame = trades(rows).with_columns(pl.col("received_time").alias("origin_time"))  # the receive time's bounds
    checked = check_file(write(tmp_path / "t.parquet", frame), "trades", DAY, TOL)
    assert checked.bad["_row"].to_list() == [0, 5, 6]
    assert all("received_time outside 2024-03-01" in r for r in checked.bad["_reason"].to_list())
    assert checked.good["price"].to_list() == [101.0, 102.0, 103.0, 104.0]


def test_rows_whose_exchange_time_lies_beyond_the_tolerance(tmp_path: Path):
    """Received within the day, but origin_time a day away (issue 29, item 6): not this day's data."""
    rows = [(i * 60 * 10**9, "buy", 100.0 + i, 1.0) for i in range(5)]
    origin = [T0 - TOL, T0 - TOL - 1, T0 - NS_PER_DAY, T0 + NS_PER_DAY + TOL - 1, T0 + NS_PER_DAY + TOL]
    frame = trades(rows).with_columns(pl.Series("origin_time", origin))
    checked = check_file(write(tmp_path / "t.parquet", frame), "trades", DAY, TOL)
    assert checked.bad["_row"].to_list() == [1, 2, 4]
    assert set(checked.bad["_reason"]) == {"origin_time outside 2024-03-01 (UTC)"}


def test_zero_tolerance(tmp_path: Path):
    rows = [
        (-1, "buy", 1.0, 1.0),
        (0, "buy", 2.0, 1.0),
        (NS_PER_DAY - 1, "buy", 3.0, 1.0),
        (NS_PER_DAY, "buy", 4.0, 1.0),
    ]
    frame = trades(rows).with_columns(pl.col("received_time").alias("origin_time"))  # the receive time's bounds
    checked = check_file(write(tmp_path / "t.parquet", frame), "trades", DAY, 0)
    assert checked.bad["_row"].to_list() == [0, 3]
    assert checked.good["price"].to_list() == [2.0, 3.0]


def test_null_time_rows_are_bad(tmp_path: Path):
    df = trades([(1, "buy", 1.0, 1.0), (2, "buy", 2.0, 1.0), (3, "buy", 3.0, 1.0)]).with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(None).otherwise(pl.col("origin_time")).alias("origin_time")
    )
    checked = check_file(write(tmp_path / "t.parquet", df), "trades", DAY, TOL)
    assert checked.bad["_row"].to_list() == [1]
    assert "origin_time" in checked.bad["_reason"].item()


def test_absent_book_levels_are_not_problems(tmp_path: Path):
    df = vendor_frame("book", DAY, 8)
    assert df.null_count().sum_horizontal().item() > 0  # some rows have only 15 levels
    checked = check_file(write(tmp_path / "b.parquet", df), "book", DAY, TOL)
    assert checked.bad.is_empty()
    assert checked.good.equals(df)
    assert checked.good.schema == pl.Schema(BOOK_SCHEMA)


def test_fully_null_book_level_column_is_accepted(tmp_path: Path):
    # A thin book where no row has a 20th level: Parquet stores the column as all-null.
    df = vendor_frame("book", DAY, 4).with_columns(pl.lit(None, dtype=pl.Null).alias("ask_19_price"))
    checked = check_file(write(tmp_path / "b.parquet", df), "book", DAY, TOL)
    assert checked.bad.is_empty()
    assert checked.good["ask_19_price"].dtype == pl.Float64
    assert checked.good["ask_19_price"].null_count() == 4


def test_bad_book_level_price_is_a_problem(tmp_path: Path):
    df = vendor_frame("book", DAY, 4).with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(-1.0).otherwise(pl.col("bid_3_price")).alias("bid_3_price")
    )
    checked = check_file(write(tmp_path / "b.parquet", df), "book", DAY, TOL)
    assert checked.bad["_row"].to_list() == [2]
    assert "bid_3_price" in checked.bad["_reason"].item()


@pytest.mark.parametrize(
    ("table", "column"),
    [("trades", "price"), ("book_delta_v2", "price"), ("trades", "quantity"), ("book_delta_v2", "size")],
)
def test_null_price_or_size_row_is_bad(tmp_path: Path, table: str, column: str):
    df = vendor_frame(table, DAY, 3).with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(None).otherwise(pl.col(column)).alias(column)
    )
    checked = check_file(write(tmp_path / "x.parquet", df), table, DAY, TOL)
    assert checked.bad["_row"].to_list() == [1]
    assert checked.good.height == 2


# ---------------------------------------------------------------------------------------
# Quarantine helpers
# ---------------------------------------------------------------------------------------


def test_quarantine_file_copies_with_reason(tmp_path: Path):
    src = write(tmp_path / "vendor" / "data.parquet", vendor_frame("trades", DAY, 5))
    truncate_file(src)
    with pytest.raises(FileRejected) as info:
        check_file(src, "trades", DAY, TOL)
    lake = tmp_path / "lake"
    target = quarantine_file(lake, "trades", "BINANCE", "BTC-USDT", DAY, info.value, "run-1")
    assert target == lake / "quarantine/trades/exchange=BINANCE/symbol=BTC-USDT/dt=2024-03-01/data.parquet"
    assert target.read_bytes() == src.read_bytes()
    reason = json.loads(target.with_name("data.parquet.reason.json").read_text())
    assert reason["source_file"] == str(src)
    assert "unreadable" in reason["reason"]
    assert (reason["table"], reason["exchange"], reason["symbol"], reason["dt"], reason["run_id"]) == (
        "trades",
        "BINANCE",
        "BTC-USDT",
        "2024-03-01",
        "run-1",
    )


def test_record_rejected_rows_written_then_cleared(tmp_path: Path):
    rows = [(1, "buy", 1.0, 1.0), (2, "buy", -1.0, 1.0)]
    checked = check_file(write(tmp_path / "t.parquet", trades(rows)), "trades", DAY, TOL)
    lake = tmp_path / "lake"
    target = record_rejected_rows(lake, "trades", "BINANCE", "BTC-USDT", DAY, checked.bad)
    assert target is not None and target.is_file()
    stored = pl.read_parquet(target)
    assert stored["_row"].to_list() == [1]
    assert {"_row", "_reason", "_source_file"} <= set(stored.columns)
    assert record_rejected_rows(lake, "trades", "BINANCE", "BTC-USDT", DAY, checked.bad.clear()) is None
    assert not target.exists()


# ---------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------


def _leftovers(directory: Path, final: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p != final]


def test_write_parquet_atomic_leaves_no_temp_files(tmp_path: Path):
    final = tmp_path / "deep" / "dir" / "data.parquet"
    df = vendor_frame("trades", DAY, 10)
    size = write_parquet_atomic(df, final)
    assert size == final.stat().st_size > 0
    assert pl.read_parquet(final).equals(df)
    assert _leftovers(final.parent, final) == []
    # Overwrite: still one file, the new content.
    df2 = vendor_frame("trades", DAY, 3)
    write_parquet_atomic(df2, final)
    assert pl.read_parquet(final).equals(df2)
    assert _leftovers(final.parent, final) == []


def test_write_parquet_atomic_is_deterministic(tmp_path: Path):
    df = vendor_frame("book", DAY, 50)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write_parquet_atomic(df, a)
    write_parquet_atomic(df, b)
    assert a.read_bytes() == b.read_bytes()


def test_failing_parquet_writer_leaves_existing_file_untouched(tmp_path: Path):
    final = tmp_path / "data.parquet"
    write_parquet_atomic(vendor_frame("trades", DAY, 5), final)
    before = final.read_bytes()
    unwritable = pl.DataFrame({"obj": [object(), object()]}, schema={"obj": pl.Object})
    with pytest.raises(Exception):  # noqa: B017  # whatever the writer raises, the old file stays
        write_parquet_atomic(unwritable, final)
    assert final.read_bytes() == before
    assert _leftovers(tmp_path, final) == []


def test_failing_writer_midway_leaves_existing_file_untouched(tmp_path: Path):
    final = tmp_path / "data.parquet"
    final.write_bytes(b"old content")

    def writer(tmp: Path) -> None:
        assert tmp.parent == final.parent and tmp != final
        tmp.write_bytes(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(final, writer)
    assert final.read_bytes() == b"old content"
    assert _leftovers(tmp_path, final) == []


def test_failing_writer_creates_nothing_when_no_file_existed(tmp_path: Path):
    final = tmp_path / "new" / "data.parquet"

    def writer(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_atomic(final, writer)
    assert not final.exists()
    assert list(final.parent.iterdir()) == []


def test_partition_writer_streams_batches_in_the_raw_encoding(tmp_path: Path):
    """Batches written on the writer thread come back whole and in order; integers are
    delta-encoded and LZ4, prices dictionary-encoded and uncompressed, sizes plain and LZ4
    (docs/data-formats.md)."""
    frames = [vendor_frame("book_delta_v2", DAY, 1_000, seed=seed) for seed in range(3)]
    final = tmp_path / "data.parquet"
    with PartitionWriter(final, BOOK_DELTA_SCHEMA) as writer:
        for frame in frames:
            writer.write(frame)
    assert pl.read_parquet(final).equals(pl.concat(frames))
    meta = pq.ParquetFile(final).metadata
    assert meta.num_row_groups == 3
    chunks = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i) for i in range(meta.num_columns)}
    for name in ("origin_time", "received_time", "sequence_number"):
        assert "DELTA_BINARY_PACKED" in chunks[name].encodings, name
        assert chunks[name].compression in {"LZ4", "LZ4_RAW"}, name
    assert "RLE_DICTIONARY" in chunks["price"].encodings and chunks["price"].compression == "UNCOMPRESSED"
    assert "RLE_DICTIONARY" not in chunks["size"].encodings and chunks["size"].compression in {"LZ4", "LZ4_RAW"}


def test_a_batch_over_a_million_rows_is_one_row_group(tmp_path: Path):
    """pyarrow cuts a table at 1,048,576 rows unless told: a batch just over that must not leave a
    row group of a few rows behind it."""
    frame = vendor_frame("book_delta_v2", DAY, 1_000)
    big = pl.concat([frame] * 1_049)  # 1,049,000 rows
    final = tmp_path / "data.parquet"
    with PartitionWriter(final, BOOK_DELTA_SCHEMA) as writer:
        writer.write(big)
        writer.write(frame)
    meta = pq.ParquetFile(final).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1_049_000, 1_000]


def test_partition_writer_error_on_the_writer_thread_keeps_the_old_file(tmp_path: Path):
    final = tmp_path / "data.parquet"
    write_parquet_atomic(vendor_frame("book_delta_v2", DAY, 5), final)
    before = final.read_bytes()
    good = vendor_frame("book_delta_v2", DAY, 100)
    with pytest.raises(Exception, match="(?i)schema"):  # noqa: B017,PT011  # Arrow's own error, raised in the caller
        with PartitionWriter(final, BOOK_DELTA_SCHEMA) as writer:
            writer.write(good)
            writer.write(good.with_columns(pl.col("size").cast(pl.String)))
    assert final.read_bytes() == before
    assert _leftovers(tmp_path, final) == []


def test_write_text_atomic(tmp_path: Path):
    final = tmp_path / "r.json"
    assert write_text_atomic(final, "héllo") == len("héllo".encode())
    assert final.read_text(encoding="utf-8") == "héllo"
    assert _leftovers(tmp_path, final) == []


@pytest.mark.parametrize("seed", range(4))
def test_message_aligned_batches_end_at_message_ends(seed: int):
    """Batches cut anywhere (inside messages, messages longer than a batch or than the search's
    first slices, repeated keys not next to each other) come out in the same order, each ending
    where a message ends."""
    import numpy as np

    from market_pipeline.core.lake.batches import message_aligned

    rng = np.random.default_rng(seed)
    sizes = rng.choice([1, 2, 5, 70, 1500, 3000], 60, p=[0.4, 0.3, 0.15, 0.1, 0.03, 0.02])
    message = np.repeat(np.arange(len(sizes)), sizes)
    sequence = message // 2 + 1  # two messages share each number: received_time tells them apart
    received = T0 + message * 1_000
    if seed == 0:  # a key that comes back after another message is not the last message's run
        received[message == 3], sequence[message == 3] = received[-1], sequence[-1]
    frame = pl.DataFrame({"received_time": received, "sequence_number": sequence, "row": np.arange(len(message))})
    cuts = np.sort(rng.choice(np.arange(1, frame.height), 25, replace=False))
    batches = [frame[a:b] for a, b in zip([0, *cuts], [*cuts, frame.height], strict=True)]
    if seed == 1:  # batches in several chunks, as `pl.concat` glues them
        batches = [pl.concat([b[: b.height // 2], b[b.height // 2 :]], rechunk=False) for b in batches]
    out = list(message_aligned(batches))
    assert pl.concat(out).equals(frame)
    for before, after in zip(out, out[1:], strict=False):
        assert before.row(-1)[:2] != after.row(0)[:2]


def test_small_row_groups_are_read_together_up_to_a_batch(tmp_path: Path):
    """Consecutive row groups that fit in a batch together come as one table (a file written an
    hour a row group is one batch on a small day); a larger group comes alone, sliced to the batch
    (or streamed, beyond 4 batches); the rows stay in file order and no table exceeds the batch."""
    from market_pipeline.core.lake.batches import iter_tables

    groups = [10] * 12 + [95, 5, 250, 3, 1000, 40, 40]
    rows = pl.DataFrame({"row": range(sum(groups))}).to_arrow()
    path = tmp_path / "groups.parquet"
    with pq.ParquetWriter(path, rows.schema) as writer:
        start = 0
        for size in groups:
            writer.write_table(rows.slice(start, size), row_group_size=size)
            start += size
    reader = pq.ParquetFile(path)
    assert [reader.metadata.row_group(g).num_rows for g in range(reader.metadata.num_row_groups)] == groups
    tables = list(iter_tables(reader, None, 100))
    # 10 groups of 10 | 2 of 10 | 95 + 5 | 250 sliced | 3 | 1000 streamed | 40 + 40
    assert [t.num_rows for t in tables] == [100, 20, 100, 100, 100, 50, 3, *[100] * 10, 80]
    assert pa.concat_tables(tables).equals(rows)
