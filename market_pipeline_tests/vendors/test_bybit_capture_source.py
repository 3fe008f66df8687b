"""`bybit_capture`: Bybit captures as lake tables (book_delta_v2 by `seq` with Bybit's `u` chain as
`prev_update_id`, book, book_ticker from `orderbook.1`, trades), read in chunks, and the book core's
generic replay of them (a `u` = 1 restart and a reconnect resync it), against the exact ground
truth of the synthetic Bybit captures of support/bybit_captures."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest

from market_pipeline.core.day_clock import NS_PER_HOUR
from market_pipeline.core.instruments import Instrument, InstrumentSpec
from market_pipeline.core.quality.chain import CHAIN_COLUMNS, chain_breaks
from market_pipeline.vendors.binance.source import BinanceCaptureSource
from market_pipeline.vendors.bybit.capture_tables import BybitCaptureParser, lake_symbol
from market_pipeline.vendors.bybit.source import BybitCaptureSource, named_instrument
from market_pipeline.vendors.capture_source import CaptureRejected
from market_pipeline.vendors.okx.source import OkxCaptureSource
from market_pipeline_tests.support import bybit_captures as bc
from market_pipeline_tests.support.capture_truth import (
    BREAK_THEN_RECONNECT,
    LINES_AN_HOUR,
    check_break_then_reconnect,
    level_at,
    rebuild_messages,
    restamped,
)
from market_pipeline_tests.support.kraken_captures import write_capture

MESSAGES = 120
DAY = dt.date(2025, 11, 24)
NAME = "bybit_linear_btcusdt_20251124.gz"
PERP = Instrument(
    exchange="BYBIT",
    symbol="BTC-USDT-PERP",
    spec=InstrumentSpec(tick_size=Decimal("0.01"), lot_size=Decimal("0.001")),
)
TS_NS = 1_763_942_400_000 * 1_000_000  # the rendered messages' ts (ms) in ns


@pytest.fixture(scope="module")
def walk():
    return bc.walk(MESSAGES)


def _source(tmp_path, cls=BybitCaptureSource):
    return cls(tmp_path / "captures", tmp_path / "cache", tmp_path / "lake")


def _write(tmp_path, lines, name=NAME):
    path = tmp_path / "captures" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_capture(path, lines)


def _table(source, table):
    (path,) = source.fetch(table, PERP, DAY)
    return pl.read_parquet(path)


def _float_levels(changes):
    return [(float(bc.price_text(p)), float(bc.size_text(q))) for p, q in changes]


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("bybit_linear_btcusdt_20251124.gz", "BYBIT:BTC-USDT-PERP"),
        ("bybit_spot_btcusdt_20251124.gz.enc", "BYBIT:BTC-USDT"),
        ("bybit_inverse_btcusd_20251124.gz", "BYBIT:BTC-USD-PERP"),
        ("bybit_linear_btcperp_20251124.gz", "BYBIT:BTC-USDC-PERP"),
        ("bybit_inverse_btcusdt_20251124.gz", None),  # an inverse contract is quoted in USD
        ("bybit_futures_btcusdt_20251124.gz", None),  # not a Bybit category
        ("okx_spot_btc-usdt_20251124.gz", None),
    ],
)
def test_file_names_give_the_lake_instrument_in_crypto_lakes_spelling(tmp_path, name, key):
    assert named_instrument(tmp_path / name) == key


def test_lake_symbols_follow_crypto_lake():
    assert [lake_symbol(c, s) for c, s in (("spot", "ETHBTC"), ("linear", "solusdc"), ("inverse", "ETHUSD"))] == [
        "ETH-BTC",
        "SOL-USDC-PERP",
        "ETH-USD-PERP",
    ]
    with pytest.raises(ValueError, match="BTCUSDZ25 .inverse. is not an inverse perpetual"):
        lake_symbol("inverse", "BTCUSDZ25")  # a dated contract


def test_tables_hold_every_message_exactly_with_bybit_ids(tmp_path, walk):
    rendered = bc.render(walk)
    _write(tmp_path, rendered.lines)
    source = _source(tmp_path)
    assert source.available_days("book_delta_v2", PERP) == [DAY]

    deltas = _table(source, "book_delta_v2")
    snapshot = deltas.filter(pl.col("is_snapshot"))
    first_bids = sorted(walk.first_view[0].items(), reverse=True)
    first_asks = sorted(walk.first_view[1].items())
    assert snapshot["sequence_number"].unique().to_list() == [walk.first_seq]
    assert snapshot["prev_update_id"].null_count() == snapshot.height
    assert list(zip(snapshot["price"], snapshot["size"], strict=True)) == _float_levels(first_bids + first_asks)
    updates = deltas.filter(~pl.col("is_snapshot"))
    expected = [
        (m.seq, prev, is_bid, price, size)  # seq, and the chain: the seq of the message before
        for m, prev in zip(walk.messages, [walk.first_seq] + [m.seq for m in walk.messages], strict=False)
        for is_bid, changes in ((True, m.bids), (False, m.asks))
        for price, size in _float_levels(changes)
    ]
    assert updates.select("sequence_number", "prev_update_id", "side_is_bid", "price", "size").rows() == expected
    assert (deltas["first_update_id"] == deltas["sequence_number"]).all()
    assert (deltas["origin_time"] == TS_NS).all()  # Bybit's ts (ms) in ns
    assert deltas["line_no"].is_sorted() and deltas["received_time"].is_sorted()

    quotes = [q for m in walk.messages for q in m.quotes if q.bid and q.ask]
    tickers = _table(source, "book_ticker")
    assert tickers.height == len(quotes) > 0
    assert tickers["update_id"].to_list() == [q.seq for q in quotes]  # orderbook.1's seq, not its u
    assert tickers.select("bid_price", "bid_size").rows() == _float_levels([q.bid for q in quotes])
    assert tickers.select("ask_price", "ask_size").rows() == _float_levels([q.ask for q in quotes])

    book = _table(source, "book")
    assert book["sequence_number"].to_list() == [walk.first_seq]
    assert book.select("bid_0_price", "bid_0_size").row(0) == _float_levels(first_bids[:1])[0]
    assert book.select("ask_19_price", "ask_19_size").row(0) == _float_levels(first_asks[19:20])[0]

    trades = _table(source, "trades")
    assert trades.height == rendered.trades > 0
    assert set(trades.select("origin_time", "trade_id", "side", "price", "quantity").rows()) == {
        (1_763_942_400_099_000_000, "0bf3a2b9", "buy", 61415.1, 0.001)
    }


def test_chunks_of_a_few_lines_give_the_same_tables(tmp_path, walk):
    path = _write(tmp_path, bc.render(walk).lines)
    whole = list(BybitCaptureParser([path]).chunks())
    small = list(BybitCaptureParser([path], chunk_lines=7).chunks())
    assert len(whole) == 1 and len(small) > 10
    for table in whole[0]:
        assert pl.concat([c[table] for c in small]).equals(whole[0][table])


def test_a_dropped_delta_breaks_the_chain_the_quality_check_follows(tmp_path, walk):
    lost = 40
    _write(tmp_path, bc.render(walk, drop=lost).lines)
    deltas = _table(_source(tmp_path), "book_delta_v2")
    breaks = chain_breaks([deltas.select(CHAIN_COLUMNS)])
    assert breaks["sequence_number"].to_list() == [walk.messages[lost + 1].seq]
    assert breaks["previous_sequence_number"].to_list() == [walk.messages[lost - 1].seq]


@pytest.mark.parametrize("lost", [0, 1])
def test_the_chain_goes_on_across_the_recorders_hourly_files(tmp_path, walk, lost):
    # The recorder writes a file an hour, the next one starting with a delta, not a snapshot; a
    # file starting with a message lost (`lost`) is a break there.
    lines = bc.render(walk).lines
    cut = bc.render(walk).message_lines[MESSAGES // 2]  # the 1-based line of a delta
    _write(tmp_path, lines[: cut - 1], name=f"20251124T00/{NAME}")
    _write(tmp_path, lines[cut - 1 + lost :], name=f"20251124T01/{NAME}")
    deltas = _table(_source(tmp_path), "book_delta_v2")
    breaks = chain_breaks([deltas.select(CHAIN_COLUMNS)])
    assert breaks["sequence_number"].to_list() == ([walk.messages[MESSAGES // 2 + 1].seq] if lost else [])


def test_the_generic_replay_rebuilds_the_exchanges_book_after_every_message(tmp_path, walk):
    # Bybit's service restart (a `u` = 1 snapshot) and a reconnect after lost messages: each
    # snapshot reloads the book.
    rendered = bc.render(walk, restart_at=30, reconnect_at=60, lost=3)
    _write(tmp_path, rendered.lines)
    source = _source(tmp_path)
    (book,) = source.fetch("book", PERP, DAY)
    assert pl.read_parquet(book).height == 3
    result, rows = rebuild_messages(source, PERP, DAY, tmp_path, depth=20)
    kept = [i for i in range(MESSAGES) if i not in range(60, 63)]
    assert rows.height == 3 + len(kept)  # the three snapshots and every delta
    assert rows["synced"].all() and result.counters["crossed_events"] == 0
    by_seq = {row["sequence_number"]: row for row in rows.iter_rows(named=True)}
    for i in kept:
        bids, asks = walk.messages[i].view
        row = by_seq[walk.messages[i].seq]
        for side, levels in (("bid", sorted(bids.items(), reverse=True)), ("ask", sorted(asks.items()))):
            expected = _float_levels(levels[:20]) + [(None, None)] * (20 - len(levels[:20]))
            assert [level_at(row, side, n) for n in range(20)] == expected, i


def test_a_broken_u_chain_unsyncs_the_book_until_the_next_snapshot(tmp_path, walk):
    # Delta 21's u does not follow the lost delta 20's (no prev_update_id, and its seq jumps); the
    # reconnect's snapshot, just before delta 63, reloads the book.
    rendered = bc.render(walk, **BREAK_THEN_RECONNECT)
    _write(tmp_path, restamped(rendered.lines, bc.START_NS, NS_PER_HOUR // LINES_AN_HOUR))
    broken, resync = rendered.message_lines[21] - 1, rendered.message_lines[63] - 2
    check_break_then_reconnect(_source(tmp_path), PERP, DAY, tmp_path, walk, broken, resync)


def test_binance_okx_and_bybit_captures_share_the_directory(tmp_path, walk):
    _write(tmp_path, bc.render(walk).lines)
    for other in (BinanceCaptureSource, OkxCaptureSource):
        source = _source(tmp_path, other)
        assert source.manifest()["instruments"] == {} and source.rejected_files() == []
    assert list(_source(tmp_path).manifest()["instruments"]) == ["BYBIT:BTC-USDT-PERP"]


def test_a_bad_number_quarantines_the_file_naming_its_line(tmp_path, walk):
    lines = bc.render(walk).lines
    bad = max(n for n, line in enumerate(lines, 1) if '"b": [["' in line)  # the last line with a bid
    lines[bad - 1] = lines[bad - 1].replace('"b": [["', '"b": [["x', 1)
    _write(tmp_path, lines)
    source = _source(tmp_path)
    with pytest.raises(CaptureRejected) as caught:
        source.fetch("book_delta_v2", PERP, DAY)
    assert f"{NAME}:{bad}: book_" in str(caught.value) and "price 'x" in str(caught.value)
    assert (tmp_path / "lake" / "quarantine" / "bybit_capture" / NAME).is_file()


def test_a_file_not_named_by_its_category_is_refused_saying_so(tmp_path, walk):
    name = "bybit_btcusdt_20251124.gz"
    _write(tmp_path, bc.render(walk).lines, name=name)
    (rejected,) = _source(tmp_path).rejected_files()
    assert rejected.path.endswith(name) and "bybit_<spot|linear|inverse>_<symbol>_<YYYYMMDD>.gz" in rejected.reason


def test_the_vendor_is_registered_with_bybits_ids_and_needs_the_capture_dir():
    from types import SimpleNamespace

    from market_pipeline.vendors.registry import get_vendor

    vendor = get_vendor("bybit_capture")
    assert vendor.update_ids and vendor.ticker_time_ns(PERP) == 1_000_000  # orderbook.1's ts: ms
    assert vendor.problems(SimpleNamespace(capture_dir=None)) == [
        "PIPELINE_SOURCE=bybit_capture needs PIPELINE_CAPTURE_DIR"
    ]
