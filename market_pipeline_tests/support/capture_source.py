"""A spot capture over midnight for the capture source (PIPELINE_SOURCE=capture): day 1 syncs on
its REST snapshot, day 2 continues from its checkpoint; and one instrument-day imported and rebuilt
the way the raw and books stages do it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from market_pipeline_tests.support.binance_capture import TRADE, diff, snapshot, ticker, write_capture_lines

SPOT_KEY, USDM_KEY = "BINANCE:BTC-USDT", "BINANCE_FUTURES:BTC-USDT-PERP"
DAY1, DAY2 = dt.date(2023, 11, 14), dt.date(2023, 11, 15)
MIDNIGHT_NS = 1_700_006_400 * 10**9  # 2023-11-15 00:00 UTC
DAY2_EVENT_MS = MIDNIGHT_NS // 10**6  # the exchange's time of day 2's diffs: in day 2, like their receive times

# A spot capture over midnight. Day 1 syncs on its REST snapshot (lastUpdateId 100).
DAY1_LINES = [
    diff(99, 100, bids=[("10.00", "5")]),  # stale: dropped before the sync
    diff(101, 102, bids=[("10.50", "3")]),  # brackets lastUpdateId + 1: first applied
    snapshot(100, bids=[["10.00", "1"]], asks=[["11.00", "2"]]),
    diff(103, 104, asks=[("11.00", "0"), ("11.50", "1")]),
    ticker(105, "10.60", "1", "11.50", "1"),  # for the first diff after midnight
    TRADE,
]
CONTINUOUS_DAY2 = [
    diff(105, 105, bids=[("10.60", "1")], event_ms=DAY2_EVENT_MS),  # U == previous u + 1: continues the checkpoint
    diff(108, 109, bids=[("10.70", "1")], event_ms=DAY2_EVENT_MS),  # U != 106: a gap
    diff(110, 111, bids=[("10.80", "1")], event_ms=DAY2_EVENT_MS),  # buffered
    snapshot(110, bids=[["10.00", "1"]], asks=[["11.00", "2"]]),  # 110 is stale, 111 brackets 111
    diff(112, 112, asks=[("11.00", "3")], event_ms=DAY2_EVENT_MS),
]


def write_capture(directory: Path, day2_lines: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_capture_lines(directory / "binance_spot_btcusdt_20231114.txt", DAY1_LINES, MIDNIGHT_NS - 1000)
    write_capture_lines(directory / "binance_spot_btcusdt_20231115.txt", day2_lines, MIDNIGHT_NS + 1000)
    return directory


def current_settings():
    from market_pipeline.settings import load_settings

    return load_settings()


def instrument_of(settings, key):
    return next(i for i in settings.universe if i.key == key)


def import_and_rebuild(settings, instrument, day):
    from market_pipeline.defs.books.assets import rebuild_instrument_day
    from market_pipeline.defs.common.importer import import_partition
    from market_pipeline.vendors.registry import build_source

    source = build_source(settings)
    for table in ("trades", "book_delta_v2", "depth_snapshot", "book", "book_ticker"):
        import_partition(source, settings, table, instrument, day, "test")
    return rebuild_instrument_day(source, settings, instrument, day).result
