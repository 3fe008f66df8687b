"""OKX v5 captures: exact replay under OKX's sequence rules, its CRC32 checksum and `bbo-tbt` as
the oracles, `verify-capture` on synthetic days with exact ground truth (support/okx_captures)."""

from __future__ import annotations

import json
import re

import pytest

from market_pipeline.vendors.capture_files import CaptureFormatError
from market_pipeline.vendors.exchange_books import TextBook, signed_crc32
from market_pipeline.vendors.okx import verify as okx_verify
from market_pipeline.vendors.okx.capture_format import market_of
from market_pipeline.vendors.registry import verify_capture
from market_pipeline_tests.support import okx_captures as oc
from market_pipeline_tests.support.binance_capture import write_capture_lines
from market_pipeline_tests.support.book_walk import checked_quotes, droppable
from market_pipeline_tests.support.kraken_captures import write_capture
from market_pipeline_tests.support.verify_capture_cli import verify_capture_cli

MESSAGES = 300

# The "Calculate Checksum" examples of OKX's order book channel documentation (levels as the v5
# channel sends them, [price, size, "0", orders]) with their check strings, and the checksums
# OKX's earlier (v3) documentation gave for the same two books.
DOC_EVEN = {
    "bids": [["3366.1", "7", "0", "3"], ["3366", "6", "3", "4"]],
    "asks": [["3366.8", "9", "10", "3"], ["3368", "8", "3", "4"]],
}
DOC_EVEN_TEXT, DOC_EVEN_CHECKSUM = "3366.1:7:3366.8:9:3366:6:3368:8", -1881014294
DOC_ODD = {
    "bids": [["3366.1", "7", "0", "3"]],
    "asks": [["3366.8", "9", "10", "3"], ["3368", "8", "3", "4"], ["3372", "8", "3", "4"]],
}
DOC_ODD_TEXT, DOC_ODD_CHECKSUM = "3366.1:7:3366.8:9:3368:8:3372:8", 831078360


def _book_line(action, levels, seq, prev, checksum=0, channel="books"):
    data = {**levels, "ts": "1597026383085", "checksum": checksum, "prevSeqId": prev, "seqId": seq}
    return json.dumps({"arg": {"channel": channel, "instId": "BTC-USDT"}, "action": action, "data": [data]})


@pytest.fixture(scope="module")
def walk():
    return oc.walk(MESSAGES)


def _capture(tmp_path, walk, **faults):
    rendered = oc.render(walk, **faults)
    return write_capture(tmp_path / "okx_spot_btc-usdt_20251124.gz", rendered.lines), rendered


@pytest.mark.parametrize(
    ("levels", "text", "checksum"),
    [(DOC_EVEN, DOC_EVEN_TEXT, DOC_EVEN_CHECKSUM), (DOC_ODD, DOC_ODD_TEXT, DOC_ODD_CHECKSUM)],
)
def test_the_documented_checksum_examples(tmp_path, levels, text, checksum):
    book = TextBook(400)
    book.load([tuple(level[:2]) for level in levels["bids"]], [tuple(level[:2]) for level in levels["asks"]])
    assert okx_verify.checksum_text(book) == text
    assert signed_crc32(text) == checksum  # signed: the unsigned CRC32 of the even text is 2413953002
    good = write_capture_lines(
        tmp_path / "okx_spot_btc-usdt_20181204.txt", [_book_line("snapshot", levels, 10, -1, checksum)]
    )
    result = verify_capture([good])
    assert (result["checksums_checked"], result["checksum_mismatches"], result["first_bad_update"]) == (1, 0, None)
    assert (result["final_best_bid"], result["final_best_ask"]) == ("3366.1", "3366.8")


def test_the_documented_sequence_example_is_followed(tmp_path, capsys):
    """OKX's "Sequence ID" example: snapshot (-1, 10), update (10, 15), no update (15, 15) with
    empty sides, sequence reset (15, 3), update (3, 5); checksums 0 as OKX sends since 2026."""
    empty = {"bids": [], "asks": []}
    lines = [
        _book_line("snapshot", DOC_EVEN, 10, -1),
        _book_line("update", {"bids": [["3366", "0", "0", "0"]], "asks": []}, 15, 10),
        _book_line("update", empty, 15, 15),
        _book_line("update", {"bids": [], "asks": [["3368", "2", "0", "1"]]}, 3, 15),
        _book_line("update", {"bids": [["3366.2", "1", "0", "1"]], "asks": []}, 5, 3),
    ]
    path = write_capture_lines(tmp_path / "okx_spot_btc-usdt_20240101.txt", lines)
    code, result = verify_capture_cli(capsys, path)
    assert code == 0
    assert (result["diffs"], result["applied"], result["gaps"], result["sequence_resets"]) == (4, 4, 0, 1)
    assert (result["checksums_checked"], result["checksums_unchecked"]) == (0, 5)  # 0 is never agreement
    assert (result["final_best_bid"], result["final_best_ask"], result["deltas_applied"]) == ("3366.2", "3366.8", 3)


def test_a_good_capture_agrees_with_every_checksum_and_quote(tmp_path, capsys, walk):
    path, rendered = _capture(tmp_path, walk)
    code, result = verify_capture_cli(capsys, path)
    assert code == 0
    assert (result["market"], result["exchange"], result["symbol"]) == ("spot", "OKX", "BTC-USDT")
    assert result["diffs"] == result["applied"] == MESSAGES
    assert (result["checksums_checked"], result["checksum_mismatches"], result["checksums_unchecked"]) == (
        MESSAGES + 1,
        0,
        0,
    )
    assert result["ticker_checks"] == len(checked_quotes(walk)) > 20 and result["ticker_mismatches"] == 0
    assert (result["gaps"], result["gaps_by_hour"], result["first_bad_update"]) == (0, {}, None)
    assert result["in_sync_at_end"] and result["snapshots"] == 1 and result["trades"] == rendered.trades
    bids, asks = walk.messages[-1].view
    assert (result["final_best_bid"], result["final_best_ask"]) == (oc.price_text(max(bids)), oc.price_text(min(asks)))
    assert result["deltas_applied"] == sum(len(m.bids) + len(m.asks) for m in walk.messages)
    assert (result["tick_size"], result["lot_size"]) == ("0.1", "0.00000001")


def test_the_replayed_book_is_the_exchanges_level_for_level(tmp_path, walk):
    path, _ = _capture(tmp_path, walk, reconnect_at=150, lost=3)
    book = okx_verify.replay_files([path]).book
    bids, asks = walk.messages[-1].view
    assert [text for _, text in book.bids.top(len(bids))] == [
        (oc.price_text(p), oc.size_text(bids[p])) for p in sorted(bids, reverse=True)
    ]
    assert [text for _, text in book.asks.top(len(asks))] == [
        (oc.price_text(p), oc.size_text(asks[p])) for p in sorted(asks)
    ]
    assert len(book.bids) == len(bids) and len(book.asks) == len(asks)


def test_a_dropped_update_is_a_sequence_break_named_at_the_next(tmp_path, capsys, walk):
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
    assert bad["received_time"] == int(rendered.lines[bad["line"] - 1].partition(" ")[0])
    assert (
        bad["expected_prev_seq_id"] == walk.messages[dropped - 1].seq
        and bad["prev_seq_id"] == walk.messages[dropped].seq
    )
    assert (result["gaps"], result["gaps_by_hour"], result["checksum_mismatches"]) == (1, {"2025-11-24T00": 1}, 0)
    # Unsynced until a snapshot that never comes: the rest is dropped.
    assert result["applied"] == dropped and result["dropped_after_gap"] == MESSAGES - dropped - 1
    assert not result["in_sync_at_end"] and result["unsynced_at_end"] == 1


def test_a_wrong_checksum_is_the_first_bad_update(tmp_path, capsys, walk):
    path, rendered = _capture(tmp_path, walk, bad_checksum=100)
    code, result = verify_capture_cli(capsys, path)
    assert code == 1 and (result["checksum_mismatches"], result["gaps"]) == (1, 1)
    bad = result["first_bad_update"]
    assert (bad["line"], bad["reason"]) == (rendered.message_lines[100], "checksum")
    assert bad["checksum"] == bad["computed"] ^ 1 == oc.checksum(walk.messages[100].view) ^ 1


def test_a_wrong_bbo_quote_is_a_ticker_mismatch(tmp_path, capsys, walk):
    quoted = checked_quotes(walk)[5]
    path, rendered = _capture(tmp_path, walk, bad_quote=quoted)
    code, result = verify_capture_cli(capsys, path)
    assert code == 1 and (result["ticker_mismatches"], result["checksum_mismatches"], result["gaps"]) == (1, 0, 0)
    index = sum(len(m.quotes) for m in walk.messages[: quoted + 1]) - 1
    assert result["first_mismatch_ticker"] == index
    bad = result["first_bad_update"]
    assert (bad["line"], bad["reason"], bad["seq"]) == (
        rendered.quote_lines[index],
        "top of book",
        walk.messages[quoted].seq,
    )


def test_a_reconnect_snapshot_resyncs(tmp_path, capsys, walk):
    path, _ = _capture(tmp_path, walk, reconnect_at=100, lost=5)
    code, result = verify_capture_cli(capsys, path)
    assert code == 0 and (result["snapshots"], result["resyncs"], result["gaps"]) == (2, 1, 0)
    assert result["diffs"] == result["applied"] == MESSAGES - 5 and result["in_sync_at_end"]
    assert result["ticker_checks"] == len(checked_quotes(walk, set(range(100, 105))))


def test_a_reconnect_after_a_break_brings_the_book_back(tmp_path, capsys, walk):
    dropped = droppable(walk, 50)
    path, rendered = _capture(tmp_path, walk, drop=dropped, reconnect_at=dropped + 20, lost=2)
    code, result = verify_capture_cli(capsys, path)
    assert code == 1  # the break stays reported
    assert (result["gaps"], result["resyncs"], result["first_bad_update"]["line"]) == (
        1,
        1,
        rendered.message_lines[dropped + 1],
    )
    assert result["in_sync_at_end"] and result["dropped_after_gap"] == 20 - 1
    assert result["checksum_mismatches"] == result["ticker_mismatches"] == 0


def test_a_sequence_reset_after_maintenance_is_followed(tmp_path, capsys, walk):
    path, _ = _capture(tmp_path, walk, reset_at=120)
    code, result = verify_capture_cli(capsys, path)
    assert code == 0 and (result["sequence_resets"], result["gaps"], result["applied"]) == (1, 0, MESSAGES)
    assert result["ticker_checks"] == len(checked_quotes(walk)) and result["checksums_checked"] == MESSAGES + 1


def test_retired_checksums_are_not_checked_and_the_chain_still_finds_a_loss(tmp_path, capsys, walk):
    path, _ = _capture(tmp_path, walk, retired=True)
    code, result = verify_capture_cli(capsys, path)
    assert code == 0 and (result["checksums_checked"], result["checksums_unchecked"]) == (0, MESSAGES + 1)
    path, rendered = _capture(tmp_path, walk, retired=True, drop=40)
    code, result = verify_capture_cli(capsys, path)
    assert code == 1 and result["first_bad_update"]["line"] == rendered.message_lines[41]


def test_books5_is_compared_over_five_levels(tmp_path, capsys):
    def books5(asks):
        data = {"asks": asks, "bids": [["3366.1", "7", "0", "3"], ["3366", "6", "3", "4"]], "ts": "1", "seqId": 10}
        return json.dumps({"arg": {"channel": "books5", "instId": "BTC-USDT"}, "data": [data]})

    agreeing = [["3366.8", "9", "0", "1"], ["3368", "8", "0", "1"]]
    lines = [books5(agreeing), _book_line("snapshot", DOC_EVEN, 10, -1, DOC_EVEN_CHECKSUM), books5(agreeing[:1])]
    path = write_capture_lines(tmp_path / "okx_spot_btc-usdt_20181204.txt", lines)
    code, result = verify_capture_cli(capsys, path)
    assert code == 1 and (result["ticker_checks"], result["ticker_mismatches"], result["first_mismatch_ticker"]) == (
        2,
        1,
        1,
    )
    assert result["first_bad_update"]["line"] == 3


def test_instrument_types_from_the_id():
    assert [market_of(i) for i in ("BTC-USDT", "BTC-USDT-SWAP", "BTC-USD-251226", "BTC-USD-251226-100000-C")] == [
        "spot",
        "swap",
        "futures",
        "option",
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            '12 {"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[]}',
            "books message without one data object",
        ),
        (
            '12 {"arg":{"channel":"books","instId":"BTC-USDT"},"action":"partial","data":[{}]}',
            "action 'partial', not snapshot|update",
        ),
        (
            '12 {"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"asks":[[1,2]],"bids":[]}]}',
            "book level [1, 2] is not [price, size, ...] strings",
        ),
        (
            '12 {"arg":{"channel":"bbo-tbt","instId":"ETH-USDT"},"data":[{"asks":[],"bids":[],"seqId":1}]}',
            "one instrument per run",
        ),
        (
            '12 {"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"seqId":"7"}]}',
            "seqId '7' is not an integer",
        ),
        ("12 {", "Expecting"),
    ],
)
def test_a_malformed_line_names_the_file_and_line(tmp_path, walk, line, reason):
    _, rendered = _capture(tmp_path, walk)
    lines = rendered.lines[:5] + [line + "\n"] + rendered.lines[5:]
    path = write_capture(tmp_path / "okx_spot_btc-usdt_20251126.gz", lines)
    with pytest.raises(CaptureFormatError, match=re.escape(reason)) as caught:
        verify_capture([path])
    assert (caught.value.path, caught.value.line_number) == (path, 6)


def test_a_file_without_book_messages_is_refused(tmp_path):
    path = write_capture_lines(tmp_path / "okx_spot_btc-usdt_20251124.txt", ["pong", oc.SUBSCRIBE])
    with pytest.raises(CaptureFormatError, match="not an OKX book capture"):
        verify_capture([path])


def test_files_in_order_replay_as_one(tmp_path, walk):
    _, rendered = _capture(tmp_path, walk)
    cut = rendered.message_lines[MESSAGES // 2]
    first = write_capture(tmp_path / "okx_spot_btc-usdt_20251124.gz", rendered.lines[:cut])
    second = write_capture(tmp_path / "okx_spot_btc-usdt_20251125.gz", rendered.lines[cut:])
    result = verify_capture([first, second])
    assert (result["checksums_checked"], result["ticker_checks"], result["gaps"]) == (
        MESSAGES + 1,
        len(checked_quotes(walk)),
        0,
    )


def test_books50_l2_tbt_keeps_fifty_levels_and_one_book_channel_per_run(tmp_path):
    bids = {"bids": [[str(3000 - i), "1", "0", "1"] for i in range(60)], "asks": [["3001", "2", "0", "1"]]}
    lines = [_book_line("snapshot", bids, 10, -1, channel="books50-l2-tbt")]
    lines.append(
        _book_line("update", {"bids": [["2999.5", "3", "0", "1"]], "asks": []}, 11, 10, channel="books50-l2-tbt")
    )
    path = write_capture_lines(tmp_path / "okx_spot_btc-usdt_20251124.txt", lines)
    book = okx_verify.replay_files([path]).book
    assert len(book.bids) == 50 and book.bids.best_prices(50)[-1] == 2952  # 2951 fell out of scope
    mixed = write_capture_lines(
        tmp_path / "okx_spot_btc-usdt_20251125.txt", [*lines, _book_line("update", bids, 12, 11)]
    )
    with pytest.raises(
        CaptureFormatError, match="books message in a replay of books50-l2-tbt: one book stream per run"
    ):
        verify_capture([mixed])
