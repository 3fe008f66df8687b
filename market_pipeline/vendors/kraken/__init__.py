"""Kraken spot: WebSocket `book` captures (v1 arrays, v2 objects) replayed exactly under Kraken's
book rules and checked against its CRC32 book checksum (`verify-capture`). The recorder subscribes
to its streams (`live`, `market-pipeline capture --exchange kraken`). `PIPELINE_SOURCE`/`PIPELINE_SOURCES`
`kraken_capture` serves the captures as lake tables (`source`, `capture_tables`): a primary source,
or the reference a bought Kraken day is checked against (`source_agreement`, by exchange time:
Kraken numbers no message)."""

from market_pipeline.vendors.base import Vendor, directory_problem
from market_pipeline.vendors.binance.config import BinanceCaptureConfig


def verify_capture(paths):
    """`verify.verify_capture`, imported when used."""
    from market_pipeline.vendors.kraken.verify import verify_capture as replay

    return replay(paths)


def live_feed(market, symbol, depth=None, url=None):
    """`live.feed`, imported when used (the recorder's WebSocket client is not needed otherwise)."""
    from market_pipeline.vendors.kraken.live import feed

    return feed(market, symbol, depth, url)


def _build(settings):
    from market_pipeline.vendors.kraken.source import KrakenCaptureSource

    return KrakenCaptureSource(
        settings.capture_dir,
        settings.data_dir / "sources" / "kraken_capture",
        settings.lake_dir,
        fidelity_interval_ms=settings.checks.fidelity_sample_interval_ms,
    )


def _problems(settings) -> list[str]:
    return [] if settings.capture_dir is not None else ["PIPELINE_SOURCE=kraken_capture needs PIPELINE_CAPTURE_DIR"]


VENDOR = Vendor(
    name="kraken_capture",
    description="Kraken spot WebSocket captures (kraken_* files in PIPELINE_CAPTURE_DIR)",
    build=_build,
    config=BinanceCaptureConfig,  # the capture settings (PIPELINE_CAPTURE_DIR) are the recorder's, shared
    problems=_problems,
    environment=lambda settings: directory_problem("PIPELINE_CAPTURE_DIR", settings.capture_dir),
    describe=lambda settings: str(settings.capture_dir.resolve()) if settings.capture_dir else "?",
    message_ids=False,  # Kraken numbers no book message: matched by exchange time
)
