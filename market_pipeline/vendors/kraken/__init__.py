"""Kraken spot: WebSocket `book` captures (v1 arrays, v2 objects) replayed exactly under Kraken's
book rules and checked against its CRC32 book checksum (`verify-capture`). No pipeline source yet:
the recorder and `PIPELINE_SOURCES` integration are still to come (issue 35)."""


def verify_capture(paths):
    """`verify.verify_capture`, imported when used."""
    from market_pipeline.vendors.kraken.verify import verify_capture as replay

    return replay(paths)
