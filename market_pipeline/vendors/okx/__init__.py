"""OKX v5: WebSocket order book captures (`books`, `books-l2-tbt`, `books50-l2-tbt`, with `bbo-tbt`
and `books5`) replayed exactly under OKX's sequence rules and checked against its CRC32 checksum
and top-of-book channels (`verify-capture`). The recorder subscribes to its streams
(`live`, `market-pipeline capture --exchange okx`); no pipeline source yet (issue 35)."""


def verify_capture(paths):
    """`verify.verify_capture`, imported when used."""
    from market_pipeline.vendors.okx.verify import verify_capture as replay

    return replay(paths)


def live_feed(market, symbol, depth=None, url=None):
    """`live.feed`, imported when used (the recorder's WebSocket client is not needed otherwise)."""
    from market_pipeline.vendors.okx.live import feed

    return feed(market, symbol, depth, url)
