"""Bybit v5: WebSocket `orderbook.{depth}` captures replayed exactly under Bybit's update-id rules
and checked against its `orderbook.1` top-of-book stream (`verify-capture`). The recorder
subscribes to its streams (`live`, `market-pipeline capture --exchange bybit`); no pipeline source
yet (issue 35)."""


def verify_capture(paths):
    """`verify.verify_capture`, imported when used."""
    from market_pipeline.vendors.bybit.verify import verify_capture as replay

    return replay(paths)


def live_feed(market, symbol, depth=None, url=None):
    """`live.feed`, imported when used (the recorder's WebSocket client is not needed otherwise)."""
    from market_pipeline.vendors.bybit.live import feed

    return feed(market, symbol, depth, url)
