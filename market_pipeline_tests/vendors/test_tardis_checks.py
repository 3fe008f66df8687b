"""The Tardis readers' row checks: each batch is screened by one aggregate a check and checked row
by row only when the screen flags it, so a bad row among many good ones, in any batch, is still
named by its line and the first failing check's reason, and a batch the screen flags for nothing
wrong (symbols in another case than the file name's) is read whole."""

from __future__ import annotations

import datetime as dt
import gzip
import re
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from market_pipeline.core.lake.schemas import BOOK_LEVELS
from market_pipeline.vendors.tardis import csv_stream
from market_pipeline.vendors.tardis.csv_format import (
    L2_COLUMNS,
    TRADES_COLUMNS,
    TardisFormatError,
    iter_book_snapshot_25,
    iter_incremental_book_l2,
    iter_trades,
    snapshot_columns,
)
from market_pipeline.vendors.tardis.message_heads import MessageHeads, MessageHeadsWriter

DAY = dt.date(2024, 3, 1)
DAY_US = int(dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000
ROWS = 2_000
BAD_LINE = 1_234  # in a batch well past the first (batches of two blocks of a few hundred rows)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(csv_stream, "BLOCK_BYTES", 1 << 14)
    monkeypatch.setattr(csv_stream, "BATCH_BLOCKS", 2)


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    text = ",".join(header) + "\n" + "".join(",".join("" if v is None else str(v) for v in r) + "\n" for r in rows)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(text)
    return path


def _l2_rows(symbol: str = "BTCUSDT") -> list[list[object]]:
    return [
        ["binance", symbol, DAY_US + i, DAY_US + i + 5, "false", ("bid", "ask")[i % 2], f"{100 + i % 7}.5", "1.25"]
        for i in range(ROWS)
    ]


def _read_l2(path: Path) -> pl.DataFrame:
    return pl.concat(iter_incremental_book_l2(path, DAY, MessageHeadsWriter(path.parent), "binance", "BTCUSDT"))


# (column, bad value, reason): every L2 check, each failing alone.
L2_DAMAGE = [
    ("exchange", None, "empty exchange"),
    ("exchange", "bitmex", "exchange is not 'binance' (the file name's)"),
    ("symbol", "ETHUSDT", "symbol is not 'BTCUSDT' (the file name's)"),
    ("timestamp", 0, "timestamp is not a positive number of microseconds"),
    ("local_timestamp", -1, "local_timestamp is not a positive number of microseconds"),
    ("is_snapshot", None, "empty is_snapshot"),
    ("side", "buy", "side is not one of bid/ask"),
    ("side", None, "empty side"),
    ("price", "inf", "price is NaN, infinite or not positive"),
    ("price", "-inf", "price is NaN, infinite or not positive"),
    ("price", "NaN", "price is NaN, infinite or not positive"),
    ("price", "0", "price is NaN, infinite or not positive"),
    ("amount", "inf", "amount is NaN, infinite or negative"),
    ("amount", "nan", "amount is NaN, infinite or negative"),
    ("amount", "-0.5", "amount is NaN, infinite or negative"),
    ("amount", None, "empty amount"),
]


@pytest.mark.parametrize(("column", "value", "reason"), L2_DAMAGE)
def test_each_l2_check_names_its_bad_row_among_good_ones(tmp_path, column, value, reason):
    rows = _l2_rows()
    rows[BAD_LINE - 2][L2_COLUMNS.index(column)] = value
    path = _write(tmp_path / "binance_incremental_book_L2_2024-03-01_BTCUSDT.csv.gz", L2_COLUMNS, rows)
    with pytest.raises(TardisFormatError, match=rf"line {BAD_LINE}: {re.escape(reason)}$"):
        _read_l2(path)


def test_the_first_bad_row_and_its_first_failing_check_are_named(tmp_path):
    rows = _l2_rows()
    rows[BAD_LINE - 2][L2_COLUMNS.index("side")] = "x"  # fails the side check...
    rows[BAD_LINE - 2][L2_COLUMNS.index("price")] = None  # ...after the empty-value checks
    rows[BAD_LINE + 50][L2_COLUMNS.index("exchange")] = "bitmex"  # a later bad row
    path = _write(tmp_path / "binance_incremental_book_L2_2024-03-01_BTCUSDT.csv.gz", L2_COLUMNS, rows)
    with pytest.raises(TardisFormatError, match=rf"line {BAD_LINE}: empty price$"):
        _read_l2(path)


def test_symbols_in_another_case_than_the_file_names_are_read(tmp_path):
    lower = _read_l2(_write(tmp_path / "lower.csv.gz", L2_COLUMNS, _l2_rows("btcusdt")))
    upper = _read_l2(_write(tmp_path / "upper.csv.gz", L2_COLUMNS, _l2_rows()))
    assert upper.height == ROWS
    assert_frame_equal(lower, upper)


def _snapshot_rows() -> list[list[object]]:
    rows: list[list[object]] = []
    for i in range(ROWS // 4):
        row: list[object] = ["binance", "BTCUSDT", DAY_US + i, DAY_US + i + 5]
        for level in range(25):
            row += [f"{101 + level}.5", "2", f"{99 - level}.5", "3"] if level < 22 else [None] * 4
        rows.append(row)
    return rows


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("bids[3].amount", None, r"bids\[3\].price and bids\[3\].amount: one is empty"),
        ("asks[19].price", "0", r"asks\[19\].price is NaN, infinite or not positive"),
        ("bids[0].amount", "-inf", r"bids\[0\].amount is NaN, infinite or negative"),
        ("local_timestamp", None, "empty local_timestamp"),
    ],
)
def test_each_snapshot_check_names_its_bad_row_among_good_ones(tmp_path, column, value, reason):
    rows = _snapshot_rows()
    line = len(rows) - 20
    rows[line - 2][snapshot_columns().index(column)] = value
    path = _write(tmp_path / "snapshots.csv.gz", snapshot_columns(), rows)
    assert len(snapshot_columns(BOOK_LEVELS)) > csv_stream.BLOCK_COLUMNS  # a wide file's larger blocks
    with pytest.raises(TardisFormatError, match=rf"line {line}: {reason}"):
        pl.concat(iter_book_snapshot_25(path, DAY, MessageHeads.empty(), "binance", "BTCUSDT"))


def test_trades_sides(tmp_path):
    rows = [
        ["binance", "BTCUSDT", DAY_US + i, DAY_US + i + 5, str(i), ("buy", "sell", "unknown")[i % 3], "100.5", "0.1"]
        for i in range(ROWS)
    ]
    path = _write(tmp_path / "trades.csv.gz", TRADES_COLUMNS, rows)
    assert pl.concat(iter_trades(path, "binance", "BTCUSDT"))["side"].value_counts().height == 3
    rows[BAD_LINE - 2][TRADES_COLUMNS.index("side")] = "bid"
    path = _write(tmp_path / "trades.csv.gz", TRADES_COLUMNS, rows)
    with pytest.raises(TardisFormatError, match=rf"line {BAD_LINE}: side is not one of buy/sell/unknown"):
        pl.concat(iter_trades(path, "binance", "BTCUSDT"))
