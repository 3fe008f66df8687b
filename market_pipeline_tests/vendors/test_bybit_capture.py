"""Bybit v5 captures: exact replay under Bybit's update-id rules with `orderbook.1` as the oracle,
`verify-capture` on synthetic days with exact ground truth (support/bybit_captures)."""

from __future__ import annotations

import re

import pytest

from market_pipeline.cli.main import main
from market_pipeline.vendors.bybit import verify as bybit_verify
from market_pipeline.vendors.capture_files import CaptureFormatError
from market_pipeline.vendors.exchange_books import TextBook
from market_pipeline.vendors.registry import verify_capture
from market_pipeline_tests.support import bybit_captures as bc
from market_pipeline_tests.support import okx_captures as oc
from market_pipeline_tests.support.binance_capture import SYNTHETIC_SPOT, write_capture_lines
from market_pipeline_tests.support.book_walk import checked_quotes, droppable
from market_pipeline_tests.support.kraken_captures import render as kraken_render
from market_pipeline_tests.support.kraken_captures import synthetic_book, write_capture
from market_pipeline_tests.support.verify_capture_cli import verify_capture_cli

MESSAGES = 300

# Messages in the shape of the examples of Bybit's v5 "Orderbook" documentation
# (orderbook.50.BTCUSDT: `topic`, `type`, `ts`, `data` {s, b, a, u, seq}, `cts`; levels
# [price, size] as fixed-decimal strings): a snapshot, then a delta that removes the best bid,
# adds one above it and changes the best ask.
DOC_SNAPSHOT = (
    '{"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1672304484978,"data":{"s":"BTCUSDT",'
    '"b":[["16493.50","0.006"],["16493.00","0.100"]],"a":[["16611.00","0.029"],["16612.00","0.213"]],'
    '"u":18521288,"seq":7961638724},"cts":1672304484976}'
)
DOC_DELTA = (
    '{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1672304484979,"data":{"s":"BTCUSDT",'
    '"b":[["16493.50","0"],["16494.00","0.050"]],"a":[["16611.00","0.010"]],'
    '"u":18521289,"seq":7961638726},"cts":1672304484977}'
)


@pytest.fixture(scope="module")
def walk():
    return bc.walk(MESSAGES)


def _capture(tmp_path, walk, **faults):
    rendered = bc.render(walk, **faults)
    return write_capture(tmp_path / "bybit_linear_btcusdt_20251124.gz", rendered.lines), rendered


def test_the_documented_messages_replay(tmp_path):
    path = write_capture_lines(tmp_path / "bybit_linear_btcusdt_20230629.txt", [DOC_SNAPSHOT, DOC_DELTA])
    result = verify_capture([path])
    assert (result["market"], result["exchange"], result["symbol"]) == ("linear", "BYBIT", "BTCUSDT")
    assert (result["snapshots"], result["applied"], result["gaps"], result["deltas_applied"]) == (1, 1, 0, 3)
    assert (result["final_best_bid"], result["final_best_ask"]) == ("16494.00", "16611.00")
    assert (result["tick_size"], result["lot_size"], result["crossed_events"]) == ("0.01", "0.001", 0)


def test_levels_beyond_the_depth_are_dropped_silently_and_zero_removes():
    book = TextBook(2)
    book.load([("10.00", "1.000"), ("9.00", "1.000")], [("11.00", "2.000")])
    book.apply([("9.50", "3.000"), ("10.00", "0")], [])
    assert [text for _, text in book.bids.top(5)] == [("9.50", "3.000"), ("9.00", "1.000")]
    book.apply([("9.75", "1.000")], [])  # 9.00 falls out of scope without a message
    assert [text for _, text in book.bids.top(5)] == [("9.75", "1.000"), ("9.50", "3.000")]
    book.apply([("9.75", "0"), ("9.00", "1.000")], [])  # and is sent again when back in scope
    assert [text for _, text in book.bids.top(5)] == [("9.50", "3.000"), ("9.00", "1.000")]


def test_a_good_capture_agrees_with_every_top_of_book_message(tmp_path, capsys, walk):
    path, rendered = _capture(tmp_path, walk)
    code, result = verify_capture_cli(capsys, path)
    assert code == 0
    assert result["diffs"] == result["applied"] == MESSAGES
    assert result["ticker_checks"] == len(checked_quotes(walk)) > 10 and result["ticker_mismatches"] == 0
    assert (result["gaps"], result["gaps_by_hour"], result["first_bad_update"], result["sequence_resets"]) == (
        0,
        {},
        None,
        0,
    )
    assert (result["checksums_checked"], result["checksums_unchecked"]) == (0, 0)  # Bybit sends none
    assert result["in_sync_at_end"] and result["trades"] == rendered.trades
    bids, asks = walk.messages[-1].view
    assert (result["final_best_bid"], result["final_best_ask"]) == (bc.price_text(max(bids)), bc.price_text(min(asks)))


def test_the_replayed_book_is_the_exchanges_level_for_level_at_its_depth(tmp_path, walk):
    """The walk's book is deeper than 50 levels, so levels leave the view and come back."""
    before = [walk.first_view] + [m.view for m in walk.messages[:-1]]
    silent = [
        p
        for old, m in zip(before, walk.messages, strict=True)
        for s, sent in ((0, m.bids), (1, m.asks))
        for p in old[s]
        if p not in m.view[s] and p not in dict(sent)
    ]
    assert len(silent) > 10  # levels pushed out of view without a message: only truncation drops them
    path, _ = _capture(tmp_path, walk, restart_at=200)
    book = bybit_verify.replay_files([path]).book
    bids, asks = walk.messages[-1].view
    assert [text for _, text in book.bids.top(100)] == [
        (bc.price_text(p), bc.size_text(bids[p])) for p in sorted(bids, reverse=True)
    ]
    assert [text for _, text in book.asks.top(100)] == [(bc.price_text(p), bc.size_text(asks[p])) for p in sorted(asks)]


def test_a_dropped_delta_is_a_sequence_break_named_at_the_next(tmp_path, capsys, walk):
    dropped = droppable(walk, MESSAGES // 2)
    path, rendered = _capture(tmp_path, walk, drop=dropped)
    code, result = verify_capture_cli(capsys, path)
    assert code == 1
    bad = result["first_bad_update"]
    assert (bad["file"], bad["line"], bad["reason"]) == (
        str(path),
        rendered.message_lines[dropped + 1],
        "sequence break",
    )
    assert bad["u"] == bad["expected_u"] + 1
    assert (result["gaps"], result["gaps_by_hour"]) == (1, {"2025-11-24T00": 1})
    assert result["applied"] == dropped and result["dropped_after_gap"] == MESSAGES - dropped - 1
    assert not result["in_sync_at_end"]


def test_a_service_restart_u_1_reloads_the_book(tmp_path, capsys, walk):
    path, _ = _capture(tmp_path, walk, restart_at=120)
    code, result = verify_capture_cli(capsys, path)
    assert code == 0
    assert (result["sequence_resets"], result["snapshots"], result["resyncs"], result["gaps"]) == (1, 2, 1, 0)
    assert result["applied"] == MESSAGES and result["ticker_checks"] == len(checked_quotes(walk))


def test_a_reconnect_snapshot_resyncs(tmp_path, capsys, walk):
    path, _ = _capture(tmp_path, walk, reconnect_at=100, lost=5)
    code, result = verify_capture_cli(capsys, path)
    assert code == 0 and (result["snapshots"], result["resyncs"], result["gaps"], result["sequence_resets"]) == (
        2,
        1,
        0,
        0,
    )
    assert result["diffs"] == result["applied"] == MESSAGES - 5
    assert result["ticker_checks"] == len(checked_quotes(walk, set(range(100, 105))))


def test_a_wrong_orderbook_1_message_is_a_ticker_mismatch(tmp_path, capsys, walk):
    quoted = checked_quotes(walk)[4]
    path, rendered = _capture(tmp_path, walk, bad_quote=quoted)
    code, result = verify_capture_cli(capsys, path)
    assert code == 1 and (result["ticker_mismatches"], result["gaps"]) == (1, 0)
    assert result["first_mismatch_ticker"] == sum(len(m.quotes) for m in walk.messages[: quoted + 1]) - 1
    bad = result["first_bad_update"]
    # orderbook.1 follows its book message: the quote's line is the message's and its quotes'.
    assert (bad["line"], bad["reason"]) == (
        rendered.message_lines[quoted] + len(walk.messages[quoted].quotes),
        "top of book",
    )
    assert bad["quote"]["bids"][0][1] != bad["book"]["bids"][0][1]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            '12 {"topic":"orderbook.50.BTCUSDT","type":"delta","data":[]}',
            "without type snapshot|delta and a data object",
        ),
        ('12 {"topic":"orderbook.x.BTCUSDT","type":"delta","data":{}}', "is not orderbook.<depth>.<symbol>"),
        (
            '12 {"topic":"orderbook.50.BTCUSDT","type":"delta","data":{"b":[["1"]],"u":1,"seq":1}}',
            "is not [price, size]",
        ),
        (
            '12 {"topic":"orderbook.50.ETHUSDT","type":"delta","data":{"b":[],"a":[],"u":1,"seq":1}}',
            "one instrument per run",
        ),
        (
            '12 {"topic":"orderbook.200.BTCUSDT","type":"delta","data":{"b":[],"a":[],"u":1,"seq":1}}',
            "one book stream per run",
        ),
        (
            '12 {"topic":"orderbook.50.BTCUSDT","type":"delta","data":{"b":[["x","1"]],"a":[],"u":20001,"seq":1}}',
            "price 'x'",
        ),
    ],
)
def test_a_malformed_line_names_the_file_and_line(tmp_path, walk, line, reason):
    _, rendered = _capture(tmp_path, walk)
    lines = rendered.lines[:2] + [line + "\n"] + rendered.lines[2:]
    path = write_capture(tmp_path / "bybit_linear_btcusdt_20251126.gz", lines)
    with pytest.raises(CaptureFormatError, match=re.escape(reason)) as caught:
        verify_capture([path])
    assert (caught.value.path, caught.value.line_number) == (path, 3)


def test_a_file_with_orderbook_1_only_is_refused(tmp_path, walk):
    _, rendered = _capture(tmp_path, walk)
    top_only = [line for line in rendered.lines if "orderbook.1." in line]
    path = write_capture(tmp_path / "bybit_spot_btcusdt_20251124.gz", top_only)
    with pytest.raises(CaptureFormatError, match="no orderbook message deeper than 1"):
        verify_capture([path])


def test_verify_capture_has_one_shape_for_every_exchange(tmp_path, capsys, walk):
    bybit, _ = _capture(tmp_path, walk)
    okx = write_capture(tmp_path / "okx_spot_btc-usdt_20251124.gz", oc.render(oc.walk(20)).lines)
    kraken = write_capture(tmp_path / "kraken_spot_xbtusd_20251124.gz", kraken_render(1, synthetic_book(20)).lines)
    binance = write_capture_lines(tmp_path / "binance_spot_btcusdt_20231114.txt", SYNTHETIC_SPOT)
    shapes = [list(verify_capture_cli(capsys, path)[1]) for path in (binance, kraken, okx, bybit)]
    assert shapes[0] == shapes[1] == shapes[2] == shapes[3]
    assert main(["verify-capture", str(okx), str(bybit)]) == 1
    assert "capture files of several exchanges (bybit, okx)" in capsys.readouterr().err
