"""Kraken spot: WebSocket `book` captures (v1 arrays, v2 objects) replayed exactly under Kraken's
book rules and checked against its CRC32 book checksum (`verify-capture`). The recorder subscribes
to its streams (`live`, `market-pipeline capture --exchange kraken`). `PIPELINE_SOURCE`/`PIPELINE_SOURCES`
`kraken_capture` serves the captures as lake tables (`source`, `capture_tables`): a primary source,
or the reference a bought Kraken day is checked against (`source_agreement`, by exchange time:
Kraken numbers no message, but stamps each with its exchange time)."""

from market_pipeline.vendors.capture_vendor import capture_vendor


def verify_capture(paths):
    """`verify.verify_capture`, imported when used."""
    from market_pipeline.vendors.kraken.verify import verify_capture as replay

    return replay(paths)


def live_feed(market, symbol, depth=None, url=None):
    """`live.feed`, imported when used (the recorder's WebSocket client is not needed otherwise)."""
    from market_pipeline.vendors.kraken.live import feed

    return feed(market, symbol, depth, url)


def _source_class():
    from market_pipeline.vendors.kraken.source import KrakenCaptureSource

    return KrakenCaptureSource


VENDOR = capture_vendor(
    "kraken_capture",
    "Kraken spot WebSocket captures (kraken_* files in PIPELINE_CAPTURE_DIR)",
    _source_class,
    update_ids=False,  # sequence_number is the receive time
    ticker_time_ns=None,  # no top-of-book stream recorded
    message_ids=False,  # Kraken numbers no book message: matched by exchange time
    message_time_ns=1_000,  # every book message's exchange time (v2 `timestamp`), in µs
)
