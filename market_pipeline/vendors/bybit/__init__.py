"""Bybit v5: WebSocket `orderbook.{depth}` captures replayed exactly under Bybit's update-id rules
and checked against its `orderbook.1` top-of-book stream (`verify-capture`). No pipeline source
yet: the recorder and `PIPELINE_SOURCES` integration are still to come (issue 35)."""


def verify_capture(paths):
    """`verify.verify_capture`, imported when used."""
    from market_pipeline.vendors.bybit.verify import verify_capture as replay

    return replay(paths)
