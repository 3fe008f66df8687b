"""`okx_capture`: OKX captures as lake tables (book_delta_v2 by seqId, book, book_ticker from
bbo-tbt, trades), read in chunks, and the book core's generic replay of them, against the exact
ground truth of the synthetic OKX days of support/okx_captures."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest

from market_pipeline.core.book import rebuild
from market_pipeline.core.day_clock import NS_PER_HOUR
from market_pipeline.core.instruments import Instrument, InstrumentSpec
from market_pipeline.vendors.base import DayNotCovered
from market_pipeline.vendors.binance.source import BinanceCaptureSource
from market_pipeline.vendors.capture_source import CaptureRejected
from market_pipeline.vendors.okx.capture_tables import OkxCaptureParser, lake_symbol
from market_pipeline.vendors.okx.source import OkxCaptureSource, named_instrument
from market_pipeline_tests.support import okx_captures as oc
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
NAME = "okx_spot_btc-usdt_20251124.gz"
SPOT = Instrument(
    exchange="OKX", symbol="BTC-USDT", spec=InstrumentSpec(tick_size=Decimal("0.1"), lot_size=Decimal("0.00000001"))
)


@pytest.fixture(scope="module")
def walk():
    return oc.walk(MESSAGES)


def _source(tmp_path, cls=OkxCaptureSource):
    return cls(tmp_path / "captures", tmp_path / "cache", tmp_path / "lake")


def _write(tmp_path, lines, name=NAME):
    (tmp_path / "captures").mkdir(exist_ok=True)
    return write_capture(tmp_path / "captures" / name, lines)


def _table(source, table):
    (path,) = source.fetch(table, SPOT, DAY)
    return pl.read_parquet(path)


def _float_levels(changes):
    return [(float(oc.price_text(p)), float(oc.size_text(q))) for p, q in changes]


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("okx_spot_btc-usdt_20251124.gz", "OKX:BTC-USDT"),
        ("okx_swap_btc-usdt-swap_20251124.gz.enc", "OKX:BTC-USDT-PERP"),
        ("okx_futures_btc-usd-251226_20251124.gz", "OKX:BTC-USD-251226"),
        ("okx_spot_btc-usdt-swap_20251124.gz", None),  # the market and the id disagree
        ("binance_spot_btcusdt_20251124.gz", None),
    ],
)
def test_file_names_give_the_lake_instrument_in_crypto_lakes_spelling(tmp_path, name, key):
    assert named_instrument(tmp_path / name) == key


def test_lake_symbols_follow_crypto_lake():
    assert [lake_symbol(i) for i in ("BTC-USDT", "btc-usdt-swap", "BTC-USD-251226")] == [
        "BTC-USDT",
        "BTC-USDT-PERP",
        "BTC-USD-251226",
    ]


def test_tables_hold_every_message_exactly_with_okx_ids(tmp_path, walk):
    rendered = oc.render(walk)
    _write(tmp_path, rendered.lines)
    source = _source(tmp_path)
    assert source.available_days("book_delta_v2", SPOT) == [DAY]

    deltas = _table(source, "book_delta_v2")
    snapshot = deltas.filter(pl.col("is_snapshot"))
    first_bids = sorted(walk.first_view[0].items(), reverse=True)
    first_asks = sorted(walk.first_view[1].items())
    assert snapshot["sequence_number"].unique().to_list() == [walk.first_seq]
    assert snapshot["prev_update_id"].null_count() == snapshot.height
    assert list(zip(snapshot["price"], snapshot["size"], strict=True)) == _float_levels(first_bids + first_asks)
    updates = deltas.filter(~pl.col("is_snapshot"))
    expected = [
        (m.seq, prev, is_bid, price, size)
        for m, prev in zip(walk.messages, [walk.first_seq] + [m.seq for m in walk.messages], strict=False)
        for is_bid, changes in ((True, m.bids), (False, m.asks))
        for price, size in _float_levels(changes)
    ]
    got = updates.select("sequence_number", "prev_update_id", "side_is_bid", "price", "size").rows()
    assert got == expected
    assert (updates["first_update_id"] == updates["sequence_number"]).all()
    assert (deltas["origin_time"] == 1_763_942_400_000 * 1_000_000).all()  # OKX's ts (ms) in ns
    assert deltas["line_no"].is_sorted() and deltas["received_time"].is_sorted()

    quotes = [q for m in walk.messages for q in m.quotes]
    tickers = _table(source, "book_ticker")
    assert tickers.height == len(quotes) == len(rendered.quote_lines)
    assert tickers["update_id"].to_list() == [q.seq for q in quotes]
    assert tickers.select("bid_price", "bid_size").rows() == _float_levels([q.bid for q in quotes])
    assert tickers.select("ask_price", "ask_size").rows() == _float_levels([q.ask for q in quotes])

    book = _table(source, "book")
    assert book["sequence_number"].to_list() == [walk.first_seq]
    assert book.select("bid_0_price", "bid_0_size").row(0) == _float_levels(first_bids[:1])[0]
    assert book.select("ask_19_price", "ask_19_size").row(0) == _float_levels(first_asks[19:20])[0]

    trades = _table(source, "trades")
    assert trades.height == rendered.trades
    assert set(trades.select("trade_id", "side", "price", "quantity").rows()) == {("130639474", "buy", 61415.1, 0.001)}


def test_chunks_of_a_few_lines_give_the_same_tables(tmp_path, walk):
    path = _write(tmp_path, oc.render(walk).lines)
    whole = list(OkxCaptureParser([path]).chunks())
    small = list(OkxCaptureParser([path], chunk_lines=7).chunks())
    assert len(whole) == 1 and len(small) > 10
    for table in whole[0]:
        assert pl.concat([c[table] for c in small]).equals(whole[0][table])


def test_the_generic_replay_rebuilds_the_exchanges_book_after_every_message(tmp_path, walk):
    rendered = oc.render(walk, reconnect_at=60, lost=3)  # a reconnect: its snapshot reloads the book
    _write(tmp_path, rendered.lines)
    source = _source(tmp_path)
    result, rows = rebuild_messages(source, SPOT, DAY, tmp_path, depth=20)
    kept = [i for i in range(MESSAGES) if i not in range(60, 63)]
    assert rows.height == 2 + len(kept)  # the two snapshots and every update
    assert rows["synced"].all() and result.counters["crossed_events"] == 0
    by_seq = {row["sequence_number"]: row for row in rows.iter_rows(named=True)}
    for i in kept:
        bids, asks = walk.messages[i].view
        row = by_seq[walk.messages[i].seq]
        for side, levels in (("bid", sorted(bids.items(), reverse=True)), ("ask", sorted(asks.items()))):
            expected = _float_levels(levels[:20]) + [(None, None)] * (20 - len(levels[:20]))
            assert [level_at(row, side, n) for n in range(20)] == expected


def test_a_sequence_reset_goes_on_with_the_book(tmp_path, walk):
    """OKX resets `seqId` in maintenance: the message's `seqId` drops below its `prevSeqId`, which
    still names the message before it. The chain holds, so the book goes on in sync, message by
    message, not every later message skipped as older than the last one."""
    from market_pipeline.core.quality.gaps import gap_summary, repaired_gaps, snapshot_sequence
    from market_pipeline.core.quality.lake_day import DayFiles, read_day_stats

    rendered = oc.render(walk, reset_at=60)
    _write(tmp_path, rendered.lines)
    source = _source(tmp_path)
    result, rows = rebuild_messages(source, SPOT, DAY, tmp_path, depth=20)
    assert rows.height == 1 + MESSAGES  # the snapshot and every update
    assert rows["synced"].all()
    assert (result.counters["out_of_order_messages"], result.counters["sequence_gaps"]) == (0, 0)
    # The raw check counts as the rebuild does: no message out of order, no break.
    (deltas,), (book,) = source.fetch("book_delta_v2", SPOT, DAY), source.fetch("book", SPOT, DAY)
    files = DayFiles(SPOT, DAY, deltas, book, *(tmp_path / "none",) * 4)
    summary = gap_summary(repaired_gaps(files, read_day_stats(files, "book_delta_v2"), snapshot_sequence(files)))
    assert (summary["out_of_order_messages"], summary["chain_breaks"]) == (0, 0)
    for message, row in zip(walk.messages, rows.sort("received_time")[1:].iter_rows(named=True), strict=True):
        bids, asks = message.view
        for side, levels in (("bid", sorted(bids.items(), reverse=True)), ("ask", sorted(asks.items()))):
            expected = _float_levels(levels[:20]) + [(None, None)] * (20 - len(levels[:20]))
            assert [level_at(row, side, n) for n in range(20)] == expected


@pytest.mark.parametrize("batch_rows", [rebuild.DELTA_BATCH_ROWS, 7])  # 7: messages cut by the batches
def test_a_broken_seq_id_chain_unsyncs_the_book_until_the_next_snapshot(tmp_path, walk, monkeypatch, batch_rows):
    # Message 21's prevSeqId names the lost message 20; the reconnect's snapshot reloads the book.
    monkeypatch.setattr(rebuild, "DELTA_BATCH_ROWS", batch_rows)
    rendered = oc.render(walk, **BREAK_THEN_RECONNECT)
    lines = restamped(rendered.lines, oc.START_NS, NS_PER_HOUR // LINES_AN_HOUR)
    _write(tmp_path, lines)
    resync = [n for n, line in enumerate(lines) if '"action": "snapshot"' in line][1]
    check_break_then_reconnect(_source(tmp_path), SPOT, DAY, tmp_path, walk, rendered.message_lines[21] - 1, resync)


def test_binance_and_okx_captures_share_the_directory(tmp_path, walk):
    _write(tmp_path, oc.render(walk).lines)
    binance = _source(tmp_path, BinanceCaptureSource)
    assert binance.manifest()["instruments"] == {} and binance.rejected_files() == []
    assert list(_source(tmp_path).manifest()["instruments"]) == ["OKX:BTC-USDT"]


def test_a_bad_number_quarantines_the_file_naming_its_line(tmp_path, walk):
    lines = oc.render(walk).lines
    bad = max(n for n, line in enumerate(lines, 1) if '"bids": [["' in line)  # the last line with a bid
    lines[bad - 1] = lines[bad - 1].replace('"bids": [["', '"bids": [["x', 1)
    _write(tmp_path, lines)
    source = _source(tmp_path)
    with pytest.raises(CaptureRejected) as caught:
        source.fetch("book_delta_v2", SPOT, DAY)
    assert f"{NAME}:{bad}: book_delta_v2: price 'x" in str(caught.value)
    assert (tmp_path / "lake" / "quarantine" / "okx_capture" / NAME).is_file()
    with pytest.raises(DayNotCovered):
        source.fetch("trades", SPOT, DAY + dt.timedelta(days=1))
