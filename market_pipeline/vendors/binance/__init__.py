"""Binance: raw WebSocket captures (diffs, bookTicker, trades, REST depth snapshots), replayed
under Binance's sync rules; the live recorder that writes them lives in `live/`."""

from market_pipeline.vendors.binance.config import capture_vendor


def verify_capture(paths):
    """`verify.verify_capture`, imported when used."""
    from market_pipeline.vendors.binance.verify import verify_capture as replay

    return replay(paths)


def _build(settings):
    from market_pipeline.vendors.binance.source import CaptureSource

    return CaptureSource.from_settings(settings)


VENDOR = capture_vendor(
    "capture",
    "raw Binance WebSocket captures (PIPELINE_CAPTURE_DIR)",
    _build,
    # Futures bookTickers carry the event time E in ms; spot ones (lake exchange BINANCE) no time at all.
    ticker_time_ns=lambda instrument: None if instrument.exchange == "BINANCE" else 1_000_000,
)
