"""Kraken spot: WebSocket `book` captures (v1 arrays, v2 objects) replayed exactly under Kraken's
book rules and checked against its CRC32 book checksum (`verify-capture`). The recorder subscribes
to its streams (`live`, `market-pipeline capture --exchange kraken`); no pipeline source yet (issue 35)."""


def verify_capture(paths):
    """`verify.verify_capture`, imported when used."""
    from market_pipeline.vendors.kraken.verify import verify_capture as replay

    return replay(paths)


def live_feed(market, symbol, depth=None, url=None):
    """`live.feed`, imported when used (the recorder's WebSocket client is not needed otherwise)."""
    from market_pipeline.vendors.kraken.live import feed

    return feed(market, symbol, depth, url)
