"""PIPELINE_SOURCE=tardis: Tardis.dev CSV files -> lake tables, quarantine, days, and a rebuild
from synthetic Tardis files equal to the synthetic ground truth (directly and from the CLI)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from market_pipeline.core.lake.paths import PARTITION_FILE, books_partition_dir
from market_pipeline.core.lake.schemas import BOOK_DELTA_SCHEMA, BOOK_SCHEMA, TRADES_SCHEMA
from market_pipeline.vendors.base import DayNotCovered
from market_pipeline.vendors.tardis.config import DEFAULT_EXCHANGES, default_symbol, tardis_names
from market_pipeline.vendors.tardis.csv_format import (
    L2_COLUMNS,
    SEQUENCE_DAY_STRIDE,
    TRADES_COLUMNS,
    TardisFormatError,
    iter_book_snapshot_25,
    iter_incremental_book_l2,
    iter_trades,
    snapshot_columns,
)
from market_pipeline.vendors.tardis.message_heads import MessageHeads, MessageHeadsWriter, snapshot_sequence
from market_pipeline.vendors.tardis.source import TardisRejected, TardisSource
from market_pipeline_tests.support.tardis_files import DAY, REAL, SCALE, SPOT, needs_real


def read_incremental_book_l2(
    path: Path, day: dt.date, scratch: Path, exchange: str | None = None, symbol: str | None = None
) -> tuple[pl.DataFrame, MessageHeads]:
    """The whole L2 file as one frame, and its messages (written under `scratch`)."""
    writer = MessageHeadsWriter(scratch)
    deltas = pl.concat(iter_incremental_book_l2(path, day, writer, exchange, symbol))
    return deltas, writer.finish()


def read_book_snapshot_25(path: Path, day: dt.date, messages: MessageHeads, *names: str) -> pl.DataFrame:
    return pl.concat(iter_book_snapshot_25(path, day, messages, *names))


def read_trades(path: Path, *names: str) -> pl.DataFrame:
    return pl.concat(iter_trades(path, *names))


DAY_US = int(dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000
BASE = (DAY - dt.date(1970, 1, 1)).days * SEQUENCE_DAY_STRIDE


# ---------------------------------------------------------------------------------------
# Real sample files (third-party rows, read in place)
# ---------------------------------------------------------------------------------------


@needs_real
def test_real_incremental_book_l2_sample(tmp_path):
    path = REAL / "tardis_deribit_incremental_book_L2_BTC-PERPETUAL.csv"
    day = dt.date(2020, 4, 1)
    deltas, messages = read_incremental_book_l2(path, day, tmp_path, "deribit", "BTC-PERPETUAL")
    assert deltas.schema == pl.Schema({**BOOK_DELTA_SCHEMA, "is_snapshot": pl.Boolean()})
    assert deltas.height == 15
    first = deltas.row(0, named=True)
    assert first == {
        "origin_time": 1585699200245000 * 1000,
        "received_time": 1585699200355684 * 1000,
        "sequence_number": (day - dt.date(1970, 1, 1)).days * SEQUENCE_DAY_STRIDE + 1,
        "side_is_bid": False,
        "price": 6421.5,
        "size": 18640.0,
        "is_snapshot": True,
    }
    assert deltas.row(14, named=True)["price"] == 6428.5 and deltas.row(14, named=True)["size"] == 39950.0
    # All 15 rows share both timestamps: one message, the day's opening snapshot.
    assert deltas["sequence_number"].n_unique() == 1 and deltas["is_snapshot"].all()
    assert messages.count == 1


@needs_real
def test_real_book_snapshot_25_sample():
    path = REAL / "tardis_binance-futures_book_snapshot_25_BTCUSDT.csv"
    day = dt.date(2020, 9, 1)
    book = read_book_snapshot_25(path, day, MessageHeads.empty(), "binance-futures", "BTCUSDT")
    assert book.schema == pl.Schema(BOOK_SCHEMA)  # 20 levels a side; levels 20-24 are not kept
    assert book.height == 10
    first = book.row(0, named=True)
    assert (first["origin_time"], first["received_time"]) == (1598918403696000 * 1000, 1598918403810979 * 1000)
    assert (first["ask_0_price"], first["ask_0_size"], first["bid_0_price"], first["bid_0_size"]) == (
        11657.08,
        1.714,
        11657.07,
        10.896,
    )
    assert (first["ask_1_price"], first["ask_1_size"], first["bid_1_price"], first["bid_1_size"]) == (
        11657.54,
        5.4,
        11656.97,
        0.2,
    )
    assert (first["ask_19_price"], first["ask_19_size"], first["bid_19_price"], first["bid_19_size"]) == (
        11659.13,
        0.11,
        11653.4,
        0.17,
    )
    # No delta messages given: every snapshot sits before the day's first message.
    assert book["sequence_number"].unique().to_list() == [(day - dt.date(1970, 1, 1)).days * SEQUENCE_DAY_STRIDE]
    assert book.row(9, named=True)["received_time"] == 1598918404009468 * 1000


@needs_real
def test_real_trades_sample():
    trades = read_trades(REAL / "tardis_bitmex_trades_XBTUSD.csv", "bitmex", "XBTUSD")
    assert trades.schema == pl.Schema(TRADES_SCHEMA)
    assert trades.height == 10
    assert trades.row(0, named=True) == {
        "origin_time": 1583020803145000 * 1000,
        "received_time": 1583020803307160 * 1000,
        "side": "sell",
        "price": 8531.5,
        "quantity": 2152.0,
        "trade_id": "ccc3c1fa-212c-e8b0-1706-9b9c4f3d5ecf",
    }
    assert trades.row(9, named=True)["trade_id"] == "7cae8d7b-b69d-025b-cc3c-84b911f37a8a"


@needs_real
def test_a_wrong_exchange_in_the_rows_is_named():
    with pytest.raises(TardisFormatError, match=r"line 2: exchange is not 'binance'"):
        read_trades(REAL / "tardis_bitmex_trades_XBTUSD.csv", "binance", "XBTUSD")


# ---------------------------------------------------------------------------------------
# Mapping: messages, sequence numbers, snapshot alignment
# ---------------------------------------------------------------------------------------


def _csv(path: Path, header: list[str], rows: list[list[object]], compress: bool = True) -> Path:
    text = ",".join(header) + "\n" + "".join(",".join("" if v is None else str(v) for v in r) + "\n" for r in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _l2_rows(exchange: str = "binance", symbol: str = "BTCUSDT") -> list[list[object]]:
    """Opening snapshot (2 rows), two updates in one message, one update, then a new snapshot block."""
    t = DAY_US
    return [
        [exchange, symbol, t, t + 5, "true", "bid", "100.00", "1.5"],
        [exchange, symbol, t, t + 5, "true", "ask", "100.02", "2"],
        [exchange, symbol, t + 10, t + 20, "false", "bid", "100.01", "0.5"],
        [exchange, symbol, t + 10, t + 20, "false", "bid", "100.00", "0"],
        [exchange, symbol, t + 30, t + 40, "false", "ask", "100.03", "1"],
        [exchange, symbol, t + 50, t + 60, "true", "bid", "99.00", "3"],
        [exchange, symbol, t + 50, t + 60, "true", "ask", "99.50", "4"],
    ]


def _snapshot_row(
    t: int, local: int, bid: tuple[str, str], ask: tuple[str, str], exchange: str = "binance", symbol: str = "BTCUSDT"
) -> list[object]:
    row: list[object] = [exchange, symbol, t, local]
    for i in range(25):
        row += [*(ask if i == 0 else (None, None)), *(bid if i == 0 else (None, None))]
    return row


def test_messages_and_sequence_numbers(tmp_path):
    path = _csv(tmp_path / "binance_incremental_book_L2_2024-03-01_BTCUSDT.csv.gz", L2_COLUMNS, _l2_rows())
    deltas, messages = read_incremental_book_l2(path, DAY, tmp_path, "binance", "BTCUSDT")
    # Rows sharing (local_timestamp, timestamp, is_snapshot), in file order, form one message.
    assert deltas["sequence_number"].to_list() == [BASE + n for n in (1, 1, 2, 2, 3, 4, 4)]
    assert deltas["is_snapshot"].to_list() == [True, True, False, False, False, True, True]
    assert deltas["side_is_bid"].to_list() == [True, False, True, True, False, True, False]
    assert deltas["size"].to_list() == [1.5, 2.0, 0.5, 0.0, 1.0, 3.0, 4.0]
    assert deltas["received_time"][2] == (DAY_US + 20) * 1000 and deltas["origin_time"][2] == (DAY_US + 10) * 1000
    # Four messages, received at these local times: a snapshot stamped like message n gets its number.
    assert messages.count == 4
    local, stamp = np.array([DAY_US + d for d in (5, 20, 40, 60)]), np.array([DAY_US + d for d in (0, 10, 30, 50)])
    assert list(messages.sequence(local, stamp, BASE)) == [BASE + n for n in (1, 2, 3, 4)]


def test_snapshot_sequence_is_the_last_message_at_or_before_its_local_timestamp():
    # Messages 1-4 (base + 1, ...): their running maximum of local_timestamp, and timestamp.
    msg_local = np.array([10, 20, 20, 30], np.int64)
    msg_time = np.array([5, 15, 17, 25], np.int64)
    local = np.array([9, 10, 15, 20, 20, 20, 35], np.int64)
    stamp = np.array([9, 5, 12, 15, 17, 16, 30], np.int64)
    # Before the first message: the day's base; a tie on local_timestamp: the last message whose
    # exchange timestamp is not later than the snapshot's.
    assert list(snapshot_sequence(msg_local, msg_time, local, stamp, 100)) == [100, 101, 101, 102, 103, 102, 104]


def test_a_snapshot_block_after_updates_replaces_the_book(tmp_path):
    """Through the lake replay: the second is_snapshot block discards the levels before it."""
    from market_pipeline.core.book.rebuild import Grid, rebuild_day

    l2 = _csv(tmp_path / "l2.csv.gz", L2_COLUMNS, _l2_rows())
    t = DAY_US
    snaps = _csv(
        tmp_path / "snap.csv.gz",
        snapshot_columns(),
        [
            _snapshot_row(t + 10, t + 20, ("100.01", "0.5"), ("100.02", "2")),  # after message 2
            _snapshot_row(t + 50, t + 60, ("99.00", "3"), ("99.50", "4")),  # after message 4
        ],
    )
    deltas, messages = read_incremental_book_l2(l2, DAY, tmp_path)
    book = read_book_snapshot_25(snaps, DAY, messages)
    assert book["sequence_number"].to_list() == [BASE + 2, BASE + 4]
    deltas.write_parquet(tmp_path / "deltas.parquet")
    book.write_parquet(tmp_path / "book.parquet")
    out = tmp_path / "books.parquet"
    result = rebuild_day(
        tmp_path / "deltas.parquet",
        tmp_path / "book.parquet",
        out,
        None,
        tmp_path / "ckpt.parquet",
        Grid(Decimal("0.01"), Decimal("0.00001")),
        DAY,
        contiguous=False,
        depth=2,
        interval_ms=0,
    )
    c = result.counters
    assert (c["vendor_snapshots"], c["vendor_snapshots_matched"], c["divergences"]) == (2, 2, 0)
    last = pl.read_parquet(out).filter(pl.col("trigger") == "snapshot").row(-1, named=True)
    # Without the clear, ask 100.02 and 100.03 would still rest above the new bid of 99.
    assert (float(last["bid_0_price"]), float(last["ask_0_price"])) == (99.0, 99.5)
    assert last["ask_1_price"] is None and last["bid_1_price"] is None


# ---------------------------------------------------------------------------------------
# Names and settings
# ---------------------------------------------------------------------------------------


def test_instruments_keep_their_names():
    assert default_symbol("BTC-USDT-PERP") == "BTCUSDT" and default_symbol("BTC-USDT") == "BTCUSDT"
    assert tardis_names("BINANCE_FUTURES", "BTC-USDT-PERP", DEFAULT_EXCHANGES, {}) == ("binance-futures", "BTCUSDT")
    override = {"BINANCE_DELIVERY:BTC-USD-PERP": "BTCUSD_PERP"}
    assert tardis_names("BINANCE_DELIVERY", "BTC-USD-PERP", DEFAULT_EXCHANGES, override) == (
        "binance-delivery",
        "BTCUSD_PERP",
    )
    with pytest.raises(ValueError, match="no Tardis exchange id for COINBASE"):
        tardis_names("COINBASE", "BTC-USD", DEFAULT_EXCHANGES, {})


@pytest.mark.parametrize(
    ("instrument", "names"),
    [
        ("OKX:BTC-USDT", ("okex", "BTC-USDT")),
        ("OKX:BTC-USDT-PERP", ("okex-swap", "BTC-USDT-SWAP")),
        ("OKX:BTC-USD-PERP", ("okex-swap", "BTC-USD-SWAP")),
        ("OKX:BTC-USD-251226", ("okex-futures", "BTC-USD-251226")),
        ("BYBIT:BTC-USDT", ("bybit-spot", "BTCUSDT")),
        ("BYBIT:BTC-USDT-PERP", ("bybit", "BTCUSDT")),
        ("BYBIT:BTC-USD-PERP", ("bybit", "BTCUSD")),  # Bybit's inverse perpetual
        ("KRAKEN:BTC-USD", ("kraken", "BTC-USD")),  # Kraken's v2 BTC/USD as the tardis-dev client names files
        ("KRAKEN:ETH-BTC", ("kraken", "ETH-BTC")),
    ],
)
def test_okx_bybit_and_kraken_instruments_get_tardis_market_ids(instrument, names):
    exchange, _, symbol = instrument.partition(":")
    assert tardis_names(exchange, symbol, DEFAULT_EXCHANGES, {}) == names


def test_settings_need_the_directory_and_an_exchange_id(monkeypatch, tmp_path):
    from market_pipeline.settings import SettingsError, load_settings
    from market_pipeline.vendors.registry import get_vendor

    monkeypatch.setenv("PIPELINE_SOURCE", "tardis")
    with pytest.raises(SettingsError, match="PIPELINE_SOURCE=tardis needs PIPELINE_TARDIS_DIR"):
        load_settings()
    monkeypatch.setenv("PIPELINE_TARDIS_DIR", str(tmp_path / "absent"))
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", "BINANCE:BTC-USDT,COINBASE:BTC-USD")
    with pytest.raises(SettingsError, match="PIPELINE_TARDIS_EXCHANGES: no Tardis exchange id for COINBASE"):
        load_settings()
    # Environment maps merge over config.yaml's.
    monkeypatch.setenv("PIPELINE_TARDIS_EXCHANGES", '{"COINBASE": "coinbase"}')
    monkeypatch.setenv("PIPELINE_TARDIS_SYMBOLS", '{"COINBASE:BTC-USD": "BTC-USD"}')
    settings = load_settings()
    assert settings.tardis_exchanges == {**DEFAULT_EXCHANGES, "COINBASE": "coinbase"}
    vendor = get_vendor("tardis")
    absent = (tmp_path / "absent").resolve()
    assert vendor.environment(settings) == [f"PIPELINE_TARDIS_DIR: {absent} is not an existing directory"]
    assert "coinbase" in vendor.describe(settings)
    source = vendor.build(settings)
    coinbase = next(i for i in settings.universe if i.exchange == "COINBASE")
    assert source.names(coinbase) == ("coinbase", "BTC-USD")


# ---------------------------------------------------------------------------------------
# The source: days, cache, quarantine
# ---------------------------------------------------------------------------------------


def _good_day(directory: Path, day: dt.date = DAY, with_snapshots: bool = True) -> None:
    offset = int((day - DAY).days) * 86_400_000_000
    rows = [[*r[:2], r[2] + offset, r[3] + offset, *r[4:]] for r in _l2_rows()]
    _csv(directory / f"binance_incremental_book_L2_{day}_BTCUSDT.csv.gz", L2_COLUMNS, rows)
    if with_snapshots:
        t = DAY_US + offset
        _csv(
            directory / f"binance_book_snapshot_25_{day}_BTCUSDT.csv.gz",
            snapshot_columns(),
            [_snapshot_row(t + 10, t + 20, ("100.01", "0.5"), ("100.02", "2"))],
        )
    _csv(
        directory / f"binance_trades_{day}_BTCUSDT.csv.gz",
        TRADES_COLUMNS,
        [["binance", "BTCUSDT", DAY_US + offset + 7, DAY_US + offset + 9, 12345, "buy", "100.02", "0.25"]],
    )


@pytest.fixture
def tardis_dir(tmp_path) -> Path:
    path = tmp_path / "tardis"
    path.mkdir()
    return path


def _source(tardis_dir: Path, tmp_path: Path) -> TardisSource:
    return TardisSource(
        tardis_dir, tmp_path / "data" / "sources" / "tardis", tmp_path / "data" / "lake", DEFAULT_EXCHANGES, {}
    )


def test_days_tables_and_cache(tardis_dir, tmp_path, progress_tasks):
    _good_day(tardis_dir)
    # A second day in the nested layout, without book snapshots: an empty book table.
    nested = tmp_path / "nested"
    _good_day(nested, DAY + dt.timedelta(days=1), with_snapshots=False)
    for data_type in ("incremental_book_L2", "trades"):
        source_file = next(nested.glob(f"binance_{data_type}_*"))
        target = tardis_dir / "binance" / data_type / source_file.name.split(f"{data_type}_")[1]
        target.parent.mkdir(parents=True, exist_ok=True)
        source_file.rename(target)
    source = _source(tardis_dir, tmp_path)
    days = [DAY, DAY + dt.timedelta(days=1)]
    assert source.available_days("book_delta_v2", SPOT) == days
    assert source.available_days("trades", SPOT) == days
    assert source.sequence_semantics(SPOT) == "monotonic"

    deltas = pl.read_parquet(source.fetch("book_delta_v2", SPOT, DAY))
    assert deltas.height == 7 and "is_snapshot" in deltas.columns
    reading = f"reading the Tardis files of {DAY} {SPOT.key}"
    assert progress_tasks == [(reading, False), (reading, True)]  # the CLI says what the step waits for
    book = pl.read_parquet(source.fetch("book", SPOT, DAY))
    assert progress_tasks == [(reading, False), (reading, True)]  # the day is cached now
    assert book["sequence_number"].to_list() == [BASE + 2]
    trades = pl.read_parquet(source.fetch("trades", SPOT, DAY))
    assert trades["trade_id"].to_list() == ["12345"]
    assert source.served_by[("trades", SPOT.key, DAY)] == "binance_trades_2024-03-01_BTCUSDT.csv.gz"

    second = DAY + dt.timedelta(days=1)
    assert pl.read_parquet(source.fetch("book", SPOT, second)).height == 0  # no snapshots that day
    assert pl.read_parquet(source.fetch("book_delta_v2", SPOT, second))["sequence_number"][0] == (
        BASE + SEQUENCE_DAY_STRIDE + 1
    )  # grows across days

    with pytest.raises(DayNotCovered, match="no binance_incremental_book_L2_2024-03-05_BTCUSDT.csv.gz"):
        source.fetch("book_delta_v2", SPOT, dt.date(2024, 3, 5))
    with pytest.raises(DayNotCovered):
        source.fetch("book", SPOT, dt.date(2024, 3, 5))

    # The cache is reused until a file changes; a new source instance (another process) reads it too.
    manifest = source._manifest_path(SPOT, DAY)
    stamp = manifest.stat().st_mtime_ns
    _source(tardis_dir, tmp_path).fetch("trades", SPOT, DAY)
    assert manifest.stat().st_mtime_ns == stamp
    _csv(
        tardis_dir / "binance_trades_2024-03-01_BTCUSDT.csv.gz",
        TRADES_COLUMNS,
        [["binance", "BTCUSDT", DAY_US + 7, DAY_US + 9, 777, "sell", "100.02", "1"]] * 2,
    )
    assert pl.read_parquet(source.fetch("trades", SPOT, DAY))["trade_id"].to_list() == ["777", "777"]


def _bad_header(path: Path) -> tuple[Path, str]:
    header = [c for c in L2_COLUMNS if c != "amount"]
    return _csv(path, header, [r[:-1] for r in _l2_rows()]), r"missing column\(s\) \['amount'\]"


def _unparsable(path: Path) -> tuple[Path, str]:
    rows = _l2_rows()
    rows[3][6] = "100.0x"
    return _csv(path, L2_COLUMNS, rows), r"line 5: column 'price': '100.0x' is not a number"


def _truncated(path: Path) -> tuple[Path, str]:
    _csv(path, L2_COLUMNS, _l2_rows() * 200)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "truncated or corrupt gzip"


def _nan_price(path: Path) -> tuple[Path, str]:
    rows = _l2_rows()
    rows[4][6] = "NaN"
    return _csv(path, L2_COLUMNS, rows), "line 6: price is NaN, infinite or not positive"


def _negative_price(path: Path) -> tuple[Path, str]:
    rows = _l2_rows()
    rows[2][6] = "-100.01"
    return _csv(path, L2_COLUMNS, rows), "line 4: price is NaN, infinite or not positive"


def _short_row(path: Path) -> tuple[Path, str]:
    rows = _l2_rows()
    rows[5] = rows[5][:6]
    return _csv(path, L2_COLUMNS, rows), "line 7: 6 fields where the header has 8"


@pytest.mark.parametrize("damage", [_bad_header, _unparsable, _truncated, _nan_price, _negative_price, _short_row])
def test_a_bad_l2_file_is_quarantined_and_named_and_good_files_still_served(tardis_dir, tmp_path, damage):
    _good_day(tardis_dir)
    name = "binance_incremental_book_L2_2024-03-01_BTCUSDT.csv.gz"
    bad, message = damage(tardis_dir / name)
    source = _source(tardis_dir, tmp_path)
    for table in ("book_delta_v2", "book"):  # the book's sequence numbers come from the L2 file
        with pytest.raises(TardisRejected, match=message) as caught:
            source.fetch(table, SPOT, DAY)
        assert str(bad) in str(caught.value)
    assert pl.read_parquet(source.fetch("trades", SPOT, DAY)).height == 1  # good files are served
    quarantined = tmp_path / "data" / "lake" / "quarantine" / "tardis" / name
    assert quarantined.read_bytes() == bad.read_bytes()
    reason = json.loads(quarantined.with_name(name + ".reason.json").read_text())
    assert reason["path"] == str(bad) and reason["data_type"] == "incremental_book_L2"
    assert reason["instrument"] == SPOT.key and reason["dt"] == DAY.isoformat()


def test_a_bad_snapshot_or_trades_file_rejects_only_its_table(tardis_dir, tmp_path):
    _good_day(tardis_dir)
    t = DAY_US
    _csv(
        tardis_dir / "binance_book_snapshot_25_2024-03-01_BTCUSDT.csv.gz",
        snapshot_columns(),
        [_snapshot_row(t + 10, t + 20, ("100.01", "-0.5"), ("100.02", "2"))],
    )
    _csv(
        tardis_dir / "binance_trades_2024-03-01_BTCUSDT.csv",
        TRADES_COLUMNS,  # plain CSV, found too
        [["binance", "BTCUSDT", t + 7, t + 9, 1, "buy", "100.02", "0.25"]],
        compress=False,
    )
    (tardis_dir / "binance_trades_2024-03-01_BTCUSDT.csv.gz").unlink()
    raw = (tardis_dir / "binance_trades_2024-03-01_BTCUSDT.csv").read_bytes()
    (tardis_dir / "binance_trades_2024-03-01_BTCUSDT.csv").write_bytes(raw[:-5])  # cut short
    source = _source(tardis_dir, tmp_path)
    with pytest.raises(TardisRejected, match=r"line 2: bids\[0\].amount is NaN, infinite or negative"):
        source.fetch("book", SPOT, DAY)
    with pytest.raises(TardisRejected, match="does not end with a newline"):
        source.fetch("trades", SPOT, DAY)
    assert pl.read_parquet(source.fetch("book_delta_v2", SPOT, DAY)).height == 7
    assert source.locate(SPOT, DAY)["trades"].name == "binance_trades_2024-03-01_BTCUSDT.csv"


def _trades_at(path: Path, times_us: list[int]) -> None:
    rows = [["binance", "BTCUSDT", t, t + 2, 100 + i, "buy", "100.02", "0.25"] for i, t in enumerate(times_us)]
    _csv(path, TRADES_COLUMNS, rows)


def _tardis_settings(monkeypatch, tardis_dir: Path, tmp_path: Path):
    """The pipeline's settings for SPOT from `tardis_dir`, with a data dir under `tmp_path`."""
    from market_pipeline.settings import load_settings

    for name, value in {
        "PIPELINE_SOURCE": "tardis",
        "PIPELINE_TARDIS_DIR": str(tardis_dir),
        "PIPELINE_DATA_DIR": str(tmp_path / "data"),
        "PIPELINE_INSTRUMENTS": SPOT.key,
        "PIPELINE_START_DATE": "2024-01-01",
    }.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def test_bad_input_is_named_by_the_users_tardis_file_not_the_converted_copy(tardis_dir, tmp_path, monkeypatch):
    """Issue 36, item 6: the import checks the converted copy under sources/tardis/tables, but its
    messages, the quarantine's reason and the rejected rows name the Tardis file the user gave."""
    from market_pipeline.core.lake.paths import quarantine_dir
    from market_pipeline.defs.common.importer import PartitionRejected, import_partition
    from market_pipeline.vendors.registry import build_source

    settings = _tardis_settings(monkeypatch, tardis_dir, tmp_path)
    trades = tardis_dir / "binance_trades_2024-03-01_BTCUSDT.csv.gz"
    hour = 3_600_000_000
    # One row two days on: quarantined as a row, named by the user's file.
    _trades_at(trades, [DAY_US + 7, DAY_US + hour, DAY_US + 2 * 24 * hour])
    stats = import_partition(build_source(settings), settings, "trades", SPOT, DAY, "run-1")
    assert stats.rows == 2 and stats.quarantined_rows == 1
    where = quarantine_dir(settings.lake_dir) / "trades" / "exchange=BINANCE" / "symbol=BTC-USDT" / f"dt={DAY}"
    assert pl.read_parquet(where / "rejected_rows.parquet")["_source_file"].to_list() == [str(trades)]

    # The next day's trades saved under this day's name: refused whole, naming that file.
    _trades_at(trades, [DAY_US + 24 * hour + n * hour for n in range(1, 5)])
    with pytest.raises(PartitionRejected) as info:
        import_partition(build_source(settings), settings, "trades", SPOT, DAY, "run-2")
    message = str(info.value)
    assert message.startswith(f"trades {SPOT.key} {DAY}: {trades}: 4 of 4 rows lie outside {DAY} (UTC)")
    assert "sources/tardis" not in message and "data.parquet" not in message
    reason = json.loads((where / "data.parquet.reason.json").read_text())
    assert reason["source_file"] == str(trades)
    assert "sources/tardis/tables/trades" in reason["checked_copy"]


def test_the_cached_tables_become_the_partitions_by_a_link(tardis_dir, tmp_path, monkeypatch):
    """A good day's cached tables are already raw partitions: the import links each into the lake
    (one file, two names) instead of encoding it again, with every row it converted."""
    from market_pipeline.defs.common.importer import import_partition
    from market_pipeline.vendors.registry import build_source

    _good_day(tardis_dir)
    settings = _tardis_settings(monkeypatch, tardis_dir, tmp_path)
    source = build_source(settings)
    for table in ("book_delta_v2", "book", "trades"):
        stats = import_partition(source, settings, table, SPOT, DAY, "run-1")
        (cached,) = source.fetch(table, SPOT, DAY)
        assert stats.path.samefile(cached) and stats.rows == pl.read_parquet(cached).height > 0


# ---------------------------------------------------------------------------------------
# Synthetic days in Tardis format: rebuilds equal the ground truth
# ---------------------------------------------------------------------------------------


def _assert_books_equal_truth(books_path: Path, truth_path: Path) -> int:
    books = pl.read_parquet(books_path).filter(pl.col("trigger") == "snapshot")
    # The synthetic vendor snapshots every 100 ms; Tardis has one snapshot per update it follows.
    truth = pl.read_parquet(truth_path).unique("sequence_number", keep="first", maintain_order=True)
    assert books.height == truth.height > 1000
    for side in ("bid", "ask"):
        for i in range(20):
            for field in ("price", "size"):
                name = f"{side}_{i}_{field}"
                ours = books[name].cast(pl.Float64).fill_null(-1.0).to_numpy()
                want = truth[name].fill_null(-1.0).to_numpy()
                assert np.array_equal(ours, want), name
    assert books["synced"].all()
    return books.height


def test_synthetic_day_in_tardis_format(synthetic_tardis):
    instrument, day = synthetic_tardis["days"]["BINANCE_FUTURES:BTC-USDT-PERP"]
    l2 = day.files["incremental_book_L2"]
    assert l2.name == "binance-futures_incremental_book_L2_2024-03-01_BTCUSDT.csv.gz"
    with gzip.open(l2, "rt") as fh:
        assert fh.readline().rstrip("\n").split(",") == L2_COLUMNS
    deltas = pl.read_csv(l2, schema_overrides={"timestamp": pl.Int64, "local_timestamp": pl.Int64})
    opening = deltas.filter(pl.col("is_snapshot"))
    # The day opens with the whole book as one is_snapshot block at midnight, and only then.
    assert opening.height > 100 and opening["timestamp"].max() == DAY_US
    assert deltas.head(opening.height)["is_snapshot"].all()
    with gzip.open(day.files["book_snapshot_25"], "rt") as fh:
        assert fh.readline().rstrip("\n").split(",") == snapshot_columns()


def test_rebuild_from_tardis_files_equals_ground_truth(synthetic_tardis, tmp_path):
    from market_pipeline.vendors.base import BookDay

    source = TardisSource(synthetic_tardis["dir"], tmp_path / "cache", tmp_path / "lake", DEFAULT_EXCHANGES, {})
    instrument, day = synthetic_tardis["days"]["BINANCE:BTC-USDT"]
    for table in ("book_delta_v2", "book"):
        target = (
            tmp_path
            / "lake"
            / "raw"
            / table
            / f"exchange={instrument.exchange}"
            / f"symbol={instrument.symbol}"
            / f"dt={DAY}"
            / PARTITION_FILE
        )
        target.parent.mkdir(parents=True)
        target.write_bytes(source.fetch(table, instrument, DAY)[0].read_bytes())
    result = source.rebuild_books(BookDay(tmp_path / "lake", instrument, DAY, 20, 100))
    c = result.counters
    assert c["vendor_snapshots"] == c["vendor_snapshots_matched"] and c["fills"] == 0 and c["divergences"] == 0
    books = books_partition_dir(tmp_path / "lake", instrument.exchange, instrument.symbol, DAY) / PARTITION_FILE
    assert _assert_books_equal_truth(books, day.truth_book_path) == c["vendor_snapshots"]


@pytest.mark.graph
def test_cli_runs_the_whole_graph_on_tardis_files(synthetic_tardis, monkeypatch, tmp_path, dagster_home, capsys):
    """`PIPELINE_SOURCE=tardis market-pipeline run`: every asset of the day, books equal to the truth."""
    import dagster as dg
    import duckdb

    from market_pipeline.cli.main import main
    from market_pipeline.definitions import build_definitions
    from market_pipeline.settings import load_settings

    data = tmp_path / "data"
    monkeypatch.setenv("PIPELINE_SOURCE", "tardis")
    monkeypatch.setenv("PIPELINE_TARDIS_DIR", str(synthetic_tardis["dir"]))
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(data))
    monkeypatch.setenv("PIPELINE_START_DATE", DAY.isoformat())
    monkeypatch.setenv("PIPELINE_SYNTHETIC__SCALE", SCALE)

    code = main(["run", "--start-date", DAY.isoformat(), "--end-date", DAY.isoformat()])

    out, err = capsys.readouterr()
    assert code == 0, out + err
    checks = re.search(r"Asset checks: (\d+) failed, (\d+) passed", out)
    assert checks is not None and int(checks[1]) == 0 and int(checks[2]) >= 6, out
    settings = load_settings()
    keys = build_definitions(settings).resolve_asset_graph().materializable_asset_keys
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
        assert run.is_success
        unmaterialized = [k.to_user_string() for k in keys if instance.get_latest_materialization_event(k) is None]
    assert unmaterialized == []
    for instrument, day in synthetic_tardis["days"].values():
        books = books_partition_dir(settings.lake_dir, instrument.exchange, instrument.symbol, DAY) / PARTITION_FILE
        _assert_books_equal_truth(books, day.truth_book_path)
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
        validated = con.sql("SELECT dt::VARCHAR, exchange FROM validation_reports ORDER BY ALL").fetchall()
    assert validated == [(DAY.isoformat(), "BINANCE"), (DAY.isoformat(), "BINANCE_FUTURES")]
