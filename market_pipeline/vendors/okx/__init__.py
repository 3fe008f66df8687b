"""OKX v5: WebSocket order book captures (`books`, `books-l2-tbt`, `books50-l2-tbt`, with `bbo-tbt`
and `books5`) replayed exactly under OKX's sequence rules and checked against its CRC32 checksum
and top-of-book channels (`verify-capture`). The recorder subscribes to its streams
(`live`, `market-pipeline capture --exchange okx`). `PIPELINE_SOURCE`/`PIPELINE_SOURCES`
`okx_capture` serves the captures as lake tables (`source`, `capture_tables`): a primary source,
or the reference a bought OKX day is checked against (`source_agreement`)."""

from market_pipeline.vendors.binance.config import capture_vendor


def verify_capture(paths):
    """`verify.verify_capture`, imported when used."""
    from market_pipeline.vendors.okx.verify import verify_capture as replay

    return replay(paths)


def live_feed(market, symbol, depth=None, url=None):
    """`live.feed`, imported when used (the recorder's WebSocket client is not needed otherwise)."""
    from market_pipeline.vendors.okx.live import feed

    return feed(market, symbol, depth, url)


def _build(settings):
    from market_pipeline.vendors.okx.source import OkxCaptureSource

    return OkxCaptureSource.from_settings(settings)


VENDOR = capture_vendor(
    "okx_capture",
    "OKX v5 WebSocket captures (okx_* files in PIPELINE_CAPTURE_DIR)",
    _build,
    update_ids=True,  # sequence_number is OKX's seqId
    ticker_time_ns=lambda instrument: 1_000_000,  # bbo-tbt's ts: ms
)
