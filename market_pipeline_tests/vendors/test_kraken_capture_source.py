"""`kraken_capture`: Kraken captures (v1 and v2) as lake tables (book_delta_v2 with Kraken's
truncation written out, book, trades), read in chunks, and the book core's generic replay of them,
against the exact ground truth of the synthetic Kraken streams of support/kraken_captures (the
subscriber's view after every update: depth 10, republished levels, levels pushed out unsent)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest

from market_pipeline.core.instruments import Instrument, InstrumentSpec
from market_pipeline.vendors.binance.source import BinanceCaptureSource
from market_pipeline.vendors.capture_source import CaptureRejected
from market_pipeline.vendors.kraken.capture_tables import KrakenCaptureParser, file_pair, lake_symbol
from market_pipeline.vendors.kraken.source import KrakenCaptureSource, named_instrument
from market_pipeline.vendors.okx.source import OkxCaptureSource
from market_pipeline_tests.support import kraken_captures as kc
from market_pipeline_tests.support.capture_truth import rebuild_messages

UPDATES = 240
DAY = dt.date(2025, 11, 24)
NAMES = {1: "kraken_spot_xbtusd_20251124.gz", 2: "kraken_spot_btcusd_20251124.gz"}
PAIR = Instrument(
    exchange="KRAKEN", symbol="BTC-USD", spec=InstrumentSpec(tick_size=Decimal("0.1"), lot_size=Decimal("0.00000001"))
)


@pytest.fixture(scope="module")
def book():
    return kc.synthetic_book(UPDATES)


def _source(tmp_path, cls=KrakenCaptureSource):
    return cls(tmp_path / "captures", tmp_path / "cache", tmp_path / "lake")


def _write(tmp_path, lines, name, folder="."):
    (tmp_path / "captures" / folder).mkdir(parents=True, exist_ok=True)
    return kc.write_capture(tmp_path / "captures" / folder / name, lines)


def _table(source, table):
    (path,) = source.fetch(table, PAIR, DAY)
    return pl.read_parquet(path)


def _recv(line_number: int) -> int:
    """The receive time support/kraken_captures gives the line (1-based)."""
    return kc.START_NS + (line_number - 1) * kc.STEP_NS


def _replayed(tmp_path, source) -> dict[int, dict]:
    """Core's generic replay of the day, one row per message, by sequence number (receive time)."""
    # Two levels more than subscribed: empty if the truncation kept Kraken's book.
    result, rows = rebuild_messages(source, PAIR, DAY, tmp_path, depth=kc.DEPTH + 2)
    assert result.counters["crossed_events"] == 0
    assert rows["synced"].all()
    return {row["sequence_number"]: row for row in rows.iter_rows(named=True)}


def _assert_view(row: dict, version: int, view: tuple[kc.Side, kc.Side]) -> None:
    asks, bids = view
    for side, levels in (("bid", sorted(bids.items(), reverse=True)), ("ask", sorted(asks.items()))):
        expected = [(float(kc.price_text(version, p)), float(kc.qty_text(q))) for p, q in levels]
        expected += [(None, None)] * (kc.DEPTH + 2 - len(expected))
        got = [(row[f"{side}_{n}_price"], row[f"{side}_{n}_size"]) for n in range(kc.DEPTH + 2)]
        assert [(None, None) if p is None else (float(p), float(s)) for p, s in got] == expected


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("kraken_spot_xbtusd_20251124.gz", "KRAKEN:BTC-USD"),
        ("kraken_spot_btcusd_20251124.gz.enc", "KRAKEN:BTC-USD"),
        ("kraken_spot_ethusdt_20251124.gz", "KRAKEN:ETH-USDT"),
        ("kraken_spot_xdgusd_20251124.gz", "KRAKEN:DOGE-USD"),
        ("kraken_spot_btc_20251124.gz", None),  # no known quote ends it
        ("kraken_futures_btcusd_20251124.gz", None),
        ("okx_spot_btc-usdt_20251124.gz", None),
    ],
)
def test_file_names_give_the_lake_instrument_in_crypto_lakes_spelling(tmp_path, name, key):
    assert named_instrument(tmp_path / name) == key


def test_lake_symbols_follow_crypto_lake():
    assert [lake_symbol(p) for p in ("XBT/USD", "BTC/USD", "eth/xbt", "XDG/EUR")] == [
        "BTC-USD",
        "BTC-USD",
        "ETH-BTC",
        "DOGE-EUR",
    ]
    assert file_pair("xbtusdt") == "XBT/USDT"
    with pytest.raises(ValueError, match="is not BASE/QUOTE"):
        lake_symbol("XBTUSD")


@pytest.mark.parametrize("version", [1, 2])
def test_the_generic_replay_keeps_krakens_book_after_every_update(tmp_path, book, version):
    rendered = kc.render(version, book, reconnect_at=150, lost=4)  # the reconnect's snapshot reloads the book
    _write(tmp_path, rendered.lines, NAMES[version])
    source = _source(tmp_path)
    assert source.available_days("book_delta_v2", PAIR) == [DAY]
    by_seq = _replayed(tmp_path, source)
    assert len(by_seq) == 2 + len(rendered.update_lines)  # the two snapshots and every update sent
    for i, line_number in rendered.update_lines.items():
        _assert_view(by_seq[_recv(line_number)], version, book.updates[i].view)

    deltas = _table(source, "book_delta_v2")
    assert (deltas["sequence_number"] == deltas["received_time"]).all()
    # The checksum chain: every message names the one before it (every checksum agrees).
    heads = deltas.unique("sequence_number", keep="first", maintain_order=True)
    assert (heads["first_update_id"] == heads["sequence_number"]).all()
    assert heads["prev_update_id"].to_list()[1:] == heads["sequence_number"].to_list()[:-1]
    assert deltas["line_no"].is_sorted() and deltas["received_time"].is_sorted()
    sent = sum(len(u.asks) + len(u.bids) for i, u in enumerate(book.updates) if i in rendered.update_lines)
    snapshots = deltas.filter(pl.col("is_snapshot"))
    assert snapshots["sequence_number"].n_unique() == 2
    # The exchange's time of each message: v2's timestamp, v1's latest level timestamp; a v2
    # snapshot carries none (its receive time), v1's levels do.
    stamps = dict(deltas.select("sequence_number", "origin_time").unique().rows())
    for i, line_number in rendered.update_lines.items():
        assert stamps[_recv(line_number)] == (1_763_942_400 + i) * 10**9
    received = sorted(snapshots["sequence_number"].unique())
    opened = [kc.START_NS, kc.START_NS + 60 * 10**9]  # support/kraken_captures' v1 snapshot level stamps
    assert [stamps[seq] for seq in received] == (received if version == 2 else opened)
    # The rows beyond the levels sent: Kraken's truncation, written out as removals.
    pushed_out = deltas.filter(~pl.col("is_snapshot")).height - sent
    assert pushed_out > 0

    snapshot_rows = _table(source, "book")
    assert snapshot_rows.height == 2
    first_bids = sorted(book.first_view[1].items(), reverse=True)
    assert snapshot_rows.row(0, named=True)["bid_0_price"] == float(kc.price_text(version, first_bids[0][0]))
    assert snapshot_rows["bid_10_price"].null_count() == 2  # depth 10

    trades = _table(source, "trades")
    assert trades.height == rendered.trades
    assert set(trades.select("side", "price", "quantity").rows()) == {("buy", 61415.0, 0.01)}
    assert trades["origin_time"].to_list() == [1_763_942_400_100_000_000] * rendered.trades
    assert trades["trade_id"].to_list() == ([None] if version == 1 else ["1"]) * rendered.trades


@pytest.mark.parametrize("version", [1, 2])
def test_a_checksum_that_disagrees_unsyncs_the_book_until_the_next_snapshot(tmp_path, book, version):
    """A lost update: the next one's checksum disagrees with the book the parser keeps, which breaks
    the chain there (as verify-capture names it); the generic replay's books are unsynced from it
    to the reconnect's snapshot, and its sequence gaps are the raw check's chain breaks, by hour."""
    from market_pipeline.core.day_clock import hour_of
    from market_pipeline.core.quality.chain import CHAIN_COLUMNS, chain_breaks
    from market_pipeline.vendors.kraken.verify import verify_capture

    lost = kc.droppable_update(book, 40)
    rendered = kc.render(version, book, drop=lost, reconnect_at=150, lost=4)
    path = _write(tmp_path, rendered.lines, NAMES[version])
    named = verify_capture([path])["first_bad_update"]
    source = _source(tmp_path)
    result, rows = rebuild_messages(source, PAIR, DAY, tmp_path, depth=1)
    raw = _table(source, "book_delta_v2")
    breaks = chain_breaks([raw.select(CHAIN_COLUMNS)])
    resync = sorted(raw.filter(pl.col("is_snapshot"))["sequence_number"].unique())[1]  # the reconnect's
    broken = _recv(rendered.update_lines[lost + 1])
    assert (named["reason"], named["line"]) == ("checksum", rendered.update_lines[lost + 1])
    assert breaks["sequence_number"].to_list() == [broken]
    hours = breaks.select(hour_of("received_time", DAY))["received_time"].to_list()
    assert result.hourly["sequence_gaps"] == [hours.count(h) for h in range(24)]
    assert (result.counters["sequence_gaps"], result.counters["fills"]) == (1, 1)
    unsynced = rows.filter(~pl.col("synced"))["sequence_number"].to_list()
    assert unsynced == [seq for seq in rows["sequence_number"].to_list() if broken <= seq < resync]
    assert unsynced and rows.height > len(unsynced)


def test_a_file_continuing_a_session_is_truncated_from_the_book_it_carries(tmp_path, book):
    rendered = kc.render(2, book)
    cut = len(rendered.lines) // 2  # the second file starts with updates, its snapshot in the first
    _write(tmp_path, rendered.lines[:cut], NAMES[2], "20251124T00")
    _write(tmp_path, rendered.lines[cut:], NAMES[2], "20251124T01")
    by_seq = _replayed(tmp_path, _source(tmp_path))
    later = {i: n for i, n in rendered.update_lines.items() if n > cut}
    assert later
    for i, line_number in later.items():
        _assert_view(by_seq[_recv(line_number)], 2, book.updates[i].view)


def test_a_trade_time_that_is_not_rfc_3339_rejects_the_file_naming_its_line(tmp_path, book):
    lines = kc.render(2, book).lines
    bad = next(n for n, line in enumerate(lines, 1) if '"channel":"trade"' in line)
    lines[bad - 1] = lines[bad - 1].replace('"timestamp":"2025-11-24T00:00:00.100000Z"', '"timestamp":"noon"')
    _write(tmp_path, lines, NAMES[2])
    with pytest.raises(CaptureRejected) as caught:
        _source(tmp_path).fetch("trades", PAIR, DAY)
    assert f"{NAMES[2]}:{bad}: timestamp 'noon' is not an RFC 3339 time" in str(caught.value)


def test_a_v2_trade_snapshot_has_no_rows(tmp_path, book):
    lines = kc.render(2, book).lines
    first = next(n for n, line in enumerate(lines) if '"channel":"trade"' in line)
    lines[first] = lines[first].replace('"type":"update"', '"type":"snapshot"')  # as on subscribing
    _write(tmp_path, lines, NAMES[2])
    assert _table(_source(tmp_path), "trades").height == kc.render(2, book).trades - 1


def test_chunks_of_a_few_lines_give_the_same_tables(tmp_path, book):
    path = _write(tmp_path, kc.render(1, book).lines, NAMES[1])
    whole = list(KrakenCaptureParser([path]).chunks())
    small = list(KrakenCaptureParser([path], chunk_lines=7).chunks())
    assert len(whole) == 1 and len(small) > 10
    for table in whole[0]:
        assert pl.concat([c[table] for c in small]).equals(whole[0][table])


def test_kraken_captures_share_the_directory(tmp_path, book):
    _write(tmp_path, kc.render(2, book).lines, NAMES[2])
    for other in (BinanceCaptureSource, OkxCaptureSource):
        assert _source(tmp_path, other).manifest()["instruments"] == {}
    assert list(_source(tmp_path).manifest()["instruments"]) == ["KRAKEN:BTC-USD"]


def test_a_bad_number_quarantines_the_file_naming_its_line(tmp_path, book):
    lines = kc.render(2, book).lines
    bad = max(n for n, line in enumerate(lines, 1) if '"asks":[{"price":' in line)
    lines[bad - 1] = lines[bad - 1].replace('"asks":[{"price":', '"asks":[{"price":"x', 1)
    _write(tmp_path, lines, NAMES[2])
    source = _source(tmp_path)
    with pytest.raises(CaptureRejected) as caught:
        source.fetch("book_delta_v2", PAIR, DAY)
    assert f"{NAMES[2]}:{bad}:" in str(caught.value)
    assert (tmp_path / "lake" / "quarantine" / "kraken_capture" / NAMES[2]).is_file()
