"""Kraken spot captures: exact replay under Kraken's book rules, its CRC32 checksum as the oracle,
`verify-capture` on v1 and v2 files (synthetic, with exact ground truth: support/kraken_captures)."""

from __future__ import annotations

import base64
import os
import re
import zlib

import pytest

from market_pipeline.cli.main import main
from market_pipeline.core.security import crypto
from market_pipeline.vendors.capture_files import CaptureFormatError
from market_pipeline.vendors.kraken import capture_format as fmt
from market_pipeline.vendors.kraken import verify as kraken_verify
from market_pipeline.vendors.kraken.book import KrakenBook, checksum_text, to_fixed
from market_pipeline.vendors.registry import verify_capture
from market_pipeline_tests.support import kraken_captures as kc
from market_pipeline_tests.support.binance_capture import SYNTHETIC_SPOT, write_capture_lines
from market_pipeline_tests.support.verify_capture_cli import verify_capture_cli

UPDATES = 240

# The example update of Kraken's "Book checksum (WebSocket v1)" guide
# (https://docs.kraken.com/exchange/guides/websockets/book-checksum-v1): asks and bids in one
# message, the checksum in the last object.
DOC_V1_UPDATE = (
    '[0,{"a":[["0.05120","0.00000500","1582905486.493008"],["0.05275","0.00000500","1582905486.493034"]]},'
    '{"b":[["0.04765","0.00000500","1582905486.493008"],["0.04940","0.00000500","1582905486.493034"]],'
    '"c":"974947235"},"book-1000","BTC/USD"]'
)

# The example snapshot of Kraken's "Book checksum (WebSocket v2)" guide
# (https://docs.kraken.com/api/docs/guides/spot-ws-book-v2), with the checksum the guide gives for
# it; written here as it comes on the wire, prices and quantities as JSON numbers.
DOC_V2_BIDS = (
    ("45283.5", "0.10000000"),
    ("45283.4", "1.54582015"),
    ("45282.1", "0.10000000"),
    ("45281.0", "0.10000000"),
    ("45280.3", "1.54592586"),
    ("45279.0", "0.07990000"),
    ("45277.6", "0.03310103"),
    ("45277.5", "0.30000000"),
    ("45277.3", "1.54602737"),
    ("45276.6", "0.15445238"),
)
DOC_V2_ASKS = (
    ("45285.2", "0.00100000"),
    ("45286.4", "1.54571953"),
    ("45286.6", "1.54571109"),
    ("45289.6", "1.54560911"),
    ("45290.2", "0.15890660"),
    ("45291.8", "1.54553491"),
    ("45294.7", "0.04454749"),
    ("45296.1", "0.35380000"),
    ("45297.5", "0.09945542"),
    ("45299.5", "0.18772827"),
)
DOC_V2_CHECKSUM = 3310070434

# The book of Kraken's "Book checksum (WebSocket v1)" guide (same page as DOC_V1_UPDATE), every
# level 0.00000500, and the checksum the guide gives for it.
DOC_V1_ASKS = (
    "0.05005",
    "0.05010",
    "0.05015",
    "0.05020",
    "0.05025",
    "0.05030",
    "0.05035",
    "0.05040",
    "0.05045",
    "0.05050",
)
DOC_V1_BIDS = (
    "0.05000",
    "0.04995",
    "0.04990",
    "0.04980",
    "0.04975",
    "0.04970",
    "0.04965",
    "0.04960",
    "0.04955",
    "0.04950",
)
DOC_V1_CHECKSUM = 974947235


def _doc_v2_snapshot(checksum: int = DOC_V2_CHECKSUM) -> str:
    def levels(side):
        return ",".join(f'{{"price":{price},"qty":{qty}}}' for price, qty in side)

    return (
        f'{{"channel":"book","type":"snapshot","data":[{{"symbol":"BTC/USD","bids":[{levels(DOC_V2_BIDS)}],'
        f'"asks":[{levels(DOC_V2_ASKS)}],"checksum":{checksum}}}]}}'
    )


@pytest.fixture(scope="module")
def book():
    return kc.synthetic_book(UPDATES)


def _capture(tmp_path, version, book, **faults):
    rendered = kc.render(version, book, **faults)
    pair = kc.PAIRS[version].replace("/", "").lower()
    return kc.write_capture(tmp_path / f"kraken_spot_{pair}_20251124.gz", rendered.lines), rendered


def test_checksum_texts_follow_the_kraken_guides_examples():
    """Vectors from Kraken's guides: "Book checksum (WebSocket v2)" (price "45285.2" -> "452852",
    qty "0.00100000" -> "100000", the level "452852100000"), "Book checksum (WebSocket v1)"
    ("0.05000" -> "5000", volume "0.00000304", the level "5000304") and the FIX checksum guide
    (28013.0 at price precision 1 -> "280130", 0.00096506 at quantity precision 8 -> "96506", the
    level "28013096506"). A level's text is its fixed-point integer at the pair's precision."""
    assert checksum_text([(to_fixed("45285.2", 1), to_fixed("0.00100000", 8))], []) == "452852100000"
    assert checksum_text([(to_fixed("0.05000", 5), to_fixed("0.00000304", 8))], []) == "5000304"
    assert checksum_text([(to_fixed("28013.0", 1), to_fixed("0.00096506", 8))], []) == "28013096506"
    # A v2 number sent without its trailing zeros still lands on the pair's precision.
    assert to_fixed("28013", 1) == 280130 and to_fixed("9.6506e-4", 8) == 96506
    # Asks low to high, then bids high to low; the CRC32 is zlib's, unsigned.
    asks, bids = [(5000, 304), (5001, 1)], [(4999, 20)]
    assert checksum_text(asks, bids) == "5000304500114999" + "20"
    book = KrakenBook(fmt.BookMessage(True, "BTC/USD", asks=[("0.05001", "0.00000001"), ("0.05000", "0.00000304")]), 10)
    book.apply(fmt.BookMessage(False, "BTC/USD", bids=[("0.04999", "0.00000020")]))
    assert book.top() == (asks, bids)
    assert zlib.crc32(b"5000304500114999" + b"20") == zlib.crc32(checksum_text(*book.top()).encode())


def test_the_v2_guides_example_book_gives_its_checksum(tmp_path):
    message = fmt.classify(fmt.decode(_doc_v2_snapshot()))
    assert message.asks[0] == ("45285.2", "0.00100000")  # the numbers' text, trailing zeros kept
    book = KrakenBook(message, fmt.snapshot_depth(message))
    assert zlib.crc32(checksum_text(*book.top()).encode()) == message.checksum == DOC_V2_CHECKSUM
    assert checksum_text(*book.top()).startswith("452852100000" + "4528641545719534")
    good = write_capture_lines(tmp_path / "kraken_spot_btcusd_20251124.txt", [_doc_v2_snapshot()])
    bad = write_capture_lines(tmp_path / "kraken_spot_btcusd_20251125.txt", [_doc_v2_snapshot(DOC_V2_CHECKSUM + 1)])
    assert verify_capture([good])["checksums_checked"] == 1 and verify_capture([good])["checksum_mismatches"] == 0
    assert verify_capture([bad])["first_bad_update"]["computed"] == DOC_V2_CHECKSUM


def test_the_v1_guides_example_book_gives_its_checksum(tmp_path):
    """The guide's book, its best bid arriving as an update (v1 sends checksums on updates only)."""

    def levels(prices):
        return ",".join(f'["{price}","0.00000500","1582905487.439814"]' for price in prices)

    snapshot = f'[7,{{"as":[{levels(DOC_V1_ASKS)}],"bs":[{levels(DOC_V1_BIDS[1:])}]}},"book-10","XBT/USD"]'
    update = f'[7,{{"b":[{levels(DOC_V1_BIDS[:1])}],"c":"{DOC_V1_CHECKSUM}"}},"book-10","XBT/USD"]'
    path = write_capture_lines(tmp_path / "kraken_spot_xbtusd_20200228.txt", [snapshot, update])
    result = verify_capture([path])
    assert (result["checksums_checked"], result["checksum_mismatches"]) == (1, 0)
    assert (result["final_best_bid"], result["final_best_ask"]) == ("0.05000", "0.05005")


def test_the_guides_v1_update_reads_both_sides_and_the_checksum():
    message = fmt.classify(fmt.decode(DOC_V1_UPDATE))
    assert isinstance(message, fmt.BookMessage) and not message.snapshot
    assert message.asks == [("0.05120", "0.00000500"), ("0.05275", "0.00000500")]
    assert message.bids == [("0.04765", "0.00000500"), ("0.04940", "0.00000500")]
    assert (message.checksum, message.depth, message.symbol) == (974947235, 1000, "BTC/USD")


def test_updates_are_truncated_to_the_subscribed_depth_and_zero_removes():
    snapshot = fmt.BookMessage(True, "XBT/USD", asks=[("10.0", "1.00"), ("11.0", "2.00")], bids=[("9.0", "1.00")])
    book = KrakenBook(snapshot, 2)
    book.apply(fmt.BookMessage(False, "XBT/USD", asks=[("10.5", "3.00")], bids=[("9.0", "0.00")]))
    assert book.asks == {100: 100, 105: 300} and book.bids == {}  # 11.0 fell out of scope silently
    book.apply(fmt.BookMessage(False, "XBT/USD", asks=[("10.0", "0.00"), ("11.0", "2.00")]))  # republished
    assert book.asks == {105: 300, 110: 200}


@pytest.mark.parametrize("version", [1, 2])
def test_a_good_capture_agrees_with_every_checksum(tmp_path, capsys, book, version):
    path, rendered = _capture(tmp_path, version, book)
    code, result = verify_capture_cli(capsys, path)
    assert code == 0
    assert (result["exchange"], result["symbol"]) == ("KRAKEN", kc.PAIRS[version].replace("/", "-"))
    assert result["diffs"] == result["applied"] == UPDATES
    # v2 snapshots carry a checksum too.
    assert result["checksums_checked"] == UPDATES + (version == 2)
    assert (result["checksum_mismatches"], result["gaps"], result["first_bad_update"]) == (0, 0, None)
    assert result["in_sync_at_end"] and result["snapshots"] == 1 and result["trades"] == rendered.trades
    assert (result["final_best_bid"], result["final_best_ask"]) == kc.final_best(version, book)
    assert result["deltas_applied"] == sum(len(u.asks) + len(u.bids) for u in book.updates)
    assert (result["tick_size"], result["lot_size"]) == ({1: "0.00001", 2: "0.1"}[version], "0.00000001")


def test_the_synthetic_stream_exercises_both_sides_and_republished_levels(book):
    assert sum(bool(u.asks and u.bids) for u in book.updates) > 10
    assert sum(any(level[2] for level in u.asks + u.bids) for u in book.updates) > 10


@pytest.mark.parametrize("version", [1, 2])
def test_a_dropped_update_is_named_at_the_next_checksum(tmp_path, capsys, book, version):
    dropped = kc.droppable_update(book, UPDATES // 2)
    path, rendered = _capture(tmp_path, version, book, drop=dropped)
    code, result = verify_capture_cli(capsys, path)
    assert code == 1
    assert (result["checksum_mismatches"], result["gaps"]) == (1, 1)
    bad = result["first_bad_update"]
    line = rendered.update_lines[dropped + 1]
    assert (bad["file"], bad["line"]) == (str(path), line)
    assert bad["received_time"] == int(rendered.lines[line - 1].partition(" ")[0])
    # Unsynced until a snapshot that never comes: the rest is dropped, nothing else checked.
    assert result["applied"] == dropped + 1 and result["dropped_after_gap"] == UPDATES - dropped - 2
    assert not result["in_sync_at_end"] and result["unsynced_at_end"] == 1


def test_a_wrong_checksum_is_the_first_bad_update(tmp_path, capsys, book):
    path, rendered = _capture(tmp_path, 1, book, bad_checksum=100)
    code, result = verify_capture_cli(capsys, path)
    assert code == 1 and result["checksum_mismatches"] == 1
    bad = result["first_bad_update"]
    assert bad["line"] == rendered.update_lines[100] and bad["checksum"] == bad["computed"] ^ 1


@pytest.mark.parametrize("version", [1, 2])
def test_a_reconnect_snapshot_resyncs(tmp_path, capsys, book, version):
    path, _ = _capture(tmp_path, version, book, reconnect_at=100, lost=5)
    code, result = verify_capture_cli(capsys, path)
    assert code == 0 and (result["snapshots"], result["resyncs"], result["checksum_mismatches"]) == (2, 1, 0)
    assert result["diffs"] == result["applied"] == UPDATES - 5 and result["in_sync_at_end"]


def test_a_reconnect_after_a_mismatch_brings_the_book_back(tmp_path, capsys, book):
    dropped = kc.droppable_update(book, 50)
    path, rendered = _capture(tmp_path, 2, book, drop=dropped, reconnect_at=dropped + 20, lost=3)
    code, result = verify_capture_cli(capsys, path)
    assert code == 1  # the mismatch stays counted
    assert (result["checksum_mismatches"], result["resyncs"], result["first_bad_update"]["line"]) == (
        1,
        1,
        rendered.update_lines[dropped + 1],
    )
    assert result["in_sync_at_end"] and result["dropped_after_gap"] == 20 - 2
    assert (result["final_best_bid"], result["final_best_ask"]) == kc.final_best(2, book)


def test_small_batches_give_the_figures_of_one_batch(tmp_path, monkeypatch, book):
    path, _ = _capture(tmp_path, 1, book, drop=kc.droppable_update(book, 30), reconnect_at=120, lost=2)
    whole = verify_capture([path])
    monkeypatch.setattr(kraken_verify, "BATCH_LINES", 7)
    assert verify_capture([path]) == whole and whole["resyncs"] == 1


def test_an_encrypted_capture_verifies_as_its_plain_copy(tmp_path, monkeypatch, capsys, book):
    key = os.urandom(32)
    monkeypatch.setenv(crypto.MASTER_KEY_ENV, base64.b64encode(key).decode())
    plain, _ = _capture(tmp_path, 1, book, bad_checksum=10)
    sealed = tmp_path / "sealed" / f"{plain.name}.enc"
    sealed.parent.mkdir()
    crypto.encrypt_file(plain, sealed, key, chunk_size=4096)
    plain_result, sealed_result = verify_capture([plain]), verify_capture([sealed])
    assert sealed_result["first_bad_update"].pop("file") == str(sealed)
    assert plain_result["first_bad_update"].pop("file") == str(plain)
    assert sealed_result == plain_result and plain_result["checksum_mismatches"] == 1


def test_files_in_order_replay_as_one(tmp_path, book):
    _, rendered = _capture(tmp_path, 2, book)
    cut = rendered.update_lines[UPDATES // 2]
    first = kc.write_capture(tmp_path / "kraken_spot_btcusd_20251124.gz", rendered.lines[:cut])
    second = kc.write_capture(tmp_path / "kraken_spot_btcusd_20251125.gz", rendered.lines[cut:])
    result = verify_capture([first, second])
    assert result["checksums_checked"] == UPDATES + 1 and result["checksum_mismatches"] == 0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('12 [42,{"a":[["1.0"]],"c":"1"},"book-10","XBT/USD"]', "is not [price, volume, timestamp"),
        ('12 {"channel":"book","type":"update","data":[]}', "one data object"),
        ("12 [42,{", "Expecting"),
        ('x1 {"event":"heartbeat"}', "receive time 'x1' is not an integer"),
        ('12 {"channel":"book","type":"update","data":[{"symbol":"ETH/USD","asks":[]}]}', "one pair per run"),
        (
            '12 {"channel":"book","type":"update","data":[{"symbol":"BTC/USD","asks":[{"price":61416.15,"qty":1}]}]}',
            "61416.15 has more than 1 decimals, the precision of the snapshot",
        ),
    ],
)
def test_a_malformed_line_names_the_file_and_line(tmp_path, book, line, reason):
    _, rendered = _capture(tmp_path, 2, book)
    lines = rendered.lines[:5] + [line + "\n"] + rendered.lines[5:]
    path = kc.write_capture(tmp_path / "kraken_spot_btcusd_20251126.gz", lines)
    with pytest.raises(CaptureFormatError, match=re.escape(reason)) as caught:
        verify_capture([path])
    assert (caught.value.path, caught.value.line_number) == (path, 6)


def test_a_file_without_book_messages_is_refused(tmp_path):
    path = write_capture_lines(tmp_path / "kraken_spot_xbtusd_20251124.txt", ['{"event":"heartbeat"}'])
    with pytest.raises(CaptureFormatError, match="no book message nor book subscription") as caught:
        verify_capture([path])
    assert (caught.value.path, caught.value.line_number) == (path, None)


def test_verify_capture_has_one_shape_for_every_exchange(tmp_path, capsys, book):
    kraken, _ = _capture(tmp_path, 1, book)
    binance = write_capture_lines(tmp_path / "binance_spot_btcusdt_20231114.txt", SYNTHETIC_SPOT)
    binance_code, binance_result = verify_capture_cli(capsys, binance)
    _, kraken_result = verify_capture_cli(capsys, kraken)
    assert list(binance_result) == list(kraken_result)
    assert binance_code == 1 and binance_result["ticker_mismatches"] == 1  # its own oracle, as before
    assert (binance_result["checksums_checked"], binance_result["first_bad_update"]) == (0, None)


def test_capture_files_of_two_exchanges_are_refused(tmp_path, capsys, book):
    kraken, _ = _capture(tmp_path, 1, book)
    binance = write_capture_lines(tmp_path / "binance_spot_btcusdt_20231114.txt", SYNTHETIC_SPOT)
    assert main(["verify-capture", str(kraken), str(binance)]) == 1
    assert "capture files of several exchanges (binance, kraken)" in capsys.readouterr().err
