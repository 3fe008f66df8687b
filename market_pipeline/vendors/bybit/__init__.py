"""Bybit v5: WebSocket `orderbook.{depth}` captures replayed exactly under Bybit's update-id rules
and checked against its `orderbook.1` top-of-book stream (`verify-capture`). The recorder
subscribes to its streams (`live`, `market-pipeline capture --exchange bybit`).
`PIPELINE_SOURCE`/`PIPELINE_SOURCES` `bybit_capture` serves the captures as lake tables (`source`,
`capture_tables`): a primary source, or the reference a bought Bybit day is checked against
(`source_agreement`)."""

from market_pipeline.vendors.capture_vendor import capture_vendor


def verify_capture(paths):
    """`verify.verify_capture`, imported when used."""
    from market_pipeline.vendors.bybit.verify import verify_capture as replay

    return replay(paths)


def live_feed(market, symbol, depth=None, url=None):
    """`live.feed`, imported when used (the recorder's WebSocket client is not needed otherwise)."""
    from market_pipeline.vendors.bybit.live import feed

    return feed(market, symbol, depth, url)


def _source_class():
    from market_pipeline.vendors.bybit.source import BybitCaptureSource

    return BybitCaptureSource


VENDOR = capture_vendor(
    "bybit_capture",
    "Bybit v5 WebSocket captures (bybit_* files in PIPELINE_CAPTURE_DIR)",
    _source_class,
    update_ids=True,  # sequence_number is Bybit's seq
    ticker_time_ns=1_000_000,  # orderbook.1's ts: ms
)
