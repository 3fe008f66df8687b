"""OKX v5: WebSocket order book captures (`books`, `books-l2-tbt`, `books50-l2-tbt`, with `bbo-tbt`
and `books5`) replayed exactly under OKX's sequence rules and checked against its CRC32 checksum
and top-of-book channels (`verify-capture`). No pipeline source yet: the recorder and
`PIPELINE_SOURCES` integration are still to come (issue 35)."""


def verify_capture(paths):
    """`verify.verify_capture`, imported when used."""
    from market_pipeline.vendors.okx.verify import verify_capture as replay

    return replay(paths)
