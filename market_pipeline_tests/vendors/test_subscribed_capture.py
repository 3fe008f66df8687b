"""The recorder of exchanges that send a snapshot on subscribing (vendors/live_capture/subscribed.py),
against a local feed: it subscribes on every connection, writes every message as received (one
line each), keeps the exchange's application pings going without writing their answers, records
a dropped connection as a gap and resubscribes; the file it writes replays exactly."""

from __future__ import annotations

import asyncio
import gzip
import json
from dataclasses import replace
from pathlib import Path

import pytest

from market_pipeline.vendors.kraken import live as kraken_live
from market_pipeline.vendors.live_capture.stream import StreamTimeouts
from market_pipeline.vendors.live_capture.subscribed import SubscribedCaptureOptions, one_line, record_subscribed
from market_pipeline.vendors.registry import verify_capture
from market_pipeline_tests.support.kraken_captures import render, synthetic_book
from market_pipeline_tests.support.verify_capture_cli import verify_capture_cli
from market_pipeline_tests.support.websocket_server import SubscribedFeedServer


def _kraken_messages(reconnect_at: int) -> tuple[list[str], list[str]]:
    """A synthetic Kraken v2 day's messages split where the exchange would resend its snapshot."""
    book = synthetic_book(60)
    messages = [line.split(" ", 1)[1].rstrip("\n") for line in render(2, book, reconnect_at=reconnect_at, lost=2).lines]
    snapshots = [i for i, m in enumerate(messages) if '"type":"snapshot"' in m]
    assert len(snapshots) == 2
    return messages[: snapshots[1]], messages[snapshots[1] :]


def _lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [line.rstrip("\n").split(" ", 1)[1] for line in fh]


@pytest.fixture
def dropped_feed():
    first, second = _kraken_messages(reconnect_at=30)
    first[0] = first[0].replace(":", ":\n", 1)  # a message sent over two lines
    server = SubscribedFeedServer([(first, True), (second, False)], subscriptions=2)
    try:
        yield server, first, second
    finally:
        server.close()


def test_a_dropped_feed_is_resubscribed_and_its_capture_replays_exactly(dropped_feed, tmp_path):
    server, first, second = dropped_feed
    feed = replace(
        kraken_live.feed("spot", "BTC/USD", depth=10, url=server.url), ping="ping", pong="pong", ping_seconds=0.05
    )
    options = SubscribedCaptureOptions(
        feed, duration_seconds=2.0, out_dir=tmp_path, ssl_context=None, timeouts=StreamTimeouts(read_idle=5.0)
    )
    report = asyncio.run(record_subscribed(options))

    subscribe = [json.loads(m) for m in feed.subscribe]
    assert subscribe[0]["params"] == {"channel": "book", "symbol": ["BTC/USD"], "depth": 10}
    assert [[json.loads(m) for m in got[:2]] for got in server.received] == [subscribe, subscribe]
    assert "ping" in server.received[1][2:]  # the application ping kept going
    (path,) = [Path(f["path"]) for f in report.files]
    assert path.name.startswith("kraken_spot_btcusd_") and path.name.endswith(".gz")
    assert _lines(tmp_path / path) == [one_line(first[0]), *first[1:], *second]  # no "pong"
    assert one_line(first[0]) == first[0].replace(":\n", ": ", 1)
    assert (report.connections, report.messages) == (2, len(first) + len(second))
    (gap,) = json.loads((tmp_path / "manifest.json").read_text())["gaps"]
    assert gap["kind"] == "disconnect" and gap["from_ns"] < gap["to_ns"]

    figures = verify_capture([tmp_path / path])
    assert (figures["snapshots"], figures["resyncs"], figures["in_sync_at_end"]) == (2, 1, True)
    assert figures["checksums_checked"] == 60 and figures["checksum_mismatches"] == 0
    assert figures["first_bad_update"] is None


def _messages(lines: list[str]) -> list[str]:
    return [line.split(" ", 1)[1].rstrip("\n") for line in lines]


def _exchange_day(exchange: str) -> tuple[list[str], int]:
    """A clean synthetic capture's messages in `exchange`'s format, and how many subscribe messages
    its recorder sends."""
    if exchange == "kraken":
        return _messages(render(2, synthetic_book(40)).lines), 2
    if exchange == "okx":
        from market_pipeline_tests.support import okx_captures

        return _messages(okx_captures.render(okx_captures.walk(40)).lines), 1
    from market_pipeline_tests.support import bybit_captures

    return _messages(bybit_captures.render(bybit_captures.walk(40)).lines), 1


@pytest.mark.parametrize(
    ("exchange", "market", "symbol", "name"),
    [
        ("kraken", "spot", "BTC/USD", "kraken_spot_btcusd_"),
        ("okx", "spot", "BTC-USDT", "okx_spot_btc-usdt_"),
        ("bybit", "linear", "BTCUSDT", "bybit_linear_btcusdt_"),
    ],
)
def test_capture_exchange_records_what_verify_capture_replays(exchange, market, symbol, name, tmp_path, capsys):
    """`market-pipeline capture --exchange X` against a local feed, then `verify-capture` on its file:
    every message kept, named for the exchange's reader, every check agreeing."""
    from market_pipeline.cli.main import main

    messages, subscriptions = _exchange_day(exchange)
    server = SubscribedFeedServer([(messages, False)], subscriptions=subscriptions)
    try:
        code = main(
            [
                "capture",
                *("--exchange", exchange, "--market", market, "--symbol", symbol),
                *("--duration", "1.5s", "--out", str(tmp_path), "--ws-url", server.url, "--allow-plaintext"),
            ]
        )
    finally:
        server.close()
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{len(messages):,} messages, 0 snapshot(s), 1 connection(s), 0 gap(s)" in out
    (path,) = (tmp_path / f["path"] for f in json.loads((tmp_path / "manifest.json").read_text())["files"])
    assert path.name.startswith(name) and _lines(path) == messages
    code, figures = verify_capture_cli(capsys, path)
    assert code == 0
    assert figures["first_bad_update"] is None and figures["checksum_mismatches"] == 0
    assert figures["ticker_mismatches"] == 0 and figures["gaps"] == 0 and figures["in_sync_at_end"]
    # each exchange's oracle was consulted: Kraken's and OKX's checksums, OKX's and Bybit's top of book
    assert (figures["checksums_checked"] > 0, figures["ticker_checks"] > 0) == {
        "kraken": (True, False),
        "okx": (True, True),
        "bybit": (False, True),
    }[exchange]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--exchange", "kraken", "--market", "futures", "--symbol", "BTC/USD"], "--market 'futures'"),
        (["--exchange", "kraken", "--market", "spot", "--symbol", "BTCUSD"], "not a Kraken v2 pair"),
        (["--exchange", "kraken", "--market", "spot", "--symbol", "BTC/USD", "--depth", "7"], "--depth 7"),
        (["--exchange", "okx", "--market", "spot", "--symbol", "BTC-USDT-SWAP"], "is an OKX swap instrument"),
        (["--exchange", "bybit", "--market", "options", "--symbol", "BTCUSDT"], "not a Bybit category"),
        (["--exchange", "bybit", "--market", "spot", "--symbol", "BTCUSDT", "--rest-url", "https://x"], "--rest-url"),
        (["--market", "spot", "--symbol", "btcusdt", "--depth", "50"], "--depth is for kraken, okx and bybit"),
        (["--exchange", "okx", "--market", "spot", "--symbol", "BTC-USDT", "--ws-url", "ws://x"], "plaintext"),
    ],
)
def test_capture_options_an_exchange_cannot_take_are_refused_naming_them(argv, message, tmp_path, capsys):
    from market_pipeline.cli.main import main

    assert main(["capture", *argv, "--duration", "1s", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and message in err, err
    assert not (tmp_path / "manifest.json").exists()
