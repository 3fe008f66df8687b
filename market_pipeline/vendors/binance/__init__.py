"""Binance: raw WebSocket captures (diffs, bookTicker, trades, REST depth snapshots), replayed
under Binance's sync rules; the live recorder that writes them lives in `live/`."""

from market_pipeline.vendors.base import Vendor, directory_problem
from market_pipeline.vendors.binance.config import BinanceCaptureConfig, capture_problems


def verify_capture(paths):
    """`verify.verify_capture`, imported when used."""
    from market_pipeline.vendors.binance.verify import verify_capture as replay

    return replay(paths)


def _build(settings):
    from market_pipeline.vendors.binance.source import BinanceCaptureSource

    return BinanceCaptureSource(
        settings.capture_dir,
        settings.data_dir / "sources" / "capture",
        settings.lake_dir,
        fidelity_interval_ms=settings.checks.fidelity_sample_interval_ms,
    )


VENDOR = Vendor(
    name="capture",
    description="raw Binance WebSocket captures (PIPELINE_CAPTURE_DIR)",
    build=_build,
    config=BinanceCaptureConfig,
    problems=capture_problems,
    environment=lambda settings: directory_problem("PIPELINE_CAPTURE_DIR", settings.capture_dir),
    describe=lambda settings: str(settings.capture_dir.resolve()) if settings.capture_dir else "?",
    # Futures bookTickers carry the event time E in ms; spot ones (lake exchange BINANCE) no time at all.
    ticker_time_ns=lambda instrument: None if instrument.exchange == "BINANCE" else 1_000_000,
)
